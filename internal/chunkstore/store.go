package chunkstore

import (
	"cmp"
	"container/list"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultLeaveFree is the space kept free on each disk unless configured
// otherwise, MooseFS's HDD_LEAVE_SPACE_DEFAULT.
const DefaultLeaveFree = 256 << 20

// Options tune a Store. The zero value is usable.
type Options struct {
	// LeaveFree is the space to keep free on every disk
	// (HDD_LEAVE_SPACE_DEFAULT): a disk with less is full, takes no new
	// chunks, and refuses writes that would grow a chunk. Zero means
	// DefaultLeaveFree; a negative value keeps nothing free. A disk's own
	// "-SIZE" in mfshdd.cfg overrides it.
	LeaveFree int64
	// MaxOpenChunks bounds the chunk files kept open, with their checksums
	// in memory, between operations. Zero means 1024.
	MaxOpenChunks int
	// HeaderFlushDelay is how long a changed header may stay only in
	// memory before it is written (not fsynced) to its file. Zero means
	// one second. Sync, SetVersion and Close write it at once.
	HeaderFlushDelay time.Duration
	// ScanWorkers is the number of chunk headers read at a time on each
	// disk during Open. Zero means 4.
	ScanWorkers int
	// Logger receives one line per event an operator may act on: damaged
	// chunks, stale copies, full disks, disks sharing a device. Nil
	// discards.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	switch {
	case o.LeaveFree == 0:
		o.LeaveFree = DefaultLeaveFree
	case o.LeaveFree < 0:
		o.LeaveFree = 0
	}
	if o.MaxOpenChunks <= 0 {
		o.MaxOpenChunks = 1024
	}
	if o.HeaderFlushDelay <= 0 {
		o.HeaderFlushDelay = time.Second
	}
	if o.ScanWorkers <= 0 {
		o.ScanWorkers = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Errors, matched with errors.Is.
var (
	ErrNotFound     = errors.New("no such chunk")
	ErrExists       = errors.New("chunk already exists")
	ErrWrongVersion = errors.New("wrong chunk version")
	// ErrCorrupt: a block failed its checksum or the header cannot be
	// trusted. The data is not returned; read another copy.
	ErrCorrupt = errors.New("chunk data corrupt")
	ErrRange   = errors.New("offset or length outside a chunk")
	ErrClosed  = errors.New("chunk store closed")
	// ErrLocked: another process (or Store) already uses the disk.
	ErrLocked = errors.New("disk already in use by another chunkserver")
)

// Store is a chunkserver's chunks on its local disks. All methods are
// safe for concurrent use; operations on different chunks run in
// parallel, and reads of one chunk share its lock.
type Store struct {
	opts  Options
	log   *slog.Logger
	disks []*disk

	mu     sync.RWMutex
	chunks map[uint64]*chunk
	closed atomic.Bool

	lruMu sync.Mutex
	lru   list.List // open chunks, most recently used first

	report ScanReport
}

// ChunkInfo describes one chunk, as the master wants it at registration.
type ChunkInfo struct {
	ID      uint64
	Version uint32
	Length  uint32 // bytes of data
	Disk    string // path of the disk holding it
	// Damaged: the header or a block failed its checksum; the master
	// should treat this copy as lost.
	Damaged bool
	// MarkedForRemoval: the disk is marked for removal ('*'); the master
	// should copy the chunk elsewhere before the disk goes.
	MarkedForRemoval bool
}

// BadChunk is a damaged chunk, as found by Open or Scrub.
type BadChunk struct {
	ID      uint64
	Version uint32
	Disk    string
	Path    string
	Blocks  []int // blocks that failed their checksum; nil if the header did
	Err     error // wraps ErrCorrupt
}

// StaleFile is a chunk file Open did not index because it kept another
// copy of the same chunk. It is safe to delete (PurgeStale).
type StaleFile struct {
	Path    string
	ID      uint64
	Version uint32
	Reason  string
}

// ScanReport is what Open found on the disks.
type ScanReport struct {
	Chunks  int        // chunks indexed, damaged ones included
	Damaged []BadChunk // chunks whose header cannot be trusted
	Stale   []StaleFile
	Renamed int      // files renamed to match their header (crash inside SetVersion)
	Ignored []string // files in chunk directories that are not chunk files
	Elapsed time.Duration
}

// Open locks every disk, creates missing chunk directories, and scans
// the disks in parallel to index their chunks. Damaged chunk files and
// stale copies are reported (ScanReport), not fatal. A disk that cannot
// be locked (missing, unwritable, or in use by another process) fails
// Open, as in MooseFS; a disk marked for removal may be read-only.
func Open(disks []DiskSpec, opts Options) (*Store, error) {
	opts.setDefaults()
	if len(disks) == 0 {
		return nil, errors.New("chunkstore: open: no disks")
	}
	s := &Store{opts: opts, log: opts.Logger, chunks: map[uint64]*chunk{}}
	seen := map[string]bool{}
	for i, spec := range disks {
		d, err := s.openDisk(i, spec, seen)
		if err != nil {
			s.unlockDisks()
			return nil, fmt.Errorf("chunkstore: open disk %s: %w", spec.Path, err)
		}
		s.disks = append(s.disks, d)
	}
	s.warnSharedDevices()
	start := time.Now()
	if err := s.scan(); err != nil {
		s.unlockDisks()
		return nil, fmt.Errorf("chunkstore: open: %w", err)
	}
	s.report.Elapsed = time.Since(start)
	return s, nil
}

func (s *Store) openDisk(i int, spec DiskSpec, seen map[string]bool) (*disk, error) {
	if seen[spec.Path] {
		return nil, errors.New("listed twice")
	}
	seen[spec.Path] = true
	d := &disk{spec: spec, idx: i, leaveFree: s.opts.LeaveFree, log: s.log}
	if spec.LeaveFreeSet {
		d.leaveFree = max(spec.LeaveFree, 0)
	}
	fi, err := os.Stat(spec.Path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, errors.New("not a directory")
	}
	lf, err := os.OpenFile(spec.Path+"/.lock", os.O_RDWR|os.O_CREATE, 0o640)
	if errors.Is(err, syscall.EROFS) && spec.MarkedForRemoval {
		d.readOnly = true // a dying disk remounted read-only can still be copied from
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if err := lockFile(lf); err != nil {
		lf.Close()
		return nil, err
	}
	d.lock = lf
	if !spec.MarkedForRemoval {
		for b := 0; b < 256; b++ {
			if err := os.Mkdir(chunkDir(spec.Path, uint64(b)), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				lf.Close()
				return nil, err
			}
		}
	}
	d.mu.Lock()
	d.refreshLocked(true)
	d.wasFull = d.fullLocked()
	if d.wasFull {
		s.log.Warn("chunkstore: disk full: no new chunks and no chunk growth here", "disk", spec.Path,
			"free_bytes", max(d.fsAvail, 0), "leave_free_bytes", d.leaveFree, "size_limit", spec.SizeLimit, "err", d.statErr)
	}
	d.mu.Unlock()
	return d, nil
}

// warnSharedDevices logs disks on one file system: their free space is
// counted twice and a failing device takes both, as MooseFS warns too.
func (s *Store) warnSharedDevices() {
	devs := map[uint64]string{}
	for _, d := range s.disks {
		dev, ok := deviceOf(d.spec.Path)
		if !ok {
			continue
		}
		if other, dup := devs[dev]; dup {
			s.log.Warn("chunkstore: two disks on the same device: free space is counted twice and one failure takes both", "disk", d.spec.Path, "other", other)
			continue
		}
		devs[dev] = d.spec.Path
	}
}

func (s *Store) unlockDisks() {
	for _, d := range s.disks {
		if d.lock != nil {
			d.lock.Close()
			d.lock = nil
		}
	}
}

// Close writes back the headers of open chunks, closes their files and
// unlocks the disks. It does not fsync; call Sync for what must be
// durable. Operations after Close fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	// An operation already past its closed check may still open a chunk
	// (a Create); a second round closes what the first could not see.
	var errs []error
	for round := 0; round < 2; round++ {
		var open []*chunk
		s.lruMu.Lock()
		for e := s.lru.Front(); e != nil; e = e.Next() {
			open = append(open, e.Value.(*chunk))
		}
		s.lruMu.Unlock()
		for _, c := range open {
			c.mu.Lock()
			if c.open != nil {
				if err := s.closeChunk(c); err != nil && round == 1 {
					errs = append(errs, fmt.Errorf("%v: %w", c, err))
				}
			}
			c.mu.Unlock()
		}
	}
	s.unlockDisks()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("chunkstore: close: %w", err)
	}
	return nil
}

// lookup finds a chunk's entry; the caller then locks it and checks
// deleted, since a Delete may come between.
func (s *Store) lookup(id uint64) (*chunk, error) {
	s.mu.RLock()
	c := s.chunks[id]
	s.mu.RUnlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if c == nil {
		return nil, ErrNotFound
	}
	return c, nil
}

func (c *chunk) info() ChunkInfo {
	return ChunkInfo{ID: c.id, Version: c.version, Length: c.length, Disk: c.disk.spec.Path,
		Damaged: c.bad.Load(), MarkedForRemoval: c.disk.spec.MarkedForRemoval}
}

// List returns every chunk, damaged ones included, ordered by id: what a
// chunkserver registers with the master.
func (s *Store) List() []ChunkInfo {
	s.mu.RLock()
	all := make([]*chunk, 0, len(s.chunks))
	for _, c := range s.chunks {
		all = append(all, c)
	}
	s.mu.RUnlock()
	out := make([]ChunkInfo, 0, len(all))
	for _, c := range all {
		c.mu.RLock()
		if !c.deleted {
			out = append(out, c.info())
		}
		c.mu.RUnlock()
	}
	slices.SortFunc(out, func(a, b ChunkInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Stat describes one chunk.
func (s *Store) Stat(id uint64) (ChunkInfo, error) {
	c, err := s.lookup(id)
	if err == nil {
		c.mu.RLock()
		defer c.mu.RUnlock()
		if !c.deleted {
			return c.info(), nil
		}
		err = ErrNotFound
	}
	return ChunkInfo{}, fmt.Errorf("chunkstore: stat chunk %016X: %w", id, err)
}

// Disks reports every disk, in configuration order.
func (s *Store) Disks() []DiskStatus {
	out := make([]DiskStatus, len(s.disks))
	for i, d := range s.disks {
		out[i] = d.status()
	}
	return out
}

// ScanReport is what Open found.
func (s *Store) ScanReport() ScanReport { return s.report }

// PurgeStale deletes the stale files Open reported and returns how many
// it removed. A chunkserver would call it right after Open, as MooseFS
// deletes older duplicates during its scan, unless the operator wants to
// look at them first.
func (s *Store) PurgeStale() (int, error) {
	n := 0
	var errs []error
	for _, f := range s.report.Stale {
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("chunkstore: purge stale files: %w", err)
	}
	return n, nil
}
