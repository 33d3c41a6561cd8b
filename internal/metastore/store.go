// Package metastore is the master's durable metadata: the in-memory
// namespace (meta.State), the changelog it appends every mutation to, and
// the dump it leaves on a clean stop.
//
// # Commit rule
//
// Do applies an operation to the state at once, under the store's lock, and
// appends its entry to the changelog buffer; it returns only after the
// entry is durable. A single committer goroutine turns many pending
// entries into one fdatasync (group commit), so concurrent operations
// share the cost of one disk flush instead of paying one each. Failed
// operations change nothing and are never logged.
//
// # Start-up and crashes
//
// Open restores the newest dump in the data directory plus every
// changelog there (the restore package, the same code as mfsmetarestore),
// so a master that crashed comes back by itself with every acknowledged
// operation: no manual step as MooseFS's `mfsmaster -a`. A directory with
// neither dump nor changelog is formatted as a new file system with a
// random metaid. Close writes metadata.mfs and rotates the changelog.
package metastore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/restore"
)

// DumpName is the master's dump in its data directory.
const DumpName = "metadata.mfs"

// Options configure a Store.
type Options struct {
	Dir    string       // data directory (DATA_PATH)
	Logger *slog.Logger // nil discards
	// Clock gives entry times; nil means time.Now.
	Clock func() time.Time
	// Async acknowledges after the local append without waiting for the
	// flush (COMMIT_MODE = async), as MooseFS does: entries are written
	// to the changelog file at once, so a crash of the master loses
	// nothing written, but fdatasync runs only every AsyncSyncInterval,
	// so a crash of the host loses up to that much. Never the default.
	Async bool
	// ChangelogMaxSize rotates the changelog at this size; 0 means 1 GiB.
	ChangelogMaxSize int64
	// Term is the term entries are written under; it never goes below the
	// restored state's term.
	Term uint64
	// LazyDelay bounds how long a DoLazy entry waits for a flush; 0
	// means LazyFlushDelay.
	LazyDelay time.Duration
	// Replicator, if set, gets every entry and decides when it is
	// committed (COMMIT_MODE = quorum): Do returns once a majority of
	// metaloggers has the entry, and the local changelog is written at
	// once and fdatasynced every AsyncSyncInterval, as in async mode,
	// since the metaloggers' copies are the ones that count. With Async
	// too, entries are streamed but nothing waits for them.
	Replicator Replicator
}

// Replicator streams entries to other hosts and says when they are
// committed there (package master's Journal).
type Replicator interface {
	// Append is called with every entry, in version order, under the
	// store's lock: it must not block.
	Append(e *meta.Entry)
	// WaitCommit returns once entry v is committed, or why it cannot be.
	WaitCommit(ctx context.Context, v uint64) error
}

// Store owns a file system's metadata on one master.
type Store struct {
	opts Options
	log  *slog.Logger

	mu    sync.RWMutex
	state *meta.State
	cl    *changelog.Writer
	term  uint64

	// Group commit: appended is the last version in the changelog buffer
	// that someone needs flushed, durable the last one fsynced. One flush
	// runs at a time (flushing). A waiter that finds none running flushes
	// itself, for everyone appended so far: alone, an operation pays its
	// fdatasync and no hand-off to another goroutine; under load, whoever
	// waits when a flush ends leads the next one. cond wakes waiters
	// (durable moved, or a flush ended); work wakes the committer, which
	// flushes what nobody waits for (async and lazy entries, close). lazy
	// is the last version DoLazy appended; lazyTimer, while set, will hand
	// it to the committer unless a flush for someone else takes it first.
	cmu       sync.Mutex
	cond      *sync.Cond
	work      *sync.Cond
	appended  uint64
	durable   uint64
	flushing  bool
	syncDue   bool        // async: the next flush also fdatasyncs
	syncTimer *time.Timer // async: sets syncDue after a flush without sync
	lazy      uint64
	lazyTimer *time.Timer
	failed    error // a failed flush: nothing more may be acknowledged
	flushes   uint64
	closing   bool
	done      chan struct{}
}

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("metadata store closed")

