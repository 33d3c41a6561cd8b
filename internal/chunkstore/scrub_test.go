package chunkstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestScrubFindsDamage: of several chunks, open and closed, Scrub reports
// exactly the damaged ones with every bad block, marks them, and reports
// a bad header too.
func TestScrubFindsDamage(t *testing.T) {
	disks := testDisks(t, 2)
	o := testOpts(nil)
	o.MaxOpenChunks = 2
	s := mustOpen(t, disks, o)
	r := rand.New(rand.NewPCG(5, 5))
	for id := uint64(1); id <= 6; id++ {
		if err := s.Create(id, 1); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteAt(id, 1, randData(r, int(id)*BlockSize*5+333), 0); err != nil {
			t.Fatal(err)
		}
	}
	path := func(id uint64) string {
		ci, _ := s.Stat(id)
		return filePath(ci.Disk, id, 1)
	}
	// Chunk 4 (closed: its checksums come from its file) gets two bad
	// blocks, one in the second scrub step. Chunk 6 is open (recently
	// written), so its checksums come from memory.
	flipByte(t, path(4), HeaderSize+3*BlockSize)
	flipByte(t, path(4), HeaderSize+17*BlockSize+9)
	flipByte(t, path(6), HeaderSize+6*5*BlockSize+300)
	var mu sync.Mutex
	var got []BadChunk
	collect := func(b BadChunk) { mu.Lock(); got = append(got, b); mu.Unlock() }
	if err := s.Scrub(context.Background(), 0, collect); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != 4 || got[1].ID != 6 {
		t.Fatalf("scrub reported %+v", got)
	}
	if !slices.Equal(got[0].Blocks, []int{3, 17}) || !slices.Equal(got[1].Blocks, []int{30}) || !errors.Is(got[0].Err, ErrCorrupt) {
		t.Fatalf("bad blocks %v and %v (%v)", got[0].Blocks, got[1].Blocks, got[0].Err)
	}
	for _, ci := range s.List() {
		if ci.Damaged != (ci.ID == 4 || ci.ID == 6) {
			t.Fatalf("List: %+v", ci)
		}
	}
	var damaged int
	for _, d := range s.Disks() {
		damaged += d.Damaged
	}
	if damaged != 2 {
		t.Fatalf("disks count %d damaged chunks", damaged)
	}
	p2 := path(2)
	s.Close()

	// A header damaged on disk: reported by Open, and by Scrub again.
	flipByte(t, p2, offLength)
	s = mustOpen(t, disks, testOpts(nil))
	got = nil
	if err := s.Scrub(context.Background(), 0, collect); err != nil {
		t.Fatal(err)
	}
	ids := []uint64{}
	for _, b := range got {
		ids = append(ids, b.ID)
	}
	if !slices.Equal(ids, []uint64{2, 4, 6}) || got[0].Blocks != nil || !slices.Equal(got[1].Blocks, []int{3, 17}) {
		t.Fatalf("second pass reported %+v", got)
	}
}

// TestScrubRate: the rate bounds the bytes read per second, and a
// cancelled context stops the pass.
func TestScrubRate(t *testing.T) {
	s := mustOpen(t, testDisks(t, 1), testOpts(nil))
	for id := uint64(1); id <= 4; id++ {
		if err := s.Create(id, 1); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteAt(id, 1, make([]byte, 1<<20), 0); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := s.Scrub(context.Background(), 8<<20, nil); err != nil {
		t.Fatal(err)
	}
	// 4 MiB at 8 MiB/s: the last MiB may not wait, so at least 3/8 s.
	if el := time.Since(start); el < 350*time.Millisecond {
		t.Fatalf("4 MiB scrubbed in %v at 8 MiB/s", el)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Scrub(ctx, 1<<20, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled scrub returned %v", err)
	}
}
