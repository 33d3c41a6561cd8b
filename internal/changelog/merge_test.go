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
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

// history is one true sequence of entries; sources hold slices of it.
func history(t *testing.T, n int) []meta.Entry {
	return seqEntries(t, rand.New(rand.NewPCG(20, 21)), 1, n)
}

// span is entries from..to (versions) of h.
func span(h []meta.Entry, from, to uint64) []meta.Entry {
	return h[from-1 : to]
}

// src is a Reader over the encoded entries, as a file would be.
func src(t *testing.T, name string, es []meta.Entry) Source {
	return NewReader(bytes.NewReader(encodeAll(t, es)), name)
}

// sliceSource is a Source without Raw, so the merger has to encode entries
// to compare them.
type sliceSource struct {
	name string
	es   []meta.Entry
}

func (s *sliceSource) Name() string { return s.name }
func (s *sliceSource) Next() (meta.Entry, error) {
	if len(s.es) == 0 {
		return meta.Entry{}, io.EOF
	}
	e := s.es[0]
	s.es = s.es[1:]
	return e, nil
}

func checkLast(t *testing.T, m *Merger, want uint64) {
	t.Helper()
	v, term, ok := m.Last()
	if !ok || v != want || term != 3 {
		t.Fatalf("Last() = %d, %d, %v; want %d, 3, true", v, term, ok, want)
	}
}

// TestMergeOverlaps: a master's and two metaloggers' copies overlap; each
// version comes out once, in order.
func TestMergeOverlaps(t *testing.T) {
	h := history(t, 100)
	for _, raw := range []bool{true, false} {
		mk := func(name string, es []meta.Entry) Source {
			if raw {
				return src(t, name, es)
			}
			return &sliceSource{name, es}
		}
		m := NewMerger(MergeOptions{From: 1},
			mk("master", span(h, 1, 50)),
			mk("ml1", span(h, 30, 80)),
			mk("ml2", span(h, 60, 100)))
		got, err := collect(m)
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Fatalf("raw=%v: %d entries, %v", raw, len(got), err)
		}
		checkLast(t, m, 100)
		if len(m.Warnings()) != 0 {
			t.Fatalf("warnings: %v", m.Warnings())
		}
	}
}

func TestMergeFrom(t *testing.T) {
	h := history(t, 100)
	m := NewMerger(MergeOptions{From: 41}, src(t, "a", span(h, 1, 50)), src(t, "b", span(h, 45, 100)))
	got, err := collect(m)
	if err != nil || !reflect.DeepEqual(got, span(h, 41, 100)) {
		t.Fatalf("%d entries, %v", len(got), err)
	}
	// From 0 starts wherever the sources start.
	m = NewMerger(MergeOptions{}, src(t, "a", span(h, 17, 20)))
	got, err = collect(m)
	if err != nil || !reflect.DeepEqual(got, span(h, 17, 20)) {
		t.Fatalf("from 0: %d entries, %v", len(got), err)
	}
	// Nothing to do: no Last.
	m = NewMerger(MergeOptions{From: 101}, src(t, "a", span(h, 1, 100)))
	if got, err := collect(m); err != nil || len(got) != 0 {
		t.Fatalf("past the end: %d entries, %v", len(got), err)
	}
	if _, _, ok := m.Last(); ok {
		t.Fatal("Last is set though nothing was merged")
	}
}

