package carp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/carpfs/carpfs/internal/backoff"
)

// Reason says why Watch reported a state.
type Reason int

const (
	ReasonInitial Reason = iota + 1 // the first listing of links and addresses
	ReasonAdded                     // a notification: an address was added
	ReasonDeleted                   // a notification: an address was removed
	ReasonLink                      // a notification: the interface appeared, was renamed or removed
	ReasonRelist                    // listing again after the netlink socket failed
)

func (r Reason) String() string {
	switch r {
	case ReasonInitial:
		return "initial listing"
	case ReasonAdded:
		return "address added"
	case ReasonDeleted:
		return "address removed"
	case ReasonLink:
		return "interface changed"
	case ReasonRelist:
		return "listing again after a netlink error"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Event is the state of the VIP on the watched interface. The events of one
// Watch alternate: each has the other Present than the one before.
type Event struct {
	Present bool      // the interface holds the VIP
	Time    time.Time // when Watch saw it
	Reason  Reason
}

// WatchConfig says what Watch follows.
type WatchConfig struct {
	Interface string     // e.g. "eth0"; need not exist yet
	VIP       netip.Addr // matched by address, whatever the prefix length
	Logger    *slog.Logger
}

// Validate reports a config Watch cannot follow.
func (c WatchConfig) Validate() error {
	switch {
	case c.Interface == "" || len(c.Interface) >= unix.IFNAMSIZ:
		return fmt.Errorf("carp: interface name %q: want 1 to %d bytes", c.Interface, unix.IFNAMSIZ-1)
	case !c.VIP.IsValid() || c.VIP.IsUnspecified():
		return fmt.Errorf("carp: VIP %v: want an IPv4 or IPv6 address", c.VIP)
	}
	return nil
}

// Watch follows the VIP on cfg.Interface in the calling thread's network
// namespace, until ctx ends; then it closes the channel. The first event is
// the state Watch finds when it starts. An error is about cfg or about
// opening the first netlink socket; later failures are logged and followed
// by a new socket and a new listing (see the package doc).
func Watch(ctx context.Context, cfg WatchConfig) (<-chan Event, error) {
	w, s, err := newWatcher(cfg)
	if err != nil {
		return nil, err
	}
	go w.run(ctx, s)
	return w.out, nil
}

type watcher struct {
	cfg    WatchConfig
	log    *slog.Logger
	ns     netns.NsHandle // the namespace every socket is opened in
	family int            // the VIP's: AF_INET or AF_INET6
	track  *tracker
	out    chan Event

	reported bool // an event went out
	present  bool // the state the last one carried

	// For tests: gap runs after a socket failed, before the next one opens;
	// listed after each complete listing; cur is the open socket.
	gap    func()
	listed func(Reason)
	mu     sync.Mutex
	cur    *sock
}

// newWatcher takes the calling thread's namespace and opens the first
// socket there, so that a failure to do either is Watch's error.
func newWatcher(cfg WatchConfig) (*watcher, *sock, error) {
	cfg.VIP = cfg.VIP.Unmap()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	w := &watcher{
		cfg:    cfg,
		log:    cfg.Logger,
		family: unix.AF_INET,
		track:  newTracker(cfg.Interface, cfg.VIP),
		out:    make(chan Event),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if cfg.VIP.Is6() {
		w.family = unix.AF_INET6
	}
	var err error
	if w.ns, err = netns.Get(); err != nil {
		return nil, nil, fmt.Errorf("carp: watch %s on %s: network namespace: %w", cfg.VIP, cfg.Interface, err)
	}
	s, err := openSock(w.ns, w.family)
	if err != nil {
		w.ns.Close()
		return nil, nil, fmt.Errorf("carp: watch %s on %s: %w", cfg.VIP, cfg.Interface, err)
	}
	return w, s, nil
}

// run follows one socket after another until ctx ends. s is the first.
func (w *watcher) run(ctx context.Context, s *sock) {
	defer close(w.out)
	defer w.ns.Close()
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	why := ReasonInitial
	for {
		listed, err := w.follow(ctx, s, why)
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("VIP watch: netlink failed; listing again", "iface", w.cfg.Interface, "vip", w.cfg.VIP, "err", err)
		if listed {
			bo.Reset() // the socket worked: a new one at once
		} else if !bo.Wait(ctx) {
			return
		}
		if w.reported {
			why = ReasonRelist
		}
		if w.gap != nil {
			w.gap()
		}
		for s, err = openSock(w.ns, w.family); err != nil; s, err = openSock(w.ns, w.family) {
			w.log.Warn("VIP watch: cannot open a netlink socket", "iface", w.cfg.Interface, "vip", w.cfg.VIP, "err", err)
			if !bo.Wait(ctx) {
				return
			}
		}
	}
}

// follow lists links and then addresses on s, reports the state with the
// reason why, and then reports each change the notifications bring, until
// s fails or ctx ends. listed tells whether the listing completed.
func (w *watcher) follow(ctx context.Context, s *sock, why Reason) (listed bool, err error) {
	defer s.close()
	defer context.AfterFunc(ctx, s.close)()
	w.mu.Lock()
	w.cur = s
	w.mu.Unlock()

	// One dump at a time per socket: links, then addresses. dumping is
	// the dump under way, 0 once both are done; interrupted is set when
	// the kernel says the table changed under the dump, which then may
	// have skipped an entry and is asked for again.
	dumping := unix.RTM_GETLINK
	w.track.forgetLinks()
	seq, err := s.dump(dumping, w.family)
	if err != nil {
		return false, err
	}
	interrupted := false
	for {
		msgs, from, err := s.s.Receive()
		if err != nil {
			return listed, fmt.Errorf("receive: %w", err)
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			ours := dumping != 0 && m.Header.Seq == seq
			if ours && m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch {
			case ours && m.Header.Type == unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return listed, errors.New("dump: short error message")
				}
				errno := -int32(binary.NativeEndian.Uint32(m.Data[0:4]))
				if errno == 0 {
					continue // an acknowledgement
				}
				return listed, fmt.Errorf("dump: %w", syscall.Errno(errno))
			case ours && m.Header.Type == unix.NLMSG_DONE:
				switch {
				case interrupted:
					interrupted = false
				case dumping == unix.RTM_GETLINK:
					dumping = unix.RTM_GETADDR
				default:
					dumping, listed = 0, true
					if err := w.report(ctx, why); err != nil {
						return listed, err
					}
					if w.listed != nil {
						w.listed(why)
					}
					continue
				}
				if dumping == unix.RTM_GETLINK {
					w.track.forgetLinks()
				} else {
					w.track.forgetAddrs()
				}
				if seq, err = s.dump(dumping, w.family); err != nil {
					return listed, err
				}
				continue
			}
			c, ok, err := decode(m)
			if err != nil {
				return listed, err
			}
			if ok {
				w.track.apply(c)
			}
			if ok && dumping == 0 {
				if err := w.report(ctx, c.reason()); err != nil {
					return listed, err
				}
			}
		}
	}
}

// report sends the tracker's state if it differs from the last one sent.
func (w *watcher) report(ctx context.Context, why Reason) error {
	p := w.track.present()
	if w.reported && p == w.present {
		return nil
	}
	ev := Event{Present: p, Time: time.Now(), Reason: why}
	select {
	case w.out <- ev:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.reported, w.present = true, p
	msg := "VIP absent"
	if p {
		msg = "VIP present"
	}
	w.log.Info(msg, "iface", w.cfg.Interface, "vip", w.cfg.VIP, "reason", why.String())
	return nil
}

// breakSocket closes the open socket, as a failure would: for tests.
func (w *watcher) breakSocket() {
	w.mu.Lock()
	s := w.cur
	w.mu.Unlock()
	if s != nil {
		s.close()
	}
}

// sock is a netlink socket joined to the link group and the VIP family's
// address group. Requests go out with unix.Sendto rather than
// nl.NetlinkSocket.Send, which addresses them to the socket's own groups,
// so that the kernel also multicasts each request to every other listener;
// mu keeps close from freeing the descriptor under a Sendto.
type sock struct {
	s      *nl.NetlinkSocket
	mu     sync.Mutex
	closed bool
}

func openSock(ns netns.NsHandle, family int) (*sock, error) {
	group := uint(unix.RTNLGRP_IPV4_IFADDR)
	if family == unix.AF_INET6 {
		group = unix.RTNLGRP_IPV6_IFADDR
	}
	// Entering a namespace takes CAP_SYS_ADMIN, even one's own: a thread
	// already in ns opens the socket where it is.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	here, err := netns.Get()
	if err == nil {
		defer here.Close()
	}
	var s *nl.NetlinkSocket
	if err == nil && here.Equal(ns) {
		s, err = nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK, group)
	} else {
		s, err = nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_LINK, group)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink subscribe: %w", err)
	}
	return &sock{s: s}, nil
}

func (s *sock) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.s.Close()
	}
}

// dump asks for all links (RTM_GETLINK) or all addresses of family
// (RTM_GETADDR). The answer comes in the socket's stream, each message
// with the returned sequence number, the last one NLMSG_DONE.
func (s *sock) dump(typ, family int) (uint32, error) {
	req := nl.NewNetlinkRequest(typ, unix.NLM_F_DUMP)
	if typ == unix.RTM_GETLINK {
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	} else {
		req.AddData(nl.NewIfAddrmsg(family))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	if err := unix.Sendto(s.s.GetFd(), req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("ask for a dump: %w", err)
	}
	return req.Seq, nil
}
