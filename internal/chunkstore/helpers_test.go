package chunkstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testDisks makes n empty disk directories.
func testDisks(t testing.TB, n int) []DiskSpec {
	t.Helper()
	specs := make([]DiskSpec, n)
	for i := range specs {
		specs[i] = DiskSpec{Path: t.TempDir()}
	}
	return specs
}

// logBuf collects log lines so tests can check what the operator sees.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

// testOpts keeps nothing free (tests run on shared, maybe nearly full,
// disks) and logs into buf if given.
func testOpts(buf *logBuf) Options {
	o := Options{LeaveFree: -1}
	if buf != nil {
		o.Logger = slog.New(slog.NewTextHandler(buf, nil))
	}
	return o
}

func mustOpen(t testing.TB, disks []DiskSpec, o Options) *Store {
	t.Helper()
	s, err := Open(disks, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randData(r *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}

// filePath is where a chunk version's file is.
func filePath(disk string, id uint64, v uint32) string {
	return filepath.Join(chunkDir(disk, id), chunkName(id, v))
}

// flipByte inverts one byte of a file in place.
func flipByte(t testing.TB, path string, off int64) {
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
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// readAll reads a chunk's first n bytes.
func readAll(t testing.TB, s *Store, id uint64, v uint32, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := s.ReadAt(id, v, b, 0); err != nil {
		t.Fatalf("ReadAt %016X: %v", id, err)
	}
	return b
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}
