package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// TestFlippedDataByte flips one byte in each of several places of a
// chunk's data: the block holding it fails with ErrCorrupt naming chunk
// and block, no byte of it is returned, every other block still reads,
// and a partial write over it is refused while a whole-block write heals
// it.
func TestFlippedDataByte(t *testing.T) {
	const length = 5*BlockSize + 1000
	for _, off := range []int64{0, 1, BlockSize - 1, BlockSize, 2*BlockSize + 777, 5 * BlockSize, length - 1} {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			var log logBuf
			disks := testDisks(t, 1)
			s := mustOpen(t, disks, testOpts(&log))
			const id, v = 0x1234, 3
			data := randData(rand.New(rand.NewPCG(uint64(off), 0)), length)
			if err := s.Create(id, v); err != nil {
				t.Fatal(err)
			}
			if err := s.WriteAt(id, v, data, 0); err != nil {
				t.Fatal(err)
			}
			flipByte(t, filePath(disks[0].Path, id, v), HeaderSize+off)
			bad := int(off / BlockSize)

			for b := 0; b < usedBlocks(length); b++ {
				got := bytes.Repeat([]byte{0xee}, BlockSize)
				n, err := s.ReadAt(id, v, got, int64(b)*BlockSize)
				if b == bad {
					if !errors.Is(err, ErrCorrupt) || n != 0 || !bytes.Equal(got, make([]byte, BlockSize)) {
						t.Fatalf("block %d: n=%d err=%v; want 0, ErrCorrupt, p cleared", b, n, err)
					}
					msg := err.Error()
					if !strings.Contains(msg, "chunk 0000000000001234_00000003") || !strings.Contains(msg, fmt.Sprintf("block %d ", b)) {
						t.Fatalf("error does not name chunk and block: %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("block %d: %v", b, err)
				}
				want := make([]byte, BlockSize)
				copy(want, data[min(int64(b)*BlockSize, length):])
				if !bytes.Equal(got, want) {
					t.Fatalf("block %d reads wrong", b)
				}
			}
			// Small reads inside the bad block, and a big one across it.
			_, err := s.ReadAt(id, v, make([]byte, 1), off)
			wantErr(t, err, ErrCorrupt)
			_, err = s.ReadAt(id, v, make([]byte, length), 0)
			wantErr(t, err, ErrCorrupt)

			ci, _ := s.Stat(id)
			if !ci.Damaged || s.Disks()[0].Damaged != 1 || log.count("damaged chunk") != 1 {
				t.Fatalf("damage not recorded once: %+v, disks %+v, log:\n%s", ci, s.Disks(), log.String())
			}

			// A partial write over the bad block must not bless it.
			bStart := int64(bad) * BlockSize
			wantErr(t, s.WriteAt(id, v, []byte{1}, bStart+10), ErrCorrupt)
			// Rewriting the whole block (up to the length) heals it.
			fix := data[bStart:min(bStart+BlockSize, length)]
			if err := s.WriteAt(id, v, fix, bStart); err != nil {
				t.Fatalf("whole-block rewrite: %v", err)
			}
			if !bytes.Equal(readAll(t, s, id, v, length), data) {
				t.Fatal("chunk differs after the rewrite")
			}
		})
	}
}

