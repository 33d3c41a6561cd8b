package metadump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
)

// DefaultKeep is how many older dumps Write keeps when Options.Keep is 0.
const DefaultKeep = 3

// maxKeep bounds Options.Keep; more copies than this is a typo.
const maxKeep = 1000

// Options tunes Encode and Write. The zero value is ready to use.
type Options struct {
	// Keep is how many older dumps Write keeps as name.back.1 (newest)
	// to name.back.Keep. 0 means DefaultKeep; negative keeps none.
	Keep int
	// BlockSize is the payload bytes per block, MinBlockSize to
	// MaxBlockSize; 0 means DefaultBlockSize. Tests use small blocks to
	// get many block boundaries out of a small state.
	BlockSize int
	// Now stamps the header's write time; nil means time.Now. A fixed
	// clock makes the output a pure function of the state.
	Now func() time.Time
	// Progress, if set, is called after each block with the number of
	// records written so far, from the goroutine that writes.
	Progress func(records uint64)
	// Logger receives one line per published dump and warnings about
	// kept copies; nil discards.
	Logger *slog.Logger
	// FS is where Write creates, renames and syncs files; nil means the
	// operating system's.
	FS FS
}

// Validate reports options that cannot be used.
func (o Options) Validate() error {
	if o.BlockSize != 0 && (o.BlockSize < MinBlockSize || o.BlockSize > MaxBlockSize) {
		return fmt.Errorf("block size %d outside %d..%d", o.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if o.Keep > maxKeep {
		return fmt.Errorf("keep %d is more than %d copies", o.Keep, maxKeep)
	}
	return nil
}

func (o Options) blockSize() int {
	if o.BlockSize == 0 {
		return DefaultBlockSize
	}
	return o.BlockSize
}

func (o Options) keep() int {
	switch {
	case o.Keep == 0:
		return DefaultKeep
	case o.Keep < 0:
		return 0
	}
	return o.Keep
}

func (o Options) now() uint64 {
	t := time.Now()
	if o.Now != nil {
		t = o.Now()
	}
	return uint64(max(t.Unix(), 0))
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// Encode writes s as a complete dump to w and returns its header with the
// totals filled in. It reads s throughout, so s must not change meanwhile.
// Errors from w are returned as they are, wrapped with the block they hit.
func Encode(w io.Writer, s *meta.State, opts Options) (Header, error) {
	if err := opts.Validate(); err != nil {
		return Header{}, fmt.Errorf("encode: %w", err)
	}
	h := Header{
		Format:  FormatVersion,
		MetaID:  s.MetaID(),
		Version: s.Version(),
		Term:    s.Term(),
		Written: opts.now(),
	}
	size := opts.blockSize()
	bw := &blockWriter{
		w:        w,
		size:     size,
		buf:      make([]byte, blockHead, blockHead+size+crcSize),
		progress: opts.Progress,
	}
	hb := appendHeader(make([]byte, 0, headerSize), &h)
	bw.crc = binary.LittleEndian.Uint32(hb[headerSize-crcSize:])
	if _, err := w.Write(hb); err != nil {
		return Header{}, fmt.Errorf("encode: write header: %w", err)
	}
	bw.off = headerSize
	if err := s.Records(bw.add); err != nil {
		return Header{}, fmt.Errorf("encode: %w", err)
	}
	if err := bw.finish(); err != nil {
		return Header{}, fmt.Errorf("encode: %w", err)
	}
	h.Records, h.Blocks, h.Size = bw.records, bw.blocks, bw.off
	return h, nil
}

// blockWriter frames records into blocks. Each block is assembled in buf
// behind room for its length and count and goes out in one Write, so buf
// serves as the large write buffer and no bufio copy is needed.
type blockWriter struct {
	w        io.Writer
	size     int    // payload bytes per block
	buf      []byte // block head, payload; cap leaves room for the CRC
	count    uint32 // records begun in the current block
	crc      uint32 // running checksum of everything written so far
	off      int64  // bytes written
	records  uint64
	blocks   uint64
	progress func(uint64)
}

// errRecordKind would mean meta emitted a kind the format cannot carry.
var errRecordKind = errors.New("record kind 0")

// add appends one record, starting a new block first if the record does
// not fit in what is left of this one, and spreading it over several
// blocks only if it is longer than a block.
func (bw *blockWriter) add(kind meta.RecordKind, rec []byte) error {
	if kind == 0 {
		return errRecordKind
	}
	var head [1 + binary.MaxVarintLen64]byte
	head[0] = byte(kind)
	n := 1 + binary.PutUvarint(head[1:], uint64(len(rec)))
	used := len(bw.buf) - blockHead
	if used > 0 && used+n+len(rec) > bw.size {
		if err := bw.flush(); err != nil {
			return err
		}
	}
	bw.buf = append(bw.buf, head[:n]...)
	bw.count++
	bw.records++
	for {
		room := bw.size - (len(bw.buf) - blockHead)
		if len(rec) <= room {
			bw.buf = append(bw.buf, rec...)
			return nil
		}
		bw.buf = append(bw.buf, rec[:room]...)
		rec = rec[room:]
		if err := bw.flush(); err != nil {
			return err
		}
	}
}

// flush writes the current block, which must not be empty.
func (bw *blockWriter) flush() error {
	b := bw.buf
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)-blockHead))
	binary.LittleEndian.PutUint32(b[4:], bw.count)
	bw.crc = crc32.Update(bw.crc, castagnoli, b)
	b = binary.LittleEndian.AppendUint32(b, bw.crc)
	bw.blocks++
	if _, err := bw.w.Write(b); err != nil {
		return fmt.Errorf("write block %d at offset %d: %w", bw.blocks, bw.off, err)
	}
	bw.off += int64(len(b))
	bw.buf, bw.count = b[:blockHead], 0
	if bw.progress != nil {
		bw.progress(bw.records)
	}
	return nil
}

// finish writes the last block, if any, and the trailer.
func (bw *blockWriter) finish() error {
	if len(bw.buf) > blockHead {
		if err := bw.flush(); err != nil {
			return err
		}
	}
	t := make([]byte, blockHead, trailerSize)
	t = append(t, trailerMagic...)
	t = binary.LittleEndian.AppendUint64(t, bw.records)
	t = binary.LittleEndian.AppendUint64(t, bw.blocks)
	t = binary.LittleEndian.AppendUint32(t, crc32.Update(bw.crc, castagnoli, t))
	if _, err := bw.w.Write(t); err != nil {
		return fmt.Errorf("write trailer at offset %d: %w", bw.off, err)
	}
	bw.off += int64(len(t))
	return nil
}
