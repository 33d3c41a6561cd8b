package chunkstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// spaceRefresh is how old a disk's statfs figures may get before a space
// decision asks the kernel again. Between refreshes the store subtracts
// what it let chunks grow by, so a burst of writes cannot overshoot.
const spaceRefresh = time.Second

// disk is one configured directory and its space accounting.
type disk struct {
	spec      DiskSpec
	idx       int   // position in the configuration, the final tie-break
	leaveFree int64 // bytes never given to chunks
	lock      *os.File
	readOnly  bool // marked for removal on a read-only file system
	log       *slog.Logger

	mu         sync.Mutex
	statAt     time.Time
	statErr    error
	fsTotal    int64
	fsAvail    int64 // as of statAt, less the growth reserved since
	chunks     int
	chunkBytes int64 // sum of chunk file sizes
	damaged    int
	ioErrors   int64
	wasFull    bool
}

// DiskStatus is what Disks reports about one disk.
type DiskStatus struct {
	Path string
	// Total is the file system's size without root's reserved blocks, or
	// the disk's SizeLimit when that is smaller.
	Total int64
	// Free is what chunks may still take: space above the LeaveFree
	// reserve and under the SizeLimit, never negative. Used is Total-Free,
	// as MooseFS reports it.
	Free, Used int64
	ChunkBytes int64 // bytes in this disk's chunk files
	Chunks     int
	Damaged    int  // chunks with a bad header or a bad block seen
	Full       bool // no new chunks here and no growth of old ones
	// MarkedForRemoval, MoveOut, MoveIn: as configured (DiskSpec).
	MarkedForRemoval, MoveOut, MoveIn bool

	ReadOnly bool  // marked for removal and mounted read-only
	IOErrors int64 // failed reads and writes since Open
	Err      error // why the free space is unknown, if it is
}

// ErrNoSpace is wrapped by errors from writes and creations refused for
// lack of space; it wraps syscall.ENOSPC, so either matches with errors.Is.
var ErrNoSpace = fmt.Errorf("no space for chunk data: %w", syscall.ENOSPC)

// refreshLocked asks statfs again if the figures are stale (or if force).
func (d *disk) refreshLocked(force bool) {
	now := time.Now()
	if !force && d.statErr == nil && now.Sub(d.statAt) < spaceRefresh {
		return
	}
	total, avail, err := fsSpace(d.spec.Path)
	d.statAt, d.statErr = now, err
	if err == nil {
		d.fsTotal, d.fsAvail = total, avail
	}
}

// freeLocked is the bytes chunks may still grow by; negative when the
// disk is already past its reserve.
func (d *disk) freeLocked() int64 {
	free := d.fsAvail - d.leaveFree
	if d.spec.SizeLimit > 0 {
		free = min(free, d.spec.SizeLimit-d.chunkBytes)
	}
	return free
}

func (d *disk) totalLocked() int64 {
	if d.spec.SizeLimit > 0 && d.spec.SizeLimit < d.fsTotal {
		return d.spec.SizeLimit
	}
	return d.fsTotal
}

func (d *disk) fullLocked() bool { return d.statErr != nil || d.freeLocked() <= 0 }

// noteFullLocked logs a change between full and not full, once per change:
// the operator wants to know when a disk stops taking data, not each write.
func (d *disk) noteFullLocked() {
	full := d.fullLocked()
	if full == d.wasFull {
		return
	}
	d.wasFull = full
	if full {
		d.log.Warn("chunkstore: disk full: no new chunks and no chunk growth here", "disk", d.spec.Path,
			"free_bytes", max(d.fsAvail, 0), "leave_free_bytes", d.leaveFree, "size_limit", d.spec.SizeLimit, "err", d.statErr)
	} else {
		d.log.Info("chunkstore: disk has free space again", "disk", d.spec.Path, "free_bytes", d.freeLocked())
	}
}

