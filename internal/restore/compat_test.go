package restore

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/metagen"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/format1 from the current code")

// listing prints a state as text: every path with its attributes, chunks,
// xattrs and link target, then sessions. Two states with the same listing
// are the same file system as a client sees it.
func listing(s *meta.State) string {
	var b strings.Builder
	fmt.Fprintf(&b, "metaid %x version %d term %d %+v\n", s.MetaID(), s.Version(), s.Term(), s.Stats())
	var walk func(ino uint32, path string)
	walk = func(ino uint32, path string) {
		a, _ := s.GetAttr(ino)
		fmt.Fprintf(&b, "%q %s ino=%d mode=%o uid=%d gid=%d nlink=%d size=%d rdev=%d goal=%d times=%d,%d,%d",
			path, a.Type.Letter(), ino, a.Mode, a.UID, a.GID, a.Nlink, a.Size, a.Rdev, a.Goal, a.Atime, a.Mtime, a.Ctime)
		if t, e := s.ReadLink(ino); e == 0 {
			fmt.Fprintf(&b, " -> %q", t)
		}
		if cs, e := s.FileChunks(ino); e == 0 && len(cs) > 0 {
			fmt.Fprintf(&b, " chunks=%v", cs)
		}
		names, _ := s.ListXattr(ino)
		for _, n := range names {
			v, _ := s.GetXattr(ino, n)
			fmt.Fprintf(&b, " xattr %q=%q", n, v)
		}
		b.WriteByte('\n')
		if a.Type == meta.TypeDir {
			list, _ := s.ReadDir(ino)
			for _, de := range list {
				walk(de.Inode, path+"/"+de.Name)
			}
		}
	}
	walk(meta.RootInode, "")
	return b.String()
}

// TestFormat1Compat restores checked-in files written by the first format
// version. If this fails after a format change, the change broke reading
// what existing installations hold: bump the format version and keep a
// reader for version 1 (UPGRADE.md) instead of rewriting this testdata.
func TestFormat1Compat(t *testing.T) {
	dir := filepath.Join("testdata", "format1")
	if *rewrite {
		writeFormat1(t, dir)
	}
	res, err := Auto(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "listing.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if got := listing(res.State); got != string(want) {
		t.Fatalf("restored tree differs from listing.txt (%d vs %d bytes); run with -rewrite only if the format version was bumped", len(got), len(want))
	}
	if res.Version() != 1500 || res.Applied != 1000 {
		t.Fatalf("reached %d with %d entries, want 1500 with 1000", res.Version(), res.Applied)
	}
}

func writeFormat1(t *testing.T, dir string) {
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := meta.New(0x1234abcd, 1_700_000_000)
	w := metagen.New(s, 77)
	var entries []meta.Entry
	for range 1500 {
		entries = append(entries, w.Next())
		if len(entries) == 500 {
			writeDump(t, dir, "metadata.mfs", s)
		}
	}
	cl, err := changelog.Open(dir, changelog.PrefixMaster, changelog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries[400:] { // overlaps the dump by 100 entries
		if err := cl.Append(&entries[400+i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "listing.txt"), []byte(listing(s)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := metadump.Verify(filepath.Join(dir, "metadata.mfs")); err != nil {
		t.Fatal(err)
	}
}
