package fetch

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/metalogger"
	"github.com/carpfs/carpfs/internal/restore"
)

// The remote metalogger of the fetch tests: a dump at 700, changelogs
// 201..1200 in files of 100 entries, renumbered with holes in N.
const (
	mlDump  = 700
	mlFirst = 201
	mlLast  = 1200
)

var (
	histOnce sync.Once
	hist     *history
)

func fetchHistory(t *testing.T) *history {
	histOnce.Do(func() { hist = newHistory(t, mlLast) })
	return hist
}

// remoteML writes the test metalogger's directory and returns it with the
// files it holds, oldest first.
func remoteML(t *testing.T) (string, []remoteFile) {
	dir := filepath.Join(t.TempDir(), "ml")
	fetchHistory(t).writeML(t, dir, layout{dump: mlDump, from: mlFirst, to: mlLast, rotate: 100, holes: true})
	files := listML(t, dir)
	if len(files) != 10 || files[0].first != mlFirst || files[9].last != mlLast {
		t.Fatalf("test metalogger holds %+v", files)
	}
	return dir, files
}

// local is the carpwatch side: its data directory with a dump at version
// v, and the directory Fetch writes into.
func local(t *testing.T, v uint64) (dumpPath, fetchDir string) {
	dataPath := t.TempDir()
	writeDump(t, dataPath, "metadata.mfs", fetchHistory(t).state(t, v))
	return filepath.Join(dataPath, "metadata.mfs"), Dir(dataPath, "ml1")
}

