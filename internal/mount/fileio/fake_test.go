package fileio

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/wire"
)

// fakeCluster is a master's chunk service and its chunkservers in
// memory, for unit tests of the buffering logic; the mount's tests run
// the real ones. It checks what the real ones would: versions on every
// read and write, leases held while writing.
type fakeCluster struct {
	chunkSize uint64

	mu      sync.Mutex
	lengths map[uint32]uint64
	files   map[uint32]map[uint32]uint64 // inode -> index -> chunk id
	chunks  map[uint64]*fakeChunk
	nextID  uint64
	servers []string

	down      map[string]bool // servers whose writes fail
	busy      int             // ChunkWrite answers EBUSY this many more times
	writeWait time.Duration   // each Data.Write takes this long
	readFail  int             // Data.Read fails this many more times

	leases, reads, writes, syncs int
	readSizes                    []int
	ends                         []endCall
	maxInflight, inflight        int
	violations                   []string
}

type fakeChunk struct {
	version uint32
	copies  []string
	data    []byte
	leased  bool
}

type endCall struct {
	ino    uint32
	id     uint64
	length uint64
	bad    []string
}

type chainErr struct{ server string }

func (e *chainErr) Error() string { return "server " + e.server + " failed" }

func newFake(chunkSize uint64) *fakeCluster {
	return &fakeCluster{
		chunkSize: chunkSize,
		lengths:   map[uint32]uint64{}, files: map[uint32]map[uint32]uint64{},
		chunks: map[uint64]*fakeChunk{}, servers: []string{"s1", "s2", "s3"},
		down: map[string]bool{},
	}
}

func (fc *fakeCluster) failedServer(err error) string {
	var ce *chainErr
	if errors.As(err, &ce) {
		return ce.server
	}
	return ""
}

func (fc *fakeCluster) ChunkRead(ctx context.Context, ino, index uint32) (wire.ChunkInfo, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	info := wire.ChunkInfo{Length: fc.lengths[ino]}
	if id, ok := fc.files[ino][index]; ok {
		c := fc.chunks[id]
		info.ID, info.Version, info.Servers = id, c.version, slices.Clone(c.copies)
	}
	return info, nil
}

func (fc *fakeCluster) ChunkWrite(ctx context.Context, ino, index uint32) (wire.ChunkInfo, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.leases++
	if fc.busy > 0 {
		fc.busy--
		return wire.ChunkInfo{}, fmt.Errorf("chunk locked: %w", syscall.EBUSY)
	}
	if fc.files[ino] == nil {
		fc.files[ino] = map[uint32]uint64{}
	}
	id, ok := fc.files[ino][index]
	if !ok {
		fc.nextID++
		id = fc.nextID
		fc.files[ino][index] = id
		fc.chunks[id] = &fakeChunk{copies: slices.Clone(fc.servers)}
	}
	c := fc.chunks[id]
	if c.leased {
		fc.violations = append(fc.violations, fmt.Sprintf("chunk %d leased twice", id))
	}
	if len(c.copies) == 0 {
		return wire.ChunkInfo{}, fmt.Errorf("no copies left: %w", syscall.EIO)
	}
	c.leased = true
	c.version++
	return wire.ChunkInfo{Length: fc.lengths[ino], ID: id, Version: c.version, Servers: slices.Clone(c.copies)}, nil
}

func (fc *fakeCluster) ChunkWriteEnd(ctx context.Context, ino uint32, id, length uint64, bad []string) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	c := fc.chunks[id]
	if c == nil || !c.leased {
		fc.violations = append(fc.violations, fmt.Sprintf("end of chunk %d not leased", id))
		return syscall.EINVAL
	}
	c.leased = false
	c.copies = slices.DeleteFunc(c.copies, func(s string) bool { return slices.Contains(bad, s) })
	fc.lengths[ino] = max(fc.lengths[ino], length)
	fc.ends = append(fc.ends, endCall{ino, id, length, bad})
	return nil
}

// truncate is the master's SetAttr size.
func (fc *fakeCluster) truncate(ino uint32, size uint64) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.lengths[ino] = size
	for index, id := range fc.files[ino] {
		start := uint64(index) * fc.chunkSize
		c := fc.chunks[id]
		switch {
		case start >= size:
			delete(fc.files[ino], index)
		case size-start < uint64(len(c.data)):
			clear(c.data[size-start:])
		}
	}
}

func (fc *fakeCluster) Read(ctx context.Context, id uint64, version uint32, servers []string, off uint32, buf []byte) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.reads++
	fc.readSizes = append(fc.readSizes, len(buf))
	if fc.readFail > 0 {
		fc.readFail--
		return errors.New("read failed")
	}
	c := fc.chunks[id]
	if c == nil || c.version != version {
		return fmt.Errorf("chunk %d version %d: %w", id, version, syscall.ESTALE)
	}
	clear(buf)
	if int(off) < len(c.data) {
		copy(buf, c.data[off:])
	}
	return nil
}

func (fc *fakeCluster) Write(ctx context.Context, id uint64, version uint32, chain []string, off uint32, data []byte) error {
	fc.mu.Lock()
	fc.inflight++
	fc.maxInflight = max(fc.maxInflight, fc.inflight)
	wait := fc.writeWait
	fc.mu.Unlock()
	time.Sleep(wait)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.inflight--
	fc.writes++
	c := fc.chunks[id]
	if c == nil || c.version != version {
		return fmt.Errorf("chunk %d version %d: %w", id, version, syscall.ESTALE)
	}
	if !c.leased {
		fc.violations = append(fc.violations, fmt.Sprintf("write to chunk %d without a lease", id))
	}
	if uint64(off)+uint64(len(data)) > fc.chunkSize {
		fc.violations = append(fc.violations, fmt.Sprintf("write of %d at %d passes the chunk end", len(data), off))
	}
	for _, s := range chain {
		if fc.down[s] {
			return &chainErr{s}
		}
	}
	if end := int(off) + len(data); end > len(c.data) {
		c.data = append(c.data, make([]byte, end-len(c.data))...)
	}
	copy(c.data[off:], data)
	return nil
}

func (fc *fakeCluster) Sync(ctx context.Context, id uint64, version uint32, chain []string) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.syncs++
	return nil
}

// contents returns inode ino as the cluster holds it.
func (fc *fakeCluster) contents(ino uint32) []byte {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	out := make([]byte, fc.lengths[ino])
	for index, id := range fc.files[ino] {
		start := uint64(index) * fc.chunkSize
		if start < uint64(len(out)) {
			copy(out[start:], fc.chunks[id].data)
		}
	}
	return out
}
