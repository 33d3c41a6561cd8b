package changelog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metagen"
)

// sizes are chunk sizes that put chunk boundaries everywhere: chunks of one
// byte, chunks shorter and longer than a line, a first chunk smaller or
// larger than the rest, and the defaults.
var sizes = []struct{ first, max, startAfter int }{
	{1, 1, 0},
	{1, 3, 1},
	{7, 13, 0},
	{13, 7, 2},
	{64, 100, 16},
	{100, 64, 1},
	{300, 4096, 3},
	{firstChunkSize, chunkSize, startAfter},
}

func newTestParallel(src io.Reader, workers, first, max, start int) *ParallelReader {
	r := NewParallelReader(src, "f", workers)
	r.firstSize, r.maxSize, r.startAfter = first, max, start
	return r
}

// step is what a reader shows after yielding one entry.
type step struct {
	e           meta.Entry
	raw         string
	lines       int
	off         int64
	lastVersion uint64
}

type stepReader interface {
	Next() (meta.Entry, error)
	Raw() []byte
	Lines() int
	Offset() int64
	LastVersion() uint64
}

// drain reads r to its end and returns the steps, the error that ended it
// (io.EOF included) and the error a further Next gave.
func drain(r stepReader) ([]step, error, error) {
	var steps []step
	for {
		e, err := r.Next()
		if err != nil {
			_, again := r.Next()
			return steps, err, again
		}
		steps = append(steps, step{e, string(r.Raw()), r.Lines(), r.Offset(), r.LastVersion()})
	}
}

// checkSame reads data with a Reader and with a ParallelReader of each
// size and worker count, and fails unless they agree on every entry, raw
// line, count, offset and the final error, field for field.
func checkSame(t *testing.T, data []byte, what string) {
	t.Helper()
	want, wantErr, wantAgain := drain(NewReader(bytes.NewReader(data), "f"))
	if wantAgain != wantErr {
		t.Fatalf("%s: Reader changed its error: %v then %v", what, wantErr, wantAgain)
	}
	for _, sz := range sizes {
		for workers := 1; workers <= 3; workers++ {
			pr := newTestParallel(bytes.NewReader(data), workers, sz.first, sz.max, sz.startAfter)
			got, err, again := drain(pr)
			if cerr := pr.Close(); cerr != nil {
				t.Fatal(cerr)
			}
			where := fmt.Sprintf("%s, chunks %d/%d, start after %d, %d workers", what, sz.first, sz.max, sz.startAfter, workers)
			if len(got) != len(want) {
				t.Fatalf("%s: %d entries, want %d (error %v, want %v)", where, len(got), len(want), err, wantErr)
			}
			for i := range got {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("%s: entry %d differs:\n %+v\n %+v", where, i, got[i], want[i])
				}
			}
			if !reflect.DeepEqual(err, wantErr) || again != err {
				t.Fatalf("%s: error\n %#v\nwant\n %#v\nthen %v", where, err, wantErr, again)
			}
		}
	}
}

// metagenLog is n entries of a random but valid history.
func metagenLog(t testing.TB, seed uint64, n int) []byte {
	t.Helper()
	w := metagen.New(meta.New(1, 1700000000), seed)
	var enc Encoder
	var b []byte
	for range n {
		e := w.Next()
		var err error
		if b, err = enc.AppendEntry(b, &e); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestParallelReaderSame(t *testing.T) {
	checkSame(t, nil, "empty")
	checkSame(t, []byte("\n"), "one empty line")
	checkSame(t, []byte("1|0|0|UNL"), "one torn line")
	checkSame(t, metagenLog(t, 1, 2000), "metagen")
	checkSame(t, encodeAll(t, seqEntries(t, rand.New(rand.NewPCG(1, 2)), 7, 300)), "every op")
}

// TestParallelReaderReads checks readers that return a little at a time.
func TestParallelReaderReads(t *testing.T) {
	data := metagenLog(t, 2, 500)
	want, wantErr, _ := drain(NewReader(bytes.NewReader(data), "f"))
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	} {
		for _, sz := range sizes {
			got, err, _ := drain(newTestParallel(wrap(bytes.NewReader(data)), 2, sz.first, sz.max, sz.startAfter))
			if !reflect.DeepEqual(got, want) || err != wantErr {
				t.Fatalf("%s, chunks %d/%d: %d entries, %v; want %d, %v", name, sz.first, sz.max, len(got), err, len(want), wantErr)
			}
		}
	}
}

// TestParallelReaderDamage damages a log the ways a crash or a bad disk
// does and checks the ParallelReader stops where the Reader does, with
// the same error.
func TestParallelReaderDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	data := metagenLog(t, 3, 300)
	starts := lineStarts(data)
	for cut := starts[len(starts)-3]; cut < len(data); cut++ {
		checkSame(t, data[:cut], fmt.Sprintf("cut at %d", cut))
	}
	for i := range 40 {
		d := bytes.Clone(data)
		at := rng.IntN(len(d))
		d[at] ^= byte(1 + rng.IntN(255))
		checkSame(t, d, fmt.Sprintf("byte %d changed (%d)", at, i))
	}
	for range 10 {
		at := starts[rng.IntN(len(starts))]
		checkSame(t, append(bytes.Clone(data[:at]), make([]byte, 1+rng.IntN(200))...), fmt.Sprintf("zeros at %d", at))
	}
	// Lines left out and doubled break the version sequence.
	for range 5 {
		k := 1 + rng.IntN(len(starts)-3)
		checkSame(t, append(bytes.Clone(data[:starts[k]]), data[starts[k+1]:]...), fmt.Sprintf("line %d left out", k+1))
		checkSame(t, append(bytes.Clone(data[:starts[k+1]]), data[starts[k]:]...), fmt.Sprintf("line %d doubled", k+1))
	}
}

