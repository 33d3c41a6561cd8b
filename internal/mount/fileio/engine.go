// Package fileio is the mount's data path: it buffers what applications
// write and sends it to the chunkservers, and it reads file data from
// them with read-ahead. Metadata goes through Meta (the master's chunk
// leases and locations), data through Data (a chunkio.Pool).
//
// # Writing
//
// Writes are buffered per open file and per 64 MiB chunk as pieces:
// disjoint runs of bytes, each at most Config.PieceSize (4 MiB, the
// largest request a chunkserver takes). A write overwrites the buffered
// bytes it covers and extends the piece it continues, so sequential
// writes coalesce into full pieces. A full piece is sent at once, in the
// background, while the application goes on writing: pieces of a chunk
// are written concurrently, except that a piece overlapping one still in
// flight waits for it, so the newest data always lands last.
//
// Before the first piece of a chunk goes out the file takes the chunk's
// write lease from the master (ChunkWrite), which names the chain of
// servers to write; EBUSY (another mount writes the chunk) and other
// passing failures are retried with backoff for Config.Timeout. The
// lease is given back (ChunkWriteEnd, with the file's new length) once
// the chunk's buffer is empty and the writer has moved to another chunk,
// has been idle for Config.IdleEnd, or the application flushes (close,
// fsync, a truncate). A write that fails on a server of the chain puts
// its data back in the buffer (under any newer data), ends the lease
// naming that server as bad, takes a new lease whose chain leaves it
// out, and sends the data again. An error that outlasts Config.Timeout
// is kept and returned by the next write, flush or fsync (EIO).
//
// Buffered and in-flight data of all files of a mount together stay
// under Config.WriteBuffer bytes: a write that would pass it first makes
// every file send what it holds and waits for room.
//
// Data that has been written is read back correctly at once: a read
// first sends the buffered data it overlaps and waits for it to land.
// Until a file's writes have reached the master as its length, its size
// is the larger of the master's and the end of the furthest local write
// (Size), so the kernel never sees a file shrink under its writer.
//
// # Reading
//
// Where a chunk's copies are (ChunkRead) is remembered for
// Config.LocationTTL, and forgotten when a read fails or this mount
// takes the chunk's lease (which changes its version); a failed read is
// tried again with a fresh location, five times over about 1.5 s, before
// it fails with EIO. A hole (chunk id 0) reads as zeros. Each open file has a Stream that detects sequential
// reading: after two reads in a row it fetches the following blocks
// (1 MiB each) in parallel, doubling the window up to Config.ReadAhead,
// and serves reads from them. Random reads fetch exactly what they ask
// for. Blocks are dropped as the reader passes them, and whenever the
// file is written or truncated through this mount.
package fileio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// Meta is what the data path asks of the master.
type Meta interface {
	ChunkRead(ctx context.Context, ino, index uint32) (wire.ChunkInfo, error)
	ChunkWrite(ctx context.Context, ino, index uint32) (wire.ChunkInfo, error)
	ChunkWriteEnd(ctx context.Context, ino uint32, id, length uint64, bad []string) error
}

// Data reads and writes chunk copies on chunkservers; *chunkio.Pool is
// the real one. Write must not keep data once it has returned nil: the
// buffer is reused.
type Data interface {
	Read(ctx context.Context, id uint64, version uint32, servers []string, off uint32, buf []byte) error
	Write(ctx context.Context, id uint64, version uint32, chain []string, off uint32, data []byte) error
	Sync(ctx context.Context, id uint64, version uint32, chain []string) error
}

// Defaults for Config.
const (
	DefaultWriteBuffer = 128 << 20
	DefaultPieceSize   = wire.CSMaxIO
	DefaultReadAhead   = 16 << 20
	DefaultReadBuffer  = 256 << 20
	DefaultTimeout     = time.Minute
	DefaultIdleEnd     = time.Second
	DefaultLocationTTL = 3 * time.Second

	leaseRenew = 20 * time.Second // a third of the master's lease time
	blockSize  = 1 << 20          // read-ahead unit
	minWindow  = 2 * blockSize
	maxBackoff = 2 * time.Second
)

