package chunkserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/wire"
)

// This file is CSReplicate: the master tells a chunkserver to make its
// own copy of a chunk by reading it from other chunkservers' data ports.
//
// A copy is built under replicaVersion, a version the master never
// gives (its versions start at 1), and gets its real version only once
// complete and synced, by SetVersion, which is atomic on disk. So a
// partial copy is never a valid one: it is left out of registrations,
// the data port refuses its version, it is deleted when the copy fails,
// and one left by a crash is deleted when the link starts.

// replicaVersion is the version of a copy being made.
const replicaVersion = 0

const (
	// maxReplicating is how many copies are made at once: enough to keep
	// a disk and the network busy, few enough to leave room for clients.
	maxReplicating = 4
	// maxReplicaQueue bounds the CSReplicate requests accepted, running
	// or waiting; more are refused with EBUSY at once. Waiting requests
	// hold handler slots of the master link, so this bound is what keeps
	// room there for the master's other commands (see session).
	maxReplicaQueue = 64
	// replicateStep is how much of a chunk one round of reads fetches:
	// four wire.CSMaxIO requests in flight.
	replicateStep = 4 * wire.CSMaxIO
)

// zeroBlock is compared against, to keep the zero blocks of a copy
// sparse on disk as they are on the source.
var zeroBlock [chunkstore.BlockSize]byte

// replicate serves CSReplicate. A copy already present at that version
// is done at once; a damaged copy at that version, or a partial one, is
// replaced; a copy at another version is refused (EEXIST): only the
// master may decide it is stale, by deleting it.
func (l *Link) replicate(ctx context.Context, m *wire.CSReplicate) error {
	name := fmt.Sprintf("chunk %016X version %d", m.ID, m.Version)
	switch {
	case m.Version == replicaVersion:
		return fmt.Errorf("replicate %s: version %d is reserved: %w", name, replicaVersion, syscall.EINVAL)
	case len(m.Sources) == 0:
		return fmt.Errorf("replicate %s: no sources: %w", name, syscall.EINVAL)
	}
	if err := l.admit(m.ID); err != nil {
		return fmt.Errorf("replicate %s: %w", name, err)
	}
	defer l.release(m.ID)

	ci, err := l.store.Stat(m.ID)
	switch {
	case err == nil && ci.Version == m.Version && !ci.Damaged:
		return nil
	case err == nil && (ci.Version == m.Version || ci.Version == replicaVersion):
		if err := l.store.Delete(m.ID, ci.Version); err != nil {
			return fmt.Errorf("replicate %s: remove the damaged or partial copy: %w: %w", name, err, errno(err))
		}
	case err == nil:
		return fmt.Errorf("replicate %s: this server has version %d: %w", name, ci.Version, syscall.EEXIST)
	case !errors.Is(err, chunkstore.ErrNotFound):
		return fmt.Errorf("replicate %s: %w: %w", name, err, errno(err))
	}

	select {
	case l.replicas <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("replicate %s: %w: %w", name, context.Cause(ctx), syscall.ECANCELED)
	}
	defer func() { <-l.replicas }()
	start := time.Now()
	n, src, err := l.copyChunk(ctx, m)
	if err != nil {
		return fmt.Errorf("replicate %s: %w", name, err)
	}
	l.log.Info("chunk replicated", "chunk", fmt.Sprintf("%016X", m.ID), "version", m.Version, "from", src, "bytes", n, "took", time.Since(start))
	return nil
}

// admit takes a place in the replication queue for chunk id.
func (l *Link) admit(id uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.replicating[id]:
		return fmt.Errorf("a copy is already being made: %w", syscall.EBUSY)
	case len(l.replicating) >= maxReplicaQueue:
		return fmt.Errorf("%d replications already queued: %w", len(l.replicating), syscall.EBUSY)
	}
	l.replicating[id] = true
	return nil
}

func (l *Link) release(id uint64) {
	l.mu.Lock()
	delete(l.replicating, id)
	l.mu.Unlock()
}

