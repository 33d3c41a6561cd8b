package chunkstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFullDisk: with LeaveFree above what the file system has free (its
// whole size, so no other test's cleanup can make room), the disk is
// full: Create and every growing write or truncate fail with ErrNoSpace,
// which is ENOSPC; writes inside the chunk and reads still work.
func TestFullDisk(t *testing.T) {
	disks := testDisks(t, 1)
	s := mustOpen(t, disks, testOpts(nil))
	if err := s.Create(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, 1, bytes.Repeat([]byte{7}, 2*BlockSize), 0); err != nil {
		t.Fatal(err)
	}
	total := s.Disks()[0].Total
	s.Close()

	var log logBuf
	o := testOpts(&log)
	o.LeaveFree = total
	s = mustOpen(t, disks, o)
	d := s.Disks()[0]
	if !d.Full || d.Free != 0 || d.Used != d.Total {
		t.Fatalf("disk not full: %+v", d)
	}
	if log.count("disk full") != 1 {
		t.Fatalf("want one 'disk full' line:\n%s", log.String())
	}
	for name, err := range map[string]error{
		"create":         s.Create(2, 1),
		"grow by write":  s.WriteAt(1, 1, []byte{1}, 2*BlockSize),
		"grow far":       s.WriteAt(1, 1, []byte{1}, ChunkSize-1),
		"grow truncate":  s.Truncate(1, 1, 3*BlockSize),
		"straddling end": s.WriteAt(1, 1, []byte{1, 2}, 2*BlockSize-1),
	} {
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%s: got %v, want ErrNoSpace wrapping ENOSPC", name, err)
		}
		if err != nil && !strings.Contains(err.Error(), disks[0].Path) && name != "create" {
			t.Errorf("%s: error does not name the disk: %v", name, err)
		}
	}
	// Nothing grew, nothing broke.
	if err := s.WriteAt(1, 1, []byte("in place"), 100); err != nil {
		t.Fatalf("write inside the chunk: %v", err)
	}
	if err := s.Truncate(1, 1, BlockSize); err != nil {
		t.Fatalf("shrink: %v", err)
	}
	got := readAll(t, s, 1, 1, BlockSize)
	if string(got[100:108]) != "in place" || got[0] != 7 {
		t.Fatal("data wrong on a full disk")
	}
	if ci, _ := s.Stat(1); ci.Length != BlockSize {
		t.Fatalf("length %d", ci.Length)
	}
}

