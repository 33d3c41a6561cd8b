package fileio

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// readAttempts is how often a chunk read is tried.
const readAttempts = 5

// Stream is one open handle's reading state: where it read last and how
// far ahead it fetches. It is safe for concurrent use.
type Stream struct {
	mu     sync.Mutex
	next   int64 // where a sequential reader reads next
	run    int   // sequential reads in a row
	window int64 // read-ahead bytes, 0 while reading randomly
}

// block is a read-ahead block: blockSize bytes at a blockSize-aligned
// offset of the file, fetched in the background.
type block struct {
	done chan struct{}
	data []byte // valid once done; nil after an error
	err  error
	held int64 // read-ahead memory it holds
}

// invalidateLocked drops read-ahead blocks: the file changed.
func (f *File) invalidateLocked() {
	f.gen++
	for k, b := range f.blocks {
		f.e.giveRead(b.held)
		delete(f.blocks, k)
	}
}

// Read reads into buf at off and returns how many bytes were read,
// fewer at the end of the file. Buffered writes it overlaps are sent
// and waited for first.
func (f *File) Read(ctx context.Context, st *Stream, off int64, buf []byte) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, syscall.EINVAL)
	}
	if err := f.settleRange(ctx, uint64(off), uint64(len(buf))); err != nil {
		return 0, err
	}
	size := f.Size()
	if uint64(off)+uint64(len(buf)) > size {
		// The master may know more than this mount: ask it where the
		// read ends (ChunkRead carries the file's length).
		if _, err := f.locate(ctx, uint32(uint64(off)/f.e.cfg.ChunkSize), true); err != nil {
			return 0, err
		}
		size = f.Size()
	}
	if uint64(off) >= size {
		return 0, nil
	}
	n := int(min(uint64(len(buf)), size-uint64(off)))
	buf = buf[:n]

	ahead := st.advance(off, n, f.e.cfg.ReadAhead)
	if ahead == 0 {
		f.mu.Lock()
		cached := f.hasBlocksLocked(off, n)
		f.mu.Unlock()
		if !cached {
			return n, f.readDirect(ctx, uint64(off), buf)
		}
	}
	f.prefetch(off, int64(n)+ahead, size)
	return n, f.readBlocks(ctx, off, buf)
}

// advance records a read of n bytes at off and returns how far past it
// to read ahead: 0 unless the reads run sequentially. Once a run is
// established, reads that arrive a little out of order (the kernel
// issues its read-ahead concurrently) still count as sequential.
func (st *Stream) advance(off int64, n int, limit int64) int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if limit <= 0 {
		return 0
	}
	switch d := off - st.next; {
	case d == 0, st.run >= 2 && d >= -2*blockSize && d <= 2*blockSize:
		st.run++
		st.next = max(st.next, off+int64(n))
	default:
		st.run, st.window, st.next = 1, 0, off+int64(n)
	}
	if st.run < 2 {
		return 0
	}
	st.window = min(max(2*st.window, minWindow), limit)
	return st.window
}

// settleRange sends the buffered writes overlapping [off, off+n) and
// waits until none is buffered or in flight.
func (f *File) settleRange(ctx context.Context, off, n uint64) error {
	cs := f.e.cfg.ChunkSize
	f.mu.Lock()
	defer f.mu.Unlock()
	busy := func() bool {
		for idx := off / cs; idx*cs < off+n; idx++ {
			c := f.chunks[uint32(idx)]
			if c == nil {
				continue
			}
			lo := uint32(max(off, idx*cs) - idx*cs)
			hi := uint32(min(off+n, (idx+1)*cs) - idx*cs)
			// A lease being taken changes the chunk's version: the
			// master may have no copy at either for a moment.
			if c.leasing || c.dirty.overlaps(lo, hi) || c.inflight.overlaps(lo, hi) {
				return true
			}
		}
		return false
	}
	if !busy() {
		return nil
	}
	for idx := off / cs; idx*cs < off+n; idx++ {
		if c := f.chunks[uint32(idx)]; c != nil && len(c.dirty) > 0 {
			c.drain = true
			f.pumpLocked(c)
		}
	}
	if err := f.waitLocked(ctx, func() bool { return !busy() || f.err != nil || f.closed }); err != nil {
		return err
	}
	return f.err
}

// locate returns chunk index's location, asking the master if fresh
// is set, and records the file length the master gives with it.
func (f *File) locate(ctx context.Context, index uint32, fresh bool) (chunkLoc, error) {
	info, fromMaster, err := f.e.location(ctx, f.ino, index, fresh)
	if err != nil {
		return chunkLoc{}, err
	}
	if fromMaster {
		f.mu.Lock()
		f.masterSize = info.Length
		f.mu.Unlock()
	}
	return chunkLoc{id: info.ID, version: info.Version, servers: info.Servers}, nil
}

type chunkLoc struct {
	id      uint64
	version uint32
	servers []string
}

