package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// testFrames are frames of several sizes, the empty payload and a 1 MiB
// data-sized one included.
func testFrames() []Frame {
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	return []Frame{
		{Type: TypePing, ID: 1, Payload: []byte("a")},
		{Type: TypePong, Flags: FlagReply, ID: 1<<64 - 1, Payload: nil},
		{Type: 1000, ID: 0, Payload: bytes.Repeat([]byte{0xff}, 300)},
		{Type: TypeError, Flags: FlagReply, ID: 42, Payload: big},
	}
}

func encodeFrames(fs []Frame) []byte {
	var b []byte
	for _, f := range fs {
		b = AppendFrame(b, f)
	}
	return b
}

// readAll reads frames until an error and returns them with the error.
func readAll(r *FrameReader) ([]Frame, error) {
	var out []Frame
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

// sameFrame compares frames treating nil and empty payloads as equal.
func sameFrame(a, b Frame) bool {
	return a.Type == b.Type && a.Flags == b.Flags && a.ID == b.ID && bytes.Equal(a.Payload, b.Payload)
}

func TestFrameRoundTrip(t *testing.T) {
	fs := testFrames()
	var buf bytes.Buffer
	w := NewFrameWriter(&buf, 0)
	for _, f := range fs {
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), encodeFrames(fs)) {
		t.Fatal("FrameWriter and AppendFrame disagree")
	}
	// The layout, byte by byte, of the example in docs/PROTOCOL.md: a
	// Ping{Data: "hi"} request with id 1. The CRC was computed
	// independently (a bitwise CRC-32C in Python), not by this package.
	example := "12 00 00 00 10 00 00 01 00 00 00 00 00 00 00 02 68 69 4b 19 ad af"
	hex := fmt.Sprintf("% x", AppendFrame(nil, Frame{Type: TypePing, ID: 1, Payload: Marshal(&Ping{Data: []byte("hi")})}))
	if hex != example {
		t.Fatalf("example frame is %s, want %s", hex, example)
	}

	r := NewFrameReader(&buf, 0)
	got, err := readAll(r)
	if err != io.EOF {
		t.Fatalf("ended with %v, want io.EOF", err)
	}
	if len(got) != len(fs) {
		t.Fatalf("read %d frames, want %d", len(got), len(fs))
	}
	for i := range fs {
		if !sameFrame(got[i], fs[i]) {
			t.Errorf("frame %d: got type %d flags %d id %d len %d", i, got[i].Type, got[i].Flags, got[i].ID, len(got[i].Payload))
		}
	}
	if r.Offset() != int64(len(encodeFrames(fs))) {
		t.Errorf("offset %d after all frames", r.Offset())
	}
	// EOF is sticky too.
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("second read after the end: %v", err)
	}
}

// TestFrameTorn cuts a stream at every byte. The reader must return
// exactly the frames that are complete before the cut, then io.EOF if the
// cut is at a frame boundary and ErrFrame otherwise: never a partial
// frame.
func TestFrameTorn(t *testing.T) {
	fs := testFrames()[:3] // the 1 MiB frame would make this quadratic
	data := encodeFrames(fs)
	var ends []int
	for i := range fs {
		ends = append(ends, len(encodeFrames(fs[:i+1])))
	}
	for cut := 0; cut < len(data); cut++ {
		got, err := readAll(NewFrameReader(bytes.NewReader(data[:cut]), 0))
		complete := 0
		for _, e := range ends {
			if e <= cut {
				complete++
			}
		}
		if len(got) != complete {
			t.Fatalf("cut at %d: %d frames, want %d", cut, len(got), complete)
		}
		atBoundary := cut == 0 || (complete > 0 && ends[complete-1] == cut)
		if atBoundary && err != io.EOF {
			t.Fatalf("cut at boundary %d: %v, want io.EOF", cut, err)
		}
		if !atBoundary && (!errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "stream ends after")) {
			t.Fatalf("cut at %d: %v, want a truncation ErrFrame", cut, err)
		}
	}
}

