// Package master is the master's two links and its data-side logic: it
// serves mounts on port 9421 (sessions against mfsexports.cfg, metadata
// operations, chunk locations, write leases, file locks) and
// chunkservers on port 9420 (Registry: their space and the copies they
// hold), and runs the replication loop (Replicator) that keeps every
// chunk at its goal.
//
// # Sessions
//
// A mount connects (wire handshake, role client), then sends
// SessionOpen. The first line of the exports table that matches the
// peer's IP address and the requested directory decides: no line means
// EACCES with a message naming the address, the directory and the file,
// so an operator reading the mount's error knows which line to add. A
// line with password= needs the proof described in docs/PROTOCOL.md.
// The session is a meta.Session entry in the changelog, so it is
// replicated like any mutation and survives a failover; the session's
// open files (meta.Open) keep unlinked files alive.
//
// SessionEnd (umount) closes the session at once. A connection that
// just ends leaves its session for Config.SessionGrace (60 s by
// default), during which the mount may reconnect and resume it with its
// open files; after that the master closes it. A master that restarts
// forgets the timers, but not the sessions: a mount may resume its
// session from the restored metadata (sessions nobody resumes are not
// yet reaped after a restart: meta offers no list of sessions).
//
// # Requests
//
// Every request carries the caller's uid and gid; the export maps them
// (maproot for uid 0, mapall for the others) and the mapped pair owns
// what the request creates. Read-only exports answer every mutation
// with EROFS. The master checks no permissions, unlike MooseFS's: mounts
// use the kernel's default_permissions, which checks the attributes the
// master returns. So a client host's kernel is trusted to judge, and
// the exports table is the only access control done here. Inode numbers are
// not confined to the exported subtree: a client that guesses inode
// numbers outside it can reach them.
//
// A mutation's answer is kept by the session's request sequence number
// (retry.go), so one resent after a reconnect is answered, not run
// again; across a failover that needs the numbers in the changelog,
// which is later work.
//
// Mutations go through Store.Do, which returns once the entry is
// durable; concurrent requests, from one connection (the wire Mux runs
// up to 64 handlers at once) or many, share changelog flushes (group
// commit). Queries run under Store.Read.
//
// # Data
//
// Data goes between mounts and chunkservers; the master says where.
// ChunkRead answers a chunk's valid copies (chunks.go). ChunkWrite
// grants a write lease and answers the chain of copies to write;
// ChunkWriteEnd ends it (leases.go, which also explains how versions
// fence writers). Leases and file locks (package locks) live in this
// process only: a new master clears stale chunk locks and starts with no
// file locks, as MooseFS does. StatFS sums the chunkservers' space.
package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/exports"
	"github.com/carpfs/carpfs/internal/master/locks"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metastore"
	"github.com/carpfs/carpfs/internal/wire"
)

// Store is what the client link needs of the metadata: durable
// mutations and locked reads. *metastore.Store is the real one.
type Store interface {
	Do(ctx context.Context, op meta.Op) (meta.Result, error)
	// DoLazy applies op without waiting for it to be durable: for
	// bookkeeping whose loss in a crash harms nothing acknowledged.
	DoLazy(op meta.Op) (meta.Result, error)
	Read(f func(s *meta.State))
	MetaID() uint64
}

var _ Store = (*metastore.Store)(nil)

// DefaultSessionGrace is how long a session outlives its connection.
const DefaultSessionGrace = 60 * time.Second

// Config configures a Server.
type Config struct {
	Store   Store          // required
	Exports *exports.Table // nil means exports.Default()
	Name    string         // the master's name in handshakes and logs
	// AuthCode is the cluster secret; clients must prove it only if
	// AuthClients is set (MooseFS mounts never did).
	AuthCode    []byte
	AuthClients bool
	// SessionGrace is how long a session whose connection ended is kept
	// for the client to resume; 0 means DefaultSessionGrace.
	SessionGrace time.Duration
	// Term gives the master's current term for handshakes; nil uses the
	// metadata's last term (at least 1).
	Term func() uint64
	// Chunks is the chunkserver registry the data path uses; nil means
	// one that no chunkserver reaches, so writes get ENOSPC.
	Chunks *Registry
	// LeaseTime is how long a write lease lasts unless renewed; 0 means
	// DefaultLeaseTime.
	LeaseTime time.Duration
	// CommandTimeout bounds each command to a chunkserver made for a
	// client; 0 means DefaultCommandTimeout.
	CommandTimeout time.Duration
	Logger         *slog.Logger     // nil discards
	Clock          func() time.Time // nil means time.Now
}

