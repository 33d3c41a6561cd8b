package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// ErrMessage marks a payload that does not decode as the message its frame
// type names: short, with trailing bytes, or with a field out of range.
// The frame itself was intact (its CRC matched), so the peer, not the
// network, is at fault.
var ErrMessage = errors.New("malformed message")

// Enc appends a message's fields to a byte slice. It never fails: the
// frame writer checks the total size once the message is complete. The
// zero Enc is ready to use.
type Enc struct {
	b []byte
}

// Buf returns the bytes appended so far. They alias the Enc's buffer.
func (e *Enc) Buf() []byte { return e.b }

// Reset empties the Enc, keeping its buffer for reuse.
func (e *Enc) Reset() { e.b = e.b[:0] }

// U8 appends one byte.
func (e *Enc) U8(v uint8) { e.b = append(e.b, v) }

// U16 appends v little-endian.
func (e *Enc) U16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }

// U32 appends v little-endian.
func (e *Enc) U32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }

// U64 appends v little-endian.
func (e *Enc) U64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

// Uvarint appends v as an unsigned LEB128 varint (encoding/binary's).
func (e *Enc) Uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }

// Bool appends 1 for true and 0 for false.
func (e *Enc) Bool(v bool) {
	if v {
		e.U8(1)
	} else {
		e.U8(0)
	}
}

// Bytes appends b preceded by its length as a uvarint.
func (e *Enc) Bytes(b []byte) {
	e.Uvarint(uint64(len(b)))
	e.b = append(e.b, b...)
}

// String appends s preceded by its length as a uvarint.
func (e *Enc) String(s string) {
	e.Uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// bytesSize is the encoded size of b written by Bytes, for Sizer methods.
func bytesSize(b []byte) int { return uvarintLen(uint64(len(b))) + len(b) }

// Raw appends b with no length: for fixed-size fields such as nonces.
func (e *Enc) Raw(b []byte) { e.b = append(e.b, b...) }

// Dec reads fields from a payload in the order Enc wrote them. Its error
// is sticky: after the first problem every read returns a zero value, so
// a Decode method reads all its fields and checks Err once at the end.
//
// Dec accepts only what Enc writes: varints in their shortest form, bools
// as 0 or 1, and (through End) no trailing bytes. So a payload that
// decodes re-encodes to exactly the same bytes, which is the property the
// fuzz tests check, and two payloads that differ never mean the same
// message.
type Dec struct {
	b   []byte
	off int
	err error
}

// NewDec returns a Dec reading b. Bytes and Raw return slices of b, so b
// must not change while the decoded message is in use.
func NewDec(b []byte) *Dec { return &Dec{b: b} }

// Err returns the first error met, or nil.
func (d *Dec) Err() error { return d.err }

// Remaining is the number of bytes not read yet.
func (d *Dec) Remaining() int { return len(d.b) - d.off }

// Fail records a malformed field at the current offset, unless an
// earlier error is already recorded. Decode methods call it for values
// that are well-formed bytes but out of range for the message.
func (d *Dec) Fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w at byte %d: %s", ErrMessage, d.off, fmt.Sprintf(format, args...))
	}
}

// End refuses trailing bytes and returns the sticky error.
func (d *Dec) End() error {
	if d.err == nil && d.off != len(d.b) {
		d.Fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}

// take returns the next n bytes, or nil after recording an error.
func (d *Dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.Fail("%s needs %d bytes, %d remain", what, n, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p
}

// U8 reads one byte.
func (d *Dec) U8() uint8 {
	if p := d.take(1, "u8"); p != nil {
		return p[0]
	}
	return 0
}

// U16 reads a little-endian uint16.
func (d *Dec) U16() uint16 {
	if p := d.take(2, "u16"); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

// U32 reads a little-endian uint32.
func (d *Dec) U32() uint32 {
	if p := d.take(4, "u32"); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

// U64 reads a little-endian uint64.
func (d *Dec) U64() uint64 {
	if p := d.take(8, "u64"); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// Uvarint reads a varint, refusing one that overflows 64 bits or is not
// in its shortest form (encoding/binary accepts 0x80 0x00 as 0; a second
// spelling of a value would break canonical decoding).
func (d *Dec) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.Fail("varint runs past the end")
		return 0
	case n < 0:
		d.Fail("varint overflows 64 bits")
		return 0
	case n != uvarintLen(v):
		d.Fail("varint %d is not in its shortest form", v)
		return 0
	}
	d.off += n
	return v
}

// uvarintLen is the number of bytes binary.AppendUvarint writes for v.
func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

// Bool reads a byte that must be 0 or 1.
func (d *Dec) Bool() bool {
	switch v := d.U8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.Fail("bool byte is %d, not 0 or 1", v)
		return false
	}
}

// length reads a uvarint length and checks it against what remains, so a
// forged length can never make a decoder allocate or read past the
// payload.
func (d *Dec) length(what string) int {
	n := d.Uvarint()
	if d.err == nil && n > uint64(len(d.b)-d.off) {
		d.Fail("%s length %d exceeds the %d bytes that remain", what, n, len(d.b)-d.off)
		return 0
	}
	return int(n)
}

// Bytes reads a uvarint length and that many bytes. The result aliases
// the payload; a zero length gives nil, so a decoded message compares
// equal to one that was never given the field.
func (d *Dec) Bytes() []byte {
	n := d.length("bytes")
	if n == 0 {
		return nil
	}
	return d.take(n, "bytes")
}

// String reads a uvarint length and that many bytes as a string.
func (d *Dec) String() string {
	n := d.length("string")
	return string(d.take(n, "string"))
}

// Raw reads exactly len(dst) bytes into dst: for fixed-size fields.
func (d *Dec) Raw(dst []byte) {
	if p := d.take(len(dst), "fixed field"); p != nil {
		copy(dst, p)
	}
}