// Open loads or formats the file system in opts.Dir and starts the
// committer.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.LazyDelay <= 0 {
		opts.LazyDelay = LazyFlushDelay
	}
	if opts.ChangelogMaxSize == 0 {
		opts.ChangelogMaxSize = 1 << 30
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	state, err := load(ctx, opts)
	if err != nil {
		return nil, err
	}
	cl, err := changelog.Open(opts.Dir, changelog.PrefixMaster, changelog.Options{
		MaxSize: opts.ChangelogMaxSize, Logger: opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	if last := cl.LastVersion(); last > state.Version() {
		cl.Close()
		return nil, fmt.Errorf("open metadata: changelog reaches version %d but the restore only %d", last, state.Version())
	}
	st := &Store{
		opts: opts, log: opts.Logger, state: state, cl: cl,
		term:     max(opts.Term, state.Term(), 1),
		appended: state.Version(), durable: state.Version(),
		done: make(chan struct{}),
	}
	st.cond = sync.NewCond(&st.cmu)
	st.work = sync.NewCond(&st.cmu)
	go st.committer()
	return st, nil
}

// load restores the newest dump and changelogs, or formats a new file
// system when the directory holds neither.
func load(ctx context.Context, opts Options) (*meta.State, error) {
	found, err := restore.Scan(opts.Dir, 0)
	if err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	if len(found.Dumps) == 0 && len(found.Changelogs) == 0 && len(found.Skipped) == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("format: %w", err)
		}
		id := binary.LittleEndian.Uint64(b[:]) | 1
		s := meta.New(id, uint32(opts.Clock().Unix()))
		// The empty dump makes the directory restorable from its first
		// entry on, exactly like every later start.
		if _, err := metadump.Write(opts.Dir, DumpName, s, metadump.Options{Logger: opts.Logger}); err != nil {
			return nil, fmt.Errorf("format: %w", err)
		}
		opts.Logger.Info("formatted a new file system", "metaid", fmt.Sprintf("%016x", id), "dir", opts.Dir)
		return s, nil
	}
	t0 := time.Now()
	res, err := restore.Auto(ctx, opts.Dir, restore.Options{Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	opts.Logger.Info("metadata restored", "dump", filepath.Base(res.DumpPath), "dump_version", res.Dump.Version,
		"replayed", res.Applied, "version", res.Version(), "term", res.Term(), "took", time.Since(t0).Round(time.Millisecond))
	return res.State, nil
}

// committer flushes the changelog whenever entries wait that no caller
// of Do is flushing: one fdatasync for everything appended since the
// last one. On close it returns once no flush runs and nothing waits.
func (st *Store) committer() {
	defer close(st.done)
	st.cmu.Lock()
	defer st.cmu.Unlock()
	for {
		// durable may pass appended: a flush takes every entry applied,
		// lazy ones too.
		for (st.flushing || st.appended <= st.durable && !st.syncDue) && !st.closing && st.failed == nil {
			st.work.Wait()
		}
		for st.flushing {
			st.cond.Wait()
		}
		if st.failed != nil || (st.closing && st.appended <= st.durable) {
			return
		}
		sync := st.localSync() || st.syncDue || st.closing
		st.syncDue = false
		st.flush(sync)
		if !sync && st.syncTimer == nil && !st.closing {
			st.syncTimer = time.AfterFunc(AsyncSyncInterval, st.syncNow)
		}
	}
}

// localSync tells whether acknowledging waits for the local fdatasync.
func (st *Store) localSync() bool { return !st.opts.Async && st.opts.Replicator == nil }

// syncNow asks the committer of an async store for a flush with
// fdatasync.
func (st *Store) syncNow() {
	st.cmu.Lock()
	defer st.cmu.Unlock()
	st.syncTimer = nil
	st.syncDue = true
	st.work.Signal()
}

// flush writes the changelog up to the current version, and fdatasyncs
// it if sync is set (always, unless async). Called with cmu held and no
// flush running; it releases cmu while the disk works, so operations go
// on appending and waiting. durable is the last version written and, in
// sync mode, on disk.
func (st *Store) flush(sync bool) {
	st.flushing = true
	st.cmu.Unlock()
	// The state lock orders this flush after every append up to target.
	st.mu.Lock()
	var target uint64
	err := ErrClosed
	cl := st.cl
	if cl != nil {
		target = st.state.Version()
		err = cl.Flush()
	}
	st.mu.Unlock()
	if err == nil && sync {
		err = cl.SyncData()
	}
	st.cmu.Lock()
	st.flushing = false
	if err != nil {
		if st.failed == nil {
			st.failed = fmt.Errorf("changelog flush: %w", err)
			st.log.Error("changelog flush failed; no further operation will be acknowledged", "err", err)
		}
		st.work.Broadcast()
	} else if target > st.durable {
		st.durable = target
	}
	st.flushes++
	st.cond.Broadcast()
	if st.appended > st.durable || st.closing {
		st.work.Signal()
	}
}

// Do applies op and returns its result once its entry is durable (or, in
// async mode, appended). An operation that fails returns its errno in the
// Result and a nil error; an error means the store cannot acknowledge.
func (st *Store) Do(ctx context.Context, op meta.Op) (meta.Result, error) {
	res, v, err := st.apply(op)
	if err != nil || !res.Ok() {
		return res, err
	}
	return res, st.wait(ctx, v)
}

// wait returns once entry v may be acknowledged: fdatasynced here, or
// committed by the Replicator, or at once in async mode.
func (st *Store) wait(ctx context.Context, v uint64) error {
	if st.localSync() {
		return st.waitDurable(ctx, v)
	}
	st.noteAppended(v)
	if st.opts.Async {
		return nil
	}
	return st.opts.Replicator.WaitCommit(ctx, v)
}

// DoMany applies ops in order and waits once for all their entries to be
// durable: one flush for operations that one request makes together. It
// stops at the first operation that fails, whose Result is the last one
// returned; the ones before it are applied and durable all the same.
func (st *Store) DoMany(ctx context.Context, ops ...meta.Op) ([]meta.Result, error) {
	out := make([]meta.Result, 0, len(ops))
	var last uint64
	for _, op := range ops {
		res, v, err := st.apply(op)
		if err != nil {
			return out, err
		}
		out = append(out, res)
		if !res.Ok() {
			break
		}
		last = v
	}
	if last == 0 {
		return out, nil
	}
	return out, st.wait(ctx, last)
}

// AsyncSyncInterval is how often an async store fdatasyncs its
// changelog while entries keep coming.
const AsyncSyncInterval = time.Second

// LazyFlushDelay is the default Options.LazyDelay: how long a DoLazy
// entry waits in the changelog buffer for a flush that some durable
// operation asks for anyway.
const LazyFlushDelay = 20 * time.Millisecond

// DoLazy applies op and returns without waiting for the flush. It is for
// bookkeeping whose loss in a crash harms nothing acknowledged: holding a
// file open (a lost Open only lets the file be freed sooner), letting go
// of it, unlocking a chunk. Its entry rides along with the next flush an
// acknowledged operation needs, or is flushed on its own after
// LazyFlushDelay: a flush of its own at once would make the durable
// operation that typically follows (a file's write lease after its open)
// wait for two fdatasyncs instead of one. Whatever is acknowledged
// durably later is flushed with it or after it, so it never outlives
// what follows it.
func (st *Store) DoLazy(op meta.Op) (meta.Result, error) {
	res, v, err := st.apply(op)
	if err == nil && res.Ok() {
		st.noteLazy(v)
	}
	return res, err
}

// noteLazy records lazy entry v and makes sure a flush takes it within
// LazyFlushDelay.
func (st *Store) noteLazy(v uint64) {
	st.cmu.Lock()
	defer st.cmu.Unlock()
	st.lazy = max(st.lazy, v)
	if st.lazyTimer == nil {
		st.lazyTimer = time.AfterFunc(st.opts.LazyDelay, st.flushLazy)
	}
}

// flushLazy hands the lazy entries to the committer; a flush since they
// were appended has already made them durable, and then this asks for
// nothing.
func (st *Store) flushLazy() {
	st.cmu.Lock()
	defer st.cmu.Unlock()
	st.lazyTimer = nil
	if st.lazy > st.appended {
		st.appended = st.lazy
		st.work.Signal()
	}
}

// apply applies op and appends its entry to the changelog buffer,
// returning the entry's version. A failed operation appends nothing.
func (st *Store) apply(op meta.Op) (meta.Result, uint64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cl == nil {
		return meta.Result{}, 0, ErrClosed
	}
	e := meta.Entry{Version: st.state.Version() + 1, Term: st.term, Time: uint32(st.opts.Clock().Unix()), Op: op}
	res, err := st.state.Apply(&e)
	if err != nil || !res.Ok() {
		return res, 0, err
	}
	e.Result = res
	if err := st.record(&e); err != nil {
		return meta.Result{}, 0, err
	}
	return res, e.Version, nil
}

// record appends applied entry e to the changelog buffer and hands it to
// the Replicator. Called with mu held.
func (st *Store) record(e *meta.Entry) error {
	if err := st.cl.Append(e); err != nil {
		// The state moved but the log did not: the two no longer agree
		// and nothing more may be acknowledged.
		st.fail(fmt.Errorf("changelog append: %w", err))
		return err
	}
	if st.opts.Replicator != nil {
		st.opts.Replicator.Append(e)
	}
	return nil
}

// Replay applies entries that other hosts logged (a master catching up
// from its metaloggers at start) and logs them here, checking that each
// gives its recorded result. They are not waited for: they become
// durable with the next entry that is.
func (st *Store) Replay(entries []meta.Entry) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cl == nil {
		return ErrClosed
	}
	for i := range entries {
		e := &entries[i]
		if err := st.state.Replay(e); err != nil {
			// The state may hold part of the entry: it no longer matches
			// any log.
			st.fail(fmt.Errorf("replay: %w", err))
			return err
		}
		if err := st.record(e); err != nil {
			return err
		}
	}
	st.cmu.Lock()
	st.appended = max(st.appended, st.state.Version())
	st.work.Signal()
	st.cmu.Unlock()
	return nil
}

// StartTerm makes term the one new entries are written under and writes
// the term's first entry (meta.TermStart), returning once it is
// acknowledged like any operation. term must be above every term the
// state has seen.
func (st *Store) StartTerm(ctx context.Context, term uint64) error {
	st.mu.Lock()
	if term <= st.state.Term() {
		st.mu.Unlock()
		return fmt.Errorf("start term %d: the metadata already has term %d", term, st.state.Term())
	}
	st.term = term
	st.mu.Unlock()
	_, err := st.Do(ctx, &meta.TermStart{})
	return err
}

// Position is the version and term of the last entry applied.
func (st *Store) Position() (version, term uint64) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.state.Version(), st.state.Term()
}

