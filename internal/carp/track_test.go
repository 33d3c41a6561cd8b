package carp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"golang.org/x/sys/unix"
)

// rtattr is one netlink attribute, padded to 4 bytes.
func rtattr(typ uint16, v []byte) []byte {
	b := make([]byte, (unix.SizeofRtAttr+len(v)+3)&^3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(unix.SizeofRtAttr+len(v)))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	copy(b[unix.SizeofRtAttr:], v)
	return b
}

// addrMsg is an RTM_NEWADDR or RTM_DELADDR message as the kernel sends it:
// IPv4 with IFA_LOCAL and IFA_ADDRESS, IPv6 with IFA_ADDRESS only.
func addrMsg(typ uint16, index int, p netip.Prefix) syscall.NetlinkMessage {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	if p.Addr().Is6() {
		b[0] = unix.AF_INET6
	}
	b[1] = byte(p.Bits())
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	a := p.Addr().AsSlice()
	if p.Addr().Is4() {
		b = append(b, rtattr(unix.IFA_LOCAL, a)...)
	}
	b = append(b, rtattr(unix.IFA_ADDRESS, a)...)
	b = append(b, rtattr(unix.IFA_LABEL, []byte("eth0\x00"))...)
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: typ}, Data: b}
}

// linkMsg is an RTM_NEWLINK or RTM_DELLINK message.
func linkMsg(typ uint16, index int, name string) syscall.NetlinkMessage {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	b = append(b, rtattr(unix.IFLA_MTU, []byte{0xdc, 0x05, 0, 0})...)
	b = append(b, rtattr(unix.IFLA_IFNAME, append([]byte(name), 0))...)
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: typ}, Data: b}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		m    syscall.NetlinkMessage
		want change
	}{
		{addrMsg(unix.RTM_NEWADDR, 3, netip.MustParsePrefix("10.0.0.5/24")),
			change{typ: unix.RTM_NEWADDR, index: 3, addr: netip.MustParseAddr("10.0.0.5"), bits: 24}},
		{addrMsg(unix.RTM_DELADDR, 7, netip.MustParsePrefix("fd00::5/128")),
			change{typ: unix.RTM_DELADDR, index: 7, addr: netip.MustParseAddr("fd00::5"), bits: 128}},
		{linkMsg(unix.RTM_NEWLINK, 12, "eth0"), change{typ: unix.RTM_NEWLINK, index: 12, name: "eth0"}},
		{linkMsg(unix.RTM_DELLINK, 12, "eth0"), change{typ: unix.RTM_DELLINK, index: 12, name: "eth0"}},
	} {
		got, ok, err := decode(tc.m)
		if err != nil || !ok || got != tc.want {
			t.Errorf("decode = %+v, %v, %v; want %+v", got, ok, err, tc.want)
		}
	}

	// Point to point: IFA_LOCAL is this host's address, IFA_ADDRESS the peer's.
	m := addrMsg(unix.RTM_NEWADDR, 3, netip.MustParsePrefix("10.0.0.5/32"))
	m.Data = append(m.Data[:unix.SizeofIfAddrmsg],
		append(rtattr(unix.IFA_ADDRESS, []byte{10, 0, 0, 9}), rtattr(unix.IFA_LOCAL, []byte{10, 0, 0, 5})...)...)
	if got, _, err := decode(m); err != nil || got.addr != netip.MustParseAddr("10.0.0.5") {
		t.Errorf("point to point: %v, %v; want the local 10.0.0.5", got.addr, err)
	}

	if _, ok, err := decode(syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.RTM_NEWROUTE}}); ok || err != nil {
		t.Errorf("a route message: ok %v, err %v; want skipped", ok, err)
	}
	bad := []syscall.NetlinkMessage{
		{Header: syscall.NlMsghdr{Type: unix.RTM_NEWADDR}, Data: make([]byte, unix.SizeofIfAddrmsg-1)},
		{Header: syscall.NlMsghdr{Type: unix.RTM_NEWLINK}, Data: make([]byte, unix.SizeofIfInfomsg-1)},
		{Header: syscall.NlMsghdr{Type: unix.RTM_NEWADDR}, Data: append(make([]byte, unix.SizeofIfAddrmsg), 9, 0, 1, 0)},
		{Header: syscall.NlMsghdr{Type: unix.RTM_NEWADDR}, Data: append(make([]byte, unix.SizeofIfAddrmsg), 2, 0, 1, 0)},
	}
	for _, m := range bad {
		if _, _, err := decode(m); err == nil {
			t.Errorf("decode(type %d, % x): no error", m.Header.Type, m.Data)
		}
	}
}

func TestTracker(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.100")
	tr := newTracker("eth0", vip)
	steps := []struct {
		m    syscall.NetlinkMessage
		want bool
	}{
		{addrMsg(unix.RTM_NEWADDR, 2, netip.MustParsePrefix("10.0.0.100/32")), false}, // no eth0 yet
		{linkMsg(unix.RTM_NEWLINK, 2, "eth0"), true},
		{addrMsg(unix.RTM_NEWADDR, 2, netip.MustParsePrefix("10.0.0.100/24")), true},
		{addrMsg(unix.RTM_DELADDR, 2, netip.MustParsePrefix("10.0.0.100/32")), true}, // the /24 is left
		{addrMsg(unix.RTM_NEWADDR, 2, netip.MustParsePrefix("10.0.0.1/24")), true},
		{addrMsg(unix.RTM_DELADDR, 2, netip.MustParsePrefix("10.0.0.100/24")), false},
		{addrMsg(unix.RTM_NEWADDR, 3, netip.MustParsePrefix("10.0.0.100/24")), false}, // another link
		{addrMsg(unix.RTM_NEWADDR, 2, netip.MustParsePrefix("10.0.0.100/24")), true},
		{linkMsg(unix.RTM_NEWLINK, 2, "eth9"), false}, // renamed away
		{linkMsg(unix.RTM_NEWLINK, 3, "eth0"), true},  // the other link takes the name
		{linkMsg(unix.RTM_DELLINK, 3, "eth0"), false},
		{linkMsg(unix.RTM_NEWLINK, 2, "eth0"), true},
		{linkMsg(unix.RTM_NEWLINK, 2, ""), true}, // no name: nothing learnt
	}
	for i, s := range steps {
		c, ok, err := decode(s.m)
		if err != nil || !ok {
			t.Fatalf("step %d: decode: %v %v", i, ok, err)
		}
		tr.apply(c)
		if got := tr.present(); got != s.want {
			t.Fatalf("step %d (%+v): present %v, want %v", i, c, got, s.want)
		}
	}
}

