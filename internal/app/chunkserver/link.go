package chunkserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/backoff"
	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/wire"
)

// LinkConfig configures the chunkserver's link to its master.
type LinkConfig struct {
	// Master is host:port of the master's chunkserver port. The host is
	// resolved again on every connection, so a name that moves (a VIP's
	// DNS name) is followed.
	Master string
	// DataAddr is the data address announced to the master; an empty
	// host means "the address my connection comes from".
	DataAddr         string
	DataCenter, Rack string
	Name             string // this server's name in handshakes and logs
	AuthCode         []byte
	// StateDir holds StateFile (DATA_PATH). Required.
	StateDir string
	// Timeout bounds dialing, the handshake and every request to the
	// master (MASTER_TIMEOUT), and each read from another chunkserver
	// when replicating; 0 means 10 s.
	Timeout time.Duration
	// Heartbeat is the interval between heartbeats; 0 means Timeout/4.
	Heartbeat time.Duration
	// ReconnectDelay caps the backoff between connection attempts
	// (MASTER_RECONNECTION_DELAY); 0 means 5 s. Attempts start 100 ms
	// apart and double, so a failover is followed quickly.
	ReconnectDelay time.Duration
	// ScrubRate is the bytes per second the background scrub reads
	// (HDD_TEST_SPEED); 0 disables scrubbing.
	ScrubRate int64
	// ScrubPause is the pause between two scrub passes; 0 means 1 hour.
	ScrubPause time.Duration
	// OnRegistered is called after every completed registration; the
	// daemon tells systemd it is ready on the first.
	OnRegistered func()
	Logger       *slog.Logger // nil discards
}

// Link keeps a chunkserver registered with its master: it connects with
// backoff, registers the chunk list, heartbeats, reports damaged chunks
// found by a background scrub or by the data port, and executes the
// master's commands on the chunk store, replication included. It
// reconnects, and registers again, whenever the connection is lost.
type Link struct {
	cfg   LinkConfig
	store *chunkstore.Store
	log   *slog.Logger
	pool  *chunkio.Pool // reads replication sources

	mu          sync.Mutex
	st          state
	lastErr     error
	replicating map[uint64]bool // chunks with a CSReplicate accepted

	damaged  chan chunkstore.BadChunk
	replicas chan struct{} // one token per copy being made
}

// NewLink returns a Link for store, loading the persisted term.
func NewLink(store *chunkstore.Store, cfg LinkConfig) (*Link, error) {
	switch {
	case cfg.Master == "":
		return nil, errors.New("chunkserver: link: no master address")
	case cfg.StateDir == "":
		return nil, errors.New("chunkserver: link: no state directory")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = cfg.Timeout / 4
	}
	if cfg.ReconnectDelay <= 0 {
		cfg.ReconnectDelay = 5 * time.Second
	}
	if cfg.ScrubPause <= 0 {
		cfg.ScrubPause = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("chunkserver: link: %w", err)
	}
	l := &Link{
		cfg: cfg, store: store, log: cfg.Logger, st: st,
		replicating: map[uint64]bool{},
		damaged:     make(chan chunkstore.BadChunk, 1024),
		replicas:    make(chan struct{}, maxReplicating),
	}
	l.pool = chunkio.NewPool(chunkio.Config{
		Role: wire.RoleChunkserver, Name: cfg.Name, MetaID: st.MetaID, AuthCode: cfg.AuthCode,
		Term: l.Term, Timeout: cfg.Timeout, Logger: cfg.Logger,
	})
	return l, nil
}

// MetaID is the file system this chunkserver belongs to, 0 until a
// master has told it.
func (l *Link) MetaID() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.MetaID
}

// ReportDamaged queues a report to the master of a copy found damaged
// (the data port calls it). A report that finds the queue full, or no
// master, is dropped: the chunk store marks the copy damaged, so the
// next registration lists it anyway.
func (l *Link) ReportDamaged(id uint64, version uint32) {
	// The chunk store has logged the damage already.
	l.log.Debug("reporting a damaged copy to the master", "chunk", fmt.Sprintf("%016X", id), "version", version)
	select {
	case l.damaged <- chunkstore.BadChunk{ID: id, Version: version}:
	default:
	}
}

// Term is the highest master term this chunkserver has seen.
func (l *Link) Term() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.Term
}

// LastErr is why the last connection attempt or session ended, nil
// while registered.
func (l *Link) LastErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

func (l *Link) setErr(err error) {
	l.mu.Lock()
	l.lastErr = err
	l.mu.Unlock()
}

