package carp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// events reads one Watch's events in a test.
type events struct {
	t  *testing.T
	ch <-chan Event
}

// want fails the test unless the next event is present/why. Each step of
// the tests below ends in an event, so an event a step should not have
// caused (a duplicate, a flap, a VIP on another interface counted) shows up
// as the wrong next event or as one missing.
func (e events) want(present bool, why Reason) {
	e.t.Helper()
	select {
	case ev, ok := <-e.ch:
		if !ok {
			e.t.Fatalf("events closed; want present=%v (%v)", present, why)
		}
		if ev.Present != present || ev.Reason != why || ev.Time.IsZero() {
			e.t.Fatalf("event present=%v (%v) at %v; want present=%v (%v)", ev.Present, ev.Reason, ev.Time, present, why)
		}
	case <-time.After(5 * time.Second):
		e.t.Fatalf("no event in 5s; want present=%v (%v)", present, why)
	}
}

// watch starts a watcher inside n. setup, if not nil, sets its test hooks
// before it runs. The watcher stops when the test ends.
func watch(t *testing.T, n *testNS, iface, vip string, setup func(*watcher)) events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := WatchConfig{Interface: iface, VIP: netip.MustParseAddr(vip), Logger: testLogger(t)}
	var w *watcher
	var s *sock
	if err := n.do(func() (err error) { w, s, err = newWatcher(cfg); return err }); err != nil {
		cancel()
		t.Fatal(err)
	}
	if setup != nil {
		setup(w)
	}
	go w.run(ctx, s)
	t.Cleanup(func() {
		cancel()
		for range w.out {
		}
	})
	return events{t, w.out}
}

// oneHost is a namespace with a veth pair w0-w1, w0 holding SUBNET.1/24.
func oneHost(t *testing.T, subnet string) *testNS {
	t.Helper()
	n := newNS(t)
	n.veth(t, "w0", n, "w1")
	n.ip(t, "addr", "add", subnet+".1/24", "dev", "w0")
	return n
}

// listings has w tell of each listing it completes.
func listings(w *watcher) <-chan Reason {
	c := make(chan Reason, 8)
	w.listed = func(r Reason) { c <- r }
	return c
}

