package carp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
)

// zeroMAC is the target hardware address of a request: RFC 5227 asks for
// zeros, the field being what the request wants to learn.
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// Probe asks, RFC 5227 style, whether a host other than this one answers
// for vip on iface: it sends an ARP probe (sender IP 0.0.0.0, so no
// neighbour caches anything from it) every interval, tries times, and
// returns the hardware address of the first other host that sends ARP with
// vip as its sender address. owner is nil when none did within
// tries×interval. This host's own address on iface never counts, so vip
// may already be on iface.
//
// The socket is opened in the calling thread's network namespace; it needs
// CAP_NET_RAW.
func Probe(ctx context.Context, iface string, vip netip.Addr, tries int, interval time.Duration) (owner net.HardwareAddr, err error) {
	vip = vip.Unmap()
	if !vip.Is4() || tries < 1 || interval <= 0 {
		return nil, fmt.Errorf("carp: probe %v on %s: want an IPv4 address, tries >= 1 and interval > 0 (have %d, %v)", vip, iface, tries, interval)
	}
	c, err := openARP(iface)
	if err != nil {
		return nil, fmt.Errorf("carp: probe %v on %s: %w", vip, iface, err)
	}
	defer c.close()
	defer context.AfterFunc(ctx, c.close)()
	buf := make([]byte, 1514)
	for range tries {
		if err := ctx.Err(); err != nil {
			return nil, probeErr(ctx, iface, vip, err)
		}
		if err := c.send(arp.OperationRequest, netip.IPv4Unspecified(), zeroMAC, vip); err != nil {
			return nil, probeErr(ctx, iface, vip, err)
		}
		if err := c.conn.SetReadDeadline(time.Now().Add(interval)); err != nil {
			return nil, probeErr(ctx, iface, vip, err)
		}
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, probeErr(ctx, iface, vip, err)
			}
			p, ok := parseARP(buf[:n])
			if ok && p.SenderIP == vip && !bytes.Equal(p.SenderHardwareAddr, c.ifi.HardwareAddr) {
				return slices.Clone(p.SenderHardwareAddr), nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, probeErr(ctx, iface, vip, err)
	}
	return nil, nil
}

// probeErr is err, or the context's error when the context ended: closing
// the socket is how it stops a read.
func probeErr(ctx context.Context, iface string, vip netip.Addr, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return fmt.Errorf("carp: probe %v on %s: %w", vip, iface, err)
}

// Announce sends count rounds of gratuitous ARP for vip from iface, one
// every interval: each round a request and a reply, both broadcast, with
// vip as sender and target and iface's hardware address as sender. Linux
// takes either as an update of a cache entry it has (the reply only with
// the target hardware address equal to the sender's, as here); switches
// learn the port from the frames' source. It returns when the last round
// is sent or ctx ends.
//
// The socket is opened in the calling thread's network namespace; it needs
// CAP_NET_RAW.
func Announce(ctx context.Context, iface string, vip netip.Addr, count int, interval time.Duration) error {
	vip = vip.Unmap()
	if !vip.Is4() || count < 1 || interval < 0 {
		return fmt.Errorf("carp: announce %v on %s: want an IPv4 address, count >= 1 and interval >= 0 (have %d, %v)", vip, iface, count, interval)
	}
	c, err := openARP(iface)
	if err != nil {
		return fmt.Errorf("carp: announce %v on %s: %w", vip, iface, err)
	}
	defer c.close()
	for i := range count {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("carp: announce %v on %s: %w", vip, iface, err)
		}
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("carp: announce %v on %s: %w", vip, iface, ctx.Err())
			case <-time.After(interval):
			}
		}
		err := c.send(arp.OperationRequest, vip, zeroMAC, vip)
		if err == nil {
			err = c.send(arp.OperationReply, vip, c.ifi.HardwareAddr, vip)
		}
		if err != nil {
			return fmt.Errorf("carp: announce %v on %s: %w", vip, iface, err)
		}
	}
	return nil
}

// arpConn is a packet socket that sends and receives whole Ethernet frames
// of type ARP on one interface. It does not use arp.Client, which refuses
// an interface without an IPv4 address and would send this host's first
// address, possibly the VIP, as the sender of a probe.
type arpConn struct {
	ifi  *net.Interface
	conn *packet.Conn
}

func openARP(iface string) (*arpConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s has no Ethernet address", iface)
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, err
	}
	return &arpConn{ifi: ifi, conn: conn}, nil
}

func (c *arpConn) close() { c.conn.Close() }

// send broadcasts one ARP packet from the interface's hardware address.
func (c *arpConn) send(op arp.Operation, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) error {
	p, err := arp.NewPacket(op, c.ifi.HardwareAddr, senderIP, targetMAC, targetIP)
	if err != nil {
		return err
	}
	payload, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := ethernet.Frame{
		Destination: ethernet.Broadcast,
		Source:      c.ifi.HardwareAddr,
		EtherType:   ethernet.EtherTypeARP,
		Payload:     payload,
	}
	b, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = c.conn.WriteTo(b, &packet.Addr{HardwareAddr: ethernet.Broadcast})
	return err
}

// parseARP is the ARP packet an Ethernet frame carries; ok is false for any
// other frame or a broken one, which a reader skips.
func parseARP(b []byte) (p *arp.Packet, ok bool) {
	var f ethernet.Frame
	if f.UnmarshalBinary(b) != nil || f.EtherType != ethernet.EtherTypeARP {
		return nil, false
	}
	p = new(arp.Packet)
	if p.UnmarshalBinary(f.Payload) != nil {
		return nil, false
	}
	return p, true
}
