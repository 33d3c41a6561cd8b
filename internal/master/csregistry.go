package master

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/wire"
)

// This file is the master's chunkserver link (port 9420): a registry of
// the chunkservers that registered and of the chunk copies each holds.
//
// A chunkserver connects (handshake, role chunkserver, AUTH_CODE proved
// when one is set), registers its chunk list in pages, then heartbeats.
// The registry learns copies only from complete registrations and from
// the answers to its own commands, so what Copies returns is what the
// servers said, never a guess. A server whose connection ends, or that
// misses heartbeats for HeartbeatTimeout, is marked down and its copies
// are forgotten: the planner must not count on data it cannot reach.

// DefaultHeartbeatTimeout is how long a chunkserver may stay silent
// before the master marks it down.
const DefaultHeartbeatTimeout = 15 * time.Second

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	Name     string // the master's name in handshakes and logs
	MetaID   uint64 // the file system; chunkservers of another are refused
	AuthCode []byte // when set, chunkservers must prove it
	// Term gives the master's current term for handshakes; nil means 1.
	Term func() uint64
	// HeartbeatTimeout: 0 means DefaultHeartbeatTimeout.
	HeartbeatTimeout time.Duration
	// Versions, when set, gives the metadata's version of every chunk; a
	// completed registration is checked against it and stale copies and
	// orphans are logged (see Check). It may be slow (ChunkVersions walks
	// the namespace), so it runs off the connection's path.
	Versions func() (map[uint64]uint32, error)
	Logger   *slog.Logger     // nil discards
	Clock    func() time.Time // nil means time.Now
}

// ServerInfo is what the registry knows of one chunkserver.
type ServerInfo struct {
	Addr       string // data address, host:port: the server's identity
	Name       string // the name it gave in the handshake
	DataCenter string
	Rack       string
	Total      uint64
	Used       uint64
	Free       uint64
	Chunks     uint64 // as of the last heartbeat or registration
	Damaged    uint64
	// Connected is false once the server is down; Registered once its
	// chunk list arrived complete.
	Connected, Registered bool
	LastHeartbeat         time.Time
}

// Copy is one server's copy of a chunk.
type Copy struct {
	Server  string // data address
	Version uint32
	Length  uint32
	Damaged bool
}

// copyRec is a Copy held in the index.
type copyRec struct {
	srv     *csServer
	version uint32
	length  uint32
	damaged bool
}

// csServer is one chunkserver connection.
type csServer struct {
	mux  *wire.Mux
	info ServerInfo // guarded by Registry.mu

	// Registration in progress, touched only by the connection's handler,
	// which serves one request at a time.
	reg     *wire.CSRegister
	pending []wire.CSChunk
	ids     map[uint64]struct{} // chunks in the index; guarded by Registry.mu
	// lastSeen is when the server last sent anything; guarded by
	// Registry.mu. Unlike LastHeartbeat it runs before registration, so
	// a connection that never registers is timed out too.
	lastSeen time.Time
}

// Registry serves chunkservers and tracks their chunk copies.
type Registry struct {
	cfg RegistryConfig
	log *slog.Logger

	mu      sync.Mutex
	servers map[string]*csServer   // by data address, connected or down
	conns   map[*csServer]struct{} // every open connection, registered or not
	copies  map[uint64][]copyRec
	checks  sync.WaitGroup
}

// NewRegistry returns a Registry for cfg.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	if cfg.HeartbeatTimeout < 0 {
		return nil, fmt.Errorf("master: chunkserver registry: negative heartbeat timeout %s", cfg.HeartbeatTimeout)
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if cfg.Term == nil {
		cfg.Term = func() uint64 { return 1 }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Registry{cfg: cfg, log: cfg.Logger, servers: map[string]*csServer{}, conns: map[*csServer]struct{}{}, copies: map[uint64][]copyRec{}}, nil
}

// Serve accepts chunkservers on ln until ctx ends, then closes ln and
// every connection. It returns nil after ctx ends, else the error that
// stopped accepting.
func (r *Registry) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var conns sync.WaitGroup
	conns.Go(func() { r.watchHeartbeats(ctx) })
	var err error
	for {
		nc, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("master: accept chunkservers: %w", aerr)
			}
			break
		}
		conns.Go(func() { r.serveConn(ctx, nc) })
	}
	cancel()
	conns.Wait()
	r.checks.Wait()
	return err
}

