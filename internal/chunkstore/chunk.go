package chunkstore

import (
	"container/list"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// chunk is the index entry of one chunk. It stays in memory for every
// chunk (about 100 bytes), while the file and its 4 KiB of checksums are
// held only while the chunk is open (see openChunk).
type chunk struct {
	// mu is the per-chunk lock: reads share it, everything that changes
	// the chunk or opens and closes its file holds it exclusively.
	mu sync.RWMutex

	id   uint64
	disk *disk

	// Guarded by mu.
	version uint32
	// nameVer is the version in the file's name. It differs from version
	// only when a rename failed after the header took the new version; the
	// header is what counts (see SetVersion), the name is fixed at Open.
	nameVer uint32
	length  uint32
	// size is the file's size, header included, as counted in its disk's
	// space accounting.
	size int64
	// tailDirty: the file past the data may hold garbage or differ from
	// size (a failed write); it is cut before the chunk grows.
	tailDirty bool
	// hdrBad says why the header cannot be trusted; such a chunk is kept
	// in the index only so it is reported and can be deleted.
	hdrBad      string
	deleted     bool
	unsynced    bool // written since the last fsync
	dirUnsynced bool // file created or renamed since the directory's last fsync
	open        *openChunk

	// bad is set once the chunk is known damaged (header or any block).
	// Readers set it under a shared lock, hence atomic.
	bad atomic.Bool
}

// openChunk is a chunk's open file and its header in memory, which is
// authoritative while open: writes change it and only mark it dirty, and
// the store writes it back after Options.HeaderFlushDelay, on Sync,
// SetVersion and Close, or when the file leaves the cache. A chunk that
// is not open therefore always has an up-to-date header on disk.
type openChunk struct {
	f        *os.File
	hdr      *header
	dirty    bool
	flushArm bool // the flush timer is running
	timer    *time.Timer
	elem     *list.Element // in Store.lru
}

// chunkName is the file name of a chunk version, as MooseFS names them.
func chunkName(id uint64, version uint32) string {
	return fmt.Sprintf("chunk_%016X_%08X.mfs", id, version)
}

// chunkDir is the subdirectory of a disk a chunk's file lives in: the low
// byte of its id, so consecutive chunks spread over 256 directories.
func chunkDir(diskPath string, id uint64) string {
	return filepath.Join(diskPath, fmt.Sprintf("%02X", id&0xff))
}

func (c *chunk) path() string {
	return filepath.Join(chunkDir(c.disk.spec.Path, c.id), chunkName(c.id, c.nameVer))
}

func (c *chunk) String() string { return "chunk " + chunkName(c.id, c.version)[6:31] }

var headerPool = sync.Pool{New: func() any { return new([HeaderSize]byte) }}

// ensureOpen opens c's file and loads its header. c.mu must be held
// exclusively.
func (s *Store) ensureOpen(c *chunk) error {
	if c.open != nil {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	if c.hdrBad != "" {
		return fmt.Errorf("header: %s: %w", c.hdrBad, ErrCorrupt)
	}
	flag := os.O_RDWR
	if c.disk.readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(c.path(), flag, 0)
	if err != nil {
		c.disk.ioError()
		return err
	}
	buf := headerPool.Get().(*[HeaderSize]byte)
	defer headerPool.Put(buf)
	var h *header
	n, err := f.ReadAt(buf[:], 0)
	switch {
	case err == io.EOF:
		err = fmt.Errorf("%w: file is %d bytes, shorter than a header", ErrBadHeader, n)
	case err != nil:
		f.Close()
		c.disk.ioError()
		return fmt.Errorf("read header of %s: %w", c.path(), err)
	default:
		h, err = decodeHeader(buf[:])
	}
	if err == nil && (h.id != c.id || h.version != c.version || h.length != c.length) {
		err = fmt.Errorf("%w: header changed on disk since Open (chunk %016X version %d length %d)", ErrBadHeader, h.id, h.version, h.length)
	}
	if err != nil {
		f.Close()
		c.hdrBad = err.Error()
		s.markBad(c, -1, c.hdrBad)
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	s.cacheOpen(c, &openChunk{f: f, hdr: h})
	return nil
}

// cacheOpen makes o c's open state, most recently used, and closes the
// least recently used files if the cache is over its size.
func (s *Store) cacheOpen(c *chunk, o *openChunk) {
	c.open = o
	s.lruMu.Lock()
	o.elem = s.lru.PushFront(c)
	over := s.lru.Len() - s.opts.MaxOpenChunks
	s.lruMu.Unlock()
	if over > 0 {
		s.evict(over)
	}
}

// touch marks c recently used. c.mu is held, shared or exclusively.
func (s *Store) touch(c *chunk) {
	s.lruMu.Lock()
	s.lru.MoveToFront(c.open.elem)
	s.lruMu.Unlock()
}

// evict closes up to n least recently used chunks. A chunk in use is
// skipped rather than waited for, so the cache may briefly run over its
// size instead of stalling an operation behind another.
func (s *Store) evict(n int) {
	for ; n > 0; n-- {
		var victim *chunk
		s.lruMu.Lock()
		for e := s.lru.Back(); e != nil; e = e.Prev() {
			if c := e.Value.(*chunk); c.mu.TryLock() {
				victim = c
				break
			}
		}
		s.lruMu.Unlock()
		if victim == nil {
			return
		}
		if victim.open != nil {
			if err := s.closeChunk(victim); err != nil {
				s.log.Error("chunkstore: cannot close chunk file; it stays open", "chunk", chunkName(victim.id, victim.version), "disk", victim.disk.spec.Path, "err", err)
			}
		}
		victim.mu.Unlock()
	}
}

// closeChunk writes back c's header if dirty and closes its file. On a
// failed header write the chunk stays open, dirty, so nothing is lost
// while the process lives. c.mu must be held exclusively.
func (s *Store) closeChunk(c *chunk) error {
	o := c.open
	if o.dirty {
		if err := s.writeHeader(c); err != nil {
			s.lruMu.Lock()
			s.lru.MoveToFront(o.elem)
			s.lruMu.Unlock()
			return err
		}
	}
	if o.timer != nil {
		o.timer.Stop()
	}
	s.lruMu.Lock()
	s.lru.Remove(o.elem)
	s.lruMu.Unlock()
	c.open = nil
	return o.f.Close()
}

// dropOpen closes c's file without writing its header, for Delete.
func (s *Store) dropOpen(c *chunk) {
	o := c.open
	if o == nil {
		return
	}
	if o.timer != nil {
		o.timer.Stop()
	}
	s.lruMu.Lock()
	s.lru.Remove(o.elem)
	s.lruMu.Unlock()
	c.open = nil
	o.f.Close()
}

// writeHeader writes c's header from memory, without fsync.
func (s *Store) writeHeader(c *chunk) error {
	o := c.open
	buf := headerPool.Get().(*[HeaderSize]byte)
	defer headerPool.Put(buf)
	o.hdr.encode(buf[:])
	if _, err := o.f.WriteAt(buf[:], 0); err != nil {
		c.disk.ioError()
		return fmt.Errorf("write header: %w", err)
	}
	o.dirty = false
	c.unsynced = true
	return nil
}

// markDirty records that c's header in memory changed, and arms the timer
// that writes it back. Batching header writes this way keeps a stream of
// 64 KiB writes from rewriting 8 KiB of header each time; the price is
// that a crash of the process (not only of the machine) within the delay
// leaves the written blocks failing their checksums: detected, reported,
// and re-replicated by the master, never returned.
func (s *Store) markDirty(c *chunk) {
	o := c.open
	o.dirty = true
	c.unsynced = true
	if o.flushArm {
		return
	}
	o.flushArm = true
	if o.timer == nil {
		o.timer = time.AfterFunc(s.opts.HeaderFlushDelay, func() { s.flushLater(c, o) })
	} else {
		o.timer.Reset(s.opts.HeaderFlushDelay)
	}
}

func (s *Store) flushLater(c *chunk, o *openChunk) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open != o {
		return // closed, deleted, or reopened since the timer was armed
	}
	o.flushArm = false
	if !o.dirty {
		return
	}
	if err := s.writeHeader(c); err != nil {
		s.log.Error("chunkstore: cannot write chunk header", "chunk", chunkName(c.id, c.version), "disk", c.disk.spec.Path, "err", err)
	}
}

// markBad records that c is damaged: counted once on its disk, logged
// once, so a chunk read a thousand times is one line for the operator.
// block is the first bad block found, or -1 for the header.
func (s *Store) markBad(c *chunk, block int, reason string) {
	if !c.bad.CompareAndSwap(false, true) {
		return
	}
	c.disk.addChunks(0, 1)
	s.log.Warn("chunkstore: damaged chunk; the master must re-replicate it", "chunk", chunkName(c.id, c.version),
		"disk", c.disk.spec.Path, "block", block, "reason", reason)
}
