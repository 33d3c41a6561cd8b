package carp

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The tests below that touch the network make hosts of network namespaces
// of their own (carp-test-PID-N), joined by veth pairs created inside them,
// with addresses in 10.200.0.0/16 only: nothing of the host's own namespace
// is changed. They need root, and skip, saying so, without it; in CI they
// run as root.

var nsCount atomic.Int32

// testNS is one namespace, removed when the test ends, pass or fail.
type testNS struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle // netlink in the namespace, for the tests' checks
}

func newNS(t *testing.T) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("skipping: needs root to create network namespaces and raw sockets (running as uid %d)", os.Geteuid())
	}
	n := &testNS{name: fmt.Sprintf("carp-test-%d-%d", os.Getpid(), nsCount.Add(1))}
	ip(t, "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	var err error
	if n.ns, err = netns.GetFromName(n.name); err != nil {
		t.Fatalf("open namespace %s: %v", n.name, err)
	}
	t.Cleanup(func() { n.ns.Close() })
	if n.h, err = netlink.NewHandleAt(n.ns); err != nil {
		t.Fatalf("netlink in %s: %v", n.name, err)
	}
	t.Cleanup(n.h.Close)
	return n
}

// ip runs ip(8) and fails the test on an error.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ip runs ip(8) inside the namespace.
func (n *testNS) ip(t *testing.T, args ...string) {
	t.Helper()
	ip(t, append([]string{"-n", n.name}, args...)...)
}

// veth joins n's interface a and peer's interface b, both up. With peer ==
// n both ends are in n.
func (n *testNS) veth(t *testing.T, a string, peer *testNS, b string) {
	t.Helper()
	n.ip(t, "link", "add", a, "type", "veth", "peer", "name", b, "netns", peer.name)
	n.ip(t, "link", "set", a, "up")
	peer.ip(t, "link", "set", b, "up")
}

// mac is the hardware address of n's interface.
func (n *testNS) mac(t *testing.T, iface string) net.HardwareAddr {
	t.Helper()
	l, err := n.h.LinkByName(iface)
	if err != nil {
		t.Fatalf("%s in %s: %v", iface, n.name, err)
	}
	return l.Attrs().HardwareAddr
}

// do runs f on an OS thread inside n and returns f's error. The thread is
// never unlocked, so the runtime ends it with the goroutine and no other
// code ever runs in n by accident.
func (n *testNS) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.ns); err != nil {
			errc <- fmt.Errorf("enter %s: %w", n.name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}
