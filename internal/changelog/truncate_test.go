package changelog

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

// Layouts shared by the TruncateAfter and Tail tests.
var (
	// fourFiles is a log of 40 entries, rotated three times.
	fourFiles = []fileSpec{{n: 3, from: 1, to: 10}, {n: 2, from: 11, to: 20}, {n: 1, from: 21, to: 30}, {n: 0, from: 31, to: 40}}
	// justRotated has an empty current file, as right after a rotation.
	justRotated = []fileSpec{{n: 2, from: 1, to: 10}, {n: 1, from: 11, to: 20}, {n: 0, from: 1, to: 0}}
	// holes has numbers missing, as a crash during rotation leaves them.
	holes = []fileSpec{{n: 7, from: 1, to: 10}, {n: 4, from: 11, to: 20}, {n: 0, from: 21, to: 30}}
	// versionGap lacks versions 11-20.
	versionGap = []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 21, to: 30}}
)

func TestTruncateAfter(t *testing.T) {
	h := history(t, 40)
	torn := lineOf(t, &h[10])[:20]
	cases := []struct {
		name        string
		layout      []fileSpec
		v           uint64
		wantRemoved uint64
		wantFiles   []int
	}{
		{"nothing after", fourFiles, 40, 0, []int{3, 2, 1, 0}},
		{"v past the end", fourFiles, 100, 0, []int{3, 2, 1, 0}},
		{"cut current", fourFiles, 35, 5, []int{3, 2, 1, 0}},
		{"cut current to one", fourFiles, 31, 9, []int{3, 2, 1, 0}},
		{"delete current", fourFiles, 30, 10, []int{3, 2, 0}},
		{"cut rotated", fourFiles, 25, 15, []int{3, 2, 0}},
		{"cut oldest", fourFiles, 11, 29, []int{3, 0}},
		{"oldest only", fourFiles, 10, 30, []int{0}},
		{"first entry only", fourFiles, 1, 39, []int{0}},
		{"everything", fourFiles, 0, 40, []int{}},
		{"empty current", justRotated, 20, 0, []int{2, 1, 0}},
		{"empty current cut", justRotated, 15, 5, []int{2, 1, 0}},
		{"empty current, rotated deleted", justRotated, 5, 15, []int{2, 0}},
		{"empty current, all deleted", justRotated, 0, 20, []int{0}},
		{"holes", holes, 15, 15, []int{7, 0}},
		{"holes nothing after", holes, 30, 0, []int{7, 4, 0}},
		{"version gap", versionGap, 15, 10, []int{0}},
		{"torn tail cut off", []fileSpec{{n: 0, from: 1, to: 10, extra: torn}}, 5, 5, []int{0}},
		{"torn tail after v", []fileSpec{{n: 0, from: 1, to: 10, extra: torn}}, 10, 0, []int{0}},
		{"torn tail before v", []fileSpec{{n: 0, from: 1, to: 10, extra: torn}}, 20, 0, []int{0}},
		{"damage after v", []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 11, to: 20, damage: 15}}, 12, 2, []int{1, 0}},
		{"damage in a deleted file", []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 11, to: 20, damage: 15}}, 10, 10, []int{0}},
		{"torn-only current", []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 1, to: 0, extra: torn}}, 10, 0, []int{0}},
		{"only empty", []fileSpec{{n: 0, from: 1, to: 0}}, 5, 0, []int{0}},
		{"empty rotated", []fileSpec{{n: 2, from: 1, to: 10}, {n: 1, from: 1, to: 0}, {n: 0, from: 11, to: 20}}, 5, 15, []int{0}},
		{"no files", nil, 5, 0, []int{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			model := writeLayout(t, dir, PrefixMetalogger, h, c.layout)
			removed, err := TruncateAfter(dir, PrefixMetalogger, c.v)
			if err != nil {
				t.Fatal(err)
			}
			if removed != c.wantRemoved {
				t.Errorf("removed %d entries, want %d", removed, c.wantRemoved)
			}
			if got := fileNumbers(t, dir, PrefixMetalogger); !slices.Equal(got, c.wantFiles) {
				t.Errorf("files %v, want %v", got, c.wantFiles)
			}
			want := upTo(model, c.v)
			// Every file is whole: no torn or damaged line is left.
			sameEntries(t, "files", readDir(t, dir, PrefixMetalogger), want)
			if len(want) > 0 {
				sameEntries(t, "tail", tailFrom(t, dir, PrefixMetalogger, want[0].Version).es, want)
			}
			// Open appends after the last entry kept.
			w, err := Open(dir, PrefixMetalogger, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if w.Repaired() != nil {
				t.Errorf("Open had to repair: %+v", w.Repaired())
			}
			if len(want) > 0 && w.LastVersion() != want[len(want)-1].Version {
				t.Errorf("Open's last version is %d, want %d", w.LastVersion(), want[len(want)-1].Version)
			}
			// Once more changes nothing.
			before := dirState(t, dir)
			if removed, err := TruncateAfter(dir, PrefixMetalogger, c.v); err != nil || removed != 0 {
				t.Fatalf("again: removed %d, %v", removed, err)
			}
			if after := dirState(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatal("a second TruncateAfter changed the files")
			}
		})
	}
}