// copyChunk builds the copy under replicaVersion, reading from the
// sources in order (a source that fails mid-copy is left for the next,
// from where it stopped), then syncs it and gives it its version. It
// returns the copy's length and the last source read. On failure the
// partial copy is deleted.
func (l *Link) copyChunk(ctx context.Context, m *wire.CSReplicate) (length int64, src string, err error) {
	if err := l.store.Create(m.ID, replicaVersion); err != nil {
		return 0, "", fmt.Errorf("%w: %w", err, errno(err))
	}
	defer func() {
		if err == nil {
			return
		}
		if derr := l.store.Delete(m.ID, replicaVersion); derr != nil && !errors.Is(derr, chunkstore.ErrNotFound) {
			l.log.Warn("cannot delete a partial copy; it goes at the next start", "chunk", fmt.Sprintf("%016X", m.ID), "err", derr)
		}
	}()
	buf := make([]byte, replicateStep)
	var failed []error
	next := 0 // the source being read
	for length < chunkio.ChunkSize {
		src = m.Sources[next]
		n, err := l.pool.ReadFrom(ctx, src, m.ID, m.Version, uint32(length), buf)
		if err != nil {
			failed = append(failed, err)
			if next++; next == len(m.Sources) || ctx.Err() != nil {
				return 0, src, &sourcesError{failed}
			}
			continue
		}
		if err := l.writeSparse(m.ID, buf[:n], length); err != nil {
			return 0, src, fmt.Errorf("%w: %w", err, errno(err))
		}
		length += int64(n)
		if n < len(buf) {
			break // the source's data ends here
		}
	}
	// Trailing zero blocks were not written: the length covers them.
	// Synced before the version changes, so that SetVersion's write is
	// the header sector alone and a crash leaves either a partial copy
	// or a whole one.
	err = l.store.Truncate(m.ID, replicaVersion, length)
	if err == nil {
		err = l.store.Sync(m.ID)
	}
	if err == nil {
		err = l.store.SetVersion(m.ID, replicaVersion, m.Version)
	}
	if err != nil {
		return 0, src, fmt.Errorf("%w: %w", err, errno(err))
	}
	return length, src, nil
}

// writeSparse writes data at off of the copy being made, skipping the
// 64 KiB blocks that are all zeros: they read as zeros anyway, and the
// copy takes no more disk than its source. off is block-aligned.
func (l *Link) writeSparse(id uint64, data []byte, off int64) error {
	for start := 0; start < len(data); {
		end := start
		for end < len(data) {
			b := data[end:min(end+chunkstore.BlockSize, len(data))]
			if bytes.Equal(b, zeroBlock[:len(b)]) {
				break
			}
			end += len(b)
		}
		if end > start {
			if err := l.store.WriteAt(id, replicaVersion, data[start:end], off+int64(start)); err != nil {
				return err
			}
		}
		// Skip the zero block that stopped the run.
		start = min(end+chunkstore.BlockSize, len(data))
	}
	return nil
}

// dropPartialCopies deletes copies left under replicaVersion by a
// replication that a crash interrupted.
func (l *Link) dropPartialCopies() {
	for _, c := range l.store.List() {
		if c.Version != replicaVersion {
			continue
		}
		if err := l.store.Delete(c.ID, c.Version); err != nil {
			l.log.Warn("cannot delete a partial copy left by an interrupted replication", "chunk", fmt.Sprintf("%016X", c.ID), "err", err)
			continue
		}
		l.log.Info("deleted a partial copy left by an interrupted replication", "chunk", fmt.Sprintf("%016X", c.ID))
	}
}

// sourcesError is a replication for which every source failed.
type sourcesError struct{ errs []error }

func (e *sourcesError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return "no source could be read: " + strings.Join(msgs, "; ")
}

// Unwrap gives the sources' errors; the first errno among them is the
// master's answer.
func (e *sourcesError) Unwrap() []error { return e.errs }