// TestFetch fetches for restores from several starting points and checks
// that exactly the needed files arrive, whole, and that a restore from
// them reaches To with the state the master had there.
func TestFetch(t *testing.T) {
	e := env(t)
	remote, files := remoteML(t)
	c := dial(t, e.host(remote))
	h := fetchHistory(t)

	for _, tc := range []struct {
		name     string
		localV   uint64 // the caller's dump
		want     Want
		dump     bool
		files    []int // indexes into files
		lastCut  bool
		reaching uint64
	}{
		{name: "changelogs only", localV: 850, want: Want{From: 851, To: mlLast}, files: []int{6, 7, 8, 9}},
		{name: "from a file's first entry", localV: 900, want: Want{From: 901, To: mlLast}, files: []int{7, 8, 9}},
		{name: "to before the end", localV: 1020, want: Want{From: 1021, To: 1150}, files: []int{8, 9}, lastCut: true},
		{name: "to a file's end", localV: 1020, want: Want{From: 1021, To: 1100}, files: []int{8}},
		{name: "older than the changelogs", localV: 150, want: Want{From: 151, To: mlLast, MetaID: metaid}, dump: true, files: []int{5, 6, 7, 8, 9}},
		{name: "no dump here", localV: 1150, want: Want{From: 1151, To: mlLast, NeedDump: true}, dump: true, files: []int{5, 6, 7, 8, 9}},
		{name: "nothing needed", localV: mlLast, want: Want{From: mlLast + 1, To: mlLast}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dumpPath, dir := local(t, tc.localV)
			var progress []Progress
			tc.want.Progress = func(p Progress) { progress = append(progress, p) }
			got, err := c.Fetch(context.Background(), tc.want, dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			var bytes int64
			if tc.dump {
				if got.Dump == nil || got.DumpHeader.Version != mlDump || got.Dump.Path != filepath.Join(dir, metalogger.DumpName) {
					t.Fatalf("dump: %+v %+v", got.Dump, got.DumpHeader)
				}
				names = append(names, metalogger.DumpName)
				bytes += sameFile(t, filepath.Join(remote, metalogger.DumpName), got.Dump.Path)
				dumpPath = got.Dump.Path
			} else if got.Dump != nil {
				t.Fatalf("fetched a dump it did not need: %+v", got.Dump)
			}
			if len(got.Changelogs) != len(tc.files) {
				t.Fatalf("fetched %+v, want files %v of %+v", got.Changelogs, tc.files, files)
			}
			for i, fi := range tc.files {
				rf, lf := files[fi], got.Changelogs[i]
				names = append(names, rf.name)
				wantLast := min(rf.last, tc.want.To)
				if lf.Name != rf.name || lf.First != rf.first || lf.Last != wantLast || lf.Size != rf.size || lf.Path != filepath.Join(dir, rf.name) {
					t.Fatalf("changelog %d: %+v, want %+v up to %d", i, lf, rf, wantLast)
				}
				if cut := i == len(tc.files)-1 && tc.lastCut; cut {
					if !lf.Cut {
						t.Fatalf("%s not cut at %d", lf.Name, tc.want.To)
					}
					es, err := changelog.ReadFile(lf.Path)
					if err != nil || es[len(es)-1].Version != tc.want.To {
						t.Fatalf("cut %s ends at %d (%v)", lf.Name, es[len(es)-1].Version, err)
					}
					bytes += rf.size
				} else {
					bytes += sameFile(t, filepath.Join(remote, rf.name), lf.Path)
				}
			}
			if ps := got.Paths(); len(ps) != len(names) || tc.dump && ps[0] != got.Dump.Path {
				t.Fatalf("Paths() = %v for %v", ps, names)
			}
			// Nothing more was copied, and nothing else is in dir.
			if got.Bytes != bytes {
				t.Fatalf("copied %d bytes, the needed files hold %d", got.Bytes, bytes)
			}
			slices.Sort(names)
			if have := dirNames(t, dir); !slices.Equal(have, names) {
				t.Fatalf("%s holds %v, want %v", dir, have, names)
			}
			if bytes > 0 {
				if p := progress[len(progress)-1]; !p.Final || p.TotalDone != bytes || p.Total != bytes {
					t.Fatalf("last progress %+v, want all %d bytes done", p, bytes)
				}
			}

			res, err := restore.Run(context.Background(), dumpPath, got.ChangelogPaths(), restore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Version() != tc.want.To {
				t.Fatalf("restore reached %d, want %d", res.Version(), tc.want.To)
			}
			if !bytesEqual(dumpBytes(t, res.State), dumpBytes(t, h.state(t, tc.want.To))) {
				t.Fatal("restored state differs from the master's at that version")
			}
		})
	}
}

// TestFetchRefuses: versions the metalogger does not hold are refused
// before anything is copied, and so is a data directory.
func TestFetchRefuses(t *testing.T) {
	e := env(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		want       Want
		target     error
		msg        string
		remove     []int // files of the metalogger removed first
		removeDump bool
	}{
		{name: "past its end", want: Want{From: 900, To: mlLast + 5}, target: ErrNotCovered, msg: "end at 1200"},
		{name: "dump of another file system", want: Want{From: 100, To: mlLast, MetaID: 99}, msg: "not 0000000000000063"},
		{name: "dump past To", want: Want{From: 100, To: 650}, msg: "past version 650"},
		{name: "hole", want: Want{From: 800, To: mlLast}, target: ErrNotCovered, msg: "ends at version 1000 and", remove: []int{8}},
		{name: "dump and changelogs do not meet", want: Want{From: 100, To: mlLast}, target: ErrNotCovered,
			msg: "after its dump at version 700, its changelogs hold from version 801", remove: []int{0, 1, 2, 3, 4, 5}},
		{name: "no dump", want: Want{From: 100, To: mlLast}, target: ErrNotCovered,
			msg: "a dump is needed (its changelogs start at version 201, after 100) and it has no metadata_ml.mfs", removeDump: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			remote, files := remoteML(t)
			for _, i := range tc.remove {
				if err := os.Remove(filepath.Join(remote, files[i].name)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.removeDump {
				if err := os.Remove(filepath.Join(remote, metalogger.DumpName)); err != nil {
					t.Fatal(err)
				}
			}
			c := dial(t, e.host(remote))
			dir := filepath.Join(t.TempDir(), "fetched")
			_, err := c.Fetch(ctx, tc.want, dir)
			if err == nil || tc.target != nil && !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Fetch %+v: %v; want %v saying %q", tc.want, err, tc.target, tc.msg)
			}
			if names := dirNames(t, dir); len(names) > 0 {
				t.Fatalf("a refused fetch left %v", names)
			}
		})
	}

	remote, _ := remoteML(t)
	c := dial(t, e.host(remote))
	// A data directory is never written to; an earlier fetch's files are
	// replaced.
	if _, err := c.Fetch(ctx, Want{From: 1101, To: mlLast}, remote); err == nil || !strings.Contains(err.Error(), "holds metalogger") {
		t.Fatalf("fetch into the metalogger's own directory: %v", err)
	}
	dir := t.TempDir()
	for _, stale := range []string{"changelog_ml.0.mfs", "changelog_ml.77.mfs", "metadata_ml.mfs", "changelog_ml.3.mfs.part", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, stale), []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Fetch(ctx, Want{From: 1101, To: mlLast}, dir); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"changelog_ml.0.mfs", "notes.txt"}) {
		t.Fatalf("after a fetch over an earlier one: %v", names)
	}
	sameFile(t, filepath.Join(remote, "changelog_ml.0.mfs"), filepath.Join(dir, "changelog_ml.0.mfs"))
}

// TestFetchChanged: a remote file that grows or shrinks during its copy
// is detected, and nothing of the fetch is left.
func TestFetchChanged(t *testing.T) {
	e := env(t)
	for _, tc := range []struct {
		name   string
		change func(path string) error
		msg    string
	}{
		{"grows", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString("1201|2|1700000000|garbage\n")
			return err
		}, "when it ended"},
		{"shrinks", func(p string) error { return os.Truncate(p, 5000) }, "shrank during the copy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			remote, _ := remoteML(t)
			c := dial(t, e.host(remote))
			c.chunk = 4 << 10 // several pieces per file, so the change lands mid-copy
			_, dir := local(t, 850)
			changed := false
			want := Want{From: 851, To: mlLast, Progress: func(p Progress) {
				if !changed && !p.Final {
					changed = true
					if err := tc.change(filepath.Join(remote, p.File)); err != nil {
						t.Error(err)
					}
				}
			}}
			_, err := c.Fetch(context.Background(), want, dir)
			errorsIs(t, err, ErrChanged)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error does not say %q: %v", tc.msg, err)
			}
			if names := dirNames(t, dir); len(names) > 0 {
				t.Fatalf("a failed fetch left %v", names)
			}
		})
	}
}

