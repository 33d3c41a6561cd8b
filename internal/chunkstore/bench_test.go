package chunkstore

import (
	"math/rand/v2"
	"testing"
)

// The benchmarks run on the disk holding the test's temporary
// directory; the reads are of data in the page cache, the write
// benchmark ends each chunk with Sync, so it includes getting the 64 MiB
// to the disk. b.SetBytes makes go test print MB/s.

func benchStore(b *testing.B) *Store {
	b.Helper()
	return mustOpen(b, testDisks(b, 1), testOpts(nil))
}

// BenchmarkSeqWrite1M writes whole 64 MiB chunks in 1 MiB writes, then
// Syncs each: the chunkserver's streaming-write path.
func BenchmarkSeqWrite1M(b *testing.B) {
	s := benchStore(b)
	buf := randData(rand.New(rand.NewPCG(1, 1)), 1<<20)
	b.SetBytes(ChunkSize)
	id := uint64(0)
	for b.Loop() {
		id++
		if err := s.Create(id, 1); err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < ChunkSize; off += int64(len(buf)) {
			if err := s.WriteAt(id, 1, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Sync(id); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(id, 1); err != nil { // keep the disk from filling
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkWrite64K is the same stream in MooseFS's 64 KiB write size,
// without Sync: the cost of checksumming and of the batched header.
func BenchmarkWrite64K(b *testing.B) {
	s := benchStore(b)
	buf := randData(rand.New(rand.NewPCG(1, 1)), BlockSize)
	if err := s.Create(1, 1); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(BlockSize)
	off := int64(0)
	for b.Loop() {
		if err := s.WriteAt(1, 1, buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + BlockSize) % ChunkSize
	}
}

func fullChunk(b *testing.B, s *Store) {
	b.Helper()
	if err := s.Create(1, 1); err != nil {
		b.Fatal(err)
	}
	buf := randData(rand.New(rand.NewPCG(1, 1)), 1<<20)
	for off := int64(0); off < ChunkSize; off += int64(len(buf)) {
		if err := s.WriteAt(1, 1, buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(1); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSeqRead1M reads a 64 MiB chunk in 1 MiB reads, verifying
// every block.
func BenchmarkSeqRead1M(b *testing.B) {
	s := benchStore(b)
	fullChunk(b, s)
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	off := int64(0)
	for b.Loop() {
		if _, err := s.ReadAt(1, 1, buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(buf))) % ChunkSize
	}
}

// BenchmarkRandRead4K reads 4 KiB at random 4 KiB-aligned offsets of a
// 64 MiB chunk: each costs a 64 KiB read and checksum. It reports IOPS.
func BenchmarkRandRead4K(b *testing.B) {
	s := benchStore(b)
	fullChunk(b, s)
	buf := make([]byte, 4096)
	r := rand.New(rand.NewPCG(2, 2))
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		off := int64(r.IntN(ChunkSize/4096)) * 4096
		if _, err := s.ReadAt(1, 1, buf, off); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
}

// BenchmarkRandRead4KParallel is the same from as many goroutines as
// GOMAXPROCS, all on one chunk: reads share the chunk's lock.
func BenchmarkRandRead4KParallel(b *testing.B) {
	s := benchStore(b)
	fullChunk(b, s)
	b.SetBytes(4096)
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			off := int64(r.IntN(ChunkSize/4096)) * 4096
			if _, err := s.ReadAt(1, 1, buf, off); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
}
