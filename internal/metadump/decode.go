package metadump

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/carpfs/carpfs/internal/meta"
)

// ReadOptions tunes Decode and LoadFile. The zero value is ready to use.
type ReadOptions struct {
	// Progress, if set, is called after each block with the number of
	// records read so far.
	Progress func(records uint64)
}

// Decode reads a whole dump from r, block by block, and rebuilds the state
// it holds. It reads r to its end: bytes after the trailer are an error.
// A damaged dump gives an error wrapping ErrCorrupt that names the byte
// offset; a dump from a newer carpfs gives a *FormatError. The Header is
// returned as far as it was read, also with an error.
func Decode(r io.Reader, opts ReadOptions) (*meta.State, Header, error) {
	sc := newScanner(r, opts.Progress)
	h, err := sc.readHeader()
	if err != nil {
		return nil, h, err
	}
	b := meta.NewBuilder(h.MetaID, h.Version, h.Term)
	sc.feed = b.Add
	if err := sc.readBlocks(); err != nil {
		return nil, h, err
	}
	h = sc.header
	s, err := b.Finish()
	if err != nil {
		return nil, h, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return s, h, nil
}

// LoadFile decodes the dump at path.
func LoadFile(path string, opts ReadOptions) (*meta.State, Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Header{}, fmt.Errorf("load: %w", err)
	}
	defer f.Close()
	s, h, err := Decode(f, opts)
	if err != nil {
		return nil, h, fmt.Errorf("load %s: %w", path, err)
	}
	return s, h, nil
}

// ReadHeader reads only the header of the dump at path, to pick the newest
// of several dumps without loading them. It does not prove the rest of the
// file is sound; Verify or LoadFile do.
func ReadHeader(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	defer f.Close()
	h, err := newScanner(f, nil).readHeader()
	if err != nil {
		return h, fmt.Errorf("read header of %s: %w", path, err)
	}
	return h, nil
}

// Verify checks every checksum, the framing of every record and the
// trailer of the dump at path without building the state, at disk speed.
// It cannot see inconsistencies inside records; only LoadFile can.
func Verify(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	h, err := verify(f)
	if err != nil {
		return h, fmt.Errorf("verify %s: %w", path, err)
	}
	return h, nil
}

func verify(r io.Reader) (Header, error) {
	sc := newScanner(r, nil)
	h, err := sc.readHeader()
	if err != nil {
		return h, err
	}
	err = sc.readBlocks()
	return sc.header, err
}

// scanner reads a dump's frames, checks them, and hands complete records
// of checksummed blocks to feed.
type scanner struct {
	r        *bufio.Reader
	feed     func(kind meta.RecordKind, rec []byte) error // nil: check framing only
	progress func(uint64)
	header   Header
	off      int64  // bytes consumed
	crc      uint32 // running checksum
	blocks   uint64
	records  uint64
	head     [trailerSize]byte
	buf      []byte // the current block's payload and CRC, reused

	// A record longer than its block, collected until its last byte.
	pend      []byte
	pendKind  meta.RecordKind
	pendNeed  uint64 // bytes still to come; 0 means no record is open
	pendOff   int64
	pendBlock uint64
}

func newScanner(r io.Reader, progress func(uint64)) *scanner {
	// Blocks are read straight into buf; the bufio layer only saves
	// system calls on the small reads of heads and the trailer.
	return &scanner{r: bufio.NewReaderSize(r, 64<<10), progress: progress}
}

// read fills b, calling a short read truncation and anything else an I/O
// error.
func (sc *scanner) read(b []byte, what string) error {
	n, err := io.ReadFull(sc.r, b)
	sc.off += int64(n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return corruptf(sc.off, sc.blocks+1, "truncated in the %s", what)
	default:
		return fmt.Errorf("read at offset %d: %w", sc.off, err)
	}
}

func (sc *scanner) readHeader() (Header, error) {
	b := make([]byte, headerSize)
	// The prefix first: a newer format may have a different header size.
	if err := sc.read(b[:12], "header"); err != nil {
		return Header{}, err
	}
	if err := checkPrefix(b); err != nil {
		return Header{}, err
	}
	if err := sc.read(b[12:], "header"); err != nil {
		return Header{}, err
	}
	h, err := parseHeader(b)
	if err != nil {
		return Header{}, err
	}
	sc.header = h
	sc.crc = binary.LittleEndian.Uint32(b[48:])
	return h, nil
}

