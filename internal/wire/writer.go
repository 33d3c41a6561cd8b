package wire

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// FrameWriter encodes frames into a batch buffer and writes the batch to
// the stream on Flush. It is safe for concurrent use: many goroutines may
// send on one connection, and frames are never interleaved.
//
// Messages are encoded straight into the batch buffer, so a frame costs
// no allocation and one copy (the write itself), where encoding into a
// payload and then into a bufio.Writer would copy twice.
//
// Send is what pipelining callers use: it flushes only when no other
// sender is queued behind it, so under load many frames leave in one
// write, and alone a frame leaves at once.
type FrameWriter struct {
	mu      sync.Mutex
	w       io.Writer
	max     int
	timeout time.Duration
	buf     Enc   // the batch: frames not written yet, encoded in place
	err     error // sticky: after a failed write the stream is unusable

	waiting atomic.Int64 // senders inside Send; see Send
}

// Sizer is implemented by messages that know their encoded size cheaply,
// as data block messages do. FrameWriter then reserves room once instead
// of growing its buffer while the message encodes, and for big frames
// takes that room from a pool shared by all writers (see keepBuffer).
type Sizer interface {
	Size() int
}

// keepBuffer is the largest batch buffer a writer keeps between batches.
// A bigger one, grown for a 1 MiB data frame, goes back to bigBuffers:
// a chunkserver with thousands of mostly idle connections must not hold
// a megabyte for each, yet a busy data connection should not allocate a
// megabyte per block either.
const keepBuffer = 4 * flushAt

// bigBuffers recycles batch buffers over keepBuffer among all writers.
// It is a cache, not configuration: nothing observable depends on it.
var bigBuffers sync.Pool

// deadliner is the part of net.Conn that FrameWriter uses when present.
type deadliner interface {
	SetWriteDeadline(time.Time) error
}

// NewFrameWriter writes frames of at most maxFrame bytes (0 means
// DefaultMaxFrameSize) to w.
func NewFrameWriter(w io.Writer, maxFrame int) *FrameWriter {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrameSize
	}
	return &FrameWriter{w: w, max: maxFrame}
}

// SetWriteTimeout bounds each write to the stream when the stream has
// SetWriteDeadline (a net.Conn does). A peer that stops reading then
// fails the writer instead of blocking every sender forever. 0 means no
// bound.
func (w *FrameWriter) SetWriteTimeout(d time.Duration) {
	w.mu.Lock()
	w.timeout = d
	w.mu.Unlock()
}

// SetMaxFrameSize changes the bound on frames written from now on.
func (w *FrameWriter) SetMaxFrameSize(n int) {
	if n <= 0 {
		n = DefaultMaxFrameSize
	}
	w.mu.Lock()
	w.max = n
	w.mu.Unlock()
}

// WriteFrame buffers f. Its payload is copied, so the caller may reuse it.
func (w *FrameWriter) WriteFrame(f Frame) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.append(f.Type, f.Flags, f.ID, len(f.Payload), rawPayload(f.Payload))
}

// WriteMessage buffers m as a frame with the given flags and request id.
func (w *FrameWriter) WriteMessage(id uint64, fl Flags, m Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.append(m.Type(), fl, id, sizeHint(m), m)
}

// Send buffers m like WriteMessage and then flushes, unless another
// goroutine is already waiting to send: the last of a group of
// concurrent senders flushes for all of them. This is group commit for
// the socket: the counter is raised before taking the lock and lowered
// under it, so whoever lowers it to zero has appended after every frame
// still in the buffer and writes them all.
func (w *FrameWriter) Send(id uint64, fl Flags, m Message) error {
	w.waiting.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.append(m.Type(), fl, id, sizeHint(m), m)
	// Flush even when this message was refused: frames of the senders
	// before it are in the buffer, counting on the last one.
	if w.waiting.Add(-1) == 0 {
		if ferr := w.flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// Flush writes every buffered frame to the stream.
func (w *FrameWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flush()
}

// Buffered is the number of bytes waiting for Flush.
func (w *FrameWriter) Buffered() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.buf.b)
}

// encoder is what append needs of a message. Taking it as an interface
// rather than a method value spares an allocation per frame.
type encoder interface {
	Encode(e *Enc)
}

// rawPayload is an already encoded payload.
type rawPayload []byte

func (p rawPayload) Encode(e *Enc) { e.Raw(p) }

func sizeHint(m Message) int {
	if s, ok := m.(Sizer); ok {
		return s.Size()
	}
	return 0
}

// reserve makes room for n more bytes in the batch buffer.
func (w *FrameWriter) reserve(n int) {
	if cap(w.buf.b)-len(w.buf.b) >= n {
		return
	}
	if len(w.buf.b) == 0 && n > keepBuffer {
		if p, ok := bigBuffers.Get().(*[]byte); ok {
			if cap(*p) >= n {
				w.buf.b = (*p)[:0]
				return
			}
			bigBuffers.Put(p)
		}
	}
	w.buf.b = slices.Grow(w.buf.b, n)
}

// append encodes one frame at the end of the batch, reserving room for
// hint payload bytes first. A frame over the bound is taken back out, so
// a refused message leaves nothing behind. Called with mu held.
func (w *FrameWriter) append(t Type, fl Flags, id uint64, hint int, m encoder) error {
	if w.err != nil {
		return w.err
	}
	if fl&^knownFlags != 0 {
		return fmt.Errorf("wire: write %s: reserved flag bits %#02x", t, uint8(fl&^knownFlags))
	}
	if hint > 0 && hint <= w.max {
		w.reserve(hint + overhead)
	}
	start := len(w.buf.b)
	w.buf.b = appendHeader(w.buf.b, t, fl, id)
	m.Encode(&w.buf)
	if size := len(w.buf.b) - start + crcSize; size > w.max {
		w.buf.b = w.buf.b[:start]
		return fmt.Errorf("wire: write %s: frame of %d bytes exceeds the limit of %d: %w", t, size, w.max, ErrFrame)
	}
	w.buf.b = finishFrame(w.buf.b, start)
	// A large batch goes out now: under steady load senders keep queuing
	// and nobody would be last, and WriteMessage callers may batch more
	// than is worth holding.
	if len(w.buf.b) >= flushAt {
		return w.flush()
	}
	return nil
}

// flush writes the batch. Called with mu held.
func (w *FrameWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf.b) == 0 {
		return nil
	}
	if d, ok := w.w.(deadliner); ok && w.timeout > 0 {
		if err := d.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
			w.err = fmt.Errorf("wire: write frames: %w", err)
			return w.err
		}
	}
	if _, err := w.w.Write(w.buf.b); err != nil {
		w.err = fmt.Errorf("wire: write frames: %w", err)
		return w.err
	}
	if cap(w.buf.b) > keepBuffer {
		b := w.buf.b[:0]
		bigBuffers.Put(&b)
		w.buf.b = nil
	} else {
		w.buf.b = w.buf.b[:0]
	}
	return nil
}

// Err is the error that broke the stream, or nil while it works.
func (w *FrameWriter) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
