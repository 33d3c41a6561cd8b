package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"time"
)

// scrubStep is how much of a chunk Scrub reads under one shared lock:
// small enough that a writer of the same chunk waits at most one read of
// it, large enough to read at disk speed.
const scrubStep = 16 * BlockSize

// Scrub reads every block of every chunk once, in chunk id order, and
// verifies its checksum, reading no more than rate bytes per second
// (rate <= 0: no limit). It calls report once for each damaged chunk
// found, with every bad block of it, and marks the chunk damaged (List,
// Disks). A chunk whose header was already bad is reported too, so one
// pass gives the whole picture.
//
// Scrub holds a chunk's lock only while reading one step (1 MiB) of it
// and uses a file descriptor of its own, so it neither stalls writers
// for long nor pushes hot chunks out of the open-file cache. A chunk
// deleted or given a new version during its scrub is skipped; the next
// pass sees it. Scrub returns nil after a full pass, ctx.Err() if
// cancelled, ErrClosed if the store closes.
func (s *Store) Scrub(ctx context.Context, rate int64, report func(BadChunk)) error {
	s.mu.RLock()
	ids := make([]uint64, 0, len(s.chunks))
	for id := range s.chunks {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	slices.Sort(ids)
	p := pacer{rate: rate, start: time.Now()}
	buf := make([]byte, scrubStep)
	for _, id := range ids {
		c, err := s.lookup(id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("chunkstore: scrub: %w", err)
		}
		bad, err := s.scrubChunk(ctx, c, buf, &p)
		if err != nil {
			return fmt.Errorf("chunkstore: scrub: %w", err)
		}
		if bad != nil && report != nil {
			report(*bad)
		}
	}
	return nil
}

// scrubChunk verifies one chunk. It returns a report if the chunk is
// damaged, and an error only when the scrub as a whole must stop.
func (s *Store) scrubChunk(ctx context.Context, c *chunk, buf []byte, p *pacer) (*BadChunk, error) {
	c.mu.RLock()
	version, hdrBad, deleted, path := c.version, c.hdrBad, c.deleted, c.path()
	c.mu.RUnlock()
	if deleted {
		return nil, nil
	}
	bad := &BadChunk{ID: c.id, Version: version, Disk: c.disk.spec.Path, Path: path}
	if hdrBad != "" {
		bad.Err = fmt.Errorf("header: %s: %w", hdrBad, ErrCorrupt)
		return bad, nil
	}
	var own *os.File // our descriptor, for when the chunk is not open
	defer func() {
		if own != nil {
			own.Close()
		}
	}()
	var firstErr error
	for b := 0; ; b += scrubStep / BlockSize {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.closed.Load() {
			return nil, ErrClosed
		}
		var crcs [scrubStep / BlockSize]uint32
		c.mu.RLock()
		if c.deleted || c.version != version || c.hdrBad != "" {
			c.mu.RUnlock()
			return nil, nil
		}
		length := int64(c.length)
		if b >= usedBlocks(length) {
			c.mu.RUnlock()
			break
		}
		n := min(length-int64(b)*BlockSize, scrubStep)
		var err error
		var f *os.File
		if c.open != nil {
			f = c.open.f
			copy(crcs[:], c.open.hdr.crc[b:])
		} else {
			if own == nil {
				own, err = os.Open(path)
			}
			if err == nil {
				f = own
				err = readHeaderCRCs(own, c, b, crcs[:])
			}
		}
		if err == nil {
			var got int
			got, err = f.ReadAt(buf[:n], HeaderSize+int64(b)*BlockSize)
			if err == io.EOF {
				clear(buf[got:n]) // missing bytes count as zeros, as for reads
				err = nil
			}
		}
		c.mu.RUnlock()
		if err != nil {
			if errors.Is(err, ErrBadHeader) {
				s.markBad(c, -1, err.Error())
				bad.Err = fmt.Errorf("%w: %w", ErrCorrupt, err)
				return bad, nil
			}
			c.disk.ioError()
			firstErr = cmpErr(firstErr, err)
			for i := 0; int64(i)*BlockSize < n; i++ {
				bad.Blocks = append(bad.Blocks, b+i)
			}
		} else {
			clear(buf[n:])
			for i := 0; int64(i)*BlockSize < n; i++ {
				blk := buf[i*BlockSize : (i+1)*BlockSize]
				if got := crc32.Checksum(blk, castagnoli); got != crcs[i] {
					s.markBad(c, b+i, fmt.Sprintf("scrub: block %d CRC %08x, header says %08x", b+i, got, crcs[i]))
					bad.Blocks = append(bad.Blocks, b+i)
				}
			}
		}
		if err := p.wait(ctx, n); err != nil {
			return nil, err
		}
	}
	if len(bad.Blocks) == 0 {
		return nil, nil
	}
	if firstErr != nil {
		s.markBad(c, bad.Blocks[0], firstErr.Error())
		bad.Err = fmt.Errorf("%d blocks unreadable or failing checksums (%w): %w", len(bad.Blocks), firstErr, ErrCorrupt)
	} else {
		bad.Err = fmt.Errorf("%d blocks fail their checksums: %w", len(bad.Blocks), ErrCorrupt)
	}
	return bad, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// readHeaderCRCs reads the checksums of blocks from b on from the file's
// header, which is current because the chunk is not open (c.mu held).
func readHeaderCRCs(f *os.File, c *chunk, b int, crcs []uint32) error {
	buf := headerPool.Get().(*[HeaderSize]byte)
	defer headerPool.Put(buf)
	if _, err := f.ReadAt(buf[:], 0); err != nil {
		return fmt.Errorf("%w: read: %w", ErrBadHeader, err)
	}
	h, err := decodeHeader(buf[:])
	if err != nil {
		return err
	}
	if h.id != c.id || h.version != c.version || h.length != c.length {
		return fmt.Errorf("%w: header changed on disk behind the store's back", ErrBadHeader)
	}
	copy(crcs, h.crc[b:])
	return nil
}

// pacer spreads reads so that, on average since start, no more than rate
// bytes per second are read.
type pacer struct {
	rate  int64
	start time.Time
	done  int64
}

func (p *pacer) wait(ctx context.Context, n int64) error {
	p.done += n
	if p.rate <= 0 {
		return ctx.Err()
	}
	due := p.start.Add(time.Duration(float64(p.done) / float64(p.rate) * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