// readDirect reads buf at off straight from the chunkservers, chunk by
// chunk.
func (f *File) readDirect(ctx context.Context, off uint64, buf []byte) error {
	cs := f.e.cfg.ChunkSize
	for len(buf) > 0 {
		index := uint32(off / cs)
		coff := uint32(off % cs)
		k := int(min(uint64(len(buf)), cs-uint64(coff)))
		if err := f.readChunk(ctx, index, coff, buf[:k]); err != nil {
			return err
		}
		off, buf = off+uint64(k), buf[k:]
	}
	return nil
}

// readChunk reads buf at coff of chunk index. A failure is retried with
// a fresh location a few times over about a second: the chunk may have
// moved, changed version, or be between versions while a writer takes
// its lease.
func (f *File) readChunk(ctx context.Context, index, coff uint32, buf []byte) error {
	var err error
	for attempt := 1; attempt <= readAttempts; attempt++ {
		if attempt > 1 {
			f.e.forget(f.ino, index)
			t := time.NewTimer(backoff(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("read chunk %d of inode %d: %w", index, f.ino, syscall.EINTR)
			case <-t.C:
			}
		}
		var l chunkLoc
		if l, err = f.locate(ctx, index, attempt > 1); err != nil {
			continue
		}
		if l.id == 0 {
			clear(buf)
			return nil
		}
		if err = f.e.cfg.Data.Read(ctx, l.id, l.version, l.servers, coff, buf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("read chunk %d of inode %d: %w: %w", index, f.ino, err, syscall.EIO)
}

// hasBlocksLocked reports whether read-ahead blocks cover all of
// [off, off+n).
func (f *File) hasBlocksLocked(off int64, n int) bool {
	for b := off / blockSize; b*blockSize < off+int64(n); b++ {
		if f.blocks[b] == nil {
			return false
		}
	}
	return true
}

// prefetch starts fetching the blocks of [off, off+n) below size that
// are not fetched yet, and drops the blocks behind off.
func (f *File) prefetch(off, n int64, size uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	first := off / blockSize
	for k, b := range f.blocks {
		if k < first-1 {
			f.e.giveRead(b.held)
			delete(f.blocks, k)
		}
	}
	for b := first; b*blockSize < off+n && uint64(b*blockSize) < size; b++ {
		if f.blocks[b] != nil || f.bufferedLocked(b*blockSize, blockSize) {
			continue // fetched, or to be read once the buffered writes land
		}
		ln := int64(min(uint64(blockSize), size-uint64(b*blockSize)))
		if !f.e.takeRead(ln) {
			return // the mount's read-ahead memory is full: read on demand
		}
		blk := &block{done: make(chan struct{}), held: ln}
		f.blocks[b] = blk
		go f.fetch(blk, b*blockSize, int(ln))
	}
}

// bufferedLocked reports whether writes buffered or in flight overlap
// [off, off+n) (within one chunk).
func (f *File) bufferedLocked(off, n int64) bool {
	cs := int64(f.e.cfg.ChunkSize)
	c := f.chunks[uint32(off/cs)]
	if c == nil {
		return false
	}
	lo, hi := uint32(off%cs), uint32(off%cs+n)
	return c.dirty.overlaps(lo, hi) || c.inflight.overlaps(lo, hi)
}

// fetch reads a read-ahead block.
func (f *File) fetch(blk *block, off int64, n int) {
	data := make([]byte, n)
	err := f.readDirect(f.e.ctx, uint64(off), data)
	if err == nil {
		blk.data = data
	}
	blk.err = err
	close(blk.done)
}

// readBlocks copies [off, off+len(buf)) from read-ahead blocks, reading
// directly where a block is missing or failed.
func (f *File) readBlocks(ctx context.Context, off int64, buf []byte) error {
	for len(buf) > 0 {
		b := off / blockSize
		boff := int(off - b*blockSize)
		k := min(len(buf), blockSize-boff)
		f.mu.Lock()
		blk := f.blocks[b]
		f.mu.Unlock()
		var err error
		if blk == nil {
			err = f.readDirect(ctx, uint64(off), buf[:k])
		} else {
			select {
			case <-blk.done:
			case <-ctx.Done():
				return fmt.Errorf("read inode %d: %w", f.ino, syscall.EINTR)
			}
			switch {
			case blk.err != nil:
				f.mu.Lock()
				if f.blocks[b] == blk {
					f.e.giveRead(blk.held)
					delete(f.blocks, b)
				}
				f.mu.Unlock()
				err = f.readDirect(ctx, uint64(off), buf[:k])
			case boff+k <= len(blk.data):
				copy(buf[:k], blk.data[boff:boff+k])
			default:
				// The block ends where the file ended when it was fetched.
				c := copy(buf[:k], blk.data[min(boff, len(blk.data)):])
				err = f.readDirect(ctx, uint64(off)+uint64(c), buf[c:k])
			}
		}
		if err != nil {
			return err
		}
		off, buf = off+int64(k), buf[k:]
	}
	return nil
}
