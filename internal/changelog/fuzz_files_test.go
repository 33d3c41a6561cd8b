package changelog

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

// FuzzAppendLine gives AppendLine arbitrary bytes after one entry (version
// 1, term 2) and checks that it accepts exactly the canonical lines that
// continue the log, returns their entries, and writes their bytes and
// nothing else; as in FuzzParseLine, each input is also tried with its
// checksum fixed.
func FuzzAppendLine(f *testing.F) {
	f.Add([]byte(withCRC("2|2|0|UNLOCK(5)|")))
	f.Add([]byte(withCRC("2|3|17|UNLINK(1,a%2Cb)|")))
	f.Add([]byte(withCRC("3|2|0|UNLOCK(5)|")))
	f.Add([]byte(withCRC("2|1|0|UNLOCK(5)|")))
	f.Add([]byte(withCRC("2|2|0|UNLOCK(5)|") + withCRC("3|2|0|UNLOCK(5)|")))
	f.Add([]byte("2|2|0|UNL"))
	f.Fuzz(func(t *testing.T, line []byte) {
		checkAppendLine(t, line)
		if fixed := fixCRC(line); fixed != nil {
			checkAppendLine(t, fixed)
		}
	})
}

func checkAppendLine(t *testing.T, line []byte) {
	// The first line is written by hand: a Writer creating its file
	// fsyncs the directory, which would cost most of each run.
	dir := t.TempDir()
	base := withCRC("1|2|0|UNLOCK(5)|")
	if err := os.WriteFile(filepath.Join(dir, FileName(PrefixMaster, 0)), []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	w := openW(t, dir, Options{})
	e, err := w.AppendLine(line)
	parsed, perr := ParseLine(line)
	switch {
	case err == nil:
		again, encErr := AppendEntry(nil, &e)
		if encErr != nil || !bytes.Equal(again, line) || e.Version != 2 || e.Term < 2 {
			t.Fatalf("accepted %q as version %d term %d, which encodes as %q, %v", line, e.Version, e.Term, again, encErr)
		}
	case perr == nil && len(line) <= MaxLineSize:
		// A good line is refused only for its place in the sequence.
		if !errors.Is(err, ErrSequence) || errors.Is(err, ErrCorrupt) || parsed.Version == 2 && parsed.Term >= 2 {
			t.Fatalf("refused the good line %q: %v", line, err)
		}
	default:
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("refused the bad line %q with %v, which is not ErrCorrupt", line, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := base
	if err == nil {
		want += string(line)
	}
	if data, rerr := os.ReadFile(w.Path()); rerr != nil || string(data) != want {
		t.Fatalf("after AppendLine(%q) gave %v the file holds %q, %v", line, err, data, rerr)
	}
}

// FuzzTail lays out two files, changelog.1.mfs and changelog.0.mfs, of
// arbitrary bytes and tails them from an arbitrary version. Whatever the
// bytes, OpenTail must fail exactly when a file's first line is damaged or
// every file starts after from; a Tail must yield each version once, in
// order, as the very bytes of a file; it may end with io.EOF only having
// read the newest file to its end; and where the two files are a clean
// log it must yield all of it from from on.
func FuzzTail(f *testing.F) {
	l := func(v int) string { return withCRC(strconv.Itoa(v) + "|1|0|UNLOCK(5)|") }
	f.Add([]byte(l(1)+l(2)+l(3)), []byte(l(4)+l(5)), uint8(2))
	f.Add([]byte(l(1)+l(2)+l(3)), []byte(l(4)+l(5)+"6|1|0|UN"), uint8(1))
	f.Add([]byte(l(1)+l(2)+"3|1|0|UN"), []byte(l(4)+l(5)), uint8(1))
	f.Add([]byte(l(1)+l(2)), []byte(l(4)+l(5)), uint8(1))
	f.Add([]byte(l(1)+l(2)+l(3)), []byte(l(2)+l(3)), uint8(1))
	f.Add([]byte(l(3)+l(4)), []byte(""), uint8(5))
	f.Add([]byte(""), []byte(l(7)), uint8(3))
	f.Fuzz(func(t *testing.T, a, b []byte, from8 uint8) {
		from := uint64(from8)
		dir := t.TempDir()
		for n, data := range [][]byte{b, a} {
			if err := os.WriteFile(filepath.Join(dir, FileName(PrefixMaster, n)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		fa, fb := readFuzzFile(a), readFuzzFile(b)
		tl, err := OpenTail(dir, PrefixMaster, from)
		switch {
		case fa.badFirst || fb.badFirst:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a first line is damaged, but OpenTail gave %v", err)
			}
			return
		case (fa.has() || fb.has()) && min(fa.first(), fb.first()) > from:
			if !errors.Is(err, ErrTooOld) {
				t.Fatalf("every file starts after %d, but OpenTail gave %v", from, err)
			}
			return
		case err != nil:
			t.Fatalf("OpenTail: %v", err)
		}
		defer tl.Close()
		want := from
		for {
			line, e, err := tl.Next()
			if err != nil {
				checkTailEnd(t, err, want, fa, fb)
				break
			}
			again, encErr := AppendEntry(nil, &e)
			if e.Version != want || encErr != nil || !bytes.Equal(again, line) || !bytes.Contains(a, line) && !bytes.Contains(b, line) {
				t.Fatalf("yielded %q as version %d, want version %d; re-encoded %q, %v", line, e.Version, want, again, encErr)
			}
			want++
		}
		// A clean log, .1 then .0, is yielded whole from from on.
		if fa.err == nil && fb.err == nil && fa.has() && fb.has() && fb.first() == fa.last()+1 &&
			fa.first() <= from && from <= fb.last()+1 && want != fb.last()+1 {
			t.Fatalf("a clean log up to %d: the Tail from %d stopped before %d", fb.last(), from, want)
		}
	})
}

// fuzzFile is what a Reader makes of a fuzzed file.
type fuzzFile struct {
	es       []meta.Entry
	err      error // what ended it; nil for a clean end
	badFirst bool  // its first line is damaged, not just unfinished
}

func readFuzzFile(data []byte) fuzzFile {
	es, err := collect(NewReader(bytes.NewReader(data), "f"))
	ce, corrupt := asCorrupt(err)
	return fuzzFile{es: es, err: err, badFirst: len(es) == 0 && corrupt && !ce.Torn}
}

func (f fuzzFile) has() bool { return len(f.es) > 0 }

// first is the first version, or the largest one for a file with none, so
// that min picks the other file's.
func (f fuzzFile) first() uint64 {
	if !f.has() {
		return ^uint64(0)
	}
	return f.es[0].Version
}

func (f fuzzFile) last() uint64 { return f.es[len(f.es)-1].Version }

// checkTailEnd checks the error a fuzzed Tail ended with, want being the
// version it was to yield next.
func checkTailEnd(t *testing.T, err error, want uint64, fa, fb fuzzFile) {
	var ge *GapError
	var ce *CorruptError
	switch {
	case err == io.EOF || errors.Is(err, ErrAhead):
		// The newest file, the one that starts later, was read to its
		// end: it holds nothing from want on, and no damage.
		newest := fb
		if fa.has() && (!fb.has() || fa.first() > fb.first()) {
			newest = fa
		}
		if fa.has() && fb.has() && fa.first() == fb.first() {
			return // which one is newest is the Tail's choice
		}
		if newest.has() && newest.last() >= want {
			t.Fatalf("%v at version %d, but the newest file goes up to %d", err, want, newest.last())
		}
		if ce, ok := asCorrupt(newest.err); ok && !ce.Torn {
			t.Fatalf("%v, but the newest file is damaged: %v", err, newest.err)
		}
	case errors.As(err, &ce), errors.As(err, &ge) && ge.From == want && ge.To >= ge.From:
	case strings.Contains(err.Error(), "already went up to"): // overlapping files
	default:
		t.Fatalf("the Tail ended with %v", err)
	}
}