// watchHeartbeats ends the connections of servers that went silent. A
// half-open TCP connection (a host that lost power) would otherwise
// look alive until the kernel gave up on it, many minutes later.
func (r *Registry) watchHeartbeats(ctx context.Context) {
	t := time.NewTicker(max(r.cfg.HeartbeatTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := r.cfg.Clock()
		var silent []*csServer
		r.mu.Lock()
		for s := range r.conns {
			if now.Sub(s.lastSeen) > r.cfg.HeartbeatTimeout {
				silent = append(silent, s)
			}
		}
		r.mu.Unlock()
		for _, s := range silent {
			r.log.Warn("chunkserver silent for too long; marking it down",
				"server", s.info.Addr, "peer", s.mux.Conn().String(), "timeout", r.cfg.HeartbeatTimeout)
			// Closing ends serveConn, which marks the server down.
			go s.mux.Close()
		}
	}
}

// serveConn runs one chunkserver's connection.
func (r *Registry) serveConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	conn, err := wire.ServerHandshake(ctx, nc, wire.ServerConfig{
		Role: wire.RoleMaster, Name: r.cfg.Name, MetaID: r.cfg.MetaID, Term: r.cfg.Term(),
		Serve: wire.Roles(wire.RoleChunkserver), AuthCode: r.cfg.AuthCode,
	})
	if err != nil {
		r.log.Warn("chunkserver handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
		return
	}
	s := &csServer{ids: map[uint64]struct{}{}, lastSeen: r.cfg.Clock()}
	s.info.Name = conn.PeerName
	// One request at a time, in arrival order: registration pages must
	// be applied before the Done that commits them, and a damage report
	// after the registration that listed the chunk.
	// Requests wait for s.mux to be set: a registration must not publish
	// a server whose connection others cannot reach yet.
	ready := make(chan struct{})
	s.mux = wire.NewMux(conn, wire.MuxConfig{
		Handler: func(ctx context.Context, f wire.Frame) (wire.Message, error) {
			<-ready
			return r.handle(s, conn, f)
		},
		MaxInFlight: 1,
	})
	r.mu.Lock()
	r.conns[s] = struct{}{}
	r.mu.Unlock()
	close(ready)
	select {
	case <-ctx.Done():
		_ = s.mux.Refuse(wire.RefuseShutdown, "the master is stopping")
	case <-s.mux.Done():
		_ = s.mux.Close()
	}
	r.down(s, s.mux.Err())
}

// handle serves one request of a chunkserver.
func (r *Registry) handle(s *csServer, conn *wire.Conn, f wire.Frame) (wire.Message, error) {
	m, err := wire.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	now := r.cfg.Clock()
	r.mu.Lock()
	s.lastSeen = now
	r.mu.Unlock()
	switch m := m.(type) {
	case *wire.Ping:
		return &wire.Pong{Data: m.Data}, nil
	case *wire.CSRegister:
		s.reg, s.pending = m, make([]wire.CSChunk, 0, min(m.ChunkCount, 1<<20))
		return &wire.Ok{}, nil
	case *wire.CSRegisterChunks:
		if s.reg == nil {
			return nil, fmt.Errorf("chunk page without CSRegister first: %w", syscall.EPROTO)
		}
		if uint64(len(s.pending)+len(m.Chunks)) > s.reg.ChunkCount {
			return nil, fmt.Errorf("more chunks than the %d announced: %w", s.reg.ChunkCount, syscall.EPROTO)
		}
		s.pending = append(s.pending, m.Chunks...)
		return &wire.Ok{}, nil
	case *wire.CSRegisterDone:
		return r.commit(s, conn, now)
	case *wire.CSHeartbeat:
		r.mu.Lock()
		s.info.Total, s.info.Used, s.info.Free = m.Total, m.Used, m.Free
		s.info.Chunks, s.info.Damaged = m.Chunks, m.Damaged
		s.info.LastHeartbeat = now
		r.mu.Unlock()
		return &wire.Ok{}, nil
	case *wire.CSChunkDamaged:
		r.mu.Lock()
		s.info.LastHeartbeat = now
		r.update(s, m.ID, func(c *copyRec) bool {
			if c.version == m.Version {
				c.damaged = true
			}
			return true
		})
		r.mu.Unlock()
		r.log.Warn("chunkserver reports a damaged copy", "server", s.info.Addr, "chunk", fmt.Sprintf("%016X", m.ID), "version", m.Version)
		return &wire.Ok{}, nil
	case *wire.CSChunkLost:
		r.mu.Lock()
		s.info.LastHeartbeat = now
		r.update(s, m.ID, func(c *copyRec) bool { return c.version != m.Version })
		r.mu.Unlock()
		r.log.Warn("chunkserver lost a copy", "server", s.info.Addr, "chunk", fmt.Sprintf("%016X", m.ID), "version", m.Version)
		return &wire.Ok{}, nil
	}
	return nil, fmt.Errorf("%s is not a request the master serves chunkservers: %w", f.Type, syscall.ENOSYS)
}

// commit makes a complete registration the server's truth: its old
// copies, if any, are replaced at once, so readers of the index never see
// half a list.
func (r *Registry) commit(s *csServer, conn *wire.Conn, now time.Time) (wire.Message, error) {
	reg := s.reg
	if reg == nil {
		return nil, fmt.Errorf("CSRegisterDone without CSRegister: %w", syscall.EPROTO)
	}
	chunks := s.pending
	s.reg, s.pending = nil, nil
	if uint64(len(chunks)) != reg.ChunkCount {
		return nil, fmt.Errorf("registration carried %d chunks, %d were announced: %w", len(chunks), reg.ChunkCount, syscall.EPROTO)
	}
	addr, err := dataAddr(reg.Addr, conn.NetConn)
	if err != nil {
		return nil, fmt.Errorf("register: %w: %w", err, syscall.EINVAL)
	}
	r.mu.Lock()
	if s.info.Addr != "" && s.info.Addr != addr {
		r.mu.Unlock()
		return nil, fmt.Errorf("register as %s: this connection registered as %s: %w", addr, s.info.Addr, syscall.EINVAL)
	}
	old := r.servers[addr]
	if old != nil && old != s {
		r.forgetLocked(old)
		old.info.Connected = false
	}
	r.forgetLocked(s)
	s.info.Addr = addr
	s.info.DataCenter, s.info.Rack = reg.DataCenter, reg.Rack
	s.info.Total, s.info.Used, s.info.Free = reg.Total, reg.Used, reg.Free
	s.info.Chunks, s.info.Damaged = uint64(len(chunks)), 0
	s.info.Connected, s.info.Registered, s.info.LastHeartbeat = true, true, now
	for _, c := range chunks {
		if c.Damaged {
			s.info.Damaged++
		}
		r.addLocked(s, c.ID, copyRec{version: c.Version, length: c.Length, damaged: c.Damaged})
	}
	r.servers[addr] = s
	r.mu.Unlock()
	if old != nil && old != s {
		// The same server connected again (a restart the master has not
		// noticed yet): the old connection is a ghost.
		go old.mux.Close()
	}
	r.log.Info("chunkserver registered", "server", addr, "name", s.info.Name, "chunks", len(chunks),
		"damaged", s.info.Damaged, "dc", reg.DataCenter, "rack", reg.Rack, "free", reg.Free)
	if r.cfg.Versions != nil {
		r.checks.Go(func() { r.checkServer(addr) })
	}
	return &wire.Ok{}, nil
}

// dataAddr resolves the address a chunkserver announced: an empty or
// unspecified host is the address its connection comes from.
func dataAddr(announced string, nc net.Conn) (string, error) {
	host, port, err := net.SplitHostPort(announced)
	if err != nil {
		return "", fmt.Errorf("data address %q: %w", announced, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if ap := remoteAddr(nc); ap.IsValid() {
			host = ap.String()
		}
	}
	return net.JoinHostPort(host, port), nil
}

// down marks a server down and forgets its copies, unless another
// connection of the same server took its place meanwhile.
func (r *Registry) down(s *csServer, why error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, s)
	s.info.Connected = false
	if s.info.Addr == "" || r.servers[s.info.Addr] != s {
		return
	}
	n := len(s.ids)
	r.forgetLocked(s)
	r.log.Warn("chunkserver down; its copies are forgotten", "server", s.info.Addr, "copies", n, "err", why)
}

// addLocked indexes one copy of id on s, replacing an older one of s.
func (r *Registry) addLocked(s *csServer, id uint64, c copyRec) {
	c.srv = s
	cs := r.copies[id]
	for i := range cs {
		if cs[i].srv == s {
			cs[i] = c
			return
		}
	}
	r.copies[id] = append(cs, c)
	s.ids[id] = struct{}{}
}

// update applies f to s's copy of id; f returns false to drop the copy.
func (r *Registry) update(s *csServer, id uint64, f func(*copyRec) bool) {
	cs := r.copies[id]
	for i := range cs {
		if cs[i].srv != s {
			continue
		}
		if !f(&cs[i]) {
			cs = slices.Delete(cs, i, i+1)
			delete(s.ids, id)
			if len(cs) == 0 {
				delete(r.copies, id)
			} else {
				r.copies[id] = cs
			}
		}
		return
	}
}

// forgetLocked drops every copy of s from the index.
func (r *Registry) forgetLocked(s *csServer) {
	for id := range s.ids {
		r.update(s, id, func(*copyRec) bool { return false })
	}
	clear(s.ids)
}

// Servers lists every chunkserver seen since start, connected or down,
// ordered by address.
func (r *Registry) Servers() []ServerInfo {
	r.mu.Lock()
	out := make([]ServerInfo, 0, len(r.servers))
	for _, s := range r.servers {
		out = append(out, s.info)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b ServerInfo) int { return cmp.Compare(a.Addr, b.Addr) })
	return out
}

