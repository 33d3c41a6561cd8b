package chunkstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Sizes of chunks and of the chunk file format (see the package doc).
const (
	ChunkSize      = 64 << 20              // largest chunk, in bytes
	BlockSize      = 64 << 10              // unit of checksumming
	BlocksPerChunk = ChunkSize / BlockSize // 1024
	HeaderSize     = 8 << 10               // data starts at this file offset
	FormatVersion  = 1                     // chunk file format this package writes
)

// Byte offsets inside the header. Everything a version change touches
// (the version and the header CRC) lies in the first 64 bytes, one disk
// sector, so that SetVersion's header write is atomic on real disks.
const (
	offMagic     = 0
	offFormat    = 8
	offFlags     = 12
	offID        = 16
	offVersion   = 24
	offLength    = 28
	offHeaderCRC = 32
	offBlockCRCs = 64
	endBlockCRCs = offBlockCRCs + 4*BlocksPerChunk // 4160
)

var (
	chunkMagic = [8]byte{'C', 'A', 'R', 'P', 'C', 'H', 'N', 'K'}
	// mooseMagic opens MooseFS 3 chunk files, which share our file names;
	// recognising it turns a baffling "bad magic" into an explanation.
	mooseMagic = [8]byte{'M', 'F', 'S', 'C', ' ', '1', '.', '0'}

	castagnoli = crc32.MakeTable(crc32.Castagnoli)

	// zeroBlock is read-only: padding for checksums and zero-fill for reads.
	zeroBlock = make([]byte, BlockSize)
	// zeroBlockCRC is the CRC of a block that holds no data.
	zeroBlockCRC = crc32.Checksum(zeroBlock, castagnoli)
)

// ErrBadHeader is wrapped by every error about a chunk file header that
// cannot be trusted.
var ErrBadHeader = errors.New("bad chunk header")

// header is the decoded form of a chunk file's first HeaderSize bytes.
type header struct {
	id      uint64
	version uint32
	length  uint32
	crc     [BlocksPerChunk]uint32 // one per block, see blockCRC
}

// usedBlocks is the number of blocks that hold data of a chunk of length n.
func usedBlocks(n int64) int { return int((n + BlockSize - 1) / BlockSize) }

// newHeader is the header of an empty chunk.
func newHeader(id uint64, version uint32) *header {
	h := &header{id: id, version: version}
	for i := range h.crc {
		h.crc[i] = zeroBlockCRC
	}
	return h
}

// encode writes the whole header, padding included, into b[:HeaderSize].
func (h *header) encode(b []byte) {
	b = b[:HeaderSize]
	clear(b)
	copy(b[offMagic:], chunkMagic[:])
	le := binary.LittleEndian
	le.PutUint32(b[offFormat:], FormatVersion)
	le.PutUint64(b[offID:], h.id)
	le.PutUint32(b[offVersion:], h.version)
	le.PutUint32(b[offLength:], h.length)
	for i, c := range h.crc {
		le.PutUint32(b[offBlockCRCs+4*i:], c)
	}
	le.PutUint32(b[offHeaderCRC:], headerCRC(b))
}

// headerCRC is the CRC-32C of the header without its own CRC field.
func headerCRC(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b[:offHeaderCRC])
	return crc32.Update(c, castagnoli, b[offHeaderCRC+4:HeaderSize])
}

// decodeHeader checks and decodes a header. It accepts exactly the bytes
// encode produces, so a header that decodes re-encodes identically.
func decodeHeader(b []byte) (*header, error) {
	if len(b) != HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadHeader, len(b), HeaderSize)
	}
	if [8]byte(b[offMagic:]) != chunkMagic {
		if [8]byte(b[offMagic:]) == mooseMagic {
			return nil, fmt.Errorf("%w: a MooseFS chunk file (magic %q), which carpfs does not read", ErrBadHeader, mooseMagic[:])
		}
		return nil, fmt.Errorf("%w: bad magic %q", ErrBadHeader, b[offMagic:offMagic+8])
	}
	le := binary.LittleEndian
	if f := le.Uint32(b[offFormat:]); f != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d, this build reads %d", ErrBadHeader, f, FormatVersion)
	}
	// The CRC comes before the meaning of the fields: a flipped bit is
	// reported as what it is, not as a strange length.
	if want, got := le.Uint32(b[offHeaderCRC:]), headerCRC(b); want != got {
		return nil, fmt.Errorf("%w: header CRC %08x, computed %08x", ErrBadHeader, want, got)
	}
	if f := le.Uint32(b[offFlags:]); f != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrBadHeader, f)
	}
	h := &header{
		id:      le.Uint64(b[offID:]),
		version: le.Uint32(b[offVersion:]),
		length:  le.Uint32(b[offLength:]),
	}
	if h.length > ChunkSize {
		return nil, fmt.Errorf("%w: length %d exceeds %d", ErrBadHeader, h.length, ChunkSize)
	}
	used := usedBlocks(int64(h.length))
	for i := range h.crc {
		h.crc[i] = le.Uint32(b[offBlockCRCs+4*i:])
		if i >= used && h.crc[i] != zeroBlockCRC {
			return nil, fmt.Errorf("%w: block %d lies past length %d but its CRC is not that of an empty block", ErrBadHeader, i, h.length)
		}
	}
	if !allZero(b[offHeaderCRC+4:offBlockCRCs]) || !allZero(b[endBlockCRCs:]) {
		return nil, fmt.Errorf("%w: nonzero padding", ErrBadHeader)
	}
	return h, nil
}

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if string(b[:n]) != string(zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// blockCRC is the checksum of block data that may be shorter than a
// block: the missing tail counts as zeros, which is what a reader sees.
func blockCRC(data []byte) uint32 {
	c := crc32.Update(0, castagnoli, data)
	return crc32.Update(c, castagnoli, zeroBlock[:BlockSize-len(data)])
}