func (st *Store) fail(err error) {
	st.cmu.Lock()
	if st.failed == nil {
		st.failed = err
		st.log.Error("metadata store failed; no further operation will be acknowledged", "err", err)
	}
	st.cond.Broadcast()
	st.work.Broadcast()
	st.cmu.Unlock()
}

func (st *Store) noteAppended(v uint64) {
	st.cmu.Lock()
	if v > st.appended {
		st.appended = v
	}
	st.work.Signal()
	st.cmu.Unlock()
}

func (st *Store) waitDurable(ctx context.Context, v uint64) error {
	st.cmu.Lock()
	defer st.cmu.Unlock()
	if v > st.appended {
		st.appended = v
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			st.cmu.Lock()
			st.cond.Broadcast()
			st.cmu.Unlock()
		})
		defer stop()
	}
	for st.durable < v {
		if st.failed != nil {
			return st.failed
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("waiting for the changelog flush: %w", err)
		}
		if !st.flushing {
			st.flush(true)
			continue
		}
		st.cond.Wait()
	}
	return nil
}

// Read runs f with the state locked for reading. f must not keep s.
func (st *Store) Read(f func(s *meta.State)) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	f(st.state)
}

// MetaID is the file system's identity.
func (st *Store) MetaID() uint64 { return st.state.MetaID() }