// TestFetchCancel: cancelling ctx stops a copy at once, leaves nothing,
// and the connection still serves.
func TestFetchCancel(t *testing.T) {
	e := env(t)
	remote, _ := remoteML(t)
	c := dial(t, e.host(remote))
	c.chunk = 4 << 10
	_, dir := local(t, 150) // needs the dump and five changelogs
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	want := Want{From: 151, To: mlLast, Progress: func(p Progress) {
		calls++
		if calls == 2 {
			cancel()
		}
	}}
	_, err := c.Fetch(ctx, want, dir)
	errorsIs(t, err, context.Canceled)
	if calls != 2 {
		t.Fatalf("progress was called %d times; the fetch went on after cancel", calls)
	}
	if names := dirNames(t, dir); len(names) > 0 {
		t.Fatalf("a cancelled fetch left %v", names)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	want.Progress = nil
	if got, err := c.Fetch(context.Background(), want, dir); err != nil || got.Dump == nil || len(got.Changelogs) != 5 {
		t.Fatalf("fetch after a cancelled one: %+v, %v", got, err)
	}
	// A ctx already done copies nothing.
	if _, err := c.Fetch(ctx, want, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch with a cancelled ctx: %v", err)
	}
}

// TestFetchDamagedTail: the newest file ends in a torn line, as a crash
// leaves it: the copy is cut after To's line and restores cleanly.
func TestFetchDamagedTail(t *testing.T) {
	e := env(t)
	remote, files := remoteML(t)
	newest := filepath.Join(remote, files[9].name)
	f, err := os.OpenFile(newest, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("1201|2|17000"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c := dial(t, e.host(remote))
	dumpPath, dir := local(t, 1110)
	got, err := c.Fetch(context.Background(), Want{From: 1111, To: mlLast}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Changelogs) != 1 || !got.Changelogs[0].Cut || got.Changelogs[0].Size != files[9].size+12 {
		t.Fatalf("fetched %+v", got.Changelogs)
	}
	res, err := restore.Run(context.Background(), dumpPath, got.ChangelogPaths(), restore.Options{})
	if err != nil || res.Version() != mlLast || len(res.Warnings) > 0 {
		t.Fatalf("restore: %v, %v", res, err)
	}
}

// sameFile fails unless the two files hold the same bytes, and returns
// their size.
func sameFile(t *testing.T, a, b string) int64 {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s (%d bytes) and %s (%d bytes) differ", a, len(x), b, len(y))
	}
	return int64(len(x))
}

func bytesEqual(a, b []byte) bool { return bytes.Equal(a, b) }

// dirNames lists dir, sorted; a missing dir is empty.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestTailAndCut: the end of a changelog is read from its last lines,
// past a torn or damaged tail, and a copy is cut after a version found by
// reading it whole.
func TestTailAndCut(t *testing.T) {
	dir := t.TempDir()
	h := fetchHistory(t)
	h.writeML(t, dir, layout{from: 1, to: 300})
	path := filepath.Join(dir, "changelog_ml.0.mfs")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(good))
	for _, tc := range []struct {
		name string
		tail string
	}{
		{"clean", ""},
		{"torn", "301|2|1700"},
		{"damaged", "301|2|1700000000|NOPE()||00000000\n302|2|17"},
	} {
		data := append(slices.Clip(good), tc.tail...)
		lines, err := readTail(bytes.NewReader(data), int64(len(data)))
		if err != nil || len(lines) == 0 {
			t.Fatalf("%s: readTail: %v, %v", tc.name, lines, err)
		}
		if last := lines[len(lines)-1]; last.version != 300 || last.end != size {
			t.Fatalf("%s: last line %+v, want version 300 ending at %d", tc.name, last, size)
		}
		if v, ok, err := firstVersion(bytes.NewReader(data), int64(len(data))); v != 1 || !ok || err != nil {
			t.Fatalf("%s: firstVersion = %d, %v, %v", tc.name, v, ok, err)
		}
	}
	for _, data := range []string{"", "1|1|17000"} {
		if _, ok, err := firstVersion(strings.NewReader(data), int64(len(data))); ok || err != nil {
			t.Fatalf("firstVersion(%q) = %v, %v: want no line", data, ok, err)
		}
	}
	if err := cutAfter(path, -1, 120); err != nil {
		t.Fatal(err)
	}
	es, err := changelog.ReadFile(path)
	if err != nil || len(es) != 120 || es[119].Version != 120 {
		t.Fatalf("after the cut: %d entries, %v", len(es), err)
	}
	if err := cutAfter(path, -1, 500); err == nil {
		t.Fatal("cut after a version the file does not hold: no error")
	}
}
