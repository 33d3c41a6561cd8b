package fileio

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// File is the data state of one open inode, shared by all its open
// handles. Its methods are safe for concurrent use.
type File struct {
	e   *Engine
	ino uint32

	refs int // guarded by e.mu

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every state change
	masterSize uint64        // the size the master last reported
	localEnd   uint64        // end of the furthest write made here since the last truncate
	ackedEnd   uint64        // end of the furthest write the chunkservers acknowledged
	chunks     map[uint32]*chunk
	last       int64  // chunk the writer last wrote, -1 for none
	err        error  // a write failure not yet reported
	gen        uint64 // raised by every write and truncate, for read-ahead
	blocks     map[int64]*block
	idle       *time.Timer
	closed     bool
}

// chunk is a chunk's write state.
type chunk struct {
	index    uint32
	dirty    pieces // buffered, not sent
	inflight pieces // being written

	lease    *wire.ChunkInfo // held lease, or nil
	leasedAt time.Time       // when it was taken or renewed
	leasing  bool            // a ChunkWrite is under way
	ending   bool            // a ChunkWriteEnd is under way
	renew    bool            // the lease failed: end it and take a new one
	bad      []string        // servers that failed under the current lease

	drain   bool // send all dirty pieces now, not only full ones
	release bool // give the lease back once nothing is buffered

	unsynced *wire.ChunkInfo // last lease data was written under without a sync

	failures  int       // failures in a row
	failSince time.Time // first of them
	retryAt   time.Time // no new lease before this
	retry     *time.Timer
}

func newFile(e *Engine, ino uint32, size uint64) *File {
	return &File{
		e: e, ino: ino, masterSize: size, last: -1,
		changed: make(chan struct{}), chunks: map[uint32]*chunk{}, blocks: map[int64]*block{},
	}
}

// Inode is the file's inode number.
func (f *File) Inode() uint32 { return f.ino }

// observe records the size the master reports and returns the size to
// show: never less than what was written here.
func (f *File) observe(master uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.masterSize = master
	return max(master, f.localEnd)
}

// Size is the file's size as this mount knows it.
func (f *File) Size() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return max(f.masterSize, f.localEnd)
}

// notifyLocked wakes everyone waiting for a change.
func (f *File) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// wait waits until done (called with f.mu held) is true; it returns with
// f.mu held.
func (f *File) waitLocked(ctx context.Context, done func() bool) error {
	for !done() {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
			f.mu.Lock()
		case <-ctx.Done():
			f.mu.Lock()
			return fmt.Errorf("inode %d: %w", f.ino, syscall.EINTR)
		}
	}
	return nil
}

func (f *File) chunk(index uint32) *chunk {
	c := f.chunks[index]
	if c == nil {
		c = &chunk{index: index}
		f.chunks[index] = c
	}
	return c
}

// Write buffers data at off. It blocks while the mount's write buffer is
// full, and fails with an earlier write's error if one is pending.
func (f *File) Write(ctx context.Context, off int64, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if off < 0 || uint64(off)+uint64(len(data)) > meta.MaxFileSize {
		return fmt.Errorf("write %d bytes at %d: %w", len(data), off, syscall.EFBIG)
	}
	n := int64(len(data))
	if err := f.e.reserve(ctx, n); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		f.e.unreserve(n)
		return f.err
	}
	cs := f.e.cfg.ChunkSize
	grown := 0
	stream := off > 0 && uint64(off) == f.localEnd // continues the last write
	for pos, rest := uint64(off), data; len(rest) > 0; {
		index := uint32(pos / cs)
		coff := uint32(pos % cs)
		k := min(uint64(len(rest)), cs-uint64(coff))
		if f.last >= 0 && f.last != int64(index) {
			// The writer moved on: the chunk it leaves goes out whole and
			// its lease is given back.
			if lc := f.chunks[uint32(f.last)]; lc != nil {
				lc.drain, lc.release = true, true
				f.pumpLocked(lc)
			}
		}
		f.last = int64(index)
		c := f.chunk(index)
		grown += c.dirty.write(coff, rest[:k], f.e.cfg.PieceSize, stream)
		c.release = false
		f.pumpLocked(c)
		pos, rest = pos+k, rest[k:]
	}
	f.e.unreserve(n - int64(grown))
	f.localEnd = max(f.localEnd, uint64(off)+uint64(n))
	f.invalidateLocked()
	f.armIdleLocked()
	return nil
}

// armIdleLocked (re)starts the idle timer that gives leases back.
func (f *File) armIdleLocked() {
	if f.idle == nil {
		f.idle = time.AfterFunc(f.e.cfg.IdleEnd, func() { f.drainAll(true) })
	} else {
		f.idle.Reset(f.e.cfg.IdleEnd)
	}
}

// drainAll makes every chunk send all it buffers; with release, leases
// are given back afterwards.
func (f *File) drainAll(release bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.chunks {
		if len(c.dirty) > 0 || release {
			c.drain = true
			c.release = c.release || release
			f.pumpLocked(c)
		}
	}
}

