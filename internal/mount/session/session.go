// Package session keeps a mount's session with the master alive across
// lost connections.
//
// A Session owns the current *client.Client. Every metadata operation
// runs through Do, which hands it the client; an operation that fails
// because the connection ended is not reported but run again once a new
// connection is up. One goroutine redials the master with backoff (100 ms
// doubling to 5 s), resolving its name again each time so that a name
// following a failover VIP works, and resumes the same session
// (client.Config.SessionID and Seq), so the mount keeps its open files.
// Operations wait meanwhile, each for at most Config.Timeout from the
// moment it first saw the connection fail; after that it fails with EIO.
//
// A master that refuses the resume (the session's grace period ran out)
// makes the Session open a new one and call
// Config.Reopened so that the mount can register its open files again.
//
// A connection that is up but no longer answers (a dead peer without a
// TCP reset) is found by a heartbeat: a GETATTR of the root every
// Config.Heartbeat while the Session is open, given three heartbeats to
// answer before the connection is dropped.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// Defaults for Config.
const (
	DefaultTimeout     = 3 * time.Minute
	DefaultHeartbeat   = 5 * time.Second
	DefaultDialTimeout = 10 * time.Second
	minBackoff         = 100 * time.Millisecond
	maxBackoff         = 5 * time.Second
)

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("session: closed")

// Config configures a Session.
type Config struct {
	Addr   string        // master HOST:PORT
	Client client.Config // Name, Path, Password, Info, AuthCode; SessionID and Seq are managed here
	// Timeout bounds how long an operation waits for a lost master
	// before it fails with EIO; 0 means DefaultTimeout.
	Timeout time.Duration
	// Heartbeat is how often an open connection is probed; 0 means
	// DefaultHeartbeat, negative disables the probe.
	Heartbeat time.Duration
	// DialTimeout bounds one connection attempt (dial, handshake,
	// session open); 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// Reopened is called, before operations resume, when the master
	// refused to resume the session and a new one replaced it.
	Reopened func(ctx context.Context, c *client.Client) error
	Logger   *slog.Logger // nil discards
}

// Session is a master session that survives lost connections.
type Session struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	cur      *client.Client // nil while reconnecting
	gen      uint64         // raised with every new connection
	up       chan struct{}  // closed when cur is set; replaced when it is lost
	session  uint64
	metaID   uint64
	term     uint64
	readOnly bool
	closed   bool
	redial   bool // the redial goroutine runs

	stop context.CancelFunc // ends the heartbeat and redial goroutines
	ctx  context.Context
	wg   sync.WaitGroup
}

