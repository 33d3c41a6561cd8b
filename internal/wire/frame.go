package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Frame layout sizes; see the package doc for the byte layout.
const (
	lenSize    = 4                    // the length field itself
	headerSize = lenSize + 2 + 1 + 8  // length, type, flags, request id
	crcSize    = 4                    // CRC-32C trailer
	overhead   = headerSize + crcSize // bytes of a frame that are not payload
	minLength  = overhead - lenSize   // smallest value of the length field
	readBuffer = 64 << 10             // bufio size for readers
	flushAt    = 64 << 10             // a FrameWriter writes out at this size
)

// DefaultMaxFrameSize bounds a frame, length field to CRC, unless a
// reader or writer is given another bound. It leaves room for a 1 MiB
// data block plus headers many times over, and keeps a forged length from
// making a reader allocate more than this.
const DefaultMaxFrameSize = 16 << 20

// MaxPayload is the largest payload a frame of size maxFrame can carry.
func MaxPayload(maxFrame int) int { return maxFrame - overhead }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFrame marks a frame that cannot be trusted: a bad CRC, a length out
// of bounds, a stream that ends inside a frame, reserved flag bits, or a
// type the receiver does not accept. Nothing of such a frame is
// delivered, and the stream is dead after it: once framing is lost there
// is no way to find the next frame boundary.
var ErrFrame = errors.New("bad frame")

// FrameError says what is wrong with a frame and where it started in the
// stream. It matches ErrFrame with errors.Is.
type FrameError struct {
	Offset int64  // stream offset of the frame's first byte
	Reason string // what is wrong, for a human
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("wire: bad frame at stream byte %d: %s", e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrFrame) true.
func (e *FrameError) Is(target error) bool { return target == ErrFrame }

// Flags is the frame's flag byte.
type Flags uint8

const (
	// FlagReply marks a reply: its request id is one the receiver chose
	// for a request it sent. Without it the frame is a request (id > 0)
	// or a one-way message (id 0), numbered by the sender. The flag lets
	// both ends of a connection send requests, each numbering its own, as
	// a master does when it tells a registered chunkserver to replicate.
	FlagReply Flags = 1 << 0

	// knownFlags are the bits version 1 defines; a reader refuses others,
	// because a peer that sets them expects a meaning this build lacks.
	knownFlags = FlagReply
)

// Frame is one message on the wire. Payload is the message's encoding
// (see Enc); its meaning is given by Type.
type Frame struct {
	Type    Type
	Flags   Flags
	ID      uint64 // request id; 0 for one-way messages
	Payload []byte
}

// AppendFrame appends f's wire form to b. It does not check the size;
// FrameWriter does.
func AppendFrame(b []byte, f Frame) []byte {
	start := len(b)
	b = appendHeader(b, f.Type, f.Flags, f.ID)
	b = append(b, f.Payload...)
	return finishFrame(b, start)
}

// appendHeader appends a header whose length field finishFrame fills in.
func appendHeader(b []byte, t Type, fl Flags, id uint64) []byte {
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(t))
	b = append(b, byte(fl))
	return binary.LittleEndian.AppendUint64(b, id)
}

// finishFrame sets the length of the frame that starts at b[start] and
// appends its CRC, which covers everything from the length field on. The
// length is covered too so that a damaged length is caught by the same
// check as damaged data rather than by luck in where the CRC is read.
func finishFrame(b []byte, start int) []byte {
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-lenSize+crcSize))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// FrameReader reads frames from a byte stream. It is not safe for
// concurrent use; one goroutine reads a connection.
//
// Any error is sticky: after a bad frame, a truncated one or a read error
// every later call returns the same error, because the stream can no
// longer be trusted to be at a frame boundary. A clean end of stream, at
// a frame boundary, is io.EOF; an end inside a frame is an ErrFrame.
type FrameReader struct {
	br     *bufio.Reader
	max    int
	accept func(Type) bool
	off    int64
	err    error
}

// NewFrameReader reads frames of at most maxFrame bytes (0 means
// DefaultMaxFrameSize) from r, buffering it unless it is already a large
// enough *bufio.Reader.
func NewFrameReader(r io.Reader, maxFrame int) *FrameReader {
	fr := &FrameReader{br: bufio.NewReaderSize(r, readBuffer)}
	fr.SetMaxFrameSize(maxFrame)
	return fr
}