// Durable is the last version known to be on disk (in async mode:
// written to the changelog file, fdatasynced within AsyncSyncInterval).
func (st *Store) Durable() uint64 {
	st.cmu.Lock()
	defer st.cmu.Unlock()
	return st.durable
}

// Flushes counts changelog flushes so far: with group commit, far fewer
// than operations.
func (st *Store) Flushes() uint64 {
	st.cmu.Lock()
	defer st.cmu.Unlock()
	return st.flushes
}

// Close waits for pending entries, writes metadata.mfs, rotates the
// changelog and stops the store.
func (st *Store) Close() error {
	st.cmu.Lock()
	st.closing = true
	if st.lazyTimer != nil {
		st.lazyTimer.Stop() // the final sync below takes the lazy entries
		st.lazyTimer = nil
	}
	if st.syncTimer != nil {
		st.syncTimer.Stop() // Close syncs below
		st.syncTimer = nil
	}
	st.work.Broadcast()
	st.cmu.Unlock()
	<-st.done

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cl == nil {
		return ErrClosed
	}
	cl := st.cl
	st.cl = nil
	var errs []error
	st.cmu.Lock()
	failed := st.failed
	st.cmu.Unlock()
	if failed == nil {
		if err := cl.Sync(); err != nil {
			errs = append(errs, err)
		} else if _, err := metadump.Write(st.opts.Dir, DumpName, st.state, metadump.Options{Logger: st.log}); err != nil {
			errs = append(errs, err)
		} else if err := cl.Rotate(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, cl.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close metadata: %w", err)
	}
	st.log.Info("metadata saved", "version", st.state.Version(), "dir", st.opts.Dir)
	return nil
}
