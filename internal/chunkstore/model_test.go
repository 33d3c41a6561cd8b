package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// modelChunk is the naive truth: a version and the bytes.
type modelChunk struct {
	version uint32
	data    []byte
}

// TestRandomOpsAgainstModel runs random operation sequences against the
// store and a map of byte slices, comparing every read, every length and
// List after every step, across Close and Open. A tiny open-file cache
// and flush delay make eviction and header write-back happen all the time.
func TestRandomOpsAgainstModel(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4}
	steps := 400
	if testing.Short() {
		seeds, steps = seeds[:1], 150
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runModel(t, seed, steps)
		})
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	r := rand.New(rand.NewPCG(seed, 99))
	disks := testDisks(t, 2)
	opts := testOpts(nil)
	opts.MaxOpenChunks = 3
	opts.HeaderFlushDelay = time.Millisecond
	s := mustOpen(t, disks, opts)
	model := map[uint64]*modelChunk{}
	ids := []uint64{1, 2, 0x100, 0x101, 0xfffffffffffff0ff, 7}

	// sizes favour block edges, where the off-by-ones live.
	randSize := func() int {
		switch r.IntN(5) {
		case 0:
			return 1 + r.IntN(100)
		case 1:
			return BlockSize + r.IntN(3) - 1
		case 2:
			return (1 + r.IntN(16)) * BlockSize
		default:
			return 1 + r.IntN(3*BlockSize)
		}
	}
	randOff := func(n int) int64 {
		limit := 4 << 20
		if r.IntN(20) == 0 {
			limit = ChunkSize
		}
		off := int64(r.IntN(limit))
		if r.IntN(3) == 0 {
			off = off / BlockSize * BlockSize
		}
		return min(off, int64(ChunkSize-n))
	}

	for step := 0; step < steps; step++ {
		id := ids[r.IntN(len(ids))]
		m := model[id]
		var op string
		switch k := r.IntN(100); {
		case m == nil && k < 80 || k < 5:
			op = "create"
			v := uint32(1 + r.IntN(1000))
			err := s.Create(id, v)
			if m != nil {
				wantErr(t, err, ErrExists)
				break
			}
			if err != nil {
				t.Fatalf("step %d: create: %v", step, err)
			}
			model[id] = &modelChunk{version: v}
		case m == nil:
			op = "read missing"
			_, err := s.ReadAt(id, 1, make([]byte, 10), 0)
			wantErr(t, err, ErrNotFound)
		case k < 45:
			n := randSize()
			off := randOff(n)
			op = fmt.Sprintf("write %d at %d", n, off)
			p := randData(r, n)
			if err := s.WriteAt(id, m.version, p, off); err != nil {
				t.Fatalf("step %d: %s: %v", step, op, err)
			}
			if end := int(off) + n; end > len(m.data) {
				m.data = append(m.data, make([]byte, end-len(m.data))...)
			}
			copy(m.data[off:], p)
		case k < 70:
			n := randSize()
			off := randOff(n)
			if r.IntN(10) == 0 {
				off = int64(r.IntN(max(len(m.data), 1))) // around the end
			}
			op = fmt.Sprintf("read %d at %d", n, off)
			got := make([]byte, n)
			if _, err := s.ReadAt(id, m.version, got, off); err != nil {
				t.Fatalf("step %d: %s: %v", step, op, err)
			}
			want := make([]byte, n)
			if off < int64(len(m.data)) {
				copy(want, m.data[off:])
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("step %d: %s: data differs from the model", step, op)
			}
		case k < 78:
			n := int64(r.IntN(len(m.data) + 2*BlockSize))
			if r.IntN(2) == 0 {
				n = n / BlockSize * BlockSize
			}
			op = fmt.Sprintf("truncate to %d", n)
			if err := s.Truncate(id, m.version, n); err != nil {
				t.Fatalf("step %d: %s: %v", step, op, err)
			}
			if int(n) < len(m.data) {
				m.data = m.data[:n]
			} else {
				m.data = append(m.data, make([]byte, int(n)-len(m.data))...)
			}
		case k < 85:
			nv := m.version + 1 + uint32(r.IntN(3))
			op = fmt.Sprintf("set version %d", nv)
			err := s.SetVersion(id, m.version+1000, nv)
			wantErr(t, err, ErrWrongVersion)
			if err := s.SetVersion(id, m.version, nv); err != nil {
				t.Fatalf("step %d: %s: %v", step, op, err)
			}
			m.version = nv
		case k < 89:
			op = "delete"
			if err := s.Delete(id, m.version); err != nil {
				t.Fatalf("step %d: delete: %v", step, err)
			}
			delete(model, id)
		case k < 93:
			op = "sync"
			if err := s.Sync(id); err != nil {
				t.Fatalf("step %d: sync: %v", step, err)
			}
		default:
			op = "reopen"
			if err := s.Close(); err != nil {
				t.Fatalf("step %d: close: %v", step, err)
			}
			s = mustOpen(t, disks, opts)
			if rep := s.ScanReport(); len(rep.Damaged)+len(rep.Stale)+len(rep.Ignored) != 0 || rep.Renamed != 0 {
				t.Fatalf("step %d: clean reopen reported %+v", step, rep)
			}
		}
		checkList(t, s, model, fmt.Sprintf("step %d (%s)", step, op))
	}
	// Every chunk, whole, one last time.
	for id, m := range model {
		if got := readAll(t, s, id, m.version, len(m.data)); !bytes.Equal(got, m.data) {
			t.Fatalf("chunk %016X differs from the model at the end", id)
		}
	}
}