// TestSizeLimit: a disk's "SIZE" limit from mfshdd.cfg caps its chunk
// files; "-SIZE" overrides Options.LeaveFree for that disk.
func TestSizeLimit(t *testing.T) {
	disks := testDisks(t, 1)
	disks[0].SizeLimit = HeaderSize + 3*BlockSize
	s := mustOpen(t, disks, testOpts(nil))
	if err := s.Create(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, 1, make([]byte, 3*BlockSize), 0); err != nil {
		t.Fatalf("write up to the limit: %v", err)
	}
	wantErr(t, s.WriteAt(1, 1, []byte{1}, 3*BlockSize), ErrNoSpace)
	wantErr(t, s.Create(2, 1), ErrNoSpace)
	if d := s.Disks()[0]; !d.Full || d.Total != disks[0].SizeLimit || d.ChunkBytes != disks[0].SizeLimit {
		t.Fatalf("disk %+v", d)
	}
	// Deleting frees the room again.
	if err := s.Delete(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(2, 1); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
	s.Close()

	// A per-disk LeaveFree beats the store-wide one, both ways.
	disks = testDisks(t, 1)
	disks[0].LeaveFree, disks[0].LeaveFreeSet = 0, true
	o := testOpts(nil)
	o.LeaveFree = 1 << 62
	s = mustOpen(t, disks, o)
	if err := s.Create(1, 1); err != nil {
		t.Fatalf("per-disk -0 should override: %v", err)
	}
	s.Close()
	disks[0].LeaveFree = 1 << 62
	s = mustOpen(t, disks, testOpts(nil))
	wantErr(t, s.Create(2, 1), ErrNoSpace)
}

// TestPlacement: new chunks go to the disk with the largest share of its
// space free; equal shares go to the disk with fewer chunks; disks marked
// for removal or '<' never get new chunks.
func TestPlacement(t *testing.T) {
	disks := testDisks(t, 2)
	disks[0].SizeLimit = 10 * BlockSize
	disks[1].SizeLimit = 100 * BlockSize
	s := mustOpen(t, disks, testOpts(nil))
	where := func(id uint64) int {
		t.Helper()
		ci, err := s.Stat(id)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range disks {
			if d.Path == ci.Disk {
				return i
			}
		}
		t.Fatalf("chunk on unknown disk %s", ci.Disk)
		return -1
	}
	create := func(id uint64, fill int) {
		t.Helper()
		if err := s.Create(id, 1); err != nil {
			t.Fatal(err)
		}
		if fill > 0 {
			if err := s.WriteAt(id, 1, make([]byte, fill), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Both empty: a tie on share and chunks; the first disk wins.
	create(1, 4*BlockSize)
	if where(1) != 0 {
		t.Fatal("first chunk not on the first disk")
	}
	// Disk 0 is now ~40% used, disk 1 empty.
	for id := uint64(2); id <= 6; id++ {
		create(id, 4*BlockSize)
		if where(id) != 1 {
			t.Fatalf("chunk %d went to disk %d; disk 1 has the larger free share", id, where(id))
		}
	}
	// Disk 1: 5 chunks of 4 blocks + headers ≈ 21% used < disk 0's 40%.
	// Fill disk 1 to ~81%: disk 0 (≈41% used) wins again.
	create(7, 60*BlockSize)
	if where(7) != 1 {
		t.Fatal("chunk 7 should still go to disk 1")
	}
	create(8, 0)
	if where(8) != 0 {
		t.Fatalf("chunk 8 went to disk %d; disk 0 now has the larger free share", where(8))
	}
	s.Close()

	// Equal shares: the disk with fewer chunks, whatever the order. The
	// limits make the shares exact; the file system's own free space
	// moves with whatever else runs on the machine.
	disks = testDisks(t, 2)
	for i := range disks {
		disks[i].SizeLimit = 1 << 30
	}
	s = mustOpen(t, disks[:1], testOpts(nil))
	create(1, 2*BlockSize) // 8 KiB + 128 KiB on disk 0, one chunk
	s.Close()
	s = mustOpen(t, disks[1:], testOpts(nil))
	create(2, 60<<10) // the same bytes on disk 1, in two chunks
	create(3, 60<<10)
	s.Close()
	for _, order := range [][]DiskSpec{{disks[0], disks[1]}, {disks[1], disks[0]}} {
		s = mustOpen(t, order, testOpts(nil))
		create(4, 0)
		if ci, _ := s.Stat(4); ci.Disk != disks[0].Path {
			t.Fatalf("equal shares: chunk went to %s, not to the disk with fewer chunks", ci.Disk)
		}
		if err := s.Delete(4, 1); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}

	// Marked for removal or moving out: never chosen, even when emptier.
	for _, mark := range []func(*DiskSpec){
		func(d *DiskSpec) { d.MarkedForRemoval = true },
		func(d *DiskSpec) { d.MoveOut = true },
	} {
		disks = testDisks(t, 2)
		disks[1].SizeLimit = 3 * (HeaderSize + 5*BlockSize)
		mark(&disks[0])
		s = mustOpen(t, disks, testOpts(nil))
		for id := uint64(1); id <= 3; id++ {
			create(id, 5*BlockSize)
			if where(id) != 1 {
				t.Fatalf("chunk %d went to a disk that takes no new chunks", id)
			}
		}
		wantErr(t, s.Create(9, 1), ErrNoSpace) // disk 1 is at its limit
		s.Close()
	}
}

// TestMarkedForRemoval: chunks on a '*' disk are read, written, listed as
// marked for removal; with only such disks nothing can be created.
func TestMarkedForRemoval(t *testing.T) {
	disks := testDisks(t, 2)
	s := mustOpen(t, disks[:1], testOpts(nil))
	if err := s.Create(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, 1, []byte("keep me"), 0); err != nil {
		t.Fatal(err)
	}
	s.Close()

	disks[0].MarkedForRemoval = true
	s = mustOpen(t, disks[:1], testOpts(nil))
	wantErr(t, s.Create(2, 1), ErrNoSpace)
	if d := s.Disks()[0]; !d.MarkedForRemoval || d.Chunks != 1 {
		t.Fatalf("disk %+v", d)
	}
	s.Close()

	s = mustOpen(t, disks, testOpts(nil))
	list := s.List()
	if len(list) != 1 || !list[0].MarkedForRemoval || list[0].Disk != disks[0].Path {
		t.Fatalf("List = %+v", list)
	}
	if got := readAll(t, s, 1, 1, 7); string(got) != "keep me" {
		t.Fatalf("read %q", got)
	}
	if err := s.Create(2, 1); err != nil {
		t.Fatal(err)
	}
	if ci, _ := s.Stat(2); ci.Disk != disks[1].Path || ci.MarkedForRemoval {
		t.Fatalf("new chunk: %+v", ci)
	}
}

// TestDiskLocking: one disk, one Store; the lock goes with Close.
func TestDiskLocking(t *testing.T) {
	disks := testDisks(t, 2)
	s := mustOpen(t, disks, testOpts(nil))
	_, err := Open(disks[1:], testOpts(nil))
	wantErr(t, err, ErrLocked)
	if err == nil || !strings.Contains(err.Error(), disks[1].Path) {
		t.Fatalf("error does not name the disk: %v", err)
	}
	s.Close()
	s2 := mustOpen(t, disks[1:], testOpts(nil))
	s2.Close()

	_, err = Open([]DiskSpec{{Path: filepath.Join(disks[0].Path, "missing")}}, testOpts(nil))
	wantErr(t, err, os.ErrNotExist)
	_, err = Open([]DiskSpec{disks[0], disks[0]}, testOpts(nil))
	if err == nil {
		t.Fatal("the same disk twice opened")
	}
	_, err = Open(nil, testOpts(nil))
	if err == nil {
		t.Fatal("no disks opened")
	}
}

// TestSameDeviceWarning: two disks on one file system are worth a line.
func TestSameDeviceWarning(t *testing.T) {
	var log logBuf
	mustOpen(t, testDisks(t, 2), testOpts(&log))
	if log.count("same device") != 1 {
		t.Fatalf("want one warning:\n%s", log.String())
	}
}

// TestIgnoredFiles: foreign files in chunk directories are left alone.
func TestIgnoredFiles(t *testing.T) {
	disks := testDisks(t, 1)
	mustOpen(t, disks, testOpts(nil)).Close()
	for _, name := range []string{"00/notes.txt", "00/chunk_0000000000000001_00000001.mfs", "01/chunk_0000000000000001_0000000g.mfs"} {
		writeFile(t, filepath.Join(disks[0].Path, name), []byte("x"))
	}
	var log logBuf
	s := mustOpen(t, disks, testOpts(&log))
	if rep := s.ScanReport(); len(rep.Ignored) != 3 || rep.Chunks != 0 {
		t.Fatalf("report %+v", rep)
	}
	if log.count("not a chunk file") != 3 {
		t.Fatalf("log:\n%s", log.String())
	}
}