// pumpLocked starts whatever chunk c can do next: take a lease, send
// pieces, or end the lease.
func (f *File) pumpLocked(c *chunk) {
	if f.closed || c.leasing || c.ending {
		return
	}
	switch {
	case c.renew:
		if len(c.inflight) == 0 {
			f.endLocked(c)
		}
		return
	case c.lease == nil:
		if len(c.dirty) == 0 {
			if len(c.inflight) == 0 {
				c.drain, c.release = false, false
			}
			return
		}
		if wait := time.Until(c.retryAt); wait > 0 {
			if c.retry == nil {
				c.retry = time.AfterFunc(wait, func() {
					f.mu.Lock()
					c.retry = nil
					f.pumpLocked(c)
					f.mu.Unlock()
				})
			}
			return
		}
		c.leasing = true
		go f.acquire(c)
		return
	case len(c.dirty) > 0 && len(c.inflight) == 0 && time.Since(c.leasedAt) > leaseRenew && !time.Now().Before(c.retryAt):
		// Asking again renews the lease before the master lets it lapse.
		c.leasing = true
		go f.acquire(c)
		return
	}
	for _, p := range slices.Clone(c.dirty) {
		if !c.drain && len(p.data) < f.e.cfg.PieceSize {
			continue
		}
		if c.inflight.overlaps(p.off, p.end()) {
			continue // goes out once the older write has landed
		}
		c.dirty.remove(p)
		c.inflight = append(c.inflight, p)
		go f.send(c, *c.lease, p)
	}
	if len(c.dirty) == 0 && len(c.inflight) == 0 {
		c.drain = false
		if c.release {
			f.endLocked(c)
		}
	}
}

// acquire takes chunk c's write lease.
func (f *File) acquire(c *chunk) {
	info, err := f.e.cfg.Meta.ChunkWrite(f.e.ctx, f.ino, c.index)
	// The lease changes the chunk's version: locations read before are
	// stale.
	f.e.forget(f.ino, c.index)
	f.mu.Lock()
	defer f.mu.Unlock()
	c.leasing = false
	if err == nil && (info.ID == 0 || len(info.Servers) == 0) {
		err = fmt.Errorf("master gave a lease on chunk %d with no chain: %w", info.ID, syscall.EIO)
	}
	if err != nil {
		f.failLocked(c, fmt.Errorf("lease on chunk %d of inode %d: %w", c.index, f.ino, err), permanent(err))
	} else {
		c.lease, c.leasedAt = &info, time.Now()
	}
	f.pumpLocked(c)
	f.notifyLocked()
}

// send writes p under lease.
func (f *File) send(c *chunk, lease wire.ChunkInfo, p *piece) {
	err := f.e.cfg.Data.Write(f.e.ctx, lease.ID, lease.Version, lease.Servers, p.off, p.data)
	f.mu.Lock()
	defer f.mu.Unlock()
	c.inflight.remove(p)
	if err == nil {
		f.ackedEnd = max(f.ackedEnd, uint64(c.index)*f.e.cfg.ChunkSize+uint64(p.end()))
		c.unsynced = &lease
		c.failures = 0
		f.e.unreserve(int64(len(p.data)))
		p.recycle(f.e.cfg.PieceSize)
	} else {
		// The data goes back under whatever was written since, and is
		// sent again under a new lease.
		grown := c.dirty.writeOlder(p.off, p.data, f.e.cfg.PieceSize)
		f.e.unreserve(int64(len(p.data) - grown))
		if c.lease != nil && c.lease.ID == lease.ID && c.lease.Version == lease.Version {
			c.renew = true
			if s := f.e.cfg.FailedServer(err); s != "" && !slices.Contains(c.bad, s) {
				c.bad = append(c.bad, s)
			}
		}
		f.failLocked(c, fmt.Errorf("write chunk %d of inode %d: %w", c.index, f.ino, err), false)
	}
	f.pumpLocked(c)
	f.notifyLocked()
}

// endLocked gives chunk c's lease back (with the servers that failed
// under it), or only forgets it if it was never taken.
func (f *File) endLocked(c *chunk) {
	if c.lease == nil {
		c.renew = false
		return
	}
	lease, bad, length := *c.lease, c.bad, f.ackedEnd
	c.ending = true
	go func() {
		err := f.e.cfg.Meta.ChunkWriteEnd(f.e.ctx, f.ino, lease.ID, length, bad)
		f.mu.Lock()
		defer f.mu.Unlock()
		c.ending = false
		c.lease, c.bad, c.renew = nil, nil, false
		if len(c.dirty) == 0 && len(c.inflight) == 0 {
			c.release = false
		}
		if err != nil {
			// The data is on the chunkservers, but the master may not know
			// the file's new length: report it, as a lost write would be.
			f.e.log.Warn("ending a chunk lease failed", "inode", f.ino, "chunk", lease.ID, "err", err)
			if f.err == nil {
				f.err = fmt.Errorf("end lease on chunk %d of inode %d: %w: %w", c.index, f.ino, err, syscall.EIO)
			}
		}
		f.pumpLocked(c)
		f.notifyLocked()
	}()
}