// TestFrameFlipped damages every byte of a stream of three frames in
// three ways. Frames before the damaged one must come out intact, the
// damaged one must be refused with ErrFrame, and nothing may follow it:
// a damaged frame is never delivered, as itself or as another frame.
func TestFrameFlipped(t *testing.T) {
	fs := testFrames()[:3]
	data := encodeFrames(fs)
	var starts []int
	for i := range fs {
		starts = append(starts, len(encodeFrames(fs[:i])))
	}
	for pos := range data {
		damaged := 0
		for i, s := range starts {
			if pos >= s {
				damaged = i
			}
		}
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(data)
			bad[pos] ^= mask
			got, err := readAll(NewFrameReader(bytes.NewReader(bad), 0))
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("byte %d ^ %#x: ended with %v after %d frames, want ErrFrame", pos, mask, err, len(got))
			}
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Offset != int64(starts[damaged]) {
				t.Fatalf("byte %d ^ %#x: %v does not name offset %d", pos, mask, err, starts[damaged])
			}
			if len(got) != damaged {
				t.Fatalf("byte %d ^ %#x: %d frames delivered, want the %d before the damage", pos, mask, len(got), damaged)
			}
			for i := range got {
				if !sameFrame(got[i], fs[i]) {
					t.Fatalf("byte %d ^ %#x: frame %d changed", pos, mask, i)
				}
			}
		}
	}
}

// TestFrameOversize checks that a length over the limit is refused
// before the frame's memory is allocated: a peer that sends 4 bytes must
// not cost 16 MiB.
func TestFrameOversize(t *testing.T) {
	for _, length := range []uint32{DefaultMaxFrameSize - lenSize + 1, 1<<32 - 1} {
		hdr := binary.LittleEndian.AppendUint32(nil, length)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := NewFrameReader(bytes.NewReader(hdr), 0).ReadFrame()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "exceeds the limit") {
			t.Fatalf("length %d: %v, want a too-long ErrFrame", length, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 { // the frame would be 16 MiB
			t.Fatalf("length %d: refused after allocating %d bytes", length, n)
		}
	}
	// Exactly the limit is fine.
	f := Frame{Type: TypePing, Payload: make([]byte, MaxPayload(1<<10))}
	if _, err := NewFrameReader(bytes.NewReader(AppendFrame(nil, f)), 1<<10).ReadFrame(); err != nil {
		t.Fatalf("frame of exactly the limit: %v", err)
	}
}

func TestFrameShortLength(t *testing.T) {
	for length := range uint32(minLength) {
		data := binary.LittleEndian.AppendUint32(nil, length)
		data = append(data, make([]byte, 32)...)
		_, err := NewFrameReader(bytes.NewReader(data), 0).ReadFrame()
		if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "below the minimum") {
			t.Fatalf("length %d: %v", length, err)
		}
	}
}

func TestFrameReservedFlags(t *testing.T) {
	data := AppendFrame(nil, Frame{Type: TypePing, Flags: 0x02, ID: 1})
	_, err := NewFrameReader(bytes.NewReader(data), 0).ReadFrame()
	if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "reserved flag bits 0x02") {
		t.Fatalf("%v", err)
	}
	if err := NewFrameWriter(io.Discard, 0).WriteFrame(Frame{Type: TypePing, Flags: 0x80}); err == nil {
		t.Fatal("writer sent a reserved flag")
	}
}

func TestFrameAccept(t *testing.T) {
	data := encodeFrames([]Frame{{Type: TypePing, ID: 1}, {Type: TypeHello}})
	r := NewFrameReader(bytes.NewReader(data), 0)
	r.SetAccept(func(t Type) bool { return Allowed(t, RoleClient, RoleMaster, 1) })
	got, err := readAll(r)
	if len(got) != 1 || !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "Hello is not a message this receiver accepts") {
		t.Fatalf("%d frames, %v", len(got), err)
	}
}

// TestFrameSticky checks that nothing is read after a bad frame even if
// good frames follow: the reader cannot know where they start.
func TestFrameSticky(t *testing.T) {
	bad := AppendFrame(nil, Frame{Type: TypePing, ID: 1})
	bad[len(bad)-1] ^= 1
	data := append(bad, encodeFrames(testFrames()[:2])...)
	r := NewFrameReader(bytes.NewReader(data), 0)
	_, err1 := r.ReadFrame()
	_, err2 := r.ReadFrame()
	if !errors.Is(err1, ErrFrame) || err2 != err1 {
		t.Fatalf("first %v, then %v", err1, err2)
	}
}