// Run keeps the link up until ctx ends; it returns nil then. It returns
// an error only when the term or metaid cannot be persisted, since going
// on would forget a fence.
func (l *Link) Run(ctx context.Context) error {
	defer l.pool.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.dropPartialCopies()
	if l.cfg.ScrubRate > 0 {
		wg.Go(func() { l.scrub(ctx) })
	}
	// Jitter keeps a rack of chunkservers from reconnecting in step.
	wait := backoff.Backoff{Min: 100 * time.Millisecond, Max: l.cfg.ReconnectDelay}
	for ctx.Err() == nil {
		registered, err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		l.setErr(err)
		var fatal *persistError
		if errors.As(err, &fatal) {
			return err
		}
		if registered {
			wait.Reset()
		}
		l.log.Warn("master link down; reconnecting", "master", l.cfg.Master, "in", wait.Next(), "err", err)
		if !wait.Wait(ctx) {
			return nil
		}
	}
	return nil
}

// persistError is a failure to save the state file.
type persistError struct{ err error }

func (e *persistError) Error() string { return e.err.Error() }
func (e *persistError) Unwrap() error { return e.err }

// session runs one connection: dial, handshake, register, then
// heartbeats until something fails. registered says whether it got that
// far.
func (l *Link) session(ctx context.Context) (registered bool, err error) {
	d := net.Dialer{Timeout: l.cfg.Timeout}
	nc, err := d.DialContext(ctx, "tcp", l.cfg.Master)
	if err != nil {
		return false, fmt.Errorf("dial master: %w", err)
	}
	l.mu.Lock()
	st := l.st
	l.mu.Unlock()
	conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{
		Role: wire.RoleChunkserver, Name: l.cfg.Name, MetaID: st.MetaID, Term: st.Term,
		AuthCode: l.cfg.AuthCode, PeerRole: wire.RoleMaster, Timeout: l.cfg.Timeout,
	})
	if err != nil {
		_ = nc.Close()
		return false, err
	}
	// Remember the term and file system before acting on any command of
	// this master: after a crash this chunkserver must still refuse the
	// masters it replaced.
	if conn.Term > st.Term || st.MetaID == 0 && conn.MetaID != 0 {
		nst := state{MetaID: conn.MetaID, Term: max(conn.Term, st.Term)}
		if err := saveState(l.cfg.StateDir, nst); err != nil {
			_ = nc.Close()
			return false, &persistError{err}
		}
		l.mu.Lock()
		l.st = nst
		l.mu.Unlock()
	}
	// Replications wait for a turn inside their handlers, up to
	// maxReplicaQueue of them: the slots above that are always free for
	// the master's other commands.
	mux := wire.NewMux(conn, wire.MuxConfig{Handler: l.handle, MaxInFlight: wire.DefaultMaxInFlight + maxReplicaQueue})
	defer mux.Close()
	if err := l.register(ctx, mux); err != nil {
		return false, err
	}
	l.setErr(nil)
	if l.cfg.OnRegistered != nil {
		l.cfg.OnRegistered()
	}
	t := time.NewTicker(l.cfg.Heartbeat)
	defer t.Stop()
	for {
		var req wire.Message
		select {
		case <-ctx.Done():
			return true, nil
		case <-mux.Done():
			return true, mux.Err()
		case <-t.C:
			req = l.heartbeat()
		case bad := <-l.damaged:
			req = &wire.CSChunkDamaged{ID: bad.ID, Version: bad.Version}
		}
		if err := l.call(ctx, mux, req); err != nil {
			return true, err
		}
	}
}

// call sends one request to the master and waits for its Ok.
func (l *Link) call(ctx context.Context, mux *wire.Mux, req wire.Message) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	return mux.CallInto(ctx, req, &wire.Ok{})
}

