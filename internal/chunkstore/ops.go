package chunkstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/carpfs/carpfs/internal/fsutil"
)

// acquire looks a chunk up and locks it exclusively, checking that it
// still exists and has the expected version.
func (s *Store) acquire(id uint64, version uint32) (*chunk, error) {
	c, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if err := c.check(version); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	return c, nil
}

// check verifies, under c.mu, that c still exists with this version.
func (c *chunk) check(version uint32) error {
	if c.deleted {
		return ErrNotFound
	}
	if c.version != version {
		return fmt.Errorf("have version %d, asked for %d: %w", c.version, version, ErrWrongVersion)
	}
	return nil
}

// opErr prefixes an error with the operation and chunk, once.
func opErr(op string, id uint64, version uint32, err error) error {
	return fmt.Errorf("chunkstore: %s chunk %016X_%08X: %w", op, id, version, err)
}

// Create makes an empty chunk on the disk with the largest share of free
// space. It fails with ErrExists if the store has the chunk in any
// version, and with ErrNoSpace if no disk takes new chunks. The new file
// is not durable until Sync.
func (s *Store) Create(id uint64, version uint32) error {
	if err := s.create(id, version); err != nil {
		return opErr("create", id, version, err)
	}
	return nil
}

func (s *Store) create(id uint64, version uint32) error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return ErrClosed
	}
	if _, ok := s.chunks[id]; ok {
		s.mu.Unlock()
		return ErrExists
	}
	// The entry goes in locked, so others wait for the file rather than
	// see a chunk without one; it comes out again if creation fails.
	c := &chunk{id: id, version: version, nameVer: version, size: HeaderSize}
	c.mu.Lock()
	s.chunks[id] = c
	s.mu.Unlock()
	err := s.createFile(c)
	if err != nil {
		c.deleted = true
		s.mu.Lock()
		delete(s.chunks, id)
		s.mu.Unlock()
	}
	c.mu.Unlock()
	return err
}

func (s *Store) createFile(c *chunk) error {
	d, err := s.pickDisk()
	if err != nil {
		return err
	}
	c.disk = d
	f, err := os.OpenFile(c.path(), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		d.adjust(-HeaderSize)
		d.ioError()
		return err
	}
	o := &openChunk{f: f, hdr: newHeader(c.id, c.version)}
	c.open = o
	err = s.writeHeader(c)
	c.open = nil
	if err != nil {
		f.Close()
		os.Remove(c.path())
		d.adjust(-HeaderSize)
		return err
	}
	c.dirUnsynced = true
	d.addChunks(1, 0)
	if s.closed.Load() {
		// Close ran meanwhile and will not see this file: leave it
		// closed, its header is written.
		return f.Close()
	}
	s.cacheOpen(c, o)
	return nil
}

// Delete removes a chunk, damaged or not. The version must match. The
// removal is not fsynced: after a crash the chunk may be back, and the
// master, which no longer knows it, has it deleted again.
func (s *Store) Delete(id uint64, version uint32) error {
	c, err := s.acquire(id, version)
	if err != nil {
		return opErr("delete", id, version, err)
	}
	defer c.mu.Unlock()
	if err := os.Remove(c.path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.disk.ioError()
		return opErr("delete", id, version, err)
	}
	s.dropOpen(c)
	c.deleted = true
	s.mu.Lock()
	delete(s.chunks, id)
	s.mu.Unlock()
	c.disk.adjust(-c.size)
	damaged := 0
	if c.bad.Load() {
		damaged = -1
	}
	c.disk.addChunks(-1, damaged)
	return nil
}

// SetVersion changes a chunk's version from old to new, durably: when it
// returns nil the new version survives a crash. The steps, and what a
// crash after each leaves:
//
//  1. The header, with the new version, is written and the file fsynced.
//     When the chunk has no unsynced writes, the only bytes that differ
//     are in the header's first 64 bytes, one disk sector, so a crash
//     leaves the old header or the new one, never a mix. Before this
//     step is durable the chunk is at the old version, under its old name.
//  2. The file is renamed to its new name and the directory fsynced.
//     Between 1 and 2 the name lags the header; Open believes the header,
//     indexes the new version and renames the file (ScanReport.Renamed).
//
// So a crash leaves either version, consistent, and never a damaged
// chunk. If the rename fails the header is rolled back.
func (s *Store) SetVersion(id uint64, old, new uint32) error {
	c, err := s.acquire(id, old)
	if err != nil {
		return opErr("set version of", id, old, err)
	}
	defer c.mu.Unlock()
	if err := s.setVersion(c, old, new); err != nil {
		return opErr(fmt.Sprintf("set version %d of", new), id, old, err)
	}
	return nil
}

