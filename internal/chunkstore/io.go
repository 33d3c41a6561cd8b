package chunkstore

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"syscall"
)

var blockPool = sync.Pool{New: func() any { return new([BlockSize]byte) }}

// writebackMin is the smallest write whose pages are sent to the disk at
// once rather than left for the kernel's writeback or the next Sync: a
// stream of large writes then keeps the disk busy while it arrives, and
// the fsync at its end (a client's fsync, a lease's end) waits only for
// the last of it. Small writes are left alone: for them the system call
// would cost more than it saves.
const writebackMin = 1 << 20

// ReadAt reads len(p) bytes of a chunk at off. It reads whole 64 KiB
// blocks from disk and verifies each one's checksum before any of it is
// returned; a block that fails is ErrCorrupt (naming chunk and block),
// with n = 0 and p cleared. Bytes past the chunk's length and within
// ChunkSize read as zeros, as in MooseFS: a file's chunk may be shorter
// than the file's share of it (holes, a truncate). A read that crosses
// ChunkSize returns what lies before it and io.EOF. A chunk stored with
// another version is ErrWrongVersion.
func (s *Store) ReadAt(id uint64, version uint32, p []byte, off int64) (int, error) {
	if off < 0 || off > ChunkSize {
		return 0, opErr("read", id, version, fmt.Errorf("offset %d: %w", off, ErrRange))
	}
	want := len(p)
	if int64(len(p)) > ChunkSize-off {
		p = p[:ChunkSize-off]
	}
	c, err := s.lookup(id)
	var unlock func()
	if err == nil {
		unlock, err = s.lockOpen(c, version)
	}
	if err != nil {
		return 0, opErr("read", id, version, err)
	}
	s.touch(c)
	err = s.read(c, p, off)
	unlock()
	if err != nil {
		clear(p)
		return 0, opErr("read", id, version, err)
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// lockOpen locks c for reading, open at this version, and returns the
// matching unlock. Usually that is the shared lock. Opening needs the
// exclusive one; having taken it, the read proceeds under it rather than
// drop it and let a busy cache close the file again before the read.
func (s *Store) lockOpen(c *chunk, version uint32) (unlock func(), err error) {
	c.mu.RLock()
	if err := c.check(version); err != nil {
		c.mu.RUnlock()
		return nil, err
	}
	if c.open != nil {
		return c.mu.RUnlock, nil
	}
	c.mu.RUnlock()
	c.mu.Lock()
	err = c.check(version)
	if err == nil {
		err = s.ensureOpen(c)
	}
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	return c.mu.Unlock, nil
}

// read fills p from offset off of c, verifying every block it touches.
// Runs of whole blocks are read straight into p in one system call and
// checked there; partial blocks at either end go through a buffer.
func (s *Store) read(c *chunk, p []byte, off int64) error {
	length := int64(c.length)
	end := off + int64(len(p))
	for pos := off; pos < end; {
		b := int(pos / BlockSize)
		bStart := int64(b) * BlockSize
		if bStart >= length {
			clear(p[pos-off:]) // past the data: zeros, nothing to verify
			return nil
		}
		if pos == bStart && end-bStart >= BlockSize {
			runEnd := bStart + (end-bStart)/BlockSize*BlockSize
			dst := p[pos-off : runEnd-off]
			data := min(runEnd, length) - bStart
			if err := s.pread(c, dst[:data], HeaderSize+bStart); err != nil {
				return err
			}
			clear(dst[data:])
			for i := 0; int64(i)*BlockSize < data; i++ {
				blk := dst[i*BlockSize : (i+1)*BlockSize]
				if got, want := crc32.Checksum(blk, castagnoli), c.open.hdr.crc[b+i]; got != want {
					return s.corrupt(c, b+i, got, want)
				}
			}
			pos = runEnd
			continue
		}
		buf := blockPool.Get().(*[BlockSize]byte)
		err := s.readBlock(c, b, buf)
		n := copy(p[pos-off:], buf[pos-bStart:])
		blockPool.Put(buf)
		if err != nil {
			return err
		}
		pos += int64(n)
	}
	return nil
}

// readBlock reads block b into buf, zeros past the length, and verifies
// it. c.mu is held (shared suffices) and c is open.
func (s *Store) readBlock(c *chunk, b int, buf *[BlockSize]byte) error {
	start := int64(b) * BlockSize
	n := min(int64(c.length)-start, BlockSize)
	if n <= 0 {
		clear(buf[:])
		return nil
	}
	if err := s.pread(c, buf[:n], HeaderSize+start); err != nil {
		return err
	}
	clear(buf[n:])
	if got, want := crc32.Checksum(buf[:], castagnoli), c.open.hdr.crc[b]; got != want {
		return s.corrupt(c, b, got, want)
	}
	return nil
}

// pread fills p from the file at off. Bytes past the end of the file
// read as zeros; if they should not be, the checksum says so.
func (s *Store) pread(c *chunk, p []byte, off int64) error {
	n, err := c.open.f.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		return nil
	}
	if err != nil {
		c.disk.ioError()
		return err
	}
	return nil
}

func (s *Store) corrupt(c *chunk, b int, got, want uint32) error {
	s.markBad(c, b, fmt.Sprintf("block %d CRC %08x, header says %08x", b, got, want))
	return fmt.Errorf("block %d (bytes %d to %d) fails its checksum: %w", b, int64(b)*BlockSize, int64(b+1)*BlockSize, ErrCorrupt)
}

// WriteAt writes p at offset off of a chunk, growing its length if the
// write ends past it; off+len(p) must not pass ChunkSize. Blocks only
// partly written are read, verified and rechecksummed: a corrupt old
// block under a partial write fails the whole write with ErrCorrupt
// before anything is written. The header is updated in memory and
// written later (Options.HeaderFlushDelay); nothing is fsynced until
// Sync. Growing the chunk needs free space on its disk (ErrNoSpace).
func (s *Store) WriteAt(id uint64, version uint32, p []byte, off int64) error {
	if off < 0 || off > ChunkSize || int64(len(p)) > ChunkSize-off {
		return opErr("write", id, version, fmt.Errorf("%d bytes at %d: %w", len(p), off, ErrRange))
	}
	c, err := s.acquire(id, version)
	if err != nil {
		return opErr("write", id, version, err)
	}
	defer c.mu.Unlock()
	if err := s.write(c, p, off); err != nil {
		return opErr("write", id, version, err)
	}
	return nil
}

func (s *Store) write(c *chunk, p []byte, off int64) error {
	if c.disk.readOnly {
		return errReadOnly(c.disk)
	}
	if err := s.ensureOpen(c); err != nil {
		return err
	}
	s.touch(c)
	if len(p) == 0 {
		return nil
	}
	o := c.open
	oldLen := int64(c.length)
	end := off + int64(len(p))
	first, last := int(off/BlockSize), int((end-1)/BlockSize)

	// New checksums first, so a bad old block stops the write before
	// any byte of it reaches the disk.
	var crcs [BlocksPerChunk]uint32
	for b := first; b <= last; b++ {
		bStart := int64(b) * BlockSize
		bEnd := bStart + BlockSize
		wS, wE := max(off, bStart), min(end, bEnd)
		src := p[wS-off : wE-off]
		oldEnd := min(bEnd, oldLen) // old data in this block: [bStart, oldEnd)
		switch {
		case oldEnd > bStart && (wS > bStart || wE < oldEnd):
			buf := blockPool.Get().(*[BlockSize]byte)
			err := s.readBlock(c, b, buf)
			if err == nil {
				copy(buf[wS-bStart:], src)
				crcs[b-first] = crc32.Checksum(buf[:], castagnoli)
			}
			blockPool.Put(buf)
			if err != nil {
				return fmt.Errorf("partial write over a bad block: %w", err)
			}
		case wS == bStart:
			crcs[b-first] = blockCRC(src)
		default: // no old data; zeros before the write
			x := crc32.Update(0, castagnoli, zeroBlock[:wS-bStart])
			x = crc32.Update(x, castagnoli, src)
			crcs[b-first] = crc32.Update(x, castagnoli, zeroBlock[:bEnd-wE])
		}
	}

	if end > oldLen {
		if err := s.prepareGrow(c, HeaderSize+end); err != nil {
			return err
		}
	}
	if _, err := o.f.WriteAt(p, HeaderSize+off); err != nil {
		// Some of p may be on disk under the old checksums: those blocks
		// now fail verification, which is the truth about them.
		c.tailDirty = true
		c.disk.ioError()
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("disk %s: %w (%v)", c.disk.spec.Path, ErrNoSpace, err)
		}
		return err
	}
	if len(p) >= writebackMin {
		startWriteback(o.f, HeaderSize+off, int64(len(p)))
	}
	copy(o.hdr.crc[first:last+1], crcs[:last-first+1])
	if end > oldLen {
		c.length = uint32(end)
		o.hdr.length = c.length
	}
	s.markDirty(c)
	return nil
}