// TestTruncateAfterRefuses: damage that TruncateAfter cannot place on
// either side of v stops it before it changes anything.
func TestTruncateAfterRefuses(t *testing.T) {
	h := history(t, 40)
	cases := []struct {
		name   string
		layout []fileSpec
		v      uint64
		want   string
	}{
		{"damage before v", []fileSpec{{n: 1, from: 1, to: 10, damage: 4}, {n: 0, from: 11, to: 20}}, 8, "line 4"},
		{"damage before v, file ends before v", []fileSpec{{n: 0, from: 1, to: 10, damage: 4}}, 30, "line 4"},
		{"damaged first line of a newer file", []fileSpec{{n: 1, from: 1, to: 10}, {n: 0, from: 11, to: 20, damage: 11}}, 5, "line 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLayout(t, dir, PrefixMaster, h, c.layout)
			before := dirState(t, dir)
			removed, err := TruncateAfter(dir, PrefixMaster, c.v)
			if !errors.Is(err, ErrCorrupt) || removed != 0 || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("removed %d, error %v; want a corruption error naming %q", removed, err, c.want)
			}
			if after := dirState(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatal("files changed though TruncateAfter failed")
			}
		})
	}
	if _, err := TruncateAfter(t.TempDir(), "a/b", 1); err == nil {
		t.Error("prefix with a slash accepted")
	}
	if _, err := TruncateAfter(filepath.Join(t.TempDir(), "missing"), PrefixMaster, 1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}

// TestTruncateAfterOtherPrefix: a metalogger's truncation leaves a
// master's files in the same directory alone.
func TestTruncateAfterOtherPrefix(t *testing.T) {
	h := history(t, 40)
	dir := t.TempDir()
	writeLayout(t, dir, PrefixMaster, h, fourFiles)
	writeLayout(t, dir, PrefixMetalogger, h, fourFiles)
	master := dirState(t, dir)
	if _, err := TruncateAfter(dir, PrefixMetalogger, 5); err != nil {
		t.Fatal(err)
	}
	after := dirState(t, dir)
	for name, data := range master {
		if strings.HasPrefix(name, PrefixMaster+".") && after[name] != data {
			t.Errorf("%s changed", name)
		}
	}
}