// Validate reports a config that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("master config: no metadata store")
	case c.SessionGrace < 0:
		return fmt.Errorf("master config: negative session grace %s", c.SessionGrace)
	case c.LeaseTime < 0:
		return fmt.Errorf("master config: negative lease time %s", c.LeaseTime)
	case c.CommandTimeout < 0:
		return fmt.Errorf("master config: negative chunkserver command timeout %s", c.CommandTimeout)
	case c.AuthClients && len(c.AuthCode) == 0:
		return errors.New("master config: clients must prove an AUTH_CODE, but none is set")
	}
	return nil
}

// Server serves mounts.
type Server struct {
	cfg    Config
	store  Store
	log    *slog.Logger
	chunks *Registry
	leases *leaseTable
	locks  *locks.Table

	mu       sync.Mutex
	sessions map[uint64]*session // sessions this process knows, attached or in grace
	closing  bool
	timers   sync.WaitGroup // grace expiries running
}

// session is one mount's session.
type session struct {
	id   uint64
	exp  *exports.Export
	root uint32 // the exported directory's inode, 1 for the client
	dir  string
	addr netip.Addr
	// replies answers retried mutations; it has its own lock.
	replies replies

	// Guarded by Server.mu.
	conns int         // connections using it
	timer *time.Timer // running while conns == 0
	ended bool
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Exports == nil {
		cfg.Exports = exports.Default()
	}
	if cfg.SessionGrace == 0 {
		cfg.SessionGrace = DefaultSessionGrace
	}
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = DefaultLeaseTime
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.Chunks == nil {
		reg, err := NewRegistry(RegistryConfig{Name: cfg.Name})
		if err != nil {
			return nil, err
		}
		cfg.Chunks = reg
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Term == nil {
		st := cfg.Store
		cfg.Term = func() uint64 {
			var t uint64
			st.Read(func(s *meta.State) { t = s.Term() })
			return max(t, 1)
		}
	}
	return &Server{
		cfg: cfg, store: cfg.Store, log: cfg.Logger, chunks: cfg.Chunks,
		leases: newLeaseTable(), locks: locks.New(), sessions: map[uint64]*session{},
	}, nil
}

// Serve accepts mounts on ln until ctx ends, then closes ln, ends every
// connection and returns. Sessions stay in the metadata for the mounts
// to resume from the next master. It returns nil after ctx ends, else
// the error that stopped accepting.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var conns sync.WaitGroup
	conns.Go(func() { s.expireLeases(ctx) })
	var err error
	for {
		nc, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("master: accept: %w", aerr)
			}
			break
		}
		conns.Go(func() { s.serveConn(ctx, nc) })
	}
	cancel()
	conns.Wait()
	s.mu.Lock()
	s.closing = true
	for _, ss := range s.sessions {
		s.stopTimer(ss)
	}
	s.mu.Unlock()
	s.timers.Wait()
	return err
}

// serveConn runs one mount's connection.
func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	sc := wire.ServerConfig{
		Role: wire.RoleMaster, Name: s.cfg.Name,
		MetaID: s.store.MetaID(), Term: s.cfg.Term(),
		Serve: wire.Roles(wire.RoleClient), AuthCode: s.cfg.AuthCode,
	}
	if s.cfg.AuthClients {
		sc.AuthRoles = wire.Roles(wire.RoleClient)
	}
	conn, err := wire.ServerHandshake(ctx, nc, sc)
	if err != nil {
		s.log.Info("client handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
		return
	}
	cc := &clientConn{srv: s, peer: conn.String(), addr: remoteAddr(nc), version: conn.Version}
	err = wire.Serve(ctx, conn, wire.MuxConfig{Handler: cc.handle, Inline: inlineRequest})
	if err != nil {
		s.log.Info("client connection lost", "peer", cc.peer, "err", err)
	}
	cc.detach()
}

