package changelog

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/carpfs/carpfs/internal/meta"
)

func TestReaderRoundTrip(t *testing.T) {
	es := seqEntries(t, rand.New(rand.NewPCG(5, 6)), 1, 500)
	data := encodeAll(t, es)
	// A one-byte-at-a-time reader exercises every buffer refill path.
	for name, src := range map[string]io.Reader{
		"whole": bytes.NewReader(data),
		"bytes": iotest.OneByteReader(bytes.NewReader(data)),
	} {
		r := NewReader(src, "test")
		got, err := collect(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, es) {
			t.Fatalf("%s: read back %d entries that differ from the %d written", name, len(got), len(es))
		}
		if r.Offset() != int64(len(data)) || r.Lines() != len(es) || r.LastVersion() != 500 {
			t.Fatalf("%s: offset %d lines %d last %d", name, r.Offset(), r.Lines(), r.LastVersion())
		}
	}
}

// TestReaderTornTail cuts a file at every byte offset of its last lines.
// The reader must yield exactly the lines that are complete and then say
// the tail is torn, at the right line and offset.
func TestReaderTornTail(t *testing.T) {
	es := seqEntries(t, rand.New(rand.NewPCG(7, 8)), 10, 8)
	data := encodeAll(t, es)
	starts := lineStarts(data)
	for cut := starts[len(starts)-4]; cut <= len(data); cut++ {
		complete := 0
		for complete+1 < len(starts) && starts[complete+1] <= cut {
			complete++
		}
		got, err := collect(NewReader(bytes.NewReader(data[:cut]), "f"))
		if !reflect.DeepEqual(got, es[:complete]) {
			t.Fatalf("cut at %d: got %d entries, want the %d complete ones", cut, len(got), complete)
		}
		if cut == starts[complete] {
			if err != nil {
				t.Fatalf("cut at line boundary %d: %v", cut, err)
			}
			continue
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || !ce.Torn || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d: want a torn CorruptError, got %v", cut, err)
		}
		if ce.Line != complete+1 || ce.Offset != int64(starts[complete]) || ce.File != "f" {
			t.Fatalf("cut at %d: error at %s line %d offset %d, want f line %d offset %d",
				cut, ce.File, ce.Line, ce.Offset, complete+1, starts[complete])
		}
	}
}

