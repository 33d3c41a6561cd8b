package carp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// change is one rtnetlink link or address message, reduced to what the
// tracker needs.
type change struct {
	typ   uint16     // RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR or RTM_DELADDR
	index int        // interface index
	name  string     // links only; "" when the message had none
	addr  netip.Addr // addresses only
	bits  int        // addresses only: the prefix length
}

// decode reduces a link or address message. ok is false for other message
// types, which a caller skips.
func decode(m syscall.NetlinkMessage) (c change, ok bool, err error) {
	c.typ = m.Header.Type
	var link bool
	var hdr int
	switch c.typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		link, hdr = true, unix.SizeofIfInfomsg
		if len(m.Data) < hdr {
			return change{}, false, fmt.Errorf("decode link message: %d bytes, short of a header", len(m.Data))
		}
		// struct ifinfomsg: family, pad, type (2), index (4), flags, change.
		c.index = int(int32(binary.NativeEndian.Uint32(m.Data[4:8])))
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		hdr = unix.SizeofIfAddrmsg
		if len(m.Data) < hdr {
			return change{}, false, fmt.Errorf("decode address message: %d bytes, short of a header", len(m.Data))
		}
		// struct ifaddrmsg: family, prefixlen, flags, scope, index (4).
		c.bits = int(m.Data[1])
		c.index = int(binary.NativeEndian.Uint32(m.Data[4:8]))
	default:
		return change{}, false, nil
	}
	// The attributes follow the header, each a struct rtattr (length and
	// type, 2 bytes each, the length counting the header) and its value,
	// padded to 4 bytes. syscall.ParseNetlinkRouteAttr would do, but it
	// panics on a last attribute whose padding is cut off.
	var local, address netip.Addr
	for b := m.Data[hdr:]; len(b) >= unix.SizeofRtAttr; {
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if n < unix.SizeofRtAttr || n > len(b) {
			return change{}, false, fmt.Errorf("decode message type %d: attribute %d of length %d in %d bytes", c.typ, typ, n, len(b))
		}
		v := b[unix.SizeofRtAttr:n]
		b = b[min((n+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(b)):]
		switch {
		case link:
			if typ == unix.IFLA_IFNAME {
				c.name = cString(v)
			}
		case typ == unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(v)
		case typ == unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(v)
		}
	}
	// IPv4 sends the host's own address as IFA_LOCAL and, on a
	// point-to-point link, the peer's as IFA_ADDRESS; IPv6 sends only
	// IFA_ADDRESS unless there is a peer.
	c.addr = local
	if !c.addr.IsValid() {
		c.addr = address
	}
	return c, true, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// holding is one address entry that carries the VIP: the same address may
// be on one interface twice, with two prefix lengths.
type holding struct {
	index, bits int
}

// tracker is the I/O-free core of Watch: the interface index of the
// watched name and the entries that hold the VIP, rebuilt from dumps and
// notifications in the order the kernel sent them.
type tracker struct {
	iface string
	vip   netip.Addr
	index int // 0: no interface has the name
	held  map[holding]bool
}

func newTracker(iface string, vip netip.Addr) *tracker {
	return &tracker{iface: iface, vip: vip, held: map[holding]bool{}}
}

// present is whether the watched interface holds the VIP.
func (t *tracker) present() bool {
	if t.index == 0 {
		return false
	}
	for h := range t.held {
		if h.index == t.index {
			return true
		}
	}
	return false
}

// forgetLinks and forgetAddrs start a dump of links or addresses: what the
// dump lists (and what notifications say meanwhile) replaces what was known.
func (t *tracker) forgetLinks() { t.index = 0 }
func (t *tracker) forgetAddrs() { clear(t.held) }

// apply takes one change into account.
func (t *tracker) apply(c change) {
	switch c.typ {
	case unix.RTM_NEWLINK:
		switch {
		case c.name == "":
		case c.name == t.iface:
			t.index = c.index
		case c.index == t.index:
			t.index = 0 // renamed away
		}
	case unix.RTM_DELLINK:
		if c.index == t.index {
			t.index = 0
		}
		for h := range t.held {
			if h.index == c.index {
				delete(t.held, h)
			}
		}
	case unix.RTM_NEWADDR:
		if c.addr == t.vip {
			t.held[holding{c.index, c.bits}] = true
		}
	case unix.RTM_DELADDR:
		if c.addr == t.vip {
			delete(t.held, holding{c.index, c.bits})
		}
	}
}

// reason is why a change may have moved the state.
func (c change) reason() Reason {
	switch c.typ {
	case unix.RTM_NEWADDR:
		return ReasonAdded
	case unix.RTM_DELADDR:
		return ReasonDeleted
	default:
		return ReasonLink
	}
}