func remoteAddr(nc net.Conn) netip.Addr {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// attach registers a new session or attaches a connection to a known
// one. A session the metadata holds but this process does not know
// (after a restart or failover) is adopted.
func (s *Server) attach(ss *session, resume bool) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !resume {
		ss.conns = 1
		s.sessions[ss.id] = ss
		return ss, nil
	}
	old := s.sessions[ss.id]
	if old == nil {
		// A session the metadata holds but this process never saw: the
		// master restarted (or took over) since the client opened it.
		var e syscall.Errno
		s.store.Read(func(st *meta.State) { _, e = st.SessionOpens(ss.id) })
		if e != 0 {
			return nil, fmt.Errorf("resume session %d: it is closed or unknown: %w", ss.id, e)
		}
		ss.conns = 1
		s.sessions[ss.id] = ss
		return ss, nil
	}
	switch {
	case old.ended:
		return nil, fmt.Errorf("resume session %d: it is closed: %w", ss.id, errBadSession)
	case old.dir != ss.dir:
		return nil, fmt.Errorf("resume session %d: it mounts %s, not %s: %w", ss.id, old.dir, ss.dir, errInval)
	case old.addr != ss.addr && !ss.exp.DynamicIP:
		return nil, fmt.Errorf("resume session %d: it was opened from %s, not %s, and the export (line %d) has no dynamicip: %w",
			ss.id, old.addr, ss.addr, ss.exp.Line, errAccess)
	}
	s.stopTimer(old)
	old.conns++
	// The export stays the one the session was opened under: requests
	// of other connections may be reading it.
	old.addr = ss.addr
	return old, nil
}

// detachSession drops one connection from ss; the last one starts the
// grace period.
func (s *Server) detachSession(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.conns--
	if ss.conns > 0 || ss.ended || s.closing {
		return
	}
	s.timers.Add(1)
	ss.timer = time.AfterFunc(s.cfg.SessionGrace, func() {
		defer s.timers.Done()
		s.expire(ss)
	})
}

// stopTimer cancels ss's grace period, if one runs; s.mu is held. A
// timer stopped before it fired never calls Done itself.
func (s *Server) stopTimer(ss *session) {
	if ss.timer != nil && ss.timer.Stop() {
		s.timers.Done()
	}
	ss.timer = nil
}

// expire closes a session whose grace period ran out. The server lock
// is held across the close so that a resume cannot slip in between the
// decision and the entry.
func (s *Server) expire(ss *session) {
	s.mu.Lock()
	if ss.conns > 0 || ss.ended || s.closing {
		s.mu.Unlock()
		return
	}
	ss.ended = true
	ss.timer = nil
	delete(s.sessions, ss.id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.closeSession(ctx, ss.id)
	s.mu.Unlock()
	s.sessionGone(ctx, ss.id)
	if err != nil {
		s.log.Warn("closing an abandoned session failed", "session", ss.id, "err", err)
		return
	}
	s.log.Info("session closed after its grace period", "session", ss.id, "grace", s.cfg.SessionGrace)
}

// sessionGone releases what a closed session held in memory: its file
// locks and write leases.
func (s *Server) sessionGone(ctx context.Context, id uint64) {
	n := s.locks.DropSession(id)
	s.releaseLeases(ctx, id)
	if n > 0 {
		s.log.Debug("file locks released with their session", "session", id, "locks", n)
	}
}

func (s *Server) closeSession(ctx context.Context, id uint64) error {
	res, err := s.store.Do(ctx, &meta.SessionClose{ID: id})
	if err != nil {
		return fmt.Errorf("close session %d: %w", id, err)
	}
	if !res.Ok() {
		return fmt.Errorf("close session %d: %w", id, res.Err)
	}
	return nil
}

// end closes a session at its client's request.
func (s *Server) end(ctx context.Context, ss *session) error {
	s.mu.Lock()
	if ss.ended {
		s.mu.Unlock()
		return fmt.Errorf("end session %d: already closed: %w", ss.id, errBadSession)
	}
	ss.ended = true
	s.stopTimer(ss)
	delete(s.sessions, ss.id)
	s.mu.Unlock()
	err := s.closeSession(ctx, ss.id)
	s.sessionGone(ctx, ss.id)
	return err
}
