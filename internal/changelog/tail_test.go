package changelog

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
)

func TestTailLayouts(t *testing.T) {
	h := history(t, 40)
	torn := lineOf(t, &h[10])[:20]
	rotatedAway := []fileSpec{{n: 2, from: 11, to: 20}, {n: 1, from: 21, to: 30}, {n: 0, from: 1, to: 0}}
	type end int
	const (
		eof      end = iota
		tooOld       // OpenTail fails with ErrTooOld
		ahead        // Next fails with ErrAhead
		gap          // a *GapError
		corrupt      // a *CorruptError
		overlap      // files whose versions overlap
		openFail     // OpenTail fails with a *CorruptError
	)
	cases := []struct {
		name      string
		layout    []fileSpec
		from      uint64
		yieldFrom uint64 // versions yielded: yieldFrom..yieldTo
		yieldTo   uint64
		end       end
		gapRange  [2]uint64 // for gap
		inErr     string
	}{
		{"from the first", fourFiles, 1, 1, 40, eof, [2]uint64{}, ""},
		{"inside a rotated file", fourFiles, 5, 5, 40, eof, [2]uint64{}, ""},
		{"last of a file", fourFiles, 10, 10, 40, eof, [2]uint64{}, ""},
		{"first of a file", fourFiles, 11, 11, 40, eof, [2]uint64{}, ""},
		{"the last", fourFiles, 40, 40, 40, eof, [2]uint64{}, ""},
		{"after the last", fourFiles, 41, 0, 0, eof, [2]uint64{}, ""},
		{"past the end", fourFiles, 42, 0, 0, ahead, [2]uint64{}, "the last entry"},
		{"zero", fourFiles, 0, 0, 0, tooOld, [2]uint64{}, "oldest entry"},
		{"just rotated", justRotated, 3, 3, 20, eof, [2]uint64{}, ""},
		{"just rotated, after the last", justRotated, 21, 0, 0, eof, [2]uint64{}, ""},
		{"holes in the numbering", holes, 5, 5, 30, eof, [2]uint64{}, ""},
		{"rotated away", rotatedAway, 5, 0, 0, tooOld, [2]uint64{}, "version 11"},
		{"oldest held", rotatedAway, 11, 11, 30, eof, [2]uint64{}, ""},
		{"no files", nil, 7, 0, 0, eof, [2]uint64{}, ""},
		{"only an empty file", []fileSpec{{n: 0, from: 1, to: 0}}, 7, 0, 0, eof, [2]uint64{}, ""},
		{"only a torn line", []fileSpec{{n: 0, from: 1, to: 0, extra: torn}}, 7, 0, 0, eof, [2]uint64{}, ""},
		{"version gap", versionGap, 5, 5, 10, gap, [2]uint64{11, 20}, "ends at version 10"},
		{"from inside a version gap", versionGap, 15, 0, 0, gap, [2]uint64{15, 20}, ""},
		{"after a version gap", versionGap, 21, 21, 30, eof, [2]uint64{}, ""},
		{"torn current", []fileSpec{{n: 1, from: 1, to: 5}, {n: 0, from: 6, to: 10, extra: torn}}, 2, 2, 10, eof, [2]uint64{}, ""},
		{"torn current, after the last", []fileSpec{{n: 0, from: 1, to: 10, extra: torn}}, 11, 0, 0, eof, [2]uint64{}, ""},
		{"torn current, past the end", []fileSpec{{n: 0, from: 1, to: 10, extra: torn}}, 12, 0, 0, ahead, [2]uint64{}, ""},
		{"torn rotated", []fileSpec{{n: 1, from: 1, to: 10, extra: torn}, {n: 0, from: 11, to: 20}}, 3, 3, 10, corrupt, [2]uint64{}, "torn"},
		{"damage", []fileSpec{{n: 1, from: 1, to: 10, damage: 5}, {n: 0, from: 11, to: 20}}, 1, 1, 4, corrupt, [2]uint64{}, "line 5"},
		{"damage before from", []fileSpec{{n: 1, from: 1, to: 10, damage: 5}, {n: 0, from: 11, to: 20}}, 7, 0, 0, corrupt, [2]uint64{}, "line 5"},
		{"damage in the current file", []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 11, to: 20, damage: 18}}, 9, 9, 17, corrupt, [2]uint64{}, "line 8"},
		{"damaged first line", []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 11, to: 20, damage: 11}}, 3, 0, 0, openFail, [2]uint64{}, "line 1"},
		{"overlap", []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 5, to: 12}}, 2, 2, 10, overlap, [2]uint64{}, "starts at version 5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLayout(t, dir, PrefixMaster, h, c.layout)
			// The other prefix's files are never read.
			writeLayout(t, dir, PrefixMetalogger, history(t, 50)[10:], []fileSpec{{n: 0, from: 1, to: 40}})
			got := tailFrom(t, dir, PrefixMaster, c.from)
			var want []meta.Entry
			if c.yieldTo > 0 {
				want = h[c.yieldFrom-1 : c.yieldTo]
			}
			sameEntries(t, "yielded", got.es, want)
			err := got.err
			var ge *GapError
			var ce *CorruptError
			switch c.end {
			case eof:
				if err != nil {
					t.Fatalf("ended with %v, want io.EOF", err)
				}
			case tooOld:
				if !errors.Is(err, ErrTooOld) {
					t.Fatalf("ended with %v, want ErrTooOld", err)
				}
			case ahead:
				if !errors.Is(err, ErrAhead) {
					t.Fatalf("ended with %v, want ErrAhead", err)
				}
			case gap:
				if !errors.As(err, &ge) || ge.From != c.gapRange[0] || ge.To != c.gapRange[1] {
					t.Fatalf("ended with %v, want a gap %d-%d", err, c.gapRange[0], c.gapRange[1])
				}
			case corrupt, openFail:
				if !errors.As(err, &ce) {
					t.Fatalf("ended with %v, want a *CorruptError", err)
				}
			case overlap:
				if err == nil || errors.Is(err, ErrCorrupt) {
					t.Fatalf("ended with %v, want an overlap error", err)
				}
			}
			if !strings.Contains(fmt.Sprint(err), c.inErr) {
				t.Fatalf("error %v does not say %q", err, c.inErr)
			}
			if c.end == openFail || c.end == tooOld {
				if tl, err := OpenTail(dir, PrefixMaster, c.from); tl != nil || err == nil {
					t.Fatalf("OpenTail gave a Tail and %v", err)
				}
			}
		})
	}
}