// TestTrackerModel runs random link and address changes, as the kernel
// reports them, through the tracker and a naive model of the kernel's
// tables, and compares their answers after every message.
func TestTrackerModel(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.100")
	prefixes := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.100/32"), netip.MustParsePrefix("10.0.0.100/24"),
		netip.MustParsePrefix("10.0.0.101/32"),
	}
	names := []string{"eth0", "eth1", "eth2"}
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		tr := newTracker("eth0", vip)
		links := map[int]string{}                // index -> name
		addrs := map[int]map[netip.Prefix]bool{} // index -> prefixes
		next := 1
		byName := func(name string) int {
			for i, n := range links {
				if n == name {
					return i
				}
			}
			return 0
		}
		model := func() bool {
			i := byName("eth0")
			return i != 0 && (addrs[i][prefixes[0]] || addrs[i][prefixes[1]])
		}
		var log []string
		send := func(m syscall.NetlinkMessage) {
			c, ok, err := decode(m)
			if err != nil || !ok {
				t.Fatalf("seed %d: decode: %v %v", seed, ok, err)
			}
			tr.apply(c)
			log = append(log, fmt.Sprintf("type %d index %d name %q addr %v/%d", c.typ, c.index, c.name, c.addr, c.bits))
			if got, want := tr.present(), model(); got != want {
				t.Fatalf("seed %d: after\n%s\npresent %v, model %v", seed, strings.Join(log, "\n"), got, want)
			}
		}
		for range 60 {
			name := names[r.IntN(len(names))]
			i := byName(name)
			switch op := r.IntN(5); {
			case op == 0 && i == 0: // create
				links[next], addrs[next] = name, map[netip.Prefix]bool{}
				send(linkMsg(unix.RTM_NEWLINK, next, name))
				next++
			case op == 0: // remove: addresses first, as the kernel does
				for p := range addrs[i] {
					delete(addrs[i], p)
					send(addrMsg(unix.RTM_DELADDR, i, p))
				}
				delete(links, i)
				send(linkMsg(unix.RTM_DELLINK, i, name))
			case op == 1 && i != 0: // rename to a free name
				to := names[r.IntN(len(names))]
				if byName(to) == 0 {
					links[i] = to
					send(linkMsg(unix.RTM_NEWLINK, i, to))
				}
			case i != 0: // add or remove an address
				p := prefixes[r.IntN(len(prefixes))]
				if addrs[i][p] {
					delete(addrs[i], p)
					send(addrMsg(unix.RTM_DELADDR, i, p))
				} else {
					addrs[i][p] = true
					send(addrMsg(unix.RTM_NEWADDR, i, p))
				}
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range []syscall.NetlinkMessage{
		addrMsg(unix.RTM_NEWADDR, 3, netip.MustParsePrefix("10.0.0.5/24")),
		addrMsg(unix.RTM_DELADDR, 3, netip.MustParsePrefix("fd00::5/64")),
		linkMsg(unix.RTM_NEWLINK, 12, "eth0"),
	} {
		f.Add(m.Header.Type, m.Data)
	}
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		c, ok, err := decode(syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: typ}, Data: data})
		if err != nil || !ok {
			return
		}
		if c.typ != typ {
			t.Fatalf("type %d decoded as %d", typ, c.typ)
		}
		if (typ == unix.RTM_NEWADDR || typ == unix.RTM_DELADDR) && c.bits != int(data[1]) {
			t.Fatalf("prefix length %d decoded as %d", data[1], c.bits)
		}
		// Whatever it says, the tracker takes it.
		tr := newTracker("eth0", netip.MustParseAddr("10.0.0.5"))
		tr.apply(c)
		tr.present()
	})
}

func FuzzParseARP(f *testing.F) {
	mac := []byte{2, 0, 0, 0, 0, 1}
	for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
		p, err := arp.NewPacket(op, mac, netip.MustParseAddr("10.0.0.5"), zeroMAC, netip.MustParseAddr("10.0.0.5"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame(f, p))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := parseARP(b)
		if !ok {
			return
		}
		// What it accepts it reads back the same once written again.
		q, ok := parseARP(frame(t, p))
		if !ok || q.Operation != p.Operation || q.SenderIP != p.SenderIP || q.TargetIP != p.TargetIP ||
			!bytes.Equal(q.SenderHardwareAddr, p.SenderHardwareAddr) || !bytes.Equal(q.TargetHardwareAddr, p.TargetHardwareAddr) {
			t.Fatalf("%+v written and read again: %+v, %v", p, q, ok)
		}
	})
}

// frame is p in a broadcast Ethernet frame, as arpConn.send writes it.
func frame(t testing.TB, p *arp.Packet) []byte {
	payload, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := ethernet.Frame{Destination: ethernet.Broadcast, Source: p.SenderHardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: payload}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