// TestMergeConflict: two sources disagree about version 70.
func TestMergeConflict(t *testing.T) {
	h := history(t, 100)
	other := append([]meta.Entry(nil), span(h, 60, 100)...)
	other[10].Op = &meta.Unlink{Parent: 1, Name: "not what the master did"}
	m := NewMerger(MergeOptions{From: 1},
		src(t, "master/changelog.0.mfs", span(h, 1, 80)),
		src(t, "ml2/changelog_ml.0.mfs", other))
	got, err := collect(m)
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
		t.Fatalf("want a ConflictError, got %v", err)
	}
	if ce.Version != 70 || ce.A != "master/changelog.0.mfs" || ce.B != "ml2/changelog_ml.0.mfs" {
		t.Fatalf("conflict %+v", ce)
	}
	for _, want := range []string{"version 70", "master/changelog.0.mfs", "ml2/changelog_ml.0.mfs", "not what the master did"} {
		if !strings.Contains(strings.ReplaceAll(err.Error(), "%20", " "), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if !reflect.DeepEqual(got, span(h, 1, 69)) {
		t.Fatalf("merged %d entries before the conflict, want 69", len(got))
	}
	checkLast(t, m, 69)
	// The conflict is found without Raw too.
	m = NewMerger(MergeOptions{From: 1}, &sliceSource{"a", span(h, 1, 80)}, &sliceSource{"b", other})
	if _, err := collect(m); !errors.Is(err, ErrConflict) {
		t.Fatalf("without raw lines: %v", err)
	}
}

// TestMergeGap: no source has 51..59.
func TestMergeGap(t *testing.T) {
	h := history(t, 100)
	m := NewMerger(MergeOptions{From: 1}, src(t, "master", span(h, 1, 50)), src(t, "ml1", span(h, 60, 100)))
	got, err := collect(m)
	var ge *GapError
	if !errors.As(err, &ge) || ge.From != 51 || ge.To != 59 {
		t.Fatalf("want GapError 51-59, got %v", err)
	}
	const msg = "changelog gap: versions 51-59 are in no source; add changelog files from another metalogger or the master"
	if err.Error() != msg {
		t.Fatalf("message %q", err)
	}
	if len(got) != 50 {
		t.Fatalf("merged %d entries before the gap, want 50", len(got))
	}
	checkLast(t, m, 50)
	if (&GapError{From: 7, To: 7}).Error() != "changelog gap: version 7 is in no source; add changelog files from another metalogger or the master" {
		t.Fatal("one-version gap message")
	}
	// Sources that all start after From leave a gap at the start.
	m = NewMerger(MergeOptions{From: 10}, src(t, "ml1", span(h, 20, 30)))
	if _, err := collect(m); !errors.As(err, &ge) || ge.From != 10 || ge.To != 19 {
		t.Fatalf("gap at start: %v", err)
	}
	if _, _, ok := m.Last(); ok {
		t.Fatal("Last set though nothing was merged")
	}
}

// TestMergeTo stops at To and calls it a gap when the sources end before.
func TestMergeTo(t *testing.T) {
	h := history(t, 100)
	m := NewMerger(MergeOptions{From: 5, To: 20}, src(t, "a", span(h, 1, 100)))
	if got, err := collect(m); err != nil || !reflect.DeepEqual(got, span(h, 5, 20)) {
		t.Fatalf("%d entries, %v", len(got), err)
	}
	m = NewMerger(MergeOptions{From: 5, To: 120}, src(t, "a", span(h, 1, 100)))
	var ge *GapError
	if got, err := collect(m); len(got) != 96 || !errors.As(err, &ge) || ge.From != 101 || ge.To != 120 {
		t.Fatalf("%d entries, %v", len(got), err)
	}
}

// TestMergeDamagedSource: the master's copy has a corrupt line at 45 and a
// metalogger's a torn tail. The damaged lines are never yielded; other
// sources supply those versions; the damage is reported as warnings.
func TestMergeDamagedSource(t *testing.T) {
	h := history(t, 100)
	master := encodeAll(t, span(h, 1, 60))
	starts := lineStarts(master)
	master[starts[44]+5] ^= 0x08 // version 45
	ml := encodeAll(t, span(h, 40, 100))
	ml = ml[:len(ml)-7] // torn inside version 100

	m := NewMerger(MergeOptions{From: 1},
		NewReader(bytes.NewReader(master), "master"),
		NewReader(bytes.NewReader(ml), "ml1"),
		src(t, "ml2", span(h, 90, 100)))
	got, err := collect(m)
	if err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("%d entries, %v", len(got), err)
	}
	ws := m.Warnings()
	if len(ws) != 2 {
		t.Fatalf("warnings %v, want 2", ws)
	}
	var c1, c2 *CorruptError
	if !errors.As(ws[0], &c1) || c1.File != "master" || c1.Line != 45 || c1.Torn ||
		!errors.As(ws[1], &c2) || c2.File != "ml1" || !c2.Torn {
		t.Fatalf("warnings %v", ws)
	}

	// Without ml2 nobody has version 100 intact: the torn line is not
	// applied, the merge ends at 99, and asking for 100 is a gap.
	m = NewMerger(MergeOptions{From: 1, To: 100},
		NewReader(bytes.NewReader(master), "master"),
		NewReader(bytes.NewReader(ml), "ml1"))
	got, err = collect(m)
	var ge *GapError
	if !errors.As(err, &ge) || ge.From != 100 || ge.To != 100 || len(got) != 99 {
		t.Fatalf("%d entries, %v", len(got), err)
	}
	checkLast(t, m, 99)

	// And a corrupt line no other source covers is a gap, not applied.
	m = NewMerger(MergeOptions{From: 1}, NewReader(bytes.NewReader(master), "master"), src(t, "ml1", span(h, 50, 60)))
	if got, err := collect(m); !errors.As(err, &ge) || ge.From != 45 || ge.To != 49 || len(got) != 44 {
		t.Fatalf("%d entries, %v", len(got), err)
	}
}