// SetMaxFrameSize changes the bound on the next frames. The handshake
// uses a small bound until the peer is known, so that an unauthenticated
// peer cannot make a server allocate 16 MiB by sending one length field.
func (r *FrameReader) SetMaxFrameSize(n int) {
	if n <= 0 {
		n = DefaultMaxFrameSize
	}
	r.max = n
}

// SetAccept installs the set of frame types this reader delivers; a frame
// of any other type fails with ErrFrame. nil accepts every type. After
// the handshake it is the registry's list for the peer's role and the
// negotiated version (see Conn).
func (r *FrameReader) SetAccept(accept func(Type) bool) { r.accept = accept }

// Offset is the stream offset of the next frame.
func (r *FrameReader) Offset() int64 { return r.off }

// ReadFrame returns the next frame. Its payload is newly allocated and
// belongs to the caller, so frames can be handed to other goroutines, as
// Mux does with every frame it reads.
func (r *FrameReader) ReadFrame() (Frame, error) { return r.read(nil) }

// ReadFrameBuf is ReadFrame reading the payload into buf when it fits
// (with 4 bytes to spare for the CRC). The payload then aliases buf and is
// valid until the caller reuses buf: for data paths that recycle 1 MiB
// buffers instead of allocating one per block.
func (r *FrameReader) ReadFrameBuf(buf []byte) (Frame, error) { return r.read(buf) }

func (r *FrameReader) read(buf []byte) (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	f, n, err := r.readFrame(buf)
	if err != nil {
		r.err = err
		return Frame{}, err
	}
	r.off += int64(n)
	return f, nil
}

// readFrame reads one frame and returns it with its size on the wire.
func (r *FrameReader) readFrame(buf []byte) (Frame, int, error) {
	var hdr [headerSize]byte
	// The length first, on its own: a length beyond the bound is refused
	// before anything else is read or allocated.
	if n, err := io.ReadFull(r.br, hdr[:lenSize]); err != nil {
		if n == 0 && err == io.EOF {
			return Frame{}, 0, io.EOF
		}
		return Frame{}, 0, r.ioError(err, n, lenSize)
	}
	length := binary.LittleEndian.Uint32(hdr[:lenSize])
	if length < minLength {
		return Frame{}, 0, r.bad("length field %d is below the minimum %d", length, minLength)
	}
	size := int64(length) + lenSize
	if size > int64(r.max) {
		return Frame{}, 0, r.bad("frame of %d bytes exceeds the limit of %d", size, r.max)
	}
	if n, err := io.ReadFull(r.br, hdr[lenSize:]); err != nil {
		return Frame{}, 0, r.ioError(err, lenSize+n, int(size))
	}
	body := int(size) - headerSize // payload and CRC
	if cap(buf) >= body {
		buf = buf[:body]
	} else {
		buf = make([]byte, body)
	}
	if n, err := io.ReadFull(r.br, buf); err != nil {
		return Frame{}, 0, r.ioError(err, headerSize+n, int(size))
	}
	plen := body - crcSize
	sum := crc32.Update(crc32.Checksum(hdr[:], castagnoli), castagnoli, buf[:plen])
	if want := binary.LittleEndian.Uint32(buf[plen:]); sum != want {
		return Frame{}, 0, r.bad("CRC-32C mismatch: the bytes give %08x, the frame carries %08x", sum, want)
	}
	// Flags and type are checked only after the CRC, so that damage is
	// reported as damage and not as a peer speaking something unknown.
	f := Frame{
		Type:    Type(binary.LittleEndian.Uint16(hdr[4:])),
		Flags:   Flags(hdr[6]),
		ID:      binary.LittleEndian.Uint64(hdr[7:]),
		Payload: buf[:plen:plen],
	}
	if bad := f.Flags &^ knownFlags; bad != 0 {
		return Frame{}, 0, r.bad("reserved flag bits %#02x are set", uint8(bad))
	}
	if r.accept != nil && !r.accept(f.Type) {
		return Frame{}, 0, r.bad("%s is not a message this receiver accepts", f.Type)
	}
	return f, int(size), nil
}

func (r *FrameReader) bad(format string, args ...any) error {
	return &FrameError{Offset: r.off, Reason: fmt.Sprintf(format, args...)}
}

// ioError turns a failed read after got of want bytes of a frame into a
// truncation error when the stream ended, or wraps the transport's error.
func (r *FrameReader) ioError(err error, got, want int) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if want == lenSize {
			return r.bad("stream ends after %d of the 4 length bytes", got)
		}
		return r.bad("stream ends after %d of the frame's %d bytes", got, want)
	}
	return fmt.Errorf("wire: read frame at stream byte %d: %w", r.off, err)
}
