package chunkstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// headerWithVersion is the file's header with another version and the
// CRC fixed: what SetVersion's header write leaves.
func headerWithVersion(t testing.TB, file []byte, v uint32) []byte {
	t.Helper()
	h := bytes.Clone(file[:HeaderSize])
	binary.LittleEndian.PutUint32(h[offVersion:], v)
	binary.LittleEndian.PutUint32(h[offHeaderCRC:], headerCRC(h))
	if _, err := decodeHeader(h); err != nil {
		t.Fatal(err)
	}
	return h
}

// setupChunk makes one closed chunk with data and returns its file's
// bytes and the data.
func setupChunk(t *testing.T, disks []DiskSpec, id uint64, v uint32) (file, data []byte) {
	t.Helper()
	s := mustOpen(t, disks, testOpts(nil))
	data = randData(rand.New(rand.NewPCG(id, uint64(v))), 2*BlockSize+99)
	if err := s.Create(id, v); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(id, v, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return readFile(t, filePath(disks[0].Path, id, v)), data
}

// TestSetVersionCrashPoints builds, by hand, every state a crash inside
// SetVersion(1 -> 2) can leave, and checks what Open makes of each.
func TestSetVersionCrashPoints(t *testing.T) {
	const id = 0x77
	for _, tc := range []struct {
		name string
		// make turns the file at version 1 into the crashed state.
		make        func(t *testing.T, dir string, file []byte)
		wantVersion uint32
		wantDamaged bool
		wantStale   int
		wantRenamed int
		wantNames   []string // files left in the chunk directory
	}{{
		name:        "before the header write",
		make:        func(t *testing.T, dir string, file []byte) {},
		wantVersion: 1, wantNames: []string{chunkName(id, 1)},
	}, {
		// Step 1 done, rename not: the header wins, the name is fixed.
		name: "header written, not renamed",
		make: func(t *testing.T, dir string, file []byte) {
			copy(file, headerWithVersion(t, file, 2))
			writeFile(t, filepath.Join(dir, chunkName(id, 1)), file)
		},
		wantVersion: 2, wantRenamed: 1, wantNames: []string{chunkName(id, 2)},
	}, {
		// Only the first sector of the 8 KiB header write reached the
		// disk: it holds everything that changed, so this is the new
		// header whole.
		name: "first sector of the header written",
		make: func(t *testing.T, dir string, file []byte) {
			copy(file[:512], headerWithVersion(t, file, 2))
			writeFile(t, filepath.Join(dir, chunkName(id, 1)), file)
		},
		wantVersion: 2, wantRenamed: 1, wantNames: []string{chunkName(id, 2)},
	}, {
		// A sector torn inside itself (the version written, its CRC not),
		// which disks do not do: damaged, reported, never guessed at.
		name: "torn first sector",
		make: func(t *testing.T, dir string, file []byte) {
			binary.LittleEndian.PutUint32(file[offVersion:], 2)
			writeFile(t, filepath.Join(dir, chunkName(id, 1)), file)
		},
		wantVersion: 1, wantDamaged: true, wantNames: []string{chunkName(id, 1)},
	}, {
		name: "renamed, header not durable",
		make: func(t *testing.T, dir string, file []byte) {
			os.Rename(filepath.Join(dir, chunkName(id, 1)), filepath.Join(dir, chunkName(id, 2)))
		},
		wantVersion: 1, wantRenamed: 1, wantNames: []string{chunkName(id, 1)},
	}, {
		// Both names, one file (a link-based rename interrupted): one
		// name is kept, the other reported as a hard link, safe to delete.
		name: "both names, one inode",
		make: func(t *testing.T, dir string, file []byte) {
			copy(file, headerWithVersion(t, file, 2))
			writeFile(t, filepath.Join(dir, chunkName(id, 1)), file)
			if err := os.Link(filepath.Join(dir, chunkName(id, 1)), filepath.Join(dir, chunkName(id, 2))); err != nil {
				t.Fatal(err)
			}
		},
		wantVersion: 2, wantStale: 1, wantNames: []string{chunkName(id, 1), chunkName(id, 2)},
	}, {
		// Two files, both good: the newer version wins, the older is stale.
		name: "both names, two files",
		make: func(t *testing.T, dir string, file []byte) {
			writeFile(t, filepath.Join(dir, chunkName(id, 2)), append(headerWithVersion(t, file, 2), file[HeaderSize:]...))
		},
		wantVersion: 2, wantStale: 1, wantNames: []string{chunkName(id, 1), chunkName(id, 2)},
	}, {
		// The newer file's header is damaged: the good older one wins.
		name: "newer name damaged",
		make: func(t *testing.T, dir string, file []byte) {
			bad := bytes.Clone(file)
			bad[offBlockCRCs] ^= 1
			writeFile(t, filepath.Join(dir, chunkName(id, 2)), bad)
		},
		wantVersion: 1, wantStale: 1, wantNames: []string{chunkName(id, 1), chunkName(id, 2)},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			disks := testDisks(t, 1)
			file, data := setupChunk(t, disks, id, 1)
			dir := chunkDir(disks[0].Path, id)
			tc.make(t, dir, file)

			// Open twice: the first repairs, the second must agree.
			for round := 0; round < 2; round++ {
				s := mustOpen(t, disks, testOpts(nil))
				rep := s.ScanReport()
				ci, err := s.Stat(id)
				if err != nil {
					t.Fatal(err)
				}
				if ci.Version != tc.wantVersion || ci.Damaged != tc.wantDamaged {
					t.Fatalf("round %d: Stat = %+v, want version %d damaged %v", round, ci, tc.wantVersion, tc.wantDamaged)
				}
				if round == 0 && (len(rep.Stale) != tc.wantStale || rep.Renamed != tc.wantRenamed) {
					t.Fatalf("report %+v, want %d stale, %d renamed", rep, tc.wantStale, tc.wantRenamed)
				}
				if !tc.wantDamaged {
					if got := readAll(t, s, id, ci.Version, len(data)); !bytes.Equal(got, data) {
						t.Fatal("data differs")
					}
				}
				var names []string
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					names = append(names, e.Name())
				}
				if round == 0 && !equalStrings(names, tc.wantNames) {
					t.Fatalf("directory holds %v, want %v", names, tc.wantNames)
				}
				if round == 0 {
					if n, err := s.PurgeStale(); err != nil || n != tc.wantStale {
						t.Fatalf("PurgeStale = %d, %v", n, err)
					}
				}
				s.Close()
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSetVersionIsDurableAndRenames: the live path, end to end.
func TestSetVersionIsDurableAndRenames(t *testing.T) {
	disks := testDisks(t, 1)
	s := mustOpen(t, disks, testOpts(nil))
	if err := s.Create(3, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(3, 1, []byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetVersion(3, 1, 9); err != nil {
		t.Fatal(err)
	}
	// The file on disk, read behind the store's back, is complete and at
	// the new version under the new name: nothing waits in memory.
	file := readFile(t, filePath(disks[0].Path, 3, 9))
	h, err := decodeHeader(file[:HeaderSize])
	if err != nil || h.version != 9 || h.length != 5 || string(file[HeaderSize:]) != "hello" {
		t.Fatalf("file after SetVersion: %+v, %v", h, err)
	}
	if _, err := os.Stat(filePath(disks[0].Path, 3, 1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("old name still there")
	}
	_, err = s.ReadAt(3, 1, make([]byte, 5), 0)
	wantErr(t, err, ErrWrongVersion)
}

// TestProcessCrashBeforeHeaderFlush copies a chunk's file while its
// header still waits in memory, as a kill -9 would leave it: the blocks
// written since fail their checksums and are refused, the older blocks
// still read. Old data is never passed off as new, nor new as old.
func TestProcessCrashBeforeHeaderFlush(t *testing.T) {
	disks := testDisks(t, 1)
	o := testOpts(nil)
	o.HeaderFlushDelay = time.Hour
	s := mustOpen(t, disks, o)
	old := randData(rand.New(rand.NewPCG(1, 1)), 4*BlockSize)
	if err := s.Create(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, 1, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, 1, []byte("new data in block two"), 2*BlockSize+10); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, 1, randData(rand.New(rand.NewPCG(2, 2)), BlockSize), 4*BlockSize); err != nil {
		t.Fatal(err)
	}
	crashed := testDisks(t, 1)
	dir := chunkDir(crashed[0].Path, 1)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filePath(crashed[0].Path, 1, 1), readFile(t, filePath(disks[0].Path, 1, 1)))

	c := mustOpen(t, crashed, testOpts(nil))
	buf := make([]byte, BlockSize)
	for b, wantBad := range []bool{false, false, true, false} {
		_, err := c.ReadAt(1, 1, buf, int64(b)*BlockSize)
		if wantBad {
			wantErr(t, err, ErrCorrupt)
			continue
		}
		if err != nil || !bytes.Equal(buf, old[b*BlockSize:(b+1)*BlockSize]) {
			t.Fatalf("block %d: %v", b, err)
		}
	}
	// The header's length is the synced one: block 4 is past it, zeros.
	if n, err := c.ReadAt(1, 1, buf, 4*BlockSize); err != nil || n != BlockSize || !bytes.Equal(buf, make([]byte, BlockSize)) {
		t.Fatalf("past the durable length: %d, %v", n, err)
	}
	// And growing the chunk again cuts the stale tail: zeros in the gap.
	if err := c.WriteAt(1, 1, []byte("x"), 6*BlockSize); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAt(1, 1, buf, 4*BlockSize); err != nil || !bytes.Equal(buf, make([]byte, BlockSize)) {
		t.Fatalf("gap after regrowth is not zeros: %v", err)
	}
}

// TestShortFile: a file cut short behind the store's back reads zeros
// past its end, which fail the checksum unless they were zeros.
func TestShortFile(t *testing.T) {
	disks := testDisks(t, 1)
	s := mustOpen(t, disks, testOpts(nil))
	if err := s.Create(1, 1); err != nil {
		t.Fatal(err)
	}
	data := randData(rand.New(rand.NewPCG(1, 1)), 2*BlockSize)
	clear(data[BlockSize+100:])
	if err := s.WriteAt(1, 1, data, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filePath(disks[0].Path, 1, 1)
	if err := os.Truncate(path, HeaderSize+BlockSize+100); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, disks, testOpts(nil))
	if got := readAll(t, s, 1, 1, len(data)); !bytes.Equal(got, data) {
		t.Fatal("zeros cut from the end do not read back as zeros")
	}
	if err := os.Truncate(path, HeaderSize+BlockSize-1); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, BlockSize + 5} {
		_, err := s.ReadAt(1, 1, make([]byte, 10), off)
		wantErr(t, err, ErrCorrupt)
	}
}