// readBlocks reads blocks up to and including the trailer, then insists on
// the end of the input.
func (sc *scanner) readBlocks() error {
	le := binary.LittleEndian
	for {
		start := sc.off
		no := sc.blocks + 1
		head := sc.head[:blockHead]
		if err := sc.read(head, "block head"); err != nil {
			return err
		}
		length, count := le.Uint32(head), le.Uint32(head[4:])
		if length == 0 {
			return sc.readTrailer(start, count)
		}
		if length > MaxBlockSize {
			return corruptf(start, no, "block length %d exceeds the maximum %d", length, MaxBlockSize)
		}
		n := int(length) + crcSize
		if cap(sc.buf) < n {
			sc.buf = make([]byte, n)
		}
		b := sc.buf[:n]
		if err := sc.read(b, "block"); err != nil {
			return err
		}
		payload := b[:length]
		crc := crc32.Update(crc32.Update(sc.crc, castagnoli, head), castagnoli, payload)
		if got := le.Uint32(b[length:]); got != crc {
			return corruptf(start, no, "block checksum %08x, want %08x", got, crc)
		}
		sc.crc = crc
		sc.blocks = no
		if err := sc.splitBlock(payload, count, start+blockHead); err != nil {
			return err
		}
		if sc.progress != nil {
			sc.progress(sc.records)
		}
	}
}

// splitBlock splits one checksummed block into records: first the rest of a
// record left open by earlier blocks, then count records that begin here,
// the last of which may run on into the next block.
func (sc *scanner) splitBlock(p []byte, count uint32, off int64) error {
	no := sc.blocks
	pos := 0
	if sc.pendNeed > 0 {
		n := min(sc.pendNeed, uint64(len(p)))
		sc.pend = append(sc.pend, p[:n]...)
		sc.pendNeed -= n
		pos = int(n)
		if sc.pendNeed > 0 {
			if count != 0 {
				return corruptf(off, no, "block holds %d records but is the middle of the record at offset %d", count, sc.pendOff)
			}
			return nil
		}
		if err := sc.deliver(sc.pendKind, sc.pend, sc.pendOff, sc.pendBlock); err != nil {
			return err
		}
		// Drop a giant buffer; keep an ordinary one for the next giant.
		if cap(sc.pend) > MaxBlockSize {
			sc.pend = nil
		}
		sc.pend = sc.pend[:0]
	}
	for i := range count {
		recOff := off + int64(pos)
		if pos == len(p) {
			return corruptf(recOff, no, "block ends after %d of its %d records", i, count)
		}
		kind := meta.RecordKind(p[pos])
		length, n := binary.Uvarint(p[pos+1:])
		if n <= 0 {
			return corruptf(recOff, no, "bad record length")
		}
		if kind == 0 {
			return corruptf(recOff, no, "record kind 0")
		}
		pos += 1 + n
		if rest := uint64(len(p) - pos); length > rest {
			if i != count-1 {
				return corruptf(recOff, no, "record %d of %d overruns its block", i+1, count)
			}
			sc.records++
			sc.pend = append(sc.pend, p[pos:]...)
			sc.pendKind, sc.pendNeed, sc.pendOff, sc.pendBlock = kind, length-rest, recOff, no
			return nil
		}
		sc.records++
		if err := sc.deliver(kind, p[pos:pos+int(length)], recOff, no); err != nil {
			return err
		}
		pos += int(length)
	}
	if pos != len(p) {
		return corruptf(off+int64(pos), no, "%d bytes after the last of %d records", len(p)-pos, count)
	}
	return nil
}

func (sc *scanner) deliver(kind meta.RecordKind, rec []byte, off int64, block uint64) error {
	if sc.feed == nil {
		return nil
	}
	if err := sc.feed(kind, rec); err != nil {
		return fmt.Errorf("%w at offset %d (block %d): %w", ErrCorrupt, off, block, err)
	}
	return nil
}

// readTrailer checks the trailer whose zero length was just read at start,
// and that nothing follows it.
func (sc *scanner) readTrailer(start int64, count uint32) error {
	le := binary.LittleEndian
	t := sc.head[:]
	if err := sc.read(t[blockHead:], "trailer"); err != nil {
		return err
	}
	if count != 0 || string(t[8:16]) != trailerMagic {
		return corruptf(start, 0, "empty block where the trailer should be")
	}
	if got, want := le.Uint32(t[32:]), crc32.Update(sc.crc, castagnoli, t[:32]); got != want {
		return corruptf(start, 0, "trailer checksum %08x, want %08x", got, want)
	}
	if sc.pendNeed > 0 {
		return corruptf(sc.pendOff, sc.pendBlock, "record cut off by the trailer, %d bytes missing", sc.pendNeed)
	}
	records, blocks := le.Uint64(t[16:]), le.Uint64(t[24:])
	if records != sc.records || blocks != sc.blocks {
		return corruptf(start, 0, "trailer counts %d records in %d blocks, the file holds %d in %d",
			records, blocks, sc.records, sc.blocks)
	}
	var extra [1]byte
	switch n, err := io.ReadFull(sc.r, extra[:]); {
	case n > 0:
		return corruptf(sc.off, 0, "bytes after the trailer")
	case err != io.EOF:
		return fmt.Errorf("read at offset %d: %w", sc.off, err)
	}
	sc.header.Records, sc.header.Blocks, sc.header.Size = sc.records, sc.blocks, sc.off
	return nil
}