// register sends the whole chunk list, in pages; copies being made are
// not valid yet and left out.
func (l *Link) register(ctx context.Context, mux *wire.Mux) error {
	chunks := slices.DeleteFunc(l.store.List(), func(c chunkstore.ChunkInfo) bool { return c.Version == replicaVersion })
	total, used, free := l.space()
	err := l.call(ctx, mux, &wire.CSRegister{
		Addr: l.cfg.DataAddr, DataCenter: l.cfg.DataCenter, Rack: l.cfg.Rack,
		Total: total, Used: used, Free: free, ChunkCount: uint64(len(chunks)),
	})
	page := make([]wire.CSChunk, 0, wire.CSRegisterPage)
	for i := 0; err == nil && i < len(chunks); i += wire.CSRegisterPage {
		page = page[:0]
		for _, c := range chunks[i:min(i+wire.CSRegisterPage, len(chunks))] {
			page = append(page, wire.CSChunk{ID: c.ID, Version: c.Version, Length: c.Length, Damaged: c.Damaged})
		}
		err = l.call(ctx, mux, &wire.CSRegisterChunks{Chunks: page})
	}
	if err == nil {
		err = l.call(ctx, mux, &wire.CSRegisterDone{})
	}
	if err != nil {
		return fmt.Errorf("register with %s: %w", mux.Conn(), err)
	}
	l.log.Info("registered with the master", "master", mux.Conn().String(), "term", mux.Conn().Term, "chunks", len(chunks))
	return nil
}

func (l *Link) space() (total, used, free uint64) {
	for _, d := range l.store.Disks() {
		total += uint64(max(d.Total, 0))
		used += uint64(max(d.Used, 0))
		free += uint64(max(d.Free, 0))
	}
	return total, used, free
}

func (l *Link) heartbeat() *wire.CSHeartbeat {
	hb := &wire.CSHeartbeat{}
	hb.Total, hb.Used, hb.Free = l.space()
	for _, d := range l.store.Disks() {
		hb.Chunks += uint64(d.Chunks)
		hb.Damaged += uint64(d.Damaged)
	}
	return hb
}

// scrub verifies every chunk at the configured rate, pass after pass,
// and queues what it finds for the master. A report that finds no
// connection is dropped: the next registration lists the chunk as
// damaged anyway.
func (l *Link) scrub(ctx context.Context) {
	for {
		err := l.store.Scrub(ctx, l.cfg.ScrubRate, func(b chunkstore.BadChunk) {
			l.log.Warn("scrub found a damaged chunk", "chunk", fmt.Sprintf("%016X", b.ID), "version", b.Version, "path", b.Path, "err", b.Err)
			select {
			case l.damaged <- b:
			default:
			}
		})
		if ctx.Err() != nil || errors.Is(err, chunkstore.ErrClosed) {
			return
		}
		if err != nil {
			l.log.Warn("scrub stopped", "err", err)
		}
		t := time.NewTimer(l.cfg.ScrubPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// handle executes one command of the master.
func (l *Link) handle(ctx context.Context, f wire.Frame) (wire.Message, error) {
	m, err := wire.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	switch m := m.(type) {
	case *wire.Ping:
		return &wire.Pong{Data: m.Data}, nil
	case *wire.CSCreate:
		err = l.store.Create(m.ID, m.Version)
	case *wire.CSDelete:
		err = l.store.Delete(m.ID, m.Version)
	case *wire.CSSetVersion:
		err = l.store.SetVersion(m.ID, m.Old, m.New)
	case *wire.CSTruncate:
		err = l.store.Truncate(m.ID, m.Version, int64(m.Length))
	case *wire.CSReplicate:
		// Errors carry their errno already.
		if err := l.replicate(ctx, m); err != nil {
			l.log.Warn("replication failed", "chunk", fmt.Sprintf("%016X", m.ID), "version", m.Version, "sources", m.Sources, "err", err)
			return nil, err
		}
		return &wire.Ok{}, nil
	default:
		return nil, fmt.Errorf("%s is not a command a chunkserver serves: %w", f.Type, syscall.ENOSYS)
	}
	if err != nil {
		l.log.Info("master's command failed", "cmd", f.Type, "err", err)
		return nil, fmt.Errorf("%w: %w", err, errno(err))
	}
	l.log.Debug("master's command done", "cmd", f.Type, "msg", m)
	return &wire.Ok{}, nil
}

// errno is the errno the master gets for a chunk store error (see
// docs/PROTOCOL.md, "Chunkserver and master").
func errno(err error) syscall.Errno {
	switch {
	case errors.Is(err, chunkstore.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, chunkstore.ErrExists):
		return syscall.EEXIST
	case errors.Is(err, chunkstore.ErrWrongVersion):
		return syscall.ESTALE
	case errors.Is(err, chunkstore.ErrCorrupt):
		return syscall.EBADMSG
	case errors.Is(err, syscall.ENOSPC):
		return syscall.ENOSPC
	case errors.Is(err, chunkstore.ErrRange):
		return syscall.EINVAL
	case errors.Is(err, chunkstore.ErrClosed):
		return syscall.ESHUTDOWN
	}
	return syscall.EIO
}