func checkList(t *testing.T, s *Store, model map[uint64]*modelChunk, where string) {
	t.Helper()
	list := s.List()
	if len(list) != len(model) {
		t.Fatalf("%s: List has %d chunks, model %d", where, len(list), len(model))
	}
	for _, ci := range list {
		m := model[ci.ID]
		if m == nil || ci.Version != m.version || int(ci.Length) != len(m.data) || ci.Damaged {
			t.Fatalf("%s: List says %+v, model %+v", where, ci, m)
		}
	}
	var chunks int
	for _, d := range s.Disks() {
		chunks += d.Chunks
		if d.Damaged != 0 || d.IOErrors != 0 {
			t.Fatalf("%s: disk %+v", where, d)
		}
	}
	if chunks != len(model) {
		t.Fatalf("%s: disks count %d chunks, model has %d", where, chunks, len(model))
	}
}

// TestRoundTripBasics pins the simple contract the model test relies on.
func TestRoundTripBasics(t *testing.T) {
	s := mustOpen(t, testDisks(t, 1), testOpts(nil))
	const id = 0xABCDEF
	if err := s.Create(id, 5); err != nil {
		t.Fatal(err)
	}
	data := randData(rand.New(rand.NewPCG(1, 1)), 3*BlockSize+17)
	if err := s.WriteAt(id, 5, data, 100); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data)+BlockSize)
	n, err := s.ReadAt(id, 5, got, 100)
	if err != nil || n != len(got) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, BlockSize)) {
		t.Fatal("read differs from write, or past the end is not zeros")
	}
	ci, err := s.Stat(id)
	if err != nil || ci.Length != uint32(100+len(data)) || ci.Version != 5 {
		t.Fatalf("Stat = %+v, %v", ci, err)
	}

	// Reads near and past ChunkSize.
	n, err = s.ReadAt(id, 5, make([]byte, 10), ChunkSize-4)
	if n != 4 || !errors.Is(err, io.EOF) {
		t.Fatalf("read across the end of a chunk = %d, %v; want 4, EOF", n, err)
	}
	_, err = s.ReadAt(id, 5, make([]byte, 1), ChunkSize+1)
	wantErr(t, err, ErrRange)
	wantErr(t, s.WriteAt(id, 5, make([]byte, 2), ChunkSize-1), ErrRange)
	wantErr(t, s.WriteAt(id, 5, make([]byte, 2), -1), ErrRange)
	wantErr(t, s.Truncate(id, 5, ChunkSize+1), ErrRange)

	// Versions and existence.
	_, err = s.ReadAt(id, 4, got, 0)
	wantErr(t, err, ErrWrongVersion)
	wantErr(t, s.WriteAt(id, 6, got, 0), ErrWrongVersion)
	wantErr(t, s.Create(id, 9), ErrExists)
	_, err = s.ReadAt(id+1, 5, got, 0)
	wantErr(t, err, ErrNotFound)
	wantErr(t, s.Delete(id, 4), ErrWrongVersion)
	if err := s.Delete(id, 5); err != nil {
		t.Fatal(err)
	}
	_, err = s.Stat(id)
	wantErr(t, err, ErrNotFound)

	// A full-size chunk.
	if err := s.Create(id, 1); err != nil {
		t.Fatal(err)
	}
	big := randData(rand.New(rand.NewPCG(2, 2)), ChunkSize)
	if err := s.WriteAt(id, 1, big, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, s, id, 1, ChunkSize), big) {
		t.Fatal("64 MiB chunk reads back different")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadAt(id, 1, got, 0)
	wantErr(t, err, ErrClosed)
}
