package fileio

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/wire"
)

const testChunk = 4 << 20

func newEngine(t *testing.T, fc *fakeCluster, tweak func(*Config)) *Engine {
	t.Helper()
	cfg := Config{Meta: fc, Data: fc, FailedServer: fc.failedServer, ChunkSize: fc.chunkSize, Timeout: 5 * time.Second}
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if len(fc.violations) > 0 {
			t.Errorf("protocol violations: %v", fc.violations)
		}
	})
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readAll(t *testing.T, f *File, size int) []byte {
	t.Helper()
	st := &Stream{}
	out := make([]byte, 0, size)
	buf := make([]byte, 1<<20)
	for off := 0; ; {
		n, err := f.Read(ctx(t), st, int64(off), buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
		off += n
	}
}

// TestRoundTrip writes a file spanning several chunks in uneven pieces,
// flushes it, and reads it back from the cluster and through the file.
func TestRoundTrip(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(7, 0)
	want := pattern(3*testChunk+12345, 1)
	r := rand.New(rand.NewPCG(1, 1))
	for off := 0; off < len(want); {
		n := min(1+r.IntN(300<<10), len(want)-off)
		if err := f.Write(ctx(t), int64(off), want[off:off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if got := f.Size(); got != uint64(len(want)) {
		t.Fatalf("size while buffered %d, want %d", got, len(want))
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := fc.contents(7); !bytes.Equal(got, want) {
		t.Fatalf("cluster holds %d bytes, differing from the %d written", len(got), len(want))
	}
	if got := readAll(t, f, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, differing from the %d written", len(got), len(want))
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	// One lease per chunk, ended in any order; the master's length is
	// the file's.
	if len(fc.ends) != 4 || fc.lengths[7] != uint64(len(want)) {
		t.Fatalf("lease ends %+v, master length %d; want 4 ending at length %d", fc.ends, fc.lengths[7], len(want))
	}
	// 3 full chunks of 4 MiB pieces plus a partial one: the writes
	// coalesced into about one request per 4 MiB.
	if fc.writes > 4 {
		t.Fatalf("%d chunkserver writes for %d bytes", fc.writes, len(want))
	}
	if e.buffered() != 0 {
		t.Fatalf("%d bytes of write buffer still held after a flush", e.buffered())
	}
	e.Release(f)
}

// TestModel runs random writes, reads, truncates and flushes against a
// byte-array model, with slow writes so that pieces overlap in flight.
func TestModel(t *testing.T) {
	for seed := range uint64(12) {
		fc := newFake(testChunk)
		fc.writeWait = time.Millisecond
		e := newEngine(t, fc, func(c *Config) { c.PieceSize = 64 << 10 })
		f := e.Open(3, 0)
		r := rand.New(rand.NewPCG(seed, 9))
		var model []byte
		st := &Stream{}
		for step := range 150 {
			op := r.IntN(10)
			if testing.Verbose() {
				t.Logf("step %d op %d size %d", step, op, len(model))
			}
			switch {
			case op < 6:
				off := r.IntN(3 * testChunk)
				if r.IntN(2) == 0 {
					off = len(model) // append
				}
				data := pattern(1+r.IntN(200<<10), uint64(step)+seed<<20)
				if err := f.Write(ctx(t), int64(off), data); err != nil {
					t.Fatal(err)
				}
				if end := off + len(data); end > len(model) {
					model = append(model, make([]byte, end-len(model))...)
				}
				copy(model[off:], data)
			case op < 8:
				off := r.IntN(len(model) + 1)
				buf := make([]byte, r.IntN(3<<20))
				n, err := f.Read(ctx(t), st, int64(off), buf)
				if err != nil {
					t.Fatal(err)
				}
				if want := model[off:min(off+len(buf), len(model))]; !bytes.Equal(buf[:n], want) {
					t.Fatalf("seed %d step %d: read %d at %d: got %d bytes, want %d, or contents differ", seed, step, len(buf), off, n, len(want))
				}
			case op < 9:
				size := r.IntN(len(model) + 1)
				if err := f.Truncate(ctx(t), uint64(size), func(context.Context) error { fc.truncate(3, uint64(size)); return nil }); err != nil {
					t.Fatal(err)
				}
				model = model[:size]
			default:
				if err := f.Flush(ctx(t)); err != nil {
					t.Fatal(err)
				}
				if got := fc.contents(3); !bytes.Equal(got, model) {
					t.Fatalf("seed %d step %d: after flush the cluster holds %d bytes, model %d, or contents differ", seed, step, len(got), len(model))
				}
			}
			if f.Size() != uint64(len(model)) {
				t.Fatalf("seed %d step %d: size %d, model %d", seed, step, f.Size(), len(model))
			}
		}
		if err := f.Flush(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if got := fc.contents(3); !bytes.Equal(got, model) {
			t.Fatalf("seed %d: final contents differ", seed)
		}
		e.Release(f)
		if e.buffered() != 0 {
			t.Fatalf("seed %d: %d bytes still accounted", seed, e.buffered())
		}
	}
}

// TestChainFailure: a server of the chain fails mid-file; the lease is
// ended naming it, a new one leaves it out, and no data is lost.
func TestChainFailure(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, func(c *Config) { c.PieceSize = 1 << 20 })
	f := e.Open(1, 0)
	want := pattern(3<<20, 5)
	if err := f.Write(ctx(t), 0, want[:1<<20]); err != nil {
		t.Fatal(err)
	}
	if err := f.settleRange(ctx(t), 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.down["s2"] = true
	fc.mu.Unlock()
	if err := f.Write(ctx(t), 1<<20, want[1<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatalf("flush after a chain failure: %v", err)
	}
	if got := fc.contents(1); !bytes.Equal(got, want) {
		t.Fatal("contents differ after a chain failure")
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.ends) < 2 || !slices.Equal(fc.ends[0].bad, []string{"s2"}) || fc.ends[len(fc.ends)-1].bad != nil {
		t.Fatalf("lease ends %+v: want the first to name s2, the last none", fc.ends)
	}
	if copies := fc.chunks[1].copies; slices.Contains(copies, "s2") || len(copies) != 2 {
		t.Fatalf("chunk copies %v after s2 was reported bad", copies)
	}
}

// TestBusyLease: another mount's lease (EBUSY) is waited out.
func TestBusyLease(t *testing.T) {
	fc := newFake(testChunk)
	fc.busy = 3
	e := newEngine(t, fc, nil)
	f := e.Open(1, 0)
	if err := f.Write(ctx(t), 0, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := fc.contents(1); string(got) != "hello" {
		t.Fatalf("contents %q", got)
	}
	if fc.leases != 4 {
		t.Fatalf("%d lease requests, want 4 (3 busy)", fc.leases)
	}
}

// TestPermanentFailure: writes that keep failing past Timeout are
// reported by Flush (EIO) and by later writes, and free their buffer.
func TestPermanentFailure(t *testing.T) {
	fc := newFake(testChunk)
	for _, s := range fc.servers {
		fc.down[s] = true
	}
	e := newEngine(t, fc, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	f := e.Open(1, 0)
	if err := f.Write(ctx(t), 0, pattern(100, 1)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := f.Flush(ctx(t))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush with every server down: %v, want EIO", err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", time.Since(start))
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatalf("the error was reported twice: %v", err)
	}
	if e.buffered() != 0 {
		t.Fatalf("%d bytes still accounted", e.buffered())
	}
}

// TestPermanentLeaseRefusal: ENOSPC from the master is not retried and
// reaches the application as ENOSPC.
func TestPermanentLeaseRefusal(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(1, 0)
	noSpace := &refusing{fakeCluster: fc, err: syscall.ENOSPC}
	e.cfg.Meta = noSpace
	if err := f.Write(ctx(t), 0, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx(t)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("flush: %v, want ENOSPC", err)
	}
	if noSpace.calls != 1 {
		t.Fatalf("%d lease requests, want 1", noSpace.calls)
	}
}

type refusing struct {
	*fakeCluster
	err   error
	calls int
	times int // refuse only the first times calls; 0 refuses them all
}

func (r *refusing) ChunkWrite(ctx context.Context, ino, index uint32) (wire.ChunkInfo, error) {
	r.calls++
	if r.times > 0 && r.calls > r.times {
		return r.fakeCluster.ChunkWrite(ctx, ino, index)
	}
	return wire.ChunkInfo{}, r.err
}

// TestNoChunkserverYet: a master that has no chunkserver yet (just after
// a failover) answers EAGAIN; the writer waits and its data lands.
func TestNoChunkserverYet(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(1, 0)
	notYet := &refusing{fakeCluster: fc, err: syscall.EAGAIN, times: 3}
	e.cfg.Meta = notYet
	if err := f.Write(ctx(t), 0, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if got := fc.contents(1); string(got) != "kept" || notYet.calls != 4 {
		t.Fatalf("contents %q after %d lease requests, want \"kept\" after 4", got, notYet.calls)
	}
}

// TestBufferBound: many writers never hold more than the write buffer,
// and the writes still overlap with sending.
func TestBufferBound(t *testing.T) {
	fc := newFake(testChunk)
	fc.writeWait = 5 * time.Millisecond
	const limit = 8 << 20
	e := newEngine(t, fc, func(c *Config) { c.WriteBuffer = limit; c.PieceSize = 1 << 20 })
	var peak int64
	stop := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			peak = max(peak, e.buffered())
			time.Sleep(100 * time.Microsecond)
		}
	})
	var wg sync.WaitGroup
	for ino := range uint32(4) {
		wg.Go(func() {
			f := e.Open(ino+1, 0)
			defer e.Release(f)
			data := pattern(256<<10, uint64(ino))
			for off := 0; off < 12<<20; off += len(data) {
				if err := f.Write(ctx(t), int64(off), data); err != nil {
					t.Error(err)
					return
				}
			}
			if err := f.Flush(ctx(t)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	watcher.Wait()
	if peak > limit {
		t.Fatalf("write buffer peaked at %d, limit %d", peak, limit)
	}
	if fc.maxInflight < 2 {
		t.Fatalf("at most %d chunkserver writes at once: sending is not pipelined", fc.maxInflight)
	}
}

// TestLeaseLifecycle: a lease is given back when the writer moves to
// the next chunk and when it goes idle, without any flush.
func TestLeaseLifecycle(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, func(c *Config) { c.IdleEnd = 100 * time.Millisecond })
	f := e.Open(1, 0)
	defer e.Release(f)
	if err := f.Write(ctx(t), 0, pattern(1000, 1)); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(ctx(t), testChunk, pattern(1000, 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "chunk 0's lease to end when the writer moved on", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return len(fc.ends) >= 1 && fc.ends[0].id == fc.files[1][0]
	})
	waitFor(t, "chunk 1's lease to end when idle", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return len(fc.ends) == 2 && fc.lengths[1] == testChunk+1000
	})
}

// TestFsync syncs every chunk written, once.
func TestFsync(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(1, 0)
	defer e.Release(f)
	if err := f.Write(ctx(t), testChunk-10, pattern(20, 1)); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if fc.syncs != 2 {
		t.Fatalf("%d syncs for a write across two chunks and two fsyncs, want 2", fc.syncs)
	}
}

// TestSizeNeverShrinks: while written data has not reached the master,
// the size shown is the local one.
func TestSizeNeverShrinks(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(1, 10)
	defer e.Release(f)
	if err := f.Write(ctx(t), 100, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := e.Size(1, 10); got != 101 {
		t.Fatalf("size %d with a write ending at 101 and the master at 10", got)
	}
	if got := e.Size(1, 500); got != 500 {
		t.Fatalf("size %d when the master knows 500", got)
	}
	if got := e.Size(2, 7); got != 7 {
		t.Fatalf("size %d of a file not open", got)
	}
}

// TestReadAhead: sequential reads fetch ahead in parallel blocks;
// random small reads fetch only what they ask for.
func TestReadAhead(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(1, 0)
	defer e.Release(f)
	want := pattern(3*testChunk, 3)
	if err := f.Write(ctx(t), 0, want); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.reads, fc.readSizes = 0, nil
	fc.mu.Unlock()
	st := &Stream{}
	buf := make([]byte, 128<<10)
	for off := 0; off < len(want); off += len(buf) {
		n, err := f.Read(ctx(t), st, int64(off), buf)
		if err != nil || n != len(buf) || !bytes.Equal(buf, want[off:off+n]) {
			t.Fatalf("sequential read at %d: %d, %v", off, n, err)
		}
	}
	fc.mu.Lock()
	reads, sizes := fc.reads, fc.readSizes
	fc.mu.Unlock()
	// 96 reads of 128 KiB: two direct ones, then whole blocks.
	if reads > 16 || slices.Max(sizes) != blockSize {
		t.Fatalf("sequential reading of 12 MiB took %d chunkserver reads (sizes %v)", reads, sizes)
	}

	f2 := e.Open(1, 0)
	defer e.Release(f2)
	f2.mu.Lock()
	f2.invalidateLocked()
	f2.mu.Unlock()
	fc.mu.Lock()
	fc.reads, fc.readSizes = 0, nil
	fc.mu.Unlock()
	st = &Stream{}
	r := rand.New(rand.NewPCG(4, 4))
	small := make([]byte, 4096)
	for range 200 {
		off := r.IntN(len(want)/4096) * 4096
		if _, err := f2.Read(ctx(t), st, int64(off), small); err != nil || !bytes.Equal(small, want[off:off+4096]) {
			t.Fatalf("random read at %d: %v", off, err)
		}
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	total := 0
	for _, s := range fc.readSizes {
		total += s
	}
	if total > 250*4096 {
		t.Fatalf("200 random 4 KiB reads fetched %d bytes", total)
	}
}

// TestReadRetry: a failed read is retried with fresh locations, then
// fails with EIO.
func TestReadRetry(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(1, 0)
	defer e.Release(f)
	if err := f.Write(ctx(t), 0, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	fc.readFail = readAttempts - 1
	buf := make([]byte, 10)
	n, err := f.Read(ctx(t), &Stream{}, 0, buf)
	if err != nil || string(buf[:n]) != "data" {
		t.Fatalf("read after %d failures: %q, %v", readAttempts-1, buf[:n], err)
	}
	fc.readFail = readAttempts
	if _, err := f.Read(ctx(t), &Stream{}, 0, buf); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read failing every time: %v, want EIO", err)
	}
}

// TestHoles: chunks never written read as zeros, up to the length.
func TestHoles(t *testing.T) {
	fc := newFake(testChunk)
	e := newEngine(t, fc, nil)
	f := e.Open(1, 0)
	defer e.Release(f)
	if err := f.Write(ctx(t), 2*testChunk+5, []byte("end")); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, f, 0)
	want := make([]byte, 2*testChunk+8)
	copy(want[2*testChunk+5:], "end")
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes of a sparse file of %d", len(got), len(want))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
