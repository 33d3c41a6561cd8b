package changelog

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

func openW(t *testing.T, dir string, opts Options) *Writer {
	t.Helper()
	w, err := Open(dir, PrefixMaster, opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func appendAll(t *testing.T, w *Writer, es []meta.Entry) {
	t.Helper()
	for i := range es {
		if err := w.Append(&es[i]); err != nil {
			t.Fatal(err)
		}
	}
}

// readDir reads every changelog file in dir, oldest first, into one list,
// failing on any damage.
func readDir(t *testing.T, dir, prefix string) []meta.Entry {
	t.Helper()
	fs, err := List(dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var all []meta.Entry
	for _, f := range fs {
		es, err := ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
	}
	return all
}

func TestWriterAppendReopen(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 3))
	es := seqEntries(t, rng, 1, 100)

	w := openW(t, dir, Options{})
	if w.LastVersion() != 0 || w.Repaired() != nil {
		t.Fatalf("new file: last %d repair %+v", w.LastVersion(), w.Repaired())
	}
	appendAll(t, w, es[:60])
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	// Synced entries are in the file, not just in the buffer.
	if got, err := ReadFile(w.Path()); err != nil || len(got) != 60 {
		t.Fatalf("after Sync the file holds %d entries, %v", len(got), err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	w = openW(t, dir, Options{})
	if w.LastVersion() != 60 || w.Repaired() != nil {
		t.Fatalf("reopen: last %d repair %+v", w.LastVersion(), w.Repaired())
	}
	bad := es[61] // skips 61
	if err := w.Append(&bad); !errors.Is(err, ErrSequence) {
		t.Fatalf("append 62 after 60: %v", err)
	}
	lower := es[60]
	lower.Term = 2 // entries are term 3
	if err := w.Append(&lower); !errors.Is(err, ErrSequence) {
		t.Fatalf("append with lower term: %v", err)
	}
	failed := es[60]
	failed.Result = meta.Result{Err: 2}
	if err := w.Append(&failed); err == nil {
		t.Fatal("append of a failed result accepted")
	}
	// Refused appends leave the Writer usable and the file unchanged.
	appendAll(t, w, es[60:])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readDir(t, dir, PrefixMaster); !reflect.DeepEqual(got, es) {
		t.Fatalf("file holds %d entries, not the 100 appended", len(got))
	}
	if err := w.Append(&es[0]); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

// TestWriterCutsTornTail writes a file whose last line is cut at every
// offset, as a crash mid-append leaves it. Open must cut exactly the
// partial line, know the last whole entry, and append after it.
func TestWriterCutsTornTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	es := seqEntries(t, rng, 1, 6)
	data := encodeAll(t, es)
	starts := lineStarts(data)
	for cut := starts[4] + 1; cut < starts[5]; cut++ {
		dir := t.TempDir()
		path := filepath.Join(dir, FileName(PrefixMaster, 0))
		if err := os.WriteFile(path, data[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		w := openW(t, dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		rep := w.Repaired()
		if rep == nil || !rep.Torn || rep.Offset != int64(starts[4]) || rep.Cut != int64(cut-starts[4]) || rep.SavedTo != "" {
			t.Fatalf("cut at %d: repair %+v", cut, rep)
		}
		if !strings.Contains(logs.String(), "changelog tail cut") {
			t.Fatalf("cut at %d: not logged: %s", cut, logs.String())
		}
		if w.LastVersion() != 4 {
			t.Fatalf("cut at %d: last version %d, want 4", cut, w.LastVersion())
		}
		// The cut is on disk before anything is appended, not just
		// overwritten by later appends.
		if fi, err := os.Stat(path); err != nil {
			t.Fatal(err)
		} else if fi.Size() != int64(starts[4]) {
			t.Fatalf("cut at %d: file is %d bytes after Open, want %d", cut, fi.Size(), starts[4])
		}
		appendAll(t, w, es[4:])
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(path)
		if err != nil || !reflect.DeepEqual(got, es) {
			t.Fatalf("cut at %d: after repair and append: %d entries, %v", cut, len(got), err)
		}
	}
}

// TestWriterCutsCorruptTail damages a complete line with good lines after
// it. Open cuts from the damage on but keeps the cut bytes in a side file.
func TestWriterCutsCorruptTail(t *testing.T) {
	dir := t.TempDir()
	es := seqEntries(t, rand.New(rand.NewPCG(5, 5)), 1, 10)
	data := encodeAll(t, es)
	starts := lineStarts(data)
	data[starts[7]+2] ^= 0x40
	path := filepath.Join(dir, FileName(PrefixMaster, 0))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	w := openW(t, dir, Options{})
	defer w.Close()
	rep := w.Repaired()
	if rep == nil || rep.Torn || rep.Offset != int64(starts[7]) || !strings.Contains(rep.Reason, "line 8") {
		t.Fatalf("repair %+v", rep)
	}
	saved, err := os.ReadFile(rep.SavedTo)
	if err != nil || !bytes.Equal(saved, data[starts[7]:]) {
		t.Fatalf("saved tail %q, %v; want %q", saved, err, data[starts[7]:])
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if fi.Size() != int64(starts[7]) {
		t.Fatalf("file is %d bytes, not cut to %d", fi.Size(), starts[7])
	}
	if w.LastVersion() != 7 {
		t.Fatalf("last version %d, want 7", w.LastVersion())
	}
	// The side file is not taken for a changelog.
	if fs, _ := List(dir, PrefixMaster); len(fs) != 1 {
		t.Fatalf("List sees %v", fs)
	}
}

func TestWriterRotate(t *testing.T) {
	dir := t.TempDir()
	es := seqEntries(t, rand.New(rand.NewPCG(6, 6)), 1, 60)
	w := openW(t, dir, Options{Keep: 3})
	// Rotating an empty file does nothing.
	if err := w.Rotate(); err != nil {
		t.Fatal(err)
	}
	if fs, _ := List(dir, PrefixMaster); len(fs) != 1 {
		t.Fatalf("empty rotation made %v", fs)
	}
	for i := 0; i < 6; i++ {
		appendAll(t, w, es[i*10:i*10+10])
		if err := w.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := List(dir, PrefixMaster)
	if err != nil {
		t.Fatal(err)
	}
	// Keep 3: files .3 .2 .1 hold the last 30 entries, .0 is new and empty.
	if len(fs) != 4 || fs[0].N != 3 || fs[3].N != 0 {
		t.Fatalf("files after rotation: %v", fs)
	}
	for i, f := range fs[:3] {
		got, err := ReadFile(f.Path)
		first := es[30+i*10].Version
		if err != nil || len(got) != 10 || got[0].Version != first {
			t.Fatalf("%s: %d entries, %v; want 10 from version %d", f.Path, len(got), err, first)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopening with an empty current file takes the last version from the
	// newest rotated file, so a gap is refused from the first append.
	w = openW(t, dir, Options{Keep: 3})
	defer w.Close()
	if w.LastVersion() != 60 {
		t.Fatalf("after rotation the last version is %d, want 60", w.LastVersion())
	}
	skip := meta.Entry{Version: 62, Term: 3, Op: &meta.Unlock{Chunk: 1}}
	if err := w.Append(&skip); !errors.Is(err, ErrSequence) {
		t.Fatalf("append 62 after 60: %v", err)
	}
}

// TestWriterRotateBySize rotates at syncs once the file reaches MaxSize.
func TestWriterRotateBySize(t *testing.T) {
	dir := t.TempDir()
	es := seqEntries(t, rand.New(rand.NewPCG(7, 7)), 1, 300)
	const max = 2000
	w := openW(t, dir, Options{MaxSize: max, Keep: 1000})
	for i := range es {
		if err := w.Append(&es[i]); err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			if err := w.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fs, _ := List(dir, PrefixMaster)
	if len(fs) < 3 {
		t.Fatalf("only %d files from %d entries with MaxSize %d", len(fs), len(es), max)
	}
	for _, f := range fs[:len(fs)-1] {
		fi, err := os.Stat(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() < max {
			t.Fatalf("%s rotated at %d bytes, below %d", f.Path, fi.Size(), max)
		}
	}
	if got := readDir(t, dir, PrefixMaster); !reflect.DeepEqual(got, es) {
		t.Fatalf("rotated files hold %d entries, not the %d appended in order", len(got), len(es))
	}
}

// TestWriterMetaloggerPrefix: the prefix is the only difference between a
// master's and a metalogger's files; each sees only its own.
func TestWriterMetaloggerPrefix(t *testing.T) {
	dir := t.TempDir()
	es := seqEntries(t, rand.New(rand.NewPCG(8, 8)), 1, 4)
	for _, p := range []string{PrefixMaster, PrefixMetalogger} {
		w, err := Open(dir, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		appendAll(t, w, es)
		if err := w.Rotate(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"changelog.0.mfs", "changelog.1.mfs", "changelog_ml.0.mfs", "changelog_ml.1.mfs"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Error(err)
		}
	}
	if got := readDir(t, dir, PrefixMetalogger); !reflect.DeepEqual(got, es) {
		t.Fatalf("metalogger files hold %d entries", len(got))
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Keep: -1}, {MaxSize: -1}, {BufferSize: -1}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v accepted", o)
		}
		if _, err := Open(t.TempDir(), PrefixMaster, o); err == nil {
			t.Errorf("Open with %+v succeeded", o)
		}
	}
	for _, p := range []string{"", "a/b"} {
		if _, err := Open(t.TempDir(), p, Options{}); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

// TestLastEntry reads only a file's tail, with windows that must cope with
// a last line longer than the first window and with one-line files.
func TestLastEntry(t *testing.T) {
	dir := t.TempDir()
	big := meta.Entry{Version: 3, Op: &meta.SetXattr{Inode: 1, Name: "user.big", Value: strings.Repeat("\x01", 100<<10)}}
	small := seqEntries(t, rand.New(rand.NewPCG(9, 9)), 1, 2)
	cases := []struct {
		name    string
		es      []meta.Entry
		trim    int
		want    uint64 // 0: no entry
		wantErr bool
	}{
		{"empty", nil, 0, 0, false},
		{"one", small[:1], 0, 1, false},
		{"two", small, 0, 2, false},
		{"big last", append(append([]meta.Entry(nil), small...), big), 0, 3, false},
		{"only big", []meta.Entry{big}, 0, 3, false},
		{"torn", small, 3, 0, true},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		data := encodeAll(t, c.es)
		if err := os.WriteFile(p, data[:len(data)-c.trim], 0o644); err != nil {
			t.Fatal(err)
		}
		e, err := lastEntry(p)
		switch {
		case c.wantErr:
			if err == nil {
				t.Errorf("%s: no error", c.name)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want == 0 && e != nil, c.want != 0 && (e == nil || e.Version != c.want):
			t.Errorf("%s: got %+v, want version %d", c.name, e, c.want)
		}
	}
}