// Copies lists the copies of a chunk on connected servers, ordered by
// server address.
func (r *Registry) Copies(id uint64) []Copy {
	r.mu.Lock()
	out := make([]Copy, 0, len(r.copies[id]))
	for _, c := range r.copies[id] {
		out = append(out, Copy{Server: c.srv.info.Addr, Version: c.version, Length: c.length, Damaged: c.damaged})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Copy) int { return cmp.Compare(a.Server, b.Server) })
	return out
}

// ErrNoServer is returned by Command for a server that is not connected.
var ErrNoServer = errors.New("no such chunkserver connected")

// Command sends one of the commands CSCreate, CSDelete, CSSetVersion,
// CSTruncate or CSReplicate to the server at addr and waits for its
// answer. The index is updated from the answer: a created or replicated
// copy is added, a deleted one (or one the server does not have, ENOENT)
// removed, a new version or length recorded. A refusal comes back as a
// *wire.RemoteError whose errno (errors.Is(err, syscall.ENOENT), ESTALE,
// ...) says why.
func (r *Registry) Command(ctx context.Context, addr string, cmd wire.Message) error {
	switch cmd.(type) {
	case *wire.CSCreate, *wire.CSDelete, *wire.CSSetVersion, *wire.CSTruncate, *wire.CSReplicate:
	default:
		return fmt.Errorf("master: command %s: not a chunkserver command", cmd.Type())
	}
	r.mu.Lock()
	s := r.servers[addr]
	if s == nil || !s.info.Connected {
		r.mu.Unlock()
		return fmt.Errorf("master: command %s to %s: %w", cmd.Type(), addr, ErrNoServer)
	}
	r.mu.Unlock()
	err := s.mux.CallInto(ctx, cmd, &wire.Ok{})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.servers[addr] != s {
		// The server reconnected meanwhile; its new registration is the
		// truth.
		return wrapCmd(cmd, addr, err)
	}
	switch c := cmd.(type) {
	case *wire.CSCreate:
		if err == nil {
			r.addLocked(s, c.ID, copyRec{version: c.Version})
		}
	case *wire.CSReplicate:
		if err == nil {
			// The length is learnt at the next registration; nothing
			// here reads it.
			r.addLocked(s, c.ID, copyRec{version: c.Version})
		}
	case *wire.CSDelete:
		if err == nil || errors.Is(err, syscall.ENOENT) {
			r.update(s, c.ID, func(*copyRec) bool { return false })
		}
	case *wire.CSSetVersion:
		if err == nil {
			r.update(s, c.ID, func(x *copyRec) bool { x.version = c.New; return true })
		}
	case *wire.CSTruncate:
		if err == nil {
			r.update(s, c.ID, func(x *copyRec) bool { x.length = c.Length; return true })
		}
	}
	return wrapCmd(cmd, addr, err)
}

func wrapCmd(cmd wire.Message, addr string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("master: command %s to %s: %w", cmd.Type(), addr, err)
}
