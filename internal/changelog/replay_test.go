package changelog

import (
	"bytes"
	"io"
	"strconv"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

// workload is a changelog a busy master could write: files created,
// written, extended and unlocked, with the results the state machine gave.
func workload(tb testing.TB, files int) []byte {
	tb.Helper()
	s := meta.New(1, 1700000000)
	var enc Encoder
	var out []byte
	v := uint64(0)
	apply := func(op meta.Op) meta.Result {
		v++
		e := meta.Entry{Version: v, Term: 1, Time: 1700000000 + uint32(v/1000), Op: op}
		r, err := s.Apply(&e)
		if err != nil || !r.Ok() {
			tb.Fatalf("apply %s: %v %v", op.OpName(), r, err)
		}
		e.Result = r
		if out, err = enc.AppendEntry(out, &e); err != nil {
			tb.Fatal(err)
		}
		return r
	}
	for i := range files {
		ino := apply(&meta.Create{Parent: meta.RootInode, Name: "file-" + strconv.Itoa(i) + ".dat", Type: meta.TypeFile, Mode: 0o644, UID: 1000, GID: 1000}).Val[0]
		chunk := apply(&meta.Write{Inode: uint32(ino), Index: 0}).Val[0]
		apply(&meta.Length{Inode: uint32(ino), Size: 1 << 20})
		apply(&meta.Unlock{Chunk: chunk})
	}
	return out
}

// TestReplayWorkload checks the pipeline the benchmark measures: what the
// master logged replays onto a fresh state with the recorded results.
func TestReplayWorkload(t *testing.T) {
	data := workload(t, 500)
	if n := replay(t, data); n != 2000 {
		t.Fatalf("replayed %d entries, want 2000", n)
	}
}

func replay(tb testing.TB, data []byte) int {
	s := meta.New(1, 1700000000)
	r := NewReader(bytes.NewReader(data), "bench")
	n := 0
	for {
		e, err := r.Next()
		if err == io.EOF {
			return n
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := s.Replay(&e); err != nil {
			tb.Fatal(err)
		}
		n++
	}
}

// BenchmarkReplay reads and applies a changelog: the design asks for over
// a million entries a second, parse and apply together.
func BenchmarkReplay(b *testing.B) {
	data := workload(b, 25000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n += replay(b, data)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/entry")
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
}
