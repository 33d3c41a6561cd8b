package chunkserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/wire"
)

// DefaultDataInFlight is how many requests of one data connection a
// chunkserver serves at once. Each may hold a 4 MiB frame, so it also
// bounds a connection's memory (about 128 MiB at worst); 32 is deep
// enough to keep a pipelined writer streaming.
const DefaultDataInFlight = 32

// maxChain bounds the servers a write may still be forwarded to: goals
// above 9 copies make no sense, and a forged chain must not make a
// server fan out without end.
const maxChain = 16

// DataConfig configures the data port server.
type DataConfig struct {
	Name     string // this server's name in handshakes
	AuthCode []byte // other chunkservers must prove it; clients need not
	// MetaID gives the file system this chunkserver belongs to, 0 while
	// unknown; peers of another file system are refused. nil means 0.
	MetaID func() uint64
	// Term gives the highest master term seen, for the handshake; nil
	// means 0.
	Term func() uint64
	// Damaged reports a copy found damaged by a read or write to the
	// master (Link.ReportDamaged); it is called once per copy. nil drops
	// the reports.
	Damaged func(id uint64, version uint32)
	// MaxInFlight is DefaultDataInFlight when 0.
	MaxInFlight int
	// Timeout bounds handshakes, and each request forwarded down a chain
	// (see chunkio); 0 means 10 s.
	Timeout time.Duration
	Logger  *slog.Logger // nil discards
}

// DataServer serves the data port (9422): CSRead, CSWrite and CSSync
// from mounts and other chunkservers, on the chunk store. Writes are
// forwarded down their chain through a chunkio.Pool of its own.
type DataServer struct {
	store *chunkstore.Store
	cfg   DataConfig
	log   *slog.Logger
	fwd   *chunkio.Pool

	mu       sync.Mutex
	reported map[chunkKey]bool // damaged copies already reported
}

type chunkKey struct {
	id      uint64
	version uint32
}

// NewDataServer returns a DataServer for store.
func NewDataServer(store *chunkstore.Store, cfg DataConfig) *DataServer {
	if cfg.MetaID == nil {
		cfg.MetaID = func() uint64 { return 0 }
	}
	if cfg.Term == nil {
		cfg.Term = func() uint64 { return 0 }
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultDataInFlight
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	fwd := chunkio.NewPool(chunkio.Config{
		Role: wire.RoleChunkserver, Name: cfg.Name, MetaID: cfg.MetaID(), AuthCode: cfg.AuthCode,
		Term: cfg.Term, Timeout: cfg.Timeout, Logger: cfg.Logger,
	})
	return &DataServer{store: store, cfg: cfg, log: cfg.Logger, fwd: fwd, reported: map[chunkKey]bool{}}
}

// Serve accepts connections on ln until ctx ends, then closes ln and
// every connection and returns nil; or returns the error that stopped
// accepting.
func (s *DataServer) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		_ = s.fwd.Close()
	}()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	delay := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors, most likely: wait for some to close.
				s.log.Warn("data port cannot accept a connection; retrying", "in", delay, "err", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(delay):
				}
				delay = min(2*delay, time.Second)
				continue
			}
			_ = ln.Close()
			return fmt.Errorf("data port: accept: %w", err)
		}
		delay = 5 * time.Millisecond
		wg.Go(func() { s.serveConn(ctx, nc) })
	}
}

// serveConn runs one peer's connection.
func (s *DataServer) serveConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	conn, err := wire.ServerHandshake(ctx, nc, wire.ServerConfig{
		Role: wire.RoleChunkserver, Name: s.cfg.Name, MetaID: s.cfg.MetaID(), Term: s.cfg.Term(),
		Serve: wire.Roles(wire.RoleClient, wire.RoleChunkserver), AuthCode: s.cfg.AuthCode,
		Timeout: s.cfg.Timeout,
	})
	if err != nil {
		// A refusal is a misconfigured peer (AUTH_CODE, another file
		// system, an old build); anything else is a probe or a peer
		// that hung up, not worth a line.
		lvl := slog.LevelDebug
		if errors.Is(err, wire.ErrRefused) {
			lvl = slog.LevelWarn
		}
		s.log.Log(ctx, lvl, "data port handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
		return
	}
	if err := wire.Serve(ctx, conn, wire.MuxConfig{Handler: s.handle, MaxInFlight: s.cfg.MaxInFlight}); err != nil {
		s.log.Debug("data connection lost", "peer", conn.String(), "err", err)
	}
}

// handle serves one request of a data connection.
func (s *DataServer) handle(ctx context.Context, f wire.Frame) (wire.Message, error) {
	m, err := wire.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	switch m := m.(type) {
	case *wire.Ping:
		return &wire.Pong{Data: m.Data}, nil
	case *wire.CSRead:
		return s.read(m)
	case *wire.CSWrite:
		return s.write(ctx, m)
	case *wire.CSSync:
		return s.sync(ctx, m)
	}
	return nil, fmt.Errorf("%s is not a request the data port serves: %w", f.Type, syscall.ENOSYS)
}