// TestTruncateOverBadBlock: shrinking into a bad block must fail rather
// than compute a fresh checksum over bad data.
func TestTruncateOverBadBlock(t *testing.T) {
	disks := testDisks(t, 1)
	s := mustOpen(t, disks, testOpts(nil))
	if err := s.Create(9, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(9, 1, randData(rand.New(rand.NewPCG(1, 2)), 3*BlockSize), 0); err != nil {
		t.Fatal(err)
	}
	flipByte(t, filePath(disks[0].Path, 9, 1), HeaderSize+BlockSize+5)
	wantErr(t, s.Truncate(9, 1, BlockSize+100), ErrCorrupt)
	// Cutting the bad block away entirely is fine.
	if err := s.Truncate(9, 1, BlockSize); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(9, 1, make([]byte, 2*BlockSize), 0); err != nil {
		t.Fatal(err)
	}
}

// TestFlippedHeaderByte flips one byte in each part of a closed chunk's
// header: Open reports the chunk damaged (and keeps it listed, so the
// master hears of it), reads fail with ErrCorrupt, other chunks are
// untouched, and Delete removes it.
func TestFlippedHeaderByte(t *testing.T) {
	for _, off := range []int64{0, offFormat, offID + 3, offVersion, offLength + 1, offHeaderCRC, 50, offBlockCRCs, offBlockCRCs + 4*1023, endBlockCRCs, HeaderSize - 1} {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			var log logBuf
			disks := testDisks(t, 1)
			s := mustOpen(t, disks, testOpts(nil))
			for _, id := range []uint64{1, 2} {
				if err := s.Create(id, 7); err != nil {
					t.Fatal(err)
				}
				if err := s.WriteAt(id, 7, []byte("some data"), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			path := filePath(disks[0].Path, 1, 7)
			flipByte(t, path, off)

			s = mustOpen(t, disks, testOpts(&log))
			rep := s.ScanReport()
			if rep.Chunks != 2 || len(rep.Damaged) != 1 || rep.Damaged[0].ID != 1 || rep.Damaged[0].Path != path || !errors.Is(rep.Damaged[0].Err, ErrCorrupt) {
				t.Fatalf("scan report %+v", rep)
			}
			list := s.List()
			if len(list) != 2 || !list[0].Damaged || list[0].Version != 7 || list[1].Damaged {
				t.Fatalf("List = %+v", list)
			}
			if d := s.Disks()[0]; d.Damaged != 1 || d.Chunks != 2 {
				t.Fatalf("disk %+v", d)
			}
			if log.count("damaged chunk") != 1 {
				t.Fatalf("want one log line for the damaged chunk:\n%s", log.String())
			}
			_, err := s.ReadAt(1, 7, make([]byte, 4), 0)
			wantErr(t, err, ErrCorrupt)
			wantErr(t, s.WriteAt(1, 7, []byte("x"), 0), ErrCorrupt)
			if got := readAll(t, s, 2, 7, 9); string(got) != "some data" {
				t.Fatalf("other chunk reads %q", got)
			}
			if err := s.Delete(1, 7); err != nil {
				t.Fatal(err)
			}
			if d := s.Disks()[0]; d.Damaged != 0 || d.Chunks != 1 {
				t.Fatalf("after delete: disk %+v", d)
			}
		})
	}
}

// TestHeaderDamagedWhileRunning: a header that goes bad after Open is
// caught when the chunk is next opened.
func TestHeaderDamagedWhileRunning(t *testing.T) {
	disks := testDisks(t, 1)
	o := testOpts(nil)
	o.MaxOpenChunks = 1
	s := mustOpen(t, disks, o)
	for _, id := range []uint64{1, 2} {
		if err := s.Create(id, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Chunk 1 was evicted (header written) when 2 was created.
	flipByte(t, filePath(disks[0].Path, 1, 1), offBlockCRCs+8)
	_, err := s.ReadAt(1, 1, make([]byte, 1), 0)
	wantErr(t, err, ErrCorrupt)
	if ci, _ := s.Stat(1); !ci.Damaged {
		t.Fatal("chunk not marked damaged")
	}
	// A header cut short, read into a buffer that held a good header of
	// the same chunk a moment ago: refused, not decoded from leftovers.
	if _, err := s.ReadAt(2, 1, make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(3, 1); err != nil { // evicts 2, writing its header
		t.Fatal(err)
	}
	if err := os.Truncate(filePath(disks[0].Path, 2, 1), 100); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadAt(2, 1, make([]byte, 1), 0)
	wantErr(t, err, ErrCorrupt)
}

// TestMooseFSChunkFile: a MooseFS chunk file in our directories is
// reported for what it is.
func TestMooseFSChunkFile(t *testing.T) {
	disks := testDisks(t, 1)
	s := mustOpen(t, disks, testOpts(nil))
	if err := s.Create(5, 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filePath(disks[0].Path, 5, 1)
	b := make([]byte, HeaderSize)
	copy(b, mooseMagic[:])
	writeFile(t, path, b)
	s = mustOpen(t, disks, testOpts(nil))
	rep := s.ScanReport()
	if len(rep.Damaged) != 1 || !strings.Contains(rep.Damaged[0].Err.Error(), "MooseFS chunk file") {
		t.Fatalf("report %+v", rep)
	}
}
