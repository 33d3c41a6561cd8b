package metadump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// FormatVersion is the dump format this build writes and the newest it
// reads.
const FormatVersion = 1

// Block sizes, in payload bytes.
const (
	// DefaultBlockSize is what Write and Encode use unless told otherwise:
	// large enough that framing and checksums cost nothing measurable,
	// small enough that a reader's buffer is no concern.
	DefaultBlockSize = 1 << 20
	// MaxBlockSize is the largest block a reader accepts and so the
	// largest buffer a length field can make it allocate. It leaves room
	// for a later writer to use bigger blocks without a format change.
	MaxBlockSize = 4 << 20
	// MinBlockSize keeps a record's kind and length inside one block.
	MinBlockSize = 64
)

const (
	magic        = "CARPMETA"
	trailerMagic = "ENDCARPM"

	headerSize  = 52
	blockHead   = 8 // payload length, record count
	crcSize     = 4
	trailerSize = blockHead + 8 + 8 + 8 + crcSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error that says a dump is damaged:
// truncated, with a bad checksum or framing, or holding records meta.Builder
// refuses (those wrap meta.ErrBadSnapshot too).
var ErrCorrupt = errors.New("corrupt dump")

// FormatError reports a dump written in a format newer than this build
// reads.
type FormatError struct {
	Format uint32 // the dump's format version
	Known  uint32 // the newest this build reads
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("dump format %d is newer than this build understands (%d); upgrade carpfs", e.Format, e.Known)
}

// corruptf builds an ErrCorrupt error pointing at a byte offset and, when
// block > 0, at the block (numbered from 1) that holds it.
func corruptf(off int64, block uint64, format string, a ...any) error {
	where := fmt.Sprintf("offset %d", off)
	if block > 0 {
		where += fmt.Sprintf(" (block %d)", block)
	}
	return fmt.Errorf("%w at %s: %w", ErrCorrupt, where, fmt.Errorf(format, a...))
}

// Header describes a dump. The first six fields are the file's header;
// Records, Blocks and Size are known only once the whole file was read or
// written, and ReadHeader leaves them zero.
type Header struct {
	Format  uint32
	Flags   uint32
	MetaID  uint64
	Version uint64
	Term    uint64
	Written uint64 // unix seconds

	Records uint64
	Blocks  uint64
	Size    int64 // bytes in the file
}

// WrittenAt is the time the dump was written.
func (h Header) WrittenAt() time.Time { return time.Unix(int64(h.Written), 0) }

// appendHeader encodes h's header fields, checksum included.
func appendHeader(b []byte, h *Header) []byte {
	start := len(b)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, h.Format)
	b = binary.LittleEndian.AppendUint32(b, h.Flags)
	b = binary.LittleEndian.AppendUint64(b, h.MetaID)
	b = binary.LittleEndian.AppendUint64(b, h.Version)
	b = binary.LittleEndian.AppendUint64(b, h.Term)
	b = binary.LittleEndian.AppendUint64(b, h.Written)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// checkPrefix checks the magic and format version, the part of the header
// every format shares, so a newer dump gets FormatError and not a checksum
// complaint about a header it cannot parse.
func checkPrefix(b []byte) error {
	if string(b[:8]) != magic {
		return corruptf(0, 0, "bad magic %q: not a carpfs metadata dump", b[:8])
	}
	switch v := binary.LittleEndian.Uint32(b[8:]); {
	case v == 0:
		return corruptf(8, 0, "format version 0")
	case v > FormatVersion:
		return &FormatError{Format: v, Known: FormatVersion}
	}
	return nil
}

// parseHeader decodes a whole header whose prefix checkPrefix accepted.
func parseHeader(b []byte) (Header, error) {
	le := binary.LittleEndian
	if got, want := le.Uint32(b[48:]), crc32.Checksum(b[:48], castagnoli); got != want {
		return Header{}, corruptf(48, 0, "header checksum %08x, want %08x", got, want)
	}
	h := Header{
		Format:  le.Uint32(b[8:]),
		Flags:   le.Uint32(b[12:]),
		MetaID:  le.Uint64(b[16:]),
		Version: le.Uint64(b[24:]),
		Term:    le.Uint64(b[32:]),
		Written: le.Uint64(b[40:]),
	}
	if h.Flags != 0 {
		return Header{}, corruptf(12, 0, "unknown flags %#x in a format %d dump", h.Flags, h.Format)
	}
	return h, nil
}
