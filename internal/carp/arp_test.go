package carp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
)

// twoHosts is namespaces a and b joined by a veth pair, a0 in a with
// 10.200.N.1/24, b0 in b with 10.200.N.2/24.
func twoHosts(t *testing.T, subnet string) (a, b *testNS) {
	t.Helper()
	a, b = newNS(t), newNS(t)
	a.veth(t, "a0", b, "b0")
	a.ip(t, "addr", "add", subnet+".1/24", "dev", "a0")
	b.ip(t, "addr", "add", subnet+".2/24", "dev", "b0")
	return a, b
}

func probeFrom(n *testNS, iface, vip string, tries int, interval time.Duration) (owner net.HardwareAddr, err error) {
	err = n.do(func() (err error) {
		owner, err = Probe(context.Background(), iface, netip.MustParseAddr(vip), tries, interval)
		return err
	})
	return owner, err
}

func TestProbe(t *testing.T) {
	a, b := twoHosts(t, "10.200.5")
	const vip = "10.200.5.100"
	aMAC := a.mac(t, "a0")

	a.ip(t, "addr", "add", vip+"/32", "dev", "a0")
	owner, err := probeFrom(b, "b0", vip, 3, 200*time.Millisecond)
	if err != nil || !bytes.Equal(owner, aMAC) {
		t.Fatalf("A holds the VIP: Probe from B = %v, %v; want A's %v", owner, err, aMAC)
	}

	// B has taken the VIP, A has not let go: A still answers.
	b.ip(t, "addr", "add", vip+"/32", "dev", "b0")
	owner, err = probeFrom(b, "b0", vip, 3, 200*time.Millisecond)
	if err != nil || !bytes.Equal(owner, aMAC) {
		t.Fatalf("both hold the VIP: Probe from B = %v, %v; want A's %v", owner, err, aMAC)
	}

	// Only B: nobody else answers, and B's own address does not count.
	a.ip(t, "addr", "del", vip+"/32", "dev", "a0")
	start := time.Now()
	owner, err = probeFrom(b, "b0", vip, 3, 50*time.Millisecond)
	if err != nil || owner != nil {
		t.Fatalf("A let go: Probe from B = %v, %v; want nil, nil", owner, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("Probe gave up after %v, before 3×50ms", d)
	}
}

func TestProbeErrors(t *testing.T) {
	a, b := twoHosts(t, "10.200.6")
	a.ip(t, "addr", "add", "10.200.6.100/32", "dev", "a0")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.do(func() error {
		_, err := Probe(ctx, "b0", netip.MustParseAddr("10.200.6.100"), 3, time.Second)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Probe with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := probeFrom(b, "nosuch0", "10.200.6.100", 1, time.Millisecond); err == nil {
		t.Error("Probe on a missing interface: no error")
	}
	if _, err := probeFrom(b, "b0", "fd00::1", 1, time.Millisecond); err == nil {
		t.Error("Probe of an IPv6 address: no error")
	}
	if _, err := probeFrom(b, "b0", "10.200.6.100", 0, time.Millisecond); err == nil {
		t.Error("Probe with 0 tries: no error")
	}
}

// B announces the VIP; A, whose cache still points at the old holder,
// sees both frames and updates its neighbour entry to B.
func TestAnnounce(t *testing.T) {
	a, b := twoHosts(t, "10.200.7")
	vip := netip.MustParseAddr("10.200.7.100")
	bMAC := b.mac(t, "b0")
	a0, err := a.h.LinkByName("a0")
	if err != nil {
		t.Fatal(err)
	}
	old := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	if err := a.h.NeighSet(&netlink.Neigh{
		LinkIndex:    a0.Attrs().Index,
		IP:           vip.AsSlice(),
		HardwareAddr: old,
		State:        netlink.NUD_STALE,
	}); err != nil {
		t.Fatalf("neighbour entry in A: %v", err)
	}
	var capture *arpConn
	if err := a.do(func() (err error) { capture, err = openARP("a0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer capture.close()

	if err := b.do(func() error { return Announce(context.Background(), "b0", vip, 2, 10*time.Millisecond) }); err != nil {
		t.Fatal(err)
	}

	// Two rounds of a request and a reply.
	var ops []arp.Operation
	buf := make([]byte, 1514)
	capture.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for len(ops) < 4 {
		n, _, err := capture.conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("A saw %v, then: %v", ops, err)
		}
		p, ok := parseARP(buf[:n])
		if !ok || p.SenderIP != vip {
			continue
		}
		if p.TargetIP != vip || !bytes.Equal(p.SenderHardwareAddr, bMAC) {
			t.Fatalf("gratuitous ARP %+v: want sender and target %v, sender MAC %v", p, vip, bMAC)
		}
		if p.Operation == arp.OperationReply && !bytes.Equal(p.TargetHardwareAddr, bMAC) {
			t.Errorf("gratuitous reply's target MAC %v, want the sender's %v", p.TargetHardwareAddr, bMAC)
		}
		ops = append(ops, p.Operation)
	}
	want := []arp.Operation{arp.OperationRequest, arp.OperationReply, arp.OperationRequest, arp.OperationReply}
	for i := range want {
		if ops[i] != want[i] {
			t.Fatalf("A saw %v, want %v", ops, want)
		}
	}

	var got net.HardwareAddr
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		neighs, err := a.h.NeighList(a0.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range neighs {
			if n.IP.Equal(vip.AsSlice()) {
				got = n.HardwareAddr
			}
		}
		if bytes.Equal(got, bMAC) {
			return
		}
	}
	t.Fatalf("A's neighbour entry for %v: %v, want B's %v", vip, got, bMAC)
}

func TestAnnounceErrors(t *testing.T) {
	n := newNS(t)
	for _, c := range []struct {
		iface, vip string
		count      int
	}{
		{"lo", "10.200.8.1", 0},
		{"lo", "fd00::1", 1},
		{"nosuch0", "10.200.8.1", 1},
	} {
		err := n.do(func() error { return Announce(context.Background(), c.iface, netip.MustParseAddr(c.vip), c.count, 0) })
		if err == nil {
			t.Errorf("Announce(%q, %s, %d): no error", c.iface, c.vip, c.count)
		}
	}
}