// Open connects to the master and opens a new session. A master that
// cannot be reached is retried with backoff until ctx ends; a refusal
// (no export, wrong password, another file system) fails at once.
func Open(ctx context.Context, cfg Config) (*Session, error) {
	if cfg.Addr == "" {
		return nil, errors.New("session: no master address")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Session{cfg: cfg, log: cfg.Logger, up: make(chan struct{})}
	s.ctx, s.stop = context.WithCancel(context.Background())
	backoff := minBackoff
	for {
		c, err := s.dial(ctx, 0, 0)
		if err == nil {
			s.install(c)
			break
		}
		var re *wire.RemoteError
		if errors.As(err, &re) || errors.Is(err, wire.ErrRefused) || ctx.Err() != nil {
			s.stop()
			return nil, err
		}
		s.log.Warn("master unreachable; retrying", "master", cfg.Addr, "err", err)
		select {
		case <-ctx.Done():
			s.stop()
			return nil, fmt.Errorf("session: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
	if cfg.Heartbeat > 0 {
		s.wg.Go(s.heartbeat)
	}
	return s, nil
}

// dial opens one connection, resuming session id (0: a new session)
// with request numbers going on after seq.
func (s *Session) dial(ctx context.Context, id, seq uint64) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	cc := s.cfg.Client
	s.mu.Lock()
	cc.SessionID, cc.Seq, cc.MetaID, cc.Term = id, seq, s.metaID, s.term
	s.mu.Unlock()
	return client.Dial(ctx, s.cfg.Addr, cc)
}

// install makes c the current connection.
func (s *Session) install(c *client.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = c
	s.gen++
	s.session = c.Session()
	s.readOnly = c.ReadOnly()
	if conn := c.Conn(); conn != nil {
		s.metaID = conn.MetaID
		s.term = max(s.term, conn.Term)
	}
	close(s.up)
}

// current returns the connection and its generation, waiting for one
// while the master is being redialed, until deadline (zero: no wait
// bound but ctx's).
func (s *Session) current(ctx context.Context, deadline time.Time) (*client.Client, uint64, error) {
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		c, gen, up, closed := s.cur, s.gen, s.up, s.closed
		s.mu.Unlock()
		if closed {
			return nil, 0, ErrClosed
		}
		if c != nil {
			return c, gen, nil
		}
		if timeout == nil && !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-timeout:
			return nil, 0, fmt.Errorf("session: master %s unreachable for %s: %w", s.cfg.Addr, s.cfg.Timeout, syscall.EIO)
		case <-s.ctx.Done():
			return nil, 0, ErrClosed
		}
	}
}

// lost marks connection gen as gone and starts redialing, unless that
// happened already.
func (s *Session) lost(gen uint64, why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen || s.cur == nil || s.closed {
		return
	}
	old := s.cur
	s.cur = nil
	s.up = make(chan struct{})
	old.Drop()
	s.log.Warn("master connection lost; reconnecting", "master", s.cfg.Addr, "session", s.session, "err", why)
	if !s.redial {
		s.redial = true
		s.wg.Go(func() { s.reconnect(old) })
	}
}

// reconnect redials until a connection is up or the Session closes.
func (s *Session) reconnect(old *client.Client) {
	defer func() {
		s.mu.Lock()
		s.redial = false
		s.mu.Unlock()
	}()
	backoff := minBackoff
	id, seq := old.Session(), old.Seq()
	since := time.Now()
	for attempt := 1; ; attempt++ {
		c, err := s.dial(s.ctx, id, seq)
		var re *wire.RemoteError
		if err != nil && id != 0 && errors.As(err, &re) {
			// The master refused to resume (it closed the session after
			// its grace period, or cannot adopt it): open a new one.
			s.log.Warn("master no longer knows the session; opening a new one", "session", id, "err", err)
			id, seq = 0, 0
			c, err = s.dial(s.ctx, 0, 0)
			if err == nil && s.cfg.Reopened != nil {
				ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
				err = s.cfg.Reopened(ctx, c)
				cancel()
				if err != nil {
					err = fmt.Errorf("register open files in the new session: %w", err)
					c.Drop()
				}
			}
		}
		if err == nil {
			s.install(c)
			s.log.Info("master connection restored", "master", s.cfg.Addr, "session", c.Session(), "attempts", attempt, "after", time.Since(since).Round(time.Millisecond))
			return
		}
		if s.ctx.Err() != nil {
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("master reconnection failed; retrying", "master", s.cfg.Addr, "attempts", attempt, "err", err)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Do runs op with the current client. If op fails because the
// connection ended, it runs again on the next connection; it fails with
// EIO once the master has been unreachable for Config.Timeout since op
// first failed, or with ctx's error when ctx ends. Any other error of
// op is returned as it is.
//
// A mutation whose connection ended before its answer arrived may have
// been applied; running it again may then fail (EEXIST for a create).
func (s *Session) Do(ctx context.Context, op func(c *client.Client) error) error {
	var deadline time.Time
	for {
		c, gen, err := s.current(ctx, deadline)
		if err != nil {
			return err
		}
		err = op(c)
		if err == nil || !errors.Is(err, wire.ErrClosed) || ctx.Err() != nil {
			return err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(s.cfg.Timeout)
		} else if time.Now().After(deadline) {
			return fmt.Errorf("session: master %s unreachable for %s: %w: %w", s.cfg.Addr, s.cfg.Timeout, err, syscall.EIO)
		}
		s.lost(gen, err)
	}
}

// heartbeat probes the connection so that a silent peer is noticed.
func (s *Session) heartbeat() {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		c, gen := s.cur, s.gen
		s.mu.Unlock()
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, 3*s.cfg.Heartbeat)
		_, err := c.GetAttr(ctx, client.Cred{}, meta.RootInode)
		cancel()
		switch {
		case s.ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			s.lost(gen, fmt.Errorf("no answer to a heartbeat in %s", 3*s.cfg.Heartbeat))
		case errors.Is(err, wire.ErrClosed):
			s.lost(gen, err)
		}
	}
}

// ID is the session id (it changes only if the master forgot the
// session and a new one replaced it).
func (s *Session) ID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.session
}

// MetaID is the file system's id, learned from the master.
func (s *Session) MetaID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metaID
}

// Term is the highest master term seen.
func (s *Session) Term() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.term
}

// ReadOnly says whether the export is read-only.
func (s *Session) ReadOnly() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readOnly
}

// DropConnection closes the current connection as a network failure
// would, keeping the session: operations wait and resume on the next
// connection. For tests and for an operator's forced reconnect.
func (s *Session) DropConnection() {
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	s.lost(gen, errors.New("connection dropped on request"))
}

// Close ends the session at the master (umount), so that it releases
// the session's open files and locks at once, and stops redialing.
// Without a connection the session is left for the master to expire.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	c := s.cur
	s.cur = nil
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	if c == nil {
		return fmt.Errorf("session: end session: no connection to the master; it will expire the session")
	}
	return c.Close(ctx)
}
