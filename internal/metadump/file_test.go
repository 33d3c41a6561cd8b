package metadump

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

const dumpName = "metadata.mfs"

// stateAt is a small state at a version that tells dumps apart.
func stateAt(tb testing.TB, steps int) *meta.State {
	g := newGen(tb, 9)
	for g.s.Version() < uint64(steps) {
		g.step()
	}
	return g.s
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteLoad(t *testing.T) {
	dir := t.TempDir()
	s := randomState(t, 11, 2000, true)
	var logs bytes.Buffer
	h, err := Write(dir, dumpName, s, Options{Now: fixedClock, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, dumpName)
	if got := listDir(t, dir); !slices.Equal(got, []string{dumpName}) {
		t.Fatalf("directory holds %q", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 || fi.Size() != h.Size {
		t.Fatalf("stat %v %v, want mode 0640 and size %d", fi, err, h.Size)
	}
	got, lh, err := LoadFile(path, ReadOptions{})
	if err != nil || lh != h {
		t.Fatalf("load: %+v %v; wrote %+v", lh, err, h)
	}
	var a, b bytes.Buffer
	Encode(&a, s, Options{Now: fixedClock})
	Encode(&b, got, Options{Now: fixedClock})
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("loaded state differs")
	}
	rh, err := ReadHeader(path)
	want := h
	want.Records, want.Blocks, want.Size = 0, 0, 0
	if err != nil || rh != want {
		t.Fatalf("read header: %+v %v, want %+v", rh, err, want)
	}
	if vh, err := Verify(path); err != nil || vh != h {
		t.Fatalf("verify: %+v %v", vh, err)
	}
	if !strings.Contains(logs.String(), "metadata dump written") || !strings.Contains(logs.String(), path) {
		t.Fatalf("log says %q", logs.String())
	}

	// Errors name the file and the place.
	data, _ := os.ReadFile(path)
	data[len(data)/2] ^= 1
	os.WriteFile(path, data, 0o640)
	if _, _, err := LoadFile(path, ReadOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("load of a damaged dump: %v", err)
	}
	if _, err := Verify(path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("verify of a damaged dump: %v", err)
	}
	if _, err := ReadHeader(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read header of a missing file: %v", err)
	}
}

func TestWriteRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "../x"} {
		if _, err := Write(t.TempDir(), name, meta.New(1, 1), Options{}); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if _, err := Write(t.TempDir(), dumpName, meta.New(1, 1), Options{BlockSize: 10}); err == nil {
		t.Error("block size 10 accepted")
	}
}

func TestKeep(t *testing.T) {
	for _, c := range []struct{ keep, want int }{{0, DefaultKeep}, {1, 1}, {2, 2}, {-1, 0}} {
		dir := t.TempDir()
		var versions []uint64
		for i := range 6 {
			s := stateAt(t, 10*(i+1))
			versions = append(versions, s.Version())
			if _, err := Write(dir, dumpName, s, Options{Keep: c.keep, FS: fastFS{}}); err != nil {
				t.Fatal(err)
			}
		}
		want := []string{dumpName}
		for i := 1; i <= c.want; i++ {
			want = append(want, BackName(dumpName, i))
		}
		slices.Sort(want)
		if got := listDir(t, dir); !slices.Equal(got, want) {
			t.Fatalf("keep %d: directory holds %q, want %q", c.keep, got, want)
		}
		for i := 0; i <= c.want; i++ {
			name := dumpName
			if i > 0 {
				name = BackName(dumpName, i)
			}
			h, err := Verify(filepath.Join(dir, name))
			if err != nil || h.Version != versions[5-i] {
				t.Fatalf("keep %d: %s has version %d (%v), want %d", c.keep, name, h.Version, err, versions[5-i])
			}
		}
	}
	// Lowering Keep drops the copies past it.
	dir := t.TempDir()
	for range 5 {
		if _, err := Write(dir, dumpName, stateAt(t, 5), Options{Keep: 4, FS: fastFS{}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Write(dir, dumpName, stateAt(t, 5), Options{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{dumpName, BackName(dumpName, 1)}) {
		t.Fatalf("after lowering keep to 1: %q", got)
	}
}

// fastFS skips fsync: tests that publish many dumps check logic, not
// durability, and a slow disk would make them crawl.
type fastFS struct{ OSFS }

func (fastFS) Create(path string) (File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

func (fastFS) SyncDir(string) error { return nil }

type noSyncFile struct{ *os.File }

func (noSyncFile) Sync() error { return nil }

// faultFS fails the n-th operation, counting every call including each
// Write, Sync and Close on files it created.
type faultFS struct {
	fastFS
	n, calls int
	failed   string // the operation that failed
}

var errInjected = errors.New("injected fault")

func (f *faultFS) fault(op string) error {
	f.calls++
	if f.calls == f.n {
		f.failed = op
		return fmt.Errorf("%s: %w", op, errInjected)
	}
	return nil
}

func (f *faultFS) Create(path string) (File, error) {
	if err := f.fault("create"); err != nil {
		return nil, err
	}
	file, err := f.fastFS.Create(path)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f}, nil
}

func (f *faultFS) Rename(a, b string) error {
	if err := f.fault("rename " + filepath.Base(a) + " " + filepath.Base(b)); err != nil {
		return err
	}
	return f.fastFS.Rename(a, b)
}

func (f *faultFS) Link(a, b string) error {
	if err := f.fault("link"); err != nil {
		return err
	}
	return f.fastFS.Link(a, b)
}

func (f *faultFS) Remove(p string) error {
	if err := f.fault("remove " + filepath.Base(p)); err != nil {
		return err
	}
	return f.fastFS.Remove(p)
}

func (f *faultFS) SyncDir(d string) error {
	if err := f.fault("syncdir"); err != nil {
		return err
	}
	return f.fastFS.SyncDir(d)
}

type faultFile struct {
	File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fs.fault("write"); err != nil {
		n, _ := f.File.Write(p[:len(p)/2]) // a torn write
		return n, err
	}
	return f.File.Write(p)
}

func (f *faultFile) Sync() error {
	if err := f.fs.fault("sync"); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	err := f.File.Close()
	if ferr := f.fs.fault("close"); ferr != nil {
		return ferr
	}
	return err
}

// Whatever step of publishing fails, the old dump stays byte for byte, no
// temp file is left, and what is on disk loads.
func TestWriteFaults(t *testing.T) {
	old, next := stateAt(t, 50), stateAt(t, 400)
	for n := 1; ; n++ {
		dir := t.TempDir()
		path := filepath.Join(dir, dumpName)
		for range 3 { // the dump and two kept copies
			if _, err := Write(dir, dumpName, old, Options{Keep: 2, FS: fastFS{}}); err != nil {
				t.Fatal(err)
			}
		}
		before, _ := os.ReadFile(path)
		ffs := &faultFS{n: n}
		_, err := Write(dir, dumpName, next, Options{Keep: 2, BlockSize: 1024, FS: ffs})
		if ffs.failed == "" {
			if err != nil {
				t.Fatalf("no fault injected, yet: %v", err)
			}
			if n < 10 {
				t.Fatalf("only %d operations: the faults missed most steps", n)
			}
			break
		}
		if err == nil && !strings.HasPrefix(ffs.failed, "remove metadata.mfs.back.3") {
			t.Fatalf("fault in %s went unreported", ffs.failed)
		}
		if err != nil && !errors.Is(err, errInjected) {
			t.Fatalf("fault in %s: error lost the cause: %v", ffs.failed, err)
		}
		t.Logf("fault %d in %s: %v", n, ffs.failed, err)
		if _, err := os.Stat(filepath.Join(dir, TempName(dumpName))); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("fault in %s: temp file left behind", ffs.failed)
		}
		after, _ := os.ReadFile(path)
		published := ffs.failed == "syncdir" || strings.HasPrefix(ffs.failed, "remove metadata.mfs.back.3")
		if !published && !bytes.Equal(before, after) {
			t.Fatalf("fault in %s: the old dump changed", ffs.failed)
		}
		_, h, err := LoadFile(path, ReadOptions{})
		if err != nil {
			t.Fatalf("fault in %s: %v", ffs.failed, err)
		}
		if published && h.Version != next.Version() {
			t.Fatalf("fault in %s after the rename: dump at version %d", ffs.failed, h.Version)
		}
		for _, name := range listDir(t, dir) {
			if _, err := Verify(filepath.Join(dir, name)); err != nil {
				t.Fatalf("fault in %s: %s: %v", ffs.failed, name, err)
			}
		}
	}
}

// On the real file system: a temp path that cannot be created.
func TestWriteUnwritableTemp(t *testing.T) {
	dir := t.TempDir()
	if _, err := Write(dir, dumpName, stateAt(t, 20), Options{}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, dumpName))
	// A non-empty directory in the way: create fails and so does removal.
	tmp := filepath.Join(dir, TempName(dumpName))
	if err := os.MkdirAll(filepath.Join(tmp, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(dir, dumpName, stateAt(t, 60), Options{}); err == nil {
		t.Fatal("write through a directory succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, dumpName))
	if !bytes.Equal(before, after) {
		t.Fatal("old dump changed")
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{dumpName, TempName(dumpName)}) {
		t.Fatalf("directory holds %q", got)
	}
}

// Where hard links fail, the current dump is renamed to the first copy.
type noLinkFS struct{ OSFS }

func (noLinkFS) Link(string, string) error { return errors.ErrUnsupported }

func TestWriteWithoutLinks(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 {
		if _, err := Write(dir, dumpName, stateAt(t, 10*(i+1)), Options{FS: noLinkFS{}}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{dumpName, BackName(dumpName, 1), BackName(dumpName, 2)}
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Fatalf("directory holds %q", got)
	}
	if h, err := Verify(filepath.Join(dir, BackName(dumpName, 2))); err != nil || h.Version != stateAt(t, 10).Version() {
		t.Fatalf("oldest copy: %+v %v", h, err)
	}
}