func wantListed(t *testing.T, listed <-chan Reason, want Reason) {
	t.Helper()
	select {
	case r := <-listed:
		if r != want {
			t.Fatalf("listed for %v, want %v", r, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no listing in 5s")
	}
}

func TestWatchFollowsVIP(t *testing.T) {
	n := oneHost(t, "10.200.1")
	ev := watch(t, n, "w0", "10.200.1.100", nil)

	ev.want(false, ReasonInitial)
	// ucarp's up script: the VIP as a /32 beside the host's own address.
	n.ip(t, "addr", "add", "10.200.1.100/32", "dev", "w0")
	ev.want(true, ReasonAdded)
	// Twice on the interface, with two prefix lengths: present until both go.
	n.ip(t, "addr", "add", "10.200.1.100/24", "dev", "w0")
	n.ip(t, "addr", "del", "10.200.1.100/32", "dev", "w0")
	n.ip(t, "addr", "del", "10.200.1.100/24", "dev", "w0")
	ev.want(false, ReasonDeleted)
	// Back, with the subnet's prefix length this time.
	n.ip(t, "addr", "add", "10.200.1.100/24", "dev", "w0")
	ev.want(true, ReasonAdded)
	// On another interface it does not count.
	n.ip(t, "addr", "add", "10.200.1.100/32", "dev", "w1")
	n.ip(t, "addr", "del", "10.200.1.100/24", "dev", "w0")
	ev.want(false, ReasonDeleted)
	// Nor do other addresses on the interface.
	n.ip(t, "addr", "add", "10.200.1.101/32", "dev", "w0")
	n.ip(t, "addr", "add", "10.200.1.100/32", "dev", "w0")
	ev.want(true, ReasonAdded)
}

func TestWatchInitialPresent(t *testing.T) {
	n := oneHost(t, "10.200.2")
	n.ip(t, "addr", "add", "10.200.2.100/24", "dev", "w0")
	ev := watch(t, n, "w0", "10.200.2.100", nil)

	ev.want(true, ReasonInitial)
	n.ip(t, "addr", "del", "10.200.2.100/24", "dev", "w0")
	ev.want(false, ReasonDeleted)
}

// A failed socket is replaced and the state listed again: a change made
// while no socket listened is reported, a relist that finds the state
// unchanged reports nothing, and the new socket follows notifications.
func TestWatchRelist(t *testing.T) {
	n := oneHost(t, "10.200.3")
	n.ip(t, "addr", "add", "10.200.3.100/32", "dev", "w0")
	inGap := make(chan []string, 1) // ip commands to run while no socket listens
	var w *watcher
	var listed <-chan Reason
	ev := watch(t, n, "w0", "10.200.3.100", func(x *watcher) {
		w, listed = x, listings(x)
		w.gap = func() {
			select {
			case cmds := <-inGap:
				for _, c := range cmds {
					args := append([]string{"-n", n.name}, strings.Fields(c)...)
					if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
						t.Errorf("ip %s: %v: %s", c, err, out)
					}
				}
			default:
			}
		}
	})

	ev.want(true, ReasonInitial)
	wantListed(t, listed, ReasonInitial)

	// Removed between the failed socket and the next: seen in the listing.
	inGap <- []string{"addr del 10.200.3.100/32 dev w0"}
	w.breakSocket()
	ev.want(false, ReasonRelist)
	wantListed(t, listed, ReasonRelist)

	// Nothing changed: the listing reports nothing; the next event is the
	// new socket's notification.
	w.breakSocket()
	wantListed(t, listed, ReasonRelist)
	n.ip(t, "addr", "add", "10.200.3.100/32", "dev", "w0")
	ev.want(true, ReasonAdded)

	// Gone and back within the gap: nothing anyone could see, nothing
	// reported (the package doc says so); then a real removal.
	inGap <- []string{"addr del 10.200.3.100/32 dev w0", "addr add 10.200.3.100/24 dev w0"}
	w.breakSocket()
	wantListed(t, listed, ReasonRelist)
	n.ip(t, "addr", "del", "10.200.3.100/24", "dev", "w0")
	ev.want(false, ReasonDeleted)
}

// A real overflow: notifications pile up while the watcher waits for the
// test to take an event, the kernel drops some and says ENOBUFS, and the
// watcher lists again and finds the VIP back.
func TestWatchOverflow(t *testing.T) {
	n := oneHost(t, "10.200.9")
	n.ip(t, "addr", "add", "10.200.9.100/32", "dev", "w0")
	var w *watcher
	var listed <-chan Reason
	ev := watch(t, n, "w0", "10.200.9.100", func(x *watcher) { w, listed = x, listings(x) })
	ev.want(true, ReasonInitial)
	wantListed(t, listed, ReasonInitial)
	w.mu.Lock()
	err := unix.SetsockoptInt(w.cur.s.GetFd(), unix.SOL_SOCKET, unix.SO_RCVBUF, 0) // the least the kernel allows
	w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}

	n.ip(t, "addr", "del", "10.200.9.100/32", "dev", "w0")
	var batch strings.Builder
	for i := 10; i < 110; i++ {
		fmt.Fprintf(&batch, "addr add 10.200.9.%d/32 dev w1\naddr del 10.200.9.%d/32 dev w1\n", i, i)
	}
	batch.WriteString("addr add 10.200.9.100/24 dev w0\n")
	file := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(file, []byte(batch.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	n.ip(t, "-batch", file)
	ev.want(false, ReasonDeleted)
	ev.want(true, ReasonRelist)
}

// The interface need not exist when Watch starts; it holds the VIP only
// under its name. This test goes through the exported Watch.
func TestWatchLateInterface(t *testing.T) {
	n := newNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	var ch <-chan Event
	err := n.do(func() (err error) {
		ch, err = Watch(ctx, WatchConfig{Interface: "late0", VIP: netip.MustParseAddr("10.200.4.100"), Logger: testLogger(t)})
		return err
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
	})
	ev := events{t, ch}

	ev.want(false, ReasonInitial)
	n.veth(t, "late0", n, "late1")
	n.ip(t, "addr", "add", "10.200.4.100/24", "dev", "late0")
	ev.want(true, ReasonAdded)
	// Renamed away and back: the addresses stay on the link meanwhile.
	n.ip(t, "link", "set", "late0", "down")
	n.ip(t, "link", "set", "late0", "name", "late9")
	ev.want(false, ReasonLink)
	n.ip(t, "link", "set", "late9", "name", "late0")
	ev.want(true, ReasonLink)
	// Removed: the kernel removes its addresses first, and says so.
	n.ip(t, "link", "del", "late0")
	ev.want(false, ReasonDeleted)
	// Made again under the name, with the VIP.
	n.veth(t, "late0", n, "late1")
	n.ip(t, "addr", "add", "10.200.4.100/32", "dev", "late0")
	ev.want(true, ReasonAdded)
}

func TestWatchIPv6(t *testing.T) {
	n := oneHost(t, "10.200.10")
	ev := watch(t, n, "w0", "fd00:200::100", nil)

	ev.want(false, ReasonInitial)
	n.ip(t, "-6", "addr", "add", "fd00:200::100/64", "dev", "w0", "nodad")
	ev.want(true, ReasonAdded)
	n.ip(t, "-6", "addr", "del", "fd00:200::100/64", "dev", "w0")
	ev.want(false, ReasonDeleted)
}

func TestWatchConfigValidate(t *testing.T) {
	vip := netip.MustParseAddr("10.200.0.1")
	for _, c := range []WatchConfig{
		{VIP: vip},
		{Interface: "a-name-too-long0", VIP: vip},
		{Interface: "eth0"},
		{Interface: "eth0", VIP: netip.IPv4Unspecified()},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
		if _, err := Watch(context.Background(), c); err == nil {
			t.Errorf("Watch(%+v) started, want an error", c)
		}
	}
	if err := (WatchConfig{Interface: "eth0", VIP: vip}).Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// testLogger sends a component's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
