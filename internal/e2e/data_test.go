package e2e

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeRandom writes size pseudo-random bytes (from seed) to path in 1
// MiB writes, fsyncs, and returns their SHA-256.
func writeRandom(t *testing.T, path string, seed uint64, size int64) [32]byte {
	t.Helper()
	sum, err := tryWriteRandom(path, seed, size)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// tryWriteRandom is writeRandom returning its error: the SHA-256 is only
// valid when the file was written, fsynced and closed without one.
func tryWriteRandom(path string, seed uint64, size int64) ([32]byte, error) {
	f, err := os.Create(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	src := rand.NewChaCha8(s)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		_, _ = src.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return [32]byte{}, fmt.Errorf("write %s: %w", path, err)
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		return [32]byte{}, fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return [32]byte{}, fmt.Errorf("close %s: %w", path, err)
	}
	return [32]byte(h.Sum(nil)), nil
}

// hashFile returns a file's SHA-256 and size.
func hashFile(path string) ([32]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		return [32]byte{}, n, err
	}
	return [32]byte(h.Sum(nil)), n, nil
}

// smallTree writes n files of 0-8 KiB in 100 directories, with 8 writers,
// and returns each relative path's content hash.
func smallTree(t *testing.T, root string, n int) map[string][32]byte {
	t.Helper()
	for d := range 100 {
		if err := os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%02d", d)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	sums := make(map[string][32]byte, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := w; i < n; i += 8 {
				rel := fmt.Sprintf("d%02d/f%05d", i%100, i)
				data := make([]byte, r.IntN(8193))
				for j := range data {
					data[j] = byte(r.Uint32())
				}
				if err := os.WriteFile(filepath.Join(root, rel), data, 0o644); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				sums[rel] = sha256.Sum256(data)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return sums
}

func checkTree(t *testing.T, root string, sums map[string][32]byte) {
	t.Helper()
	bad := 0
	for rel, want := range sums {
		got, _, err := hashFile(filepath.Join(root, rel))
		if err != nil || got != want {
			bad++
			if bad <= 5 {
				t.Errorf("%s: %v (content differs: %v)", rel, err, got != want)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d small files wrong", bad, len(sums))
	}
}

// TestRemountKeepsData: a 1 GiB file and 10,000 small files read back with
// the same SHA-256 after an unmount and a new mount.
func TestRemountKeepsData(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	big := filepath.Join(c.mnt, "big")
	t0 := time.Now()
	want := writeRandom(t, big, 1, 1<<30)
	t.Logf("1 GiB written and fsynced in %s", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	sums := smallTree(t, filepath.Join(c.mnt, "tree"), 10000)
	t.Logf("10,000 small files written in %s", time.Since(t0).Round(time.Millisecond))

	c.unmount()
	c.mountFS()
	t0 = time.Now()
	got, n, err := hashFile(big)
	if err != nil || n != 1<<30 || got != want {
		t.Fatalf("1 GiB file after remount: %d bytes, err %v, same content %v", n, err, got == want)
	}
	t.Logf("1 GiB read back in %s", time.Since(t0).Round(time.Millisecond))
	checkTree(t, filepath.Join(c.mnt, "tree"), sums)
}

// copiesByChunk counts the copies of each chunk on running chunkservers.
func copiesByChunk(c *cluster) map[uint64]int {
	out := map[uint64]int{}
	for id, cps := range c.chunkFiles(true) {
		seen := map[int]bool{}
		for _, cp := range cps {
			seen[cp.server] = true
		}
		out[id] = len(seen)
	}
	return out
}

// TestChunkserverKilled: with goal 2 on three chunkservers, kill -9 of one
// leaves every file readable, and the master brings every chunk back to
// two copies on the other two.
func TestChunkserverKilled(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	sums := map[string][32]byte{}
	for i := range 12 {
		p := filepath.Join(c.mnt, fmt.Sprintf("f%02d", i))
		sums[p] = writeRandom(t, p, uint64(100+i), int64(i)*3<<20+12345)
	}
	p := filepath.Join(c.mnt, "three-chunks")
	sums[p] = writeRandom(t, p, 99, 130<<20)
	eventually(t, 30*time.Second, func() error {
		for id, n := range copiesByChunk(c) {
			if n != 2 {
				return fmt.Errorf("chunk %016X has %d copies before the kill, want 2", id, n)
			}
		}
		return nil
	})
	total := len(copiesByChunk(c))

	victim := c.cs[0]
	victim.kill()
	t.Logf("chunkserver 0 killed; %d chunks", total)
	for path, want := range sums {
		got, _, err := hashFile(path)
		if err != nil || got != want {
			t.Fatalf("%s unreadable or wrong after a chunkserver died: %v", path, err)
		}
	}
	t0 := time.Now()
	eventually(t, 120*time.Second, func() error {
		cps := copiesByChunk(c)
		if len(cps) != total {
			return fmt.Errorf("%d chunks on the live servers, want %d", len(cps), total)
		}
		for id, n := range cps {
			if n != 2 {
				return fmt.Errorf("chunk %016X has %d copies on the live servers", id, n)
			}
		}
		return nil
	})
	t.Logf("every chunk back to 2 copies %s after the kill", time.Since(t0).Round(time.Millisecond))
	for path, want := range sums {
		if got, _, err := hashFile(path); err != nil || got != want {
			t.Fatalf("%s wrong after re-replication: %v", path, err)
		}
	}
}

// TestDamagedCopy: a flipped byte in one copy's chunk file; reads return
// the right data (from the other copy) and the bad copy is replaced.
func TestDamagedCopy(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	path := filepath.Join(c.mnt, "victim")
	want := writeRandom(t, path, 5, 5<<20)
	files := c.chunkFiles(true)
	if len(files) != 1 || len(files[firstKey(files)]) != 2 {
		t.Fatalf("want one chunk in two copies, have %v", files)
	}
	id := firstKey(files)
	bad := files[id][0]
	// Past the 8 KiB header, in the second 64 KiB block of data.
	const off = 8192 + 65536 + 1234
	orig := flipByte(t, bad.path, off)
	t.Logf("flipped byte %d of %s (chunkserver %d)", off, bad.path, bad.server)

	// Read until the damaged copy has been tried: the client spreads reads
	// over the copies, and O_DIRECT keeps the kernel's page cache out.
	for i := range 20 {
		got, _, err := hashFileDirect(path)
		if err != nil || got != want {
			t.Fatalf("read %d returned wrong data or failed: %v", i, err)
		}
	}
	eventually(t, 60*time.Second, func() error {
		cur, err := os.ReadFile(bad.path)
		if err == nil && len(cur) > off && cur[off] != orig {
			return fmt.Errorf("the damaged copy %s is still there", bad.path)
		}
		cps := copiesByChunk(c)
		if cps[id] != 2 {
			return fmt.Errorf("chunk %016X has %d copies", id, cps[id])
		}
		return nil
	})
	// And the data is right whichever copy serves it.
	for range 5 {
		if got, _, err := hashFile(path); err != nil || got != want {
			t.Fatalf("wrong after the repair: %v", err)
		}
	}
}

// hashFileDirect is hashFile reading with O_DIRECT, so every read goes to
// the file system rather than the page cache.
func hashFileDirect(path string) ([32]byte, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	// O_DIRECT wants an aligned buffer: an anonymous mapping is.
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer unix.Munmap(buf)
	h := sha256.New()
	var total int64
	for {
		n, err := f.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		if err == io.EOF || n == 0 && err == nil {
			break
		}
		if err != nil {
			return [32]byte{}, total, err
		}
	}
	return [32]byte(h.Sum(nil)), total, nil
}

func firstKey(m map[uint64][]chunkCopy) uint64 {
	for k := range m {
		return k
	}
	return 0
}

// flipByte inverts one byte of a file in place and returns its old value.
func flipByte(t *testing.T, path string, off int64) byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	old := b[0]
	b[0] ^= 0xFF
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	return old
}