// failLocked records a failure of chunk c. Passing failures are retried
// with backoff until Config.Timeout; then, or at once when permanent,
// the chunk's buffered data is dropped and the error kept for the
// application.
func (f *File) failLocked(c *chunk, err error, permanent bool) {
	now := time.Now()
	if c.failures == 0 {
		c.failSince = now
	}
	c.failures++
	c.retryAt = now.Add(backoff(c.failures))
	if !permanent && now.Sub(c.failSince) < f.e.cfg.Timeout {
		f.e.log.Debug("chunk write failed; retrying", "inode", f.ino, "chunk_index", c.index, "failures", c.failures, "err", err)
		return
	}
	f.e.log.Error("file data lost: chunk write failed", "inode", f.ino, "chunk_index", c.index, "failures", c.failures, "err", err)
	f.e.unreserve(int64(c.dirty.bytes()))
	c.dirty = nil
	c.failures = 0
	if f.err == nil {
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) && !errors.Is(err, syscall.EROFS) {
			err = fmt.Errorf("%w: %w", err, syscall.EIO)
		}
		f.err = err
	}
}

// settledLocked reports whether nothing of the file is buffered, in
// flight or leased.
func (f *File) settledLocked() bool {
	for _, c := range f.chunks {
		if len(c.dirty) > 0 || len(c.inflight) > 0 || c.lease != nil || c.leasing || c.ending {
			return false
		}
	}
	return true
}

// Flush sends everything buffered, waits for it to land and gives the
// leases back, so that the master knows the file's length (close(2)).
// It returns, once, the error of any write that failed since the last
// Flush or Fsync.
func (f *File) Flush(ctx context.Context) error { return f.flush(ctx, true) }

// Settle is Flush without reporting (or forgetting) a failed write, for
// changes of attributes that need the writes to have landed.
func (f *File) Settle(ctx context.Context) error { return f.flush(ctx, false) }

func (f *File) flush(ctx context.Context, report bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.chunks {
		c.drain, c.release = true, true
		f.pumpLocked(c)
	}
	if err := f.waitLocked(ctx, func() bool { return f.settledLocked() || f.closed }); err != nil {
		return err
	}
	for i, c := range f.chunks {
		if c.unsynced == nil && c.retry == nil {
			delete(f.chunks, uint32(i))
		}
	}
	if !report {
		return nil
	}
	err := f.err
	f.err = nil
	return err
}

// Fsync is Flush, then makes every chunk written since the last Fsync
// durable on all its copies.
func (f *File) Fsync(ctx context.Context) error {
	if err := f.Flush(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	var todo []*chunk
	for _, c := range f.chunks {
		if c.unsynced != nil {
			todo = append(todo, c)
		}
	}
	f.mu.Unlock()
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	for i, c := range todo {
		f.mu.Lock()
		l := c.unsynced
		f.mu.Unlock()
		if l == nil {
			continue
		}
		wg.Go(func() {
			err := f.e.cfg.Data.Sync(ctx, l.ID, l.Version, l.Servers)
			if errors.Is(err, syscall.ESTALE) {
				// Another mount has written the chunk since (the version
				// moved on); its lease made the data durable.
				err = nil
			}
			if err != nil {
				errs[i] = fmt.Errorf("sync chunk %d of inode %d: %w: %w", c.index, f.ino, err, syscall.EIO)
				return
			}
			f.mu.Lock()
			if c.unsynced == l {
				c.unsynced = nil
			}
			f.mu.Unlock()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Truncate changes the file's size: it flushes what is buffered, runs
// setSize (the master's SetAttr) and forgets what was read or written
// beyond the new end.
func (f *File) Truncate(ctx context.Context, size uint64, setSize func(ctx context.Context) error) error {
	if err := f.Settle(ctx); err != nil {
		return err
	}
	if err := setSize(ctx); err != nil {
		return err
	}
	f.e.forgetFrom(f.ino, 0) // their lengths are stale too
	f.mu.Lock()
	defer f.mu.Unlock()
	f.masterSize, f.localEnd, f.ackedEnd = size, size, 0
	f.invalidateLocked()
	return nil
}

// close stops the file's timers and drops what is still buffered.
func (f *File) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.idle != nil {
		f.idle.Stop()
	}
	for _, c := range f.chunks {
		if c.retry != nil {
			c.retry.Stop()
		}
		if n := c.dirty.bytes(); n > 0 {
			f.e.log.Error("file data lost: closed with data not written", "inode", f.ino, "chunk_index", c.index, "bytes", n)
			f.e.unreserve(int64(n))
			c.dirty = nil
		}
	}
	f.invalidateLocked()
	f.notifyLocked()
}