// Config configures an Engine.
type Config struct {
	Meta Meta // required
	Data Data // required
	// FailedServer names the server of the chain a failed Data.Write
	// blames ("" for none); nil blames none.
	FailedServer func(error) string
	WriteBuffer  int64         // buffered write bytes per mount; 0 means DefaultWriteBuffer
	PieceSize    int           // largest write sent at once; 0 means DefaultPieceSize
	ReadAhead    int64         // largest read-ahead window per file; 0 means DefaultReadAhead, negative disables
	ReadBuffer   int64         // read-ahead bytes per mount; 0 means DefaultReadBuffer
	Timeout      time.Duration // how long failing writes are retried; 0 means DefaultTimeout
	IdleEnd      time.Duration // idle time after which a lease is given back; 0 means DefaultIdleEnd
	LocationTTL  time.Duration // how long chunk locations are kept; 0 means DefaultLocationTTL
	// ChunkSize is meta.ChunkSize; tests set a smaller one.
	ChunkSize uint64
	Logger    *slog.Logger // nil discards
}

// Validate reports a Config that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Meta == nil || c.Data == nil:
		return errors.New("fileio: Meta and Data are required")
	case c.PieceSize < 0 || c.PieceSize > wire.CSMaxIO:
		return fmt.Errorf("fileio: piece size %d out of 1..%d", c.PieceSize, wire.CSMaxIO)
	case c.WriteBuffer != 0 && c.WriteBuffer < 2*int64(max(c.PieceSize, DefaultPieceSize)):
		return fmt.Errorf("fileio: write buffer %d below two pieces", c.WriteBuffer)
	case c.ChunkSize != 0 && (c.ChunkSize > meta.ChunkSize || c.ChunkSize%blockSize != 0):
		return fmt.Errorf("fileio: chunk size %d not a multiple of %d up to %d", c.ChunkSize, blockSize, meta.ChunkSize)
	}
	return nil
}

// Engine is a mount's data path: its open files, write buffer and chunk
// location cache.
type Engine struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // background I/O; ended by Close
	cancel context.CancelFunc

	mu    sync.Mutex
	files map[uint32]*File
	locs  map[locKey]location

	bmu      sync.Mutex // the write buffer budget
	used     int64
	freed    chan struct{} // closed and replaced when bytes are freed
	readUsed int64         // read-ahead bytes held; guarded by bmu
}

type locKey struct{ ino, index uint32 }

type location struct {
	info    wire.ChunkInfo
	expires time.Time
}