// reserve accounts for chunk files on d growing by n bytes, or refuses
// with ErrNoSpace if that would eat into the LeaveFree reserve or pass the
// size limit.
func (d *disk) reserve(n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked(false)
	if d.statErr == nil && d.freeLocked() < n {
		d.refreshLocked(true) // stale figures must not refuse a write
	}
	if d.statErr != nil {
		return fmt.Errorf("disk %s: free space unknown: %w", d.spec.Path, d.statErr)
	}
	if free := d.freeLocked(); free < n {
		d.noteFullLocked()
		return fmt.Errorf("disk %s: %d more bytes wanted, %d free above the %d kept free (size limit %d): %w",
			d.spec.Path, n, max(free, 0), d.leaveFree, d.spec.SizeLimit, ErrNoSpace)
	}
	d.fsAvail -= n
	d.chunkBytes += n
	d.noteFullLocked()
	return nil
}

// adjust accounts for chunk files on d changing by delta bytes without
// checking for room: shrinking, or a size that was not ours to refuse.
func (d *disk) adjust(delta int64) {
	d.mu.Lock()
	d.fsAvail -= delta
	d.chunkBytes += delta
	d.noteFullLocked()
	d.mu.Unlock()
}

// addChunks changes the chunk and damaged-chunk counts.
func (d *disk) addChunks(chunks, damaged int) {
	d.mu.Lock()
	d.chunks += chunks
	d.damaged += damaged
	d.mu.Unlock()
}

// ioError counts a failed read or write; the error is returned to the
// caller, who decides what to tell the master.
func (d *disk) ioError() {
	d.mu.Lock()
	d.ioErrors++
	d.mu.Unlock()
}

func (d *disk) status() DiskStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked(false)
	free := max(d.freeLocked(), 0)
	total := d.totalLocked()
	return DiskStatus{
		Path: d.spec.Path, Total: total, Free: free, Used: max(total-free, 0),
		ChunkBytes: d.chunkBytes, Chunks: d.chunks, Damaged: d.damaged, Full: d.fullLocked(),
		MarkedForRemoval: d.spec.MarkedForRemoval, MoveOut: d.spec.MoveOut, MoveIn: d.spec.MoveIn,
		ReadOnly: d.readOnly, IOErrors: d.ioErrors, Err: d.statErr,
	}
}

func errReadOnly(d *disk) error {
	return fmt.Errorf("disk %s is read-only: %w", d.spec.Path, syscall.EROFS)
}

// takesNewChunks says whether placement may consider d at all.
func (d *disk) takesNewChunks() bool {
	return !d.spec.MarkedForRemoval && !d.spec.MoveOut && !d.readOnly
}

// pickDisk chooses the disk for a new chunk and reserves its header: the
// one with the largest share of its space free, so disks of different
// sizes fill up evenly; ties go to the disk with fewer chunks, then to the
// first configured.
func (s *Store) pickDisk() (*disk, error) {
	for attempt := 0; attempt < 2; attempt++ {
		var best *disk
		var bestRatio float64
		var bestChunks int
		for _, d := range s.disks {
			if !d.takesNewChunks() {
				continue
			}
			d.mu.Lock()
			d.refreshLocked(false)
			free, total, chunks := d.freeLocked(), d.totalLocked(), d.chunks
			ok := d.statErr == nil && free >= HeaderSize && total > 0
			d.noteFullLocked()
			d.mu.Unlock()
			if !ok {
				continue
			}
			ratio := float64(free) / float64(total)
			if best == nil || ratio > bestRatio || ratio == bestRatio && chunks < bestChunks {
				best, bestRatio, bestChunks = d, ratio, chunks
			}
		}
		if best == nil {
			break
		}
		// Another Create may have taken the last room meanwhile.
		if err := best.reserve(HeaderSize); err == nil {
			return best, nil
		} else if !errors.Is(err, ErrNoSpace) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no disk takes new chunks (all full, marked for removal or failing): %w", ErrNoSpace)
}