// TestTailRawLines: the lines are the files' bytes.
func TestTailRawLines(t *testing.T) {
	h := history(t, 40)
	dir := t.TempDir()
	writeLayout(t, dir, PrefixMaster, h, fourFiles)
	got := tailFrom(t, dir, PrefixMaster, 8)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if want := string(encodeAll(t, h[7:])); strings.Join(got.lines, "") != want {
		t.Fatal("the lines are not the files' bytes")
	}
}

func TestTailClose(t *testing.T) {
	dir := t.TempDir()
	writeLayout(t, dir, PrefixMaster, history(t, 40), fourFiles)
	tl := openTail(t, dir, PrefixMaster, 1)
	if _, _, err := tl.Next(); err != nil {
		t.Fatal(err)
	}
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tl.Next(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	if err := tl.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := OpenTail(dir, "a/b", 1); err == nil {
		t.Fatal("prefix with a slash accepted")
	}
}

// openTail opens a Tail, failing the test on error.
func openTail(t *testing.T, dir, prefix string, from uint64) *Tail {
	t.Helper()
	tl, err := OpenTail(dir, prefix, from)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// appendFlush appends es and flushes them to the file.
func appendFlush(t *testing.T, w *Writer, es []meta.Entry) {
	t.Helper()
	appendAll(t, w, es)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// appendFile appends data to the file at path, as a Writer's flush would.
func appendFile(t *testing.T, path string, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// nextVersions reads n entries and fails unless they are from..from+n-1.
func nextVersions(t *testing.T, tl *Tail, from uint64, n int) {
	t.Helper()
	for i := range n {
		_, e, err := tl.Next()
		if err != nil || e.Version != from+uint64(i) {
			t.Fatalf("want version %d, got %d, %v", from+uint64(i), e.Version, err)
		}
	}
}

func wantEOF(t *testing.T, tl *Tail) {
	t.Helper()
	if _, e, err := tl.Next(); err != io.EOF {
		t.Fatalf("want io.EOF, got version %d, %v", e.Version, err)
	}
}

// TestTailGrowingFile writes the current file by hand, a line and a half
// at a time, and rotates it by hand: the end of what is written is the
// end, and a later Next goes on from there, into the rotated-to file.
func TestTailGrowingFile(t *testing.T) {
	h := history(t, 40)
	dir := t.TempDir()
	cur := filepath.Join(dir, FileName(PrefixMaster, 0))
	tl := openTail(t, dir, PrefixMaster, 1)
	defer tl.Close()
	wantEOF(t, tl) // nothing there yet

	appendFile(t, cur, string(encodeAll(t, h[:10])))
	nextVersions(t, tl, 1, 10)
	wantEOF(t, tl)
	line11 := lineOf(t, &h[10])
	appendFile(t, cur, line11[:7])
	wantEOF(t, tl)
	wantEOF(t, tl)
	appendFile(t, cur, line11[7:]+lineOf(t, &h[11])[:3])
	nextVersions(t, tl, 11, 1)
	wantEOF(t, tl)

	// Rotate: the rest of line 12 and 13 reach the old file first, as
	// a flush before rotation writes them.
	appendFile(t, cur, lineOf(t, &h[11])[3:]+lineOf(t, &h[12]))
	if err := os.Rename(cur, filepath.Join(dir, FileName(PrefixMaster, 1))); err != nil {
		t.Fatal(err)
	}
	appendFile(t, cur, string(encodeAll(t, h[13:20])))
	nextVersions(t, tl, 12, 9)
	wantEOF(t, tl)
	// A rotation that leaves the new file empty for now.
	if err := os.Rename(filepath.Join(dir, FileName(PrefixMaster, 1)), filepath.Join(dir, FileName(PrefixMaster, 2))); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cur, filepath.Join(dir, FileName(PrefixMaster, 1))); err != nil {
		t.Fatal(err)
	}
	appendFile(t, cur, "")
	wantEOF(t, tl)
	appendFile(t, cur, string(encodeAll(t, h[20:22])))
	nextVersions(t, tl, 21, 2)
	wantEOF(t, tl)
}

// TestTailFollowsWriter reads while a Writer appends, flushes and rotates
// in steps.
func TestTailFollowsWriter(t *testing.T) {
	h := history(t, 60)
	dir := t.TempDir()
	w := openW(t, dir, Options{Keep: 100})
	defer w.Close()
	appendFlush(t, w, h[:10])
	tl := openTail(t, dir, PrefixMaster, 3)
	defer tl.Close()
	nextVersions(t, tl, 3, 4)
	// Rotations while the Tail is in the middle of a file: it goes on
	// through the file it holds, now renamed, and finds the next ones.
	for i := 1; i < 4; i++ {
		appendAll(t, w, h[i*10:i*10+10])
		if err := w.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	nextVersions(t, tl, 7, 34)
	wantEOF(t, tl)
	// Appended but not flushed is not in the file.
	appendAll(t, w, h[40:45])
	wantEOF(t, tl)
	appendFlush(t, w, nil)
	nextVersions(t, tl, 41, 5)
	wantEOF(t, tl)
}

// TestTailRotatedAwayWhileReading: rotation deletes the file a Tail holds
// open, and with Keep 1 the one after it too. The Tail reads what it
// holds, then goes on to the next file if there still is one, and else
// says that the versions are gone rather than that the log has a hole.
func TestTailRotatedAwayWhileReading(t *testing.T) {
	h := history(t, 40)
	for _, keep := range []int{1, 2} {
		dir := t.TempDir()
		w := openW(t, dir, Options{Keep: keep})
		appendFlush(t, w, h[:10])
		tl := openTail(t, dir, PrefixMaster, 1)
		nextVersions(t, tl, 1, 2)
		for i := 0; i < 3; i++ {
			if err := w.Rotate(); err != nil {
				t.Fatal(err)
			}
			appendAll(t, w, h[10+i*10:20+i*10])
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		// Files now: 11-20 (Keep 2 only), 21-30, 31-40.
		nextVersions(t, tl, 3, 8)
		if keep == 2 {
			nextVersions(t, tl, 11, 30)
			wantEOF(t, tl)
		} else if _, _, err := tl.Next(); !errors.Is(err, ErrTooOld) {
			t.Fatalf("keep %d: after the held file: %v, want ErrTooOld", keep, err)
		}
		tl.Close()
		oldest := uint64(31 - 10*keep)
		sameEntries(t, "from the oldest", tailFrom(t, dir, PrefixMaster, oldest).es, h[oldest-1:])
		if got := tailFrom(t, dir, PrefixMaster, oldest-1); !errors.Is(got.err, ErrTooOld) {
			t.Fatalf("keep %d: from %d: %v, want ErrTooOld", keep, oldest-1, got.err)
		}
	}
}

// TestTailRace tails while a Writer appends, flushes at random points and
// rotates by size, and checks every Tail sees each version once, in order,
// with the bytes the Writer wrote. Run it with -race.
func TestTailRace(t *testing.T) {
	h := history(t, 3000)
	dir := t.TempDir()
	w := openW(t, dir, Options{MaxSize: 4 << 10, Keep: 1000, BufferSize: 512})
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	written := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(written)
		rng := rand.New(rand.NewPCG(40, 41))
		for i := range h {
			if err := w.Append(&h[i]); err != nil {
				errs <- err
				return
			}
			if rng.IntN(10) == 0 {
				if err := w.Flush(); err != nil {
					errs <- err
					return
				}
			}
		}
		if err := w.Close(); err != nil {
			errs <- err
		}
	}()
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := uint64(1 + r*500)
			// Until the Writer reaches from, Next says ErrAhead.
			tl, err := OpenTail(dir, PrefixMaster, from)
			if err != nil {
				errs <- fmt.Errorf("tail %d: %w", r, err)
				return
			}
			defer tl.Close()
			want := from
			deadline := time.Now().Add(time.Minute)
			for want <= uint64(len(h)) {
				line, e, err := tl.Next()
				switch {
				case err == io.EOF || errors.Is(err, ErrAhead):
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("tail %d: stuck at version %d", r, want)
						return
					}
					time.Sleep(100 * time.Microsecond)
					continue
				case err != nil:
					errs <- fmt.Errorf("tail %d at version %d: %w", r, want, err)
					return
				}
				if e.Version != want || string(line) != lineOf(t, &h[want-1]) {
					errs <- fmt.Errorf("tail %d: got version %d, want %d", r, e.Version, want)
					return
				}
				want++
			}
			<-written
			if _, _, err := tl.Next(); err != io.EOF {
				errs <- fmt.Errorf("tail %d: after the last version: %v", r, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(fileNumbers(t, dir, PrefixMaster)); n < 10 {
		t.Fatalf("only %d files: the test did not rotate much", n)
	}
}

// TestWriterTailAppendLine is a master feeding a metalogger: lines read by
// a Tail from the master's files are appended by AppendLine to the
// metalogger's, which end up with the same bytes.
func TestWriterTailAppendLine(t *testing.T) {
	h := history(t, 200)
	dir := t.TempDir()
	master := openW(t, dir, Options{MaxSize: 2 << 10, Keep: 1000})
	appendAll(t, master, h)
	if err := master.Close(); err != nil {
		t.Fatal(err)
	}
	ml, err := Open(dir, PrefixMetalogger, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tl := openTail(t, dir, PrefixMaster, 1)
	defer tl.Close()
	for {
		line, e, err := tl.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := ml.AppendLine(line)
		if err != nil {
			t.Fatal(err)
		}
		sameEntry(t, &got, &e)
	}
	if err := ml.Close(); err != nil {
		t.Fatal(err)
	}
	mlData, err := os.ReadFile(ml.Path())
	if err != nil {
		t.Fatal(err)
	}
	if string(mlData) != string(encodeAll(t, h)) {
		t.Fatal("the metalogger's file is not the master's lines")
	}
}