func TestReadFrameBuf(t *testing.T) {
	fs := testFrames()
	r := NewFrameReader(bytes.NewReader(encodeFrames(fs)), 0)
	buf := make([]byte, 2<<20)
	for i := range fs {
		f, err := r.ReadFrameBuf(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !sameFrame(f, fs[i]) {
			t.Fatalf("frame %d differs", i)
		}
		if len(f.Payload) > 0 && &f.Payload[0] != &buf[0] {
			t.Fatalf("frame %d: payload not in the caller's buffer", i)
		}
	}
	// Too small a buffer: a fresh one is allocated.
	r = NewFrameReader(bytes.NewReader(encodeFrames(fs[2:3])), 0)
	small := make([]byte, 10)
	f, err := r.ReadFrameBuf(small)
	if err != nil || !sameFrame(f, fs[2]) || &f.Payload[0] == &small[0] {
		t.Fatalf("small buffer: %v", err)
	}
}

// TestFrameTransportError checks that an I/O error other than EOF is
// passed on, wrapped, and not dressed up as a bad frame.
func TestFrameTransportError(t *testing.T) {
	boom := errors.New("boom")
	r := NewFrameReader(io.MultiReader(bytes.NewReader([]byte{20, 0}), errReader{boom}), 0)
	_, err := r.ReadFrame()
	if !errors.Is(err, boom) || errors.Is(err, ErrFrame) {
		t.Fatalf("%v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestWriterOversize(t *testing.T) {
	var buf bytes.Buffer
	w := NewFrameWriter(&buf, 1024)
	if err := w.WriteMessage(1, 0, &Ping{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	before := w.Buffered()
	err := w.WriteMessage(2, 0, &Ping{Data: make([]byte, 1024)})
	if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "exceeds the limit of 1024") {
		t.Fatalf("%v", err)
	}
	if w.Buffered() != before {
		t.Fatalf("refused frame left %d bytes behind", w.Buffered()-before)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(NewFrameReader(&buf, 0))
	if len(got) != 1 || got[0].ID != 1 || err != io.EOF {
		t.Fatalf("%d frames, %v", len(got), err)
	}
}

// TestWriterConcurrent sends from many goroutines and checks that every
// frame arrives whole (frames never interleave) and that Send flushed
// them all without an explicit Flush.
func TestWriterConcurrent(t *testing.T) {
	var buf lockedBuffer
	w := NewFrameWriter(&buf, 0)
	const senders, each = 16, 200
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				id := uint64(s*each + i + 1)
				if err := w.Send(id, 0, &Ping{Data: bytes.Repeat([]byte{byte(id)}, int(id%700))}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if w.Buffered() != 0 {
		t.Fatalf("%d bytes left unflushed after every Send returned", w.Buffered())
	}
	got, err := readAll(NewFrameReader(bytes.NewReader(buf.b.Bytes()), 0))
	if err != io.EOF || len(got) != senders*each {
		t.Fatalf("%d frames, %v", len(got), err)
	}
	seen := map[uint64]bool{}
	for _, f := range got {
		var p Ping
		if err := Unmarshal(f.Payload, &p); err != nil {
			t.Fatal(err)
		}
		if seen[f.ID] || !bytes.Equal(p.Data, bytes.Repeat([]byte{byte(f.ID)}, int(f.ID%700))) {
			t.Fatalf("frame %d duplicated or damaged", f.ID)
		}
		seen[f.ID] = true
	}
	if buf.writes >= senders*each {
		t.Logf("no batching: %d writes for %d frames", buf.writes, senders*each)
	}
}

type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

// TestWriterSticky checks that a failed write fails every later one.
func TestWriterSticky(t *testing.T) {
	w := NewFrameWriter(failWriter{}, 0)
	err1 := w.Send(1, 0, &Ping{})
	err2 := w.WriteMessage(2, 0, &Ping{})
	if err1 == nil || !errors.Is(err2, errDisk) || w.Err() == nil {
		t.Fatalf("%v, %v", err1, err2)
	}
}

var errDisk = errors.New("write failed")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errDisk }

// TestReaderKeepsBufio checks that a FrameReader over a bufio.Reader that
// already holds bytes reads them: the handshake hands its reader on.
func TestReaderKeepsBufio(t *testing.T) {
	br := bufio.NewReaderSize(bytes.NewReader(encodeFrames(testFrames()[:2])), readBuffer)
	if _, err := br.Peek(1); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(NewFrameReader(br, 0))
	if len(got) != 2 || err != io.EOF {
		t.Fatalf("%d frames, %v", len(got), err)
	}
}
