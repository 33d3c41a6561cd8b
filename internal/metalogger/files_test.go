package metalogger

import (
	"fmt"
	"testing"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
)

// TestRotatedFiles: the first and last versions of a log spread over
// rotated files (holes in the numbering included) are read from the
// right ends.
func TestRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	w, err := changelog.Open(dir, changelog.PrefixMetalogger, changelog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := meta.New(1, 1700000000)
	for v := uint64(1); v <= 300; v++ {
		e := meta.Entry{Version: v, Term: 1 + v/150, Time: 1700000000,
			Op: &meta.Create{Parent: meta.RootInode, Name: fmt.Sprintf("f%d", v), Type: meta.TypeFile, Mode: 0o644}}
		res, err := s.Apply(&e)
		if err != nil || !res.Ok() {
			t.Fatal(err, res)
		}
		e.Result = res
		if err := w.Append(&e); err != nil {
			t.Fatal(err)
		}
		if v%100 == 0 && v < 300 {
			if err := w.Rotate(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	first, err := firstVersion(dir)
	if err != nil || first != 1 {
		t.Fatalf("first version %d, %v; want 1", first, err)
	}
	last, term, err := lastEntry(dir)
	if err != nil || last != 300 || term != 3 {
		t.Fatalf("last entry %d term %d, %v; want 300 term 3", last, term, err)
	}
}