func (s *Store) setVersion(c *chunk, old, new uint32) error {
	if old == new {
		return nil
	}
	if c.disk.readOnly {
		return errReadOnly(c.disk)
	}
	if err := s.ensureOpen(c); err != nil {
		return err
	}
	o := c.open
	o.hdr.version = new
	err := s.writeHeader(c)
	if err == nil {
		err = o.f.Sync()
	}
	if err != nil {
		o.hdr.version = old
		s.markDirty(c) // the file's header is unknown; write the old one back
		c.disk.ioError()
		return err
	}
	c.unsynced = false
	oldPath := c.path()
	newPath := filepath.Join(filepath.Dir(oldPath), chunkName(c.id, new))
	if err := os.Rename(oldPath, newPath); err != nil {
		// Put the old version back, so that header and name agree.
		o.hdr.version = old
		if werr := s.writeHeader(c); werr != nil {
			// The file's header says new, and Open believes headers:
			// serve the chunk as new, under its old name.
			o.hdr.version = new
			c.version = new
			return fmt.Errorf("%w; restoring the old header: %w", err, werr)
		}
		return err
	}
	c.version, c.nameVer = new, new
	if err := fsutil.SyncDir(filepath.Dir(newPath)); err != nil {
		c.dirUnsynced = true
		return fmt.Errorf("version set but maybe not durable: %w", err)
	}
	c.dirUnsynced = false
	return nil
}

// Truncate sets a chunk's length. Shrinking rechecksums the block the new
// end falls in, after verifying it (a bad block is ErrCorrupt, not
// blessed with a new checksum); growing adds zeros and changes no
// checksum, since bytes past the length already count as zeros.
func (s *Store) Truncate(id uint64, version uint32, length int64) error {
	if length < 0 || length > ChunkSize {
		return opErr("truncate", id, version, fmt.Errorf("length %d: %w", length, ErrRange))
	}
	c, err := s.acquire(id, version)
	if err != nil {
		return opErr("truncate", id, version, err)
	}
	defer c.mu.Unlock()
	if err := s.truncate(c, length); err != nil {
		return opErr("truncate", id, version, err)
	}
	return nil
}

func (s *Store) truncate(c *chunk, length int64) error {
	if c.disk.readOnly {
		return errReadOnly(c.disk)
	}
	if err := s.ensureOpen(c); err != nil {
		return err
	}
	s.touch(c)
	old := int64(c.length)
	if length == old {
		return nil
	}
	o := c.open
	if length > old {
		if err := s.prepareGrow(c, HeaderSize+length); err != nil {
			return err
		}
		if err := o.f.Truncate(HeaderSize + length); err != nil {
			c.tailDirty = true
			c.disk.ioError()
			return err
		}
	} else {
		b := int(length / BlockSize)
		if length%BlockSize != 0 {
			buf := blockPool.Get().(*[BlockSize]byte)
			defer blockPool.Put(buf)
			if err := s.readBlock(c, b, buf); err != nil {
				return err
			}
			o.hdr.crc[b] = blockCRC(buf[:length%BlockSize])
			b++
		}
		for ; b < usedBlocks(old); b++ {
			o.hdr.crc[b] = zeroBlockCRC
		}
		if err := o.f.Truncate(HeaderSize + length); err != nil {
			c.tailDirty = true
			c.disk.ioError()
			return err
		}
		c.disk.adjust(HeaderSize + length - c.size)
		c.size, c.tailDirty = HeaderSize+length, false
	}
	c.length = uint32(length)
	o.hdr.length = c.length
	s.markDirty(c)
	return nil
}

// prepareGrow makes room for the file to reach end bytes. If the file's
// tail past the data may hold garbage (a crash, a failed write), it cuts
// the tail first, so that bytes between the old length and the new data
// read as zeros; then it reserves the growth. c.mu is held exclusively.
func (s *Store) prepareGrow(c *chunk, end int64) error {
	dataEnd := HeaderSize + int64(c.length)
	if c.tailDirty || c.size > dataEnd {
		if err := c.open.f.Truncate(dataEnd); err != nil {
			c.disk.ioError()
			return err
		}
		c.disk.adjust(dataEnd - c.size)
		c.size, c.tailDirty = dataEnd, false
	}
	if end <= c.size {
		return nil
	}
	if err := c.disk.reserve(end - c.size); err != nil {
		return err
	}
	c.size = end
	return nil
}

// Sync makes a chunk's data, header and name durable: it writes the
// header if it changed, fsyncs the file, and fsyncs its directory if the
// file was created or renamed since.
func (s *Store) Sync(id uint64) error {
	c, err := s.lookup(id)
	if err != nil {
		return fmt.Errorf("chunkstore: sync chunk %016X: %w", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return fmt.Errorf("chunkstore: sync chunk %016X: %w", id, ErrNotFound)
	}
	if err := s.sync(c); err != nil {
		return opErr("sync", id, c.version, err)
	}
	return nil
}

func (s *Store) sync(c *chunk) error {
	if o := c.open; o != nil && o.dirty {
		if err := s.writeHeader(c); err != nil {
			return err
		}
	}
	if c.unsynced {
		var f *os.File
		if c.open != nil {
			f = c.open.f
		} else {
			// fsync through a new descriptor flushes the file's pages
			// written through the old one: they belong to the inode.
			var err error
			if f, err = os.Open(c.path()); err != nil {
				return err
			}
			defer f.Close()
		}
		if err := f.Sync(); err != nil {
			c.disk.ioError()
			return err
		}
		c.unsynced = false
	}
	if c.dirUnsynced {
		if err := fsutil.SyncDir(filepath.Dir(c.path())); err != nil {
			return err
		}
		c.dirUnsynced = false
	}
	return nil
}