// TestReaderCorruptLine damages one line in the middle: the reader yields
// the lines before it, none after, and says where.
func TestReaderCorruptLine(t *testing.T) {
	es := seqEntries(t, rand.New(rand.NewPCG(9, 10)), 1, 10)
	data := encodeAll(t, es)
	starts := lineStarts(data)
	data[starts[4]+3] ^= 0x01 // inside line 5
	r := NewReader(bytes.NewReader(data), "changelog.0.mfs")
	got, err := collect(r)
	if len(got) != 4 {
		t.Fatalf("got %d entries, want 4", len(got))
	}
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Torn {
		t.Fatalf("want a non-torn CorruptError, got %v", err)
	}
	if ce.Line != 5 || ce.Offset != int64(starts[4]) || r.Offset() != int64(starts[4]) {
		t.Fatalf("error at line %d offset %d (reader offset %d), want line 5 offset %d", ce.Line, ce.Offset, r.Offset(), starts[4])
	}
	for _, want := range []string{"changelog.0.mfs", "line 5", "column"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The error sticks: a reader never resumes after damage.
	if _, err2 := r.Next(); err2 != err {
		t.Fatalf("second Next gave %v, want the same error", err2)
	}
}

// TestReaderVersionGap: inside one file a version that does not follow the
// previous one by exactly 1 is corruption, even if the line is valid.
func TestReaderVersionGap(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, second := range []uint64{7, 5, 4, 100} { // never 6
		es := append(seqEntries(t, rng, 5, 1), seqEntries(t, rng, second, 1)...)
		got, err := collect(NewReader(bytes.NewReader(encodeAll(t, es)), "f"))
		var ce *CorruptError
		if len(got) != 1 || !errors.As(err, &ce) || ce.Line != 2 || !strings.Contains(ce.Reason, "follows version 5") {
			t.Fatalf("5 then %d: got %d entries, err %v", second, len(got), err)
		}
	}
}

func TestReaderLongLines(t *testing.T) {
	big := strings.Repeat("\xff", 200<<10) // escapes to 600 KiB, over the read buffer
	es := []meta.Entry{
		{Version: 1, Op: &meta.Unlock{Chunk: 1}},
		{Version: 2, Op: &meta.SetXattr{Inode: 1, Name: "user.big", Value: big}},
		{Version: 3, Op: &meta.Unlock{Chunk: 3}},
	}
	got, err := collect(NewReader(bytes.NewReader(encodeAll(t, es)), "f"))
	if err != nil || !reflect.DeepEqual(got, es) {
		t.Fatalf("long line: %d entries, %v", len(got), err)
	}
	// Garbage with no newline longer than any line may be is refused without
	// buffering all of it, and is not mistaken for a torn append.
	junk := bytes.Repeat([]byte("x"), 3*MaxLineSize)
	got, err = collect(NewReader(io.MultiReader(bytes.NewReader(encodeAll(t, es[:1])), bytes.NewReader(junk)), "f"))
	var ce *CorruptError
	if len(got) != 1 || !errors.As(err, &ce) || ce.Torn || !strings.Contains(ce.Reason, "longer than") {
		t.Fatalf("junk: %d entries, %v", len(got), err)
	}
}

// TestReaderIOError: a read error is not corruption; it must not be
// reported as a damaged file that a writer would then cut.
func TestReaderIOError(t *testing.T) {
	boom := errors.New("disk on fire")
	data := encodeAll(t, seqEntries(t, rand.New(rand.NewPCG(1, 1)), 1, 3))
	r := NewReader(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)), "f")
	got, err := collect(r)
	if len(got) != 3 || !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %d entries, %v", len(got), err)
	}
}

func TestReadFileAndList(t *testing.T) {
	dir := t.TempDir()
	es := seqEntries(t, rand.New(rand.NewPCG(2, 2)), 1, 5)
	data := encodeAll(t, es)
	names := []string{
		"changelog.0.mfs", "changelog.1.mfs", "changelog.10.mfs", "changelog.2.mfs",
		"changelog.01.mfs", "changelog.x.mfs", "changelog..mfs", "changelog.3.mfs.tmp",
		"changelog.0.mfs.cut.12", "changelog_ml.2.mfs", "changelog_ml.0.mfs", "metadata.mfs",
		"changelog.-1.mfs", "xchangelog.4.mfs",
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "changelog.5.mfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for prefix, want := range map[string][]int{PrefixMaster: {10, 2, 1, 0}, PrefixMetalogger: {2, 0}} {
		fs, err := List(dir, prefix)
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, f := range fs {
			got = append(got, f.N)
			if f.Path != filepath.Join(dir, FileName(prefix, f.N)) {
				t.Errorf("path %s for number %d", f.Path, f.N)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("List %s: %v, want %v", prefix, got, want)
		}
	}
	got, err := ReadFile(filepath.Join(dir, "changelog.0.mfs"))
	if err != nil || !reflect.DeepEqual(got, es) {
		t.Fatalf("ReadFile: %d entries, %v", len(got), err)
	}
	// ReadFile returns the good prefix along with the damage report.
	torn := filepath.Join(dir, "torn")
	if err := os.WriteFile(torn, data[:len(data)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = ReadFile(torn)
	var ce *CorruptError
	if len(got) != 4 || !errors.As(err, &ce) || !ce.Torn || ce.File != torn {
		t.Fatalf("ReadFile torn: %d entries, %v", len(got), err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile missing: %v", err)
	}
}