// read serves CSRead. The answer stops where the copy's data does.
func (s *DataServer) read(m *wire.CSRead) (wire.Message, error) {
	if err := checkIO(m.ID, m.Version, m.Offset, int64(m.Size)); err != nil {
		return nil, err
	}
	// The length bounds what is read and sent; a write that grows the
	// chunk meanwhile is simply not seen, as if it came after the read.
	n := int64(0)
	if ci, err := s.store.Stat(m.ID); err == nil && ci.Length > m.Offset {
		n = min(int64(m.Size), int64(ci.Length-m.Offset))
	}
	buf := make([]byte, n)
	// Even an empty read goes to the store: it checks the version.
	if _, err := s.store.ReadAt(m.ID, m.Version, buf, int64(m.Offset)); err != nil && !errors.Is(err, io.EOF) {
		return nil, s.storeErr(m.ID, m.Version, err)
	}
	return &wire.CSData{Data: buf}, nil
}

// write serves CSWrite: the local write and the forward down the chain
// run at once, and the answer waits for both.
func (s *DataServer) write(ctx context.Context, m *wire.CSWrite) (wire.Message, error) {
	if err := checkIO(m.ID, m.Version, m.Offset, int64(len(m.Data))); err != nil {
		return nil, err
	}
	if err := checkChain(m.Chain); err != nil {
		return nil, err
	}
	// A write this copy would refuse is not forwarded either.
	if err := s.checkVersion(m.ID, m.Version); err != nil {
		return nil, err
	}
	var fwdErr error
	done := make(chan struct{})
	if len(m.Chain) > 0 {
		go func() {
			defer close(done)
			fwdErr = s.fwd.Write(ctx, m.ID, m.Version, m.Chain, m.Offset, m.Data)
		}()
	} else {
		close(done)
	}
	err := s.store.WriteAt(m.ID, m.Version, m.Data, int64(m.Offset))
	<-done
	if err != nil {
		return nil, s.storeErr(m.ID, m.Version, err)
	}
	return forwarded(m.Chain, fwdErr)
}

// sync serves CSSync, here and down the chain at once.
func (s *DataServer) sync(ctx context.Context, m *wire.CSSync) (wire.Message, error) {
	if err := checkChain(m.Chain); err != nil {
		return nil, err
	}
	if err := s.checkVersion(m.ID, m.Version); err != nil {
		return nil, err
	}
	var fwdErr error
	done := make(chan struct{})
	if len(m.Chain) > 0 {
		go func() {
			defer close(done)
			fwdErr = s.fwd.Sync(ctx, m.ID, m.Version, m.Chain)
		}()
	} else {
		close(done)
	}
	err := s.store.Sync(m.ID)
	<-done
	if err != nil {
		return nil, s.storeErr(m.ID, m.Version, err)
	}
	return forwarded(m.Chain, fwdErr)
}

// forwarded turns the outcome of a forward into this server's answer:
// the failed server is named as chunkio expects.
func forwarded(chain []string, err error) (wire.Message, error) {
	if err == nil {
		return &wire.Ok{}, nil
	}
	var ce *chunkio.ChainError
	if !errors.As(err, &ce) {
		ce = &chunkio.ChainError{Server: chain[0], Err: err}
	}
	var errno syscall.Errno
	if !errors.As(ce.Err, &errno) {
		return nil, chunkio.Blame(ce.Server, fmt.Errorf("%w: %w", ce.Err, syscall.EIO))
	}
	return nil, chunkio.Blame(ce.Server, ce.Err)
}

// checkVersion refuses a request for a copy this server does not have
// at that version.
func (s *DataServer) checkVersion(id uint64, version uint32) error {
	if version == replicaVersion {
		return fmt.Errorf("chunk %016X: version %d is reserved for copies being made: %w", id, version, syscall.EINVAL)
	}
	ci, err := s.store.Stat(id)
	if err == nil && ci.Version != version {
		err = fmt.Errorf("chunkstore: chunk %016X: have version %d, asked for %d: %w", id, ci.Version, version, chunkstore.ErrWrongVersion)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", err, errno(err))
	}
	return nil
}

// storeErr gives a chunk store error its errno, and reports a damaged
// copy to the master the first time a request finds it.
func (s *DataServer) storeErr(id uint64, version uint32, err error) error {
	if errors.Is(err, chunkstore.ErrCorrupt) {
		s.reportDamaged(id, version)
	}
	return fmt.Errorf("%w: %w", err, errno(err))
}

func (s *DataServer) reportDamaged(id uint64, version uint32) {
	k := chunkKey{id, version}
	s.mu.Lock()
	seen := s.reported[k]
	s.reported[k] = true
	s.mu.Unlock()
	if seen || s.cfg.Damaged == nil {
		return
	}
	s.cfg.Damaged(id, version)
}

// checkIO refuses a read or write the protocol does not allow.
func checkIO(id uint64, version uint32, off uint32, n int64) error {
	switch {
	case n > wire.CSMaxIO:
		return fmt.Errorf("chunk %016X: %d bytes in one request, over %d: %w", id, n, wire.CSMaxIO, syscall.EINVAL)
	case int64(off)+n > chunkio.ChunkSize:
		return fmt.Errorf("chunk %016X: %d bytes at offset %d pass the chunk's end: %w", id, n, off, syscall.EINVAL)
	case version == replicaVersion:
		return fmt.Errorf("chunk %016X: version %d is reserved for copies being made: %w", id, version, syscall.EINVAL)
	}
	return nil
}

func checkChain(chain []string) error {
	if len(chain) > maxChain {
		return fmt.Errorf("chain of %d servers, over %d: %w", len(chain), maxChain, syscall.EINVAL)
	}
	for _, a := range chain {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("chain: %w: %w", err, syscall.EINVAL)
		}
	}
	return nil
}