// TestParallelReaderLongLines checks lines longer than the default chunks,
// and lines at and past MaxLineSize, complete and torn.
func TestParallelReaderLongLines(t *testing.T) {
	line := func(v uint64, info string) []byte {
		return []byte(lineOf(t, &meta.Entry{Version: v, Term: 1, Time: 5, Op: &meta.Session{Info: info}, Result: meta.Result{N: 1, Val: [2]uint64{v}}}))
	}
	long := strings.Repeat("x", 3*firstChunkSize)
	var data []byte
	for v := uint64(1); v <= 20; v++ {
		info := "short"
		if v%3 == 0 {
			info = long
		}
		data = append(data, line(v, info)...)
	}
	// The encoder refuses a line this long, so it is built by hand.
	huge := []byte(withCRC("21|1|5|SESSION(" + strings.Repeat("y", MaxLineSize) + ")|21"))
	if len(huge) <= MaxLineSize {
		t.Fatalf("huge line is %d bytes", len(huge))
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	longest := bytes.Repeat([]byte("z"), MaxLineSize)
	for what, d := range map[string][]byte{
		"long lines":               data,
		"too long":                 cat(data, huge, line(22, "after")),
		"too long at the end":      cat(data, huge),
		"longest torn":             cat(data, longest),
		"longest complete":         cat(data, longest[1:], []byte("\n")),
		"one past longest":         cat(data, longest, []byte("\n")),
		"one past longest, torn":   cat(data, longest, []byte("z")),
		"too long, first line":     huge,
		"too long, no newline":     huge[:len(huge)-1],
		"long first line then end": line(1, long),
	} {
		checkSame(t, d, what)
	}
}

// errAfter returns data[:n] and then err.
type errAfter struct {
	data []byte
	err  error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestParallelReaderIOError(t *testing.T) {
	data := metagenLog(t, 5, 200)
	errDisk := errors.New("disk on fire")
	rng := rand.New(rand.NewPCG(5, 6))
	for range 30 {
		cut := rng.IntN(len(data) + 1)
		want, wantErr, _ := drain(NewReader(&errAfter{data[:cut], errDisk}, "f"))
		for _, sz := range sizes {
			got, err, _ := drain(newTestParallel(&errAfter{data[:cut], errDisk}, 2, sz.first, sz.max, sz.startAfter))
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(err, wantErr) || !errors.Is(err, errDisk) {
				t.Fatalf("cut at %d, chunks %d/%d: %d entries, %v; want %d, %v", cut, sz.first, sz.max, len(got), err, len(want), wantErr)
			}
		}
	}
}

// waitGoroutines fails unless the goroutine count drops back to n. A
// goroutine that has signalled its WaitGroup may take a moment to exit.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	for range 200 {
		if runtime.NumGoroutine() <= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
}

// TestParallelReaderClose stops readers at every stage and checks no
// goroutine is left behind.
func TestParallelReaderClose(t *testing.T) {
	data := metagenLog(t, 6, 5000)
	base := runtime.NumGoroutine()
	for _, stopAt := range []int{0, 1, 20, 100, 4999, 5000} {
		r := newTestParallel(bytes.NewReader(data), 3, 256, 1024, 4)
		for i := range stopAt {
			if _, err := r.Next(); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
		if stopAt == 100 && runtime.NumGoroutine() <= base {
			t.Fatalf("after %d entries no goroutine runs", stopAt)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		waitGoroutines(t, base)
		if _, err := r.Next(); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}

	// The reader's goroutines end with the file, before Close: a merge
	// keeps finished sources open.
	for _, d := range [][]byte{data, data[:len(data)/2], append(bytes.Clone(data[:len(data)/2]), "garbage\n"...)} {
		r := newTestParallel(bytes.NewReader(d), 2, 256, 1024, 4)
		if _, err, _ := drain(r); err == nil {
			t.Fatal("no error at the end")
		}
		waitGoroutines(t, base)
		r.Close()
	}

	// A restore that gives up closes its sources while its reading
	// goroutine may be inside Next: that Next must end, with an error.
	for i := range 20 {
		r := newTestParallel(bytes.NewReader(data), 2, 256, 1024, 4)
		errc := make(chan error)
		go func() {
			for {
				if _, err := r.Next(); err != nil {
					errc <- err
					return
				}
			}
		}()
		time.Sleep(time.Duration(i*50) * time.Microsecond)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, os.ErrClosed) && err != io.EOF {
			t.Fatalf("Next during Close: %v", err)
		}
		waitGoroutines(t, base)
	}

	// A file within the first chunk starts none.
	r := NewParallelReader(bytes.NewReader(data[:firstChunkSize/2]), "f", 2)
	for {
		_, err := r.Next()
		if n := runtime.NumGoroutine(); n != base {
			t.Fatalf("%d goroutines reading a small file, want %d", n, base)
		}
		if err != nil {
			break
		}
	}
	r.Close()
}

func TestOpenFileParallel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "changelog.0.mfs")
	data := metagenLog(t, 7, 3000)
	if err := os.WriteFile(path, data[:len(data)-5], 0o644); err != nil {
		t.Fatal(err)
	}
	fr, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	pr, err := OpenFileParallel(path, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, wantErr, _ := drain(fr)
	got, gotErr, _ := drain(pr)
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotErr, wantErr) {
		t.Fatalf("%d entries, %v; want %d, %v", len(got), gotErr, len(want), wantErr)
	}
	if ce, ok := asCorrupt(gotErr); !ok || !ce.Torn || ce.File != path {
		t.Fatalf("want a torn tail in %s, got %v", path, gotErr)
	}
	if err := pr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileParallel(filepath.Join(t.TempDir(), "none"), 2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// threeLines is the metabench workload, MooseFS's: files created, opened
// and released, three lines each. Made once; it takes seconds.
var threeLines = sync.OnceValue(func() []byte {
	s := meta.New(1, 1700000000)
	var enc Encoder
	var out []byte
	apply := func(op meta.Op) meta.Result {
		e := meta.Entry{Version: s.Version() + 1, Term: 1, Time: 1700000000 + uint32(s.Version()/64), Op: op}
		r, err := s.Apply(&e)
		if err != nil || !r.Ok() {
			panic(fmt.Sprintf("apply %s: %v %v", op.OpName(), r, err))
		}
		e.Result = r
		if out, err = enc.AppendEntry(out, &e); err != nil {
			panic(err)
		}
		return r
	}
	sid := apply(&meta.Session{Info: "bench"}).Val[0]
	for i := range 1_000_000 {
		ino := uint32(apply(&meta.Create{Parent: meta.RootInode, Name: "f" + strconv.Itoa(i), Type: meta.TypeFile, Mode: 0o644}).Val[0])
		apply(&meta.Open{Session: sid, Inode: ino})
		apply(&meta.Release{Session: sid, Inode: ino})
	}
	return out
})

// BenchmarkReadParse reads and parses 3 M lines with a Reader and with a
// ParallelReader, the part of a restore that runs before Replay.
func BenchmarkReadParse(b *testing.B) {
	data := threeLines()
	for _, workers := range []int{0, 1, 2, 4} {
		name := "sequential"
		if workers > 0 {
			name = "parallel-" + strconv.Itoa(workers)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			n := 0
			for b.Loop() {
				var r interface {
					Next() (meta.Entry, error)
				} = NewReader(bytes.NewReader(data), "bench")
				if workers > 0 {
					pr := NewParallelReader(bytes.NewReader(data), "bench", workers)
					defer pr.Close()
					r = pr
				}
				for {
					_, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}