// New returns an Engine for cfg.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.WriteBuffer == 0 {
		cfg.WriteBuffer = DefaultWriteBuffer
	}
	if cfg.PieceSize == 0 {
		cfg.PieceSize = DefaultPieceSize
	}
	if cfg.ReadAhead == 0 {
		cfg.ReadAhead = DefaultReadAhead
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.IdleEnd <= 0 {
		cfg.IdleEnd = DefaultIdleEnd
	}
	if cfg.LocationTTL <= 0 {
		cfg.LocationTTL = DefaultLocationTTL
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = meta.ChunkSize
	}
	if cfg.FailedServer == nil {
		cfg.FailedServer = func(error) string { return "" }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg: cfg, log: cfg.Logger,
		files: map[uint32]*File{}, locs: map[locKey]location{},
		freed: make(chan struct{}),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Open returns the file state of inode ino, creating it with the size
// the master gave if no open file holds it. Every Open needs a Release.
func (e *Engine) Open(ino uint32, size uint64) *File {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.files[ino]
	if f == nil {
		f = newFile(e, ino, size)
		e.files[ino] = f
	} else {
		f.observe(size)
	}
	f.refs++
	return f
}

// Release drops one Open. The last one forgets the file's state; the
// caller has flushed it (data still buffered then is dropped).
func (e *Engine) Release(f *File) {
	e.mu.Lock()
	f.refs--
	last := f.refs == 0
	if last && e.files[f.ino] == f {
		delete(e.files, f.ino)
	}
	e.mu.Unlock()
	if last {
		f.close()
	}
}

// Size returns the size to report for inode ino given the master's:
// while the inode is open here, no less than what was written locally.
func (e *Engine) Size(ino uint32, master uint64) uint64 {
	e.mu.Lock()
	f := e.files[ino]
	e.mu.Unlock()
	if f == nil {
		return master
	}
	return f.observe(master)
}

// File returns the open file state of ino, or nil.
func (e *Engine) File(ino uint32) *File {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.files[ino]
}

// FlushAll flushes every open file, for unmounting.
func (e *Engine) FlushAll(ctx context.Context) error {
	e.mu.Lock()
	files := make([]*File, 0, len(e.files))
	for _, f := range e.files {
		files = append(files, f)
	}
	e.mu.Unlock()
	var errs []error
	for _, f := range files {
		if err := f.Flush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("inode %d: %w", f.ino, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops background work; buffered data not flushed is lost.
func (e *Engine) Close() {
	e.cancel()
}

// location returns where chunk index of ino is, from the cache unless
// fresh is set, or from the master; fresh reports which.
func (e *Engine) location(ctx context.Context, ino, index uint32, fresh bool) (wire.ChunkInfo, bool, error) {
	k := locKey{ino, index}
	if !fresh {
		e.mu.Lock()
		l, ok := e.locs[k]
		e.mu.Unlock()
		if ok && time.Now().Before(l.expires) {
			return l.info, false, nil
		}
	}
	info, err := e.cfg.Meta.ChunkRead(ctx, ino, index)
	if err != nil {
		return info, false, fmt.Errorf("locate chunk %d of inode %d: %w", index, ino, err)
	}
	e.mu.Lock()
	if len(e.locs) > 4096 {
		now := time.Now()
		for k, l := range e.locs {
			if now.After(l.expires) {
				delete(e.locs, k)
			}
		}
	}
	e.locs[k] = location{info: info, expires: time.Now().Add(e.cfg.LocationTTL)}
	e.mu.Unlock()
	return info, true, nil
}

// forget drops the cached location of chunk index of ino.
func (e *Engine) forget(ino, index uint32) {
	e.mu.Lock()
	delete(e.locs, locKey{ino, index})
	e.mu.Unlock()
}

// forgetFrom drops the cached locations of ino's chunks from index on.
func (e *Engine) forgetFrom(ino, index uint32) {
	e.mu.Lock()
	for k := range e.locs {
		if k.ino == ino && k.index >= index {
			delete(e.locs, k)
		}
	}
	e.mu.Unlock()
}

// reserve takes n bytes of the write buffer, waiting for room; while it
// waits, every file is told to send what it buffers.
func (e *Engine) reserve(ctx context.Context, n int64) error {
	for {
		e.bmu.Lock()
		if e.used+n <= e.cfg.WriteBuffer || e.used == 0 {
			e.used += n
			e.bmu.Unlock()
			return nil
		}
		ch := e.freed
		e.bmu.Unlock()
		e.pressure()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for write buffer room: %w", syscall.EINTR)
		case <-e.ctx.Done():
			return fmt.Errorf("waiting for write buffer room: %w", syscall.EIO)
		}
	}
}

// unreserve gives back n bytes of the write buffer.
func (e *Engine) unreserve(n int64) {
	if n == 0 {
		return
	}
	e.bmu.Lock()
	e.used -= n
	if e.used < 0 {
		panic(fmt.Sprintf("fileio: write buffer accounting below zero (%d)", e.used))
	}
	close(e.freed)
	e.freed = make(chan struct{})
	e.bmu.Unlock()
}

// buffered is the write buffer in use, for tests.
func (e *Engine) buffered() int64 {
	e.bmu.Lock()
	defer e.bmu.Unlock()
	return e.used
}

// pressure makes every file send all it buffers.
func (e *Engine) pressure() {
	e.mu.Lock()
	files := make([]*File, 0, len(e.files))
	for _, f := range e.files {
		files = append(files, f)
	}
	e.mu.Unlock()
	for _, f := range files {
		f.drainAll(false)
	}
}

// takeRead reserves n bytes of read-ahead memory, if there is room.
func (e *Engine) takeRead(n int64) bool {
	e.bmu.Lock()
	defer e.bmu.Unlock()
	if e.readUsed+n > e.cfg.ReadBuffer {
		return false
	}
	e.readUsed += n
	return true
}

func (e *Engine) giveRead(n int64) {
	e.bmu.Lock()
	e.readUsed -= n
	e.bmu.Unlock()
}

// permanent reports whether a master's refusal of a lease will not pass
// by retrying.
func permanent(err error) bool {
	for _, e := range []syscall.Errno{syscall.EROFS, syscall.EPERM, syscall.EACCES, syscall.EFBIG,
		syscall.EDQUOT, syscall.ENOSPC, syscall.ENOENT, syscall.EINVAL, syscall.EBADF} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// backoff is the wait before retry number n (from 1).
func backoff(n int) time.Duration {
	d := 50 * time.Millisecond << min(n-1, 6)
	return min(d, maxBackoff)
}
