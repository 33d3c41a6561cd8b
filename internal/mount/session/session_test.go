package session_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metastore"
	"github.com/carpfs/carpfs/internal/mount/session"
)

// masterProc is a master on a real metadata store, which the test can
// stop and start again on the same address.
type masterProc struct {
	t     *testing.T
	addr  string
	store *metastore.Store
	grace time.Duration
	stop  func()
}

func startMaster(t *testing.T, grace time.Duration) *masterProc {
	t.Helper()
	st, err := metastore.Open(context.Background(), metastore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	m := &masterProc{t: t, store: st, grace: grace}
	m.start("127.0.0.1:0")
	t.Cleanup(func() {
		m.stop()
		st.Close()
	})
	return m
}

func (m *masterProc) start(addr string) {
	m.t.Helper()
	srv, err := master.New(master.Config{Store: m.store, Name: "m", SessionGrace: m.grace})
	if err != nil {
		m.t.Fatal(err)
	}
	var ln net.Listener
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if i == 50 {
			m.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	m.stop = func() { cancel(); <-done; m.stop = func() {} }
}

// proxy forwards connections to a master; cut ends them all and refuses
// new ones until heal.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close() }()
		go func() { io.Copy(c, u); c.Close() }()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func open(t *testing.T, cfg session.Config) *session.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cfg.Client.Name == "" {
		cfg.Client.Name = "test"
	}
	s, err := session.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func create(ctx context.Context, s *session.Session, name string, open bool) (uint32, error) {
	var ino uint32
	err := s.Do(ctx, func(c *client.Client) error {
		a, err := c.Create(ctx, client.Cred{}, meta.RootInode, name, client.TypeFile, 0o644, 0, open)
		ino = a.Inode
		return err
	})
	return ino, err
}

func lookup(ctx context.Context, s *session.Session, name string) error {
	return s.Do(ctx, func(c *client.Client) error {
		_, err := c.Lookup(ctx, client.Cred{}, meta.RootInode, name)
		return err
	})
}

// TestResumeAfterDrop: a dropped connection is redialed and the same
// session goes on; its open file survives an unlink.
func TestResumeAfterDrop(t *testing.T) {
	m := startMaster(t, 0)
	s := open(t, session.Config{Addr: m.addr})
	ctx := context.Background()
	id := s.ID()
	ino, err := create(ctx, s, "f", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Do(ctx, func(c *client.Client) error { return c.Unlink(ctx, client.Cred{}, meta.RootInode, "f") }); err != nil {
		t.Fatal(err)
	}
	s.DropConnection()
	var a struct{ nlink uint32 }
	if err := s.Do(ctx, func(c *client.Client) error {
		at, err := c.GetAttr(ctx, client.Cred{}, ino)
		a.nlink = at.Nlink
		return err
	}); err != nil {
		t.Fatalf("open unlinked file lost across a reconnect: %v", err)
	}
	if s.ID() != id || a.nlink != 0 {
		t.Fatalf("session %d after reconnect, was %d; nlink %d", s.ID(), id, a.nlink)
	}
}

// TestWaitForMaster: operations issued while the master is down wait
// and complete once it is back.
func TestWaitForMaster(t *testing.T) {
	m := startMaster(t, 0)
	s := open(t, session.Config{Addr: m.addr, Timeout: 30 * time.Second})
	ctx := context.Background()
	if _, err := create(ctx, s, "before", false); err != nil {
		t.Fatal(err)
	}
	addr := m.addr
	m.stop()
	errc := make(chan error, 1)
	go func() { _, err := create(ctx, s, "during", false); errc <- err }()
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("create finished while the master was down: %v", err)
	default:
	}
	m.start(addr)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("create after the master came back: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("create still waiting 20 s after the master came back")
	}
	if err := lookup(ctx, s, "during"); err != nil {
		t.Fatal(err)
	}
}

// TestTimeout: a master that stays away fails operations with EIO after
// the configured time, not before.
func TestTimeout(t *testing.T) {
	m := startMaster(t, 0)
	s := open(t, session.Config{Addr: m.addr, Timeout: 700 * time.Millisecond})
	m.stop()
	start := time.Now()
	err := lookup(context.Background(), s, "x")
	took := time.Since(start)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("lookup with no master: %v, want EIO", err)
	}
	if took < 600*time.Millisecond || took > 10*time.Second {
		t.Fatalf("EIO after %s, want about 700ms", took)
	}
}

// TestNewSessionAfterGrace: a mount cut off for longer than the
// master's grace period gets a new session, and Reopened registers its
// open files again.
func TestNewSessionAfterGrace(t *testing.T) {
	m := startMaster(t, 200*time.Millisecond)
	p := newProxy(t, m.addr)
	var reopened []uint64
	var ino uint32
	s := open(t, session.Config{Addr: p.addr(), Timeout: 30 * time.Second, Reopened: func(ctx context.Context, c *client.Client) error {
		reopened = append(reopened, c.Session())
		_, err := c.Open(ctx, client.Cred{}, ino, 0)
		return err
	}})
	ctx := context.Background()
	old := s.ID()
	var err error
	if ino, err = create(ctx, s, "f", true); err != nil {
		t.Fatal(err)
	}
	p.cut()
	time.Sleep(time.Second) // grace expires; the session is closed
	var opens map[uint32]uint32
	m.store.Read(func(st *meta.State) { opens, _ = st.SessionOpens(old) })
	if opens != nil {
		t.Fatal("session still open after its grace period")
	}
	p.heal()
	if err := lookup(ctx, s, "f"); err != nil {
		t.Fatal(err)
	}
	if s.ID() == old || len(reopened) != 1 || reopened[0] != s.ID() {
		t.Fatalf("session %d (old %d), reopened %v", s.ID(), old, reopened)
	}
	m.store.Read(func(st *meta.State) { opens, _ = st.SessionOpens(s.ID()) })
	if opens[ino] != 1 {
		t.Fatalf("new session's opens %v, want inode %d once", opens, ino)
	}
}

// TestRefused: a master that refuses the mount fails Open at once.
func TestRefused(t *testing.T) {
	m := startMaster(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := session.Open(ctx, session.Config{Addr: m.addr, Client: client.Config{Name: "t", Path: "/nonexistent"}})
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("mounting a missing directory: %v, want ENOENT", err)
	}
}

// TestClose ends the session at the master.
func TestClose(t *testing.T) {
	m := startMaster(t, time.Hour)
	ctx := context.Background()
	s, err := session.Open(ctx, session.Config{Addr: m.addr, Client: client.Config{Name: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var e syscall.Errno
	m.store.Read(func(st *meta.State) { _, e = st.SessionOpens(id) })
	if e != syscall.EBADF {
		t.Fatalf("session %d still known after Close (errno %v)", id, e)
	}
	if err := lookup(ctx, s, "x"); !errors.Is(err, session.ErrClosed) {
		t.Fatalf("Do after Close: %v", err)
	}
}