// TestTruncateAfterCrash stops TruncateAfter after each of its steps, as a
// crash would, and checks that the files left are a valid log: one run of
// versions from the first, reaching at least v, that Open, Tail and Merger
// all read whole; and that running it again finishes the job.
func TestTruncateAfterCrash(t *testing.T) {
	h := history(t, 40)
	layouts := map[string][]fileSpec{"four files": fourFiles, "just rotated": justRotated, "holes": holes}
	for name, layout := range layouts {
		for _, v := range []uint64{0, 1, 5, 10, 11, 15, 20, 25, 30, 35, 40} {
			plan := t.TempDir()
			model := writeLayout(t, plan, PrefixMaster, h, layout)
			steps, _, err := planTruncate(plan, PrefixMaster, v)
			if err != nil {
				t.Fatal(err)
			}
			for k := 0; k <= len(steps); k++ {
				what := fmt.Sprintf("%s, v %d, crash after %d of %d steps", name, v, k, len(steps))
				dir := t.TempDir()
				writeLayout(t, dir, PrefixMaster, h, layout)
				// Plan again in dir: steps name the files they act on.
				steps, _, err := planTruncate(dir, PrefixMaster, v)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range steps[:k] {
					if err := s.do(); err != nil {
						t.Fatalf("%s: %s: %v", what, s.what, err)
					}
				}
				got := readDir(t, dir, PrefixMaster)
				if len(got) > len(model) || len(got) > 0 && !reflect.DeepEqual(got, model[:len(got)]) || len(got) < len(upTo(model, v)) {
					t.Fatalf("%s: files hold %s; want a run from version 1 through at least %d", what, versions(got), v)
				}
				if len(got) > 0 {
					sameEntries(t, what+": tail", tailFrom(t, dir, PrefixMaster, 1).es, got)
				}
				var paths []string
				fs, _ := List(dir, PrefixMaster)
				for _, f := range fs {
					paths = append(paths, f.Path)
				}
				srcs, closeAll, err := OpenSources(paths...)
				if err != nil {
					t.Fatal(err)
				}
				m := NewMerger(MergeOptions{From: 1}, srcs...)
				merged, err := collect(m)
				closeAll()
				if err != nil || len(m.Warnings()) > 0 {
					t.Fatalf("%s: merge: %v, warnings %v", what, err, m.Warnings())
				}
				sameEntries(t, what+": merge", merged, got)

				removed, err := TruncateAfter(dir, PrefixMaster, v)
				want := upTo(model, v)
				if err != nil || removed != uint64(len(got)-len(want)) {
					t.Fatalf("%s: finishing removed %d, %v; want %d", what, removed, err, len(got)-len(want))
				}
				sameEntries(t, what+": finished", readDir(t, dir, PrefixMaster), want)
				if ns := fileNumbers(t, dir, PrefixMaster); len(ns) > 0 && ns[len(ns)-1] != 0 {
					t.Fatalf("%s: newest file is number %d, not 0", what, ns[len(ns)-1])
				}
			}
		}
	}
}

// TestTruncateAfterModel drives a metalogger's life against a model: it
// appends (by Append and AppendLine) and rotates, is cut back to random
// versions, and goes on in a new term after each cut, as it would after a
// new master took over. The files must always hold exactly the model.
func TestTruncateAfterModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(30, 31))
	dir := t.TempDir()
	var model []meta.Entry
	for round := range 40 {
		w, err := Open(dir, PrefixMetalogger, Options{Keep: 1000, MaxSize: int64(200 + rng.IntN(2000))})
		if err != nil {
			t.Fatal(err)
		}
		if len(model) > 0 && w.LastVersion() != model[len(model)-1].Version {
			t.Fatalf("round %d: Open says the last version is %d, the model %d", round, w.LastVersion(), model[len(model)-1].Version)
		}
		es := seqEntries(t, rng, uint64(len(model)+1), rng.IntN(30))
		for i := range es {
			es[i].Term = uint64(round + 1)
			if rng.IntN(2) == 0 {
				err = w.Append(&es[i])
			} else {
				_, err = w.AppendLine([]byte(lineOf(t, &es[i])))
			}
			if err != nil {
				t.Fatal(err)
			}
			if rng.IntN(8) == 0 {
				err = w.Sync() // rotates past MaxSize
			} else if rng.IntN(20) == 0 {
				err = w.Rotate()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		model = append(model, es...)
		v := uint64(rng.IntN(len(model) + 3))
		if rng.IntN(4) == 0 {
			v = uint64(len(model)) // usually nothing to cut
		}
		removed, err := TruncateAfter(dir, PrefixMetalogger, v)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		keep := min(int(v), len(model))
		if removed != uint64(len(model)-keep) {
			t.Fatalf("round %d: removed %d entries after %d of %d", round, removed, v, len(model))
		}
		model = model[:keep]
		sameEntries(t, fmt.Sprintf("round %d", round), readDir(t, dir, PrefixMetalogger), model)
		if len(model) > 0 {
			from := uint64(1 + rng.IntN(len(model)))
			sameEntries(t, fmt.Sprintf("round %d: tail from %d", round, from), tailFrom(t, dir, PrefixMetalogger, from).es, model[from-1:])
		}
	}
}