// TestMergeThreeSources is the scenario of the issue in one place: three
// sources with overlaps and duplicates merge, a conflicting entry is
// refused, and a gap is named.
func TestMergeThreeSources(t *testing.T) {
	h := history(t, 300)
	dir := t.TempDir()
	write := func(name string, es []meta.Entry) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, encodeAll(t, es), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	master := write("changelog.0.mfs", span(h, 201, 300))
	ml1a := write("ml1.changelog_ml.1.mfs", span(h, 1, 120))
	ml1b := write("ml1.changelog_ml.0.mfs", span(h, 121, 250))
	ml2 := write("ml2.changelog_ml.0.mfs", span(h, 100, 220))
	ml3 := write("ml3.changelog_ml.0.mfs", span(h, 1, 140))

	var opened int
	run := func(from uint64, paths ...string) ([]meta.Entry, *Merger, error) {
		srcs, closeAll, err := OpenSourcesFrom(from, paths...)
		if err != nil {
			t.Fatal(err)
		}
		opened = len(srcs)
		defer func() {
			if err := closeAll(); err != nil {
				t.Error(err)
			}
		}()
		m := NewMerger(MergeOptions{From: from}, srcs...)
		es, err := collect(m)
		return es, m, err
	}

	got, m, err := run(1, master, ml1a, ml1b, ml2)
	if err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("overlaps and duplicates: %d entries, %v", len(got), err)
	}
	checkLast(t, m, 300)

	// Without ml1, nobody has 1..99.
	if _, _, err := run(1, master, ml2); !strings.Contains(fmt.Sprint(err), "versions 1-99 are in no source") {
		t.Fatalf("gap: %v", err)
	}
	// From the dump at 150 on, master and ml2 are enough.
	if got, _, err := run(151, master, ml2); err != nil || !reflect.DeepEqual(got, span(h, 151, 300)) {
		t.Fatalf("from 151: %d entries, %v", len(got), err)
	}
	// ml1's older file ends at 120, before 151: it is not even opened.
	if got, _, err := run(151, master, ml1a, ml1b, ml2); err != nil || !reflect.DeepEqual(got, span(h, 151, 300)) || opened != 3 {
		t.Fatalf("from 151 with all files: %d entries from %d files, %v", len(got), opened, err)
	}

	// ml3 disagrees at 130: refused, naming both files.
	bad := append([]meta.Entry(nil), span(h, 1, 140)...)
	bad[129].Time++
	ml3 = write("ml3.changelog_ml.0.mfs", bad)
	_, m, err = run(1, master, ml1a, ml1b, ml2, ml3)
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Version != 130 || !strings.Contains(err.Error(), "ml3.changelog_ml.0.mfs") || !strings.Contains(err.Error(), "ml1.changelog_ml.0.mfs") {
		t.Fatalf("conflict: %v", err)
	}
	checkLast(t, m, 129)
}

func TestMergeUnorderedSource(t *testing.T) {
	h := history(t, 10)
	s := &sliceSource{"weird", []meta.Entry{h[0], h[2], h[1]}}
	_, err := collect(NewMerger(MergeOptions{From: 1}, s, &sliceSource{"b", h}))
	if err == nil || !strings.Contains(err.Error(), "not in order") {
		t.Fatalf("got %v", err)
	}
}

func TestMergeIOError(t *testing.T) {
	h := history(t, 10)
	boom := errors.New("disk on fire")
	r := NewReader(io.MultiReader(bytes.NewReader(encodeAll(t, h[:3])), errReader{boom}), "a")
	if _, err := collect(NewMerger(MergeOptions{From: 1}, r, src(t, "b", h))); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func BenchmarkMerge(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := seqEntries(b, rng, 1, 10000)
	data := encodeAll(b, h)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		m := NewMerger(MergeOptions{From: 1},
			NewReader(bytes.NewReader(data), "a"), NewReader(bytes.NewReader(data), "b"))
		es, err := collect(m)
		if err != nil {
			b.Fatal(err)
		}
		if len(es) != len(h) {
			b.Fatalf("merged %d", len(es))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(h)), "ns/version")
}
