// Package metalogger is mfsmetalogger's engine: one member of the quorum
// journal that makes the master's acknowledgements durable (HDFS's
// JournalNodes are the model; DESIGN.md sections 3 and 4).
//
// A Metalogger connects to the master's port 9419 (Link), accepts the
// master's term when it is not older than one it accepted before
// (StateFile keeps the term on disk), stores the changelog lines the
// master streams in changelog_ml.N.mfs files, fsyncs them (many lines
// share one fsync) and acknowledges by version. The master counts an
// entry committed once a majority has acknowledged it, and passes the
// commit point along; the metalogger applies committed entries, and only
// those, to its replica of the metadata (the same meta.Apply as the
// master's), and writes the replica as metadata_ml.mfs every
// DumpInterval and on stop. A restore (mfsmetarestore -a on the data
// directory) thus starts from a recent dump and needs only the newest
// changelogs.
//
// A new metalogger gets the master's newest dump to start its replica
// from; one that was away catches up from the master's memory or files
// in bulk. Entries past its commit point that the current master's log
// does not have (written by an older master that lost its quorum) are
// cut when the master says so (MLTruncate), never merged.
//
// Fence raises the accepted term from outside (`mfsmetalogger fence`, over
// SSH from carpwatch) and drops the link to an older master; the running
// daemon serves it on a unix socket in its data directory (AdminSocket),
// and when no daemon runs the command changes the state file itself,
// under the same lock the daemon holds.
package metalogger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/wire"
)

// DumpName is the metalogger's dump of its replica.
const DumpName = "metadata_ml.mfs"

// LockFile is held (flock) by the daemon for as long as it runs, and by
// an offline fence while it changes StateFile.
const LockFile = "metalogger.lock"

// Defaults.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultReconnectDelay = 5 * time.Second
	DefaultDumpInterval   = time.Hour
	DefaultChangelogSize  = 256 << 20
)

// Config configures a Metalogger.
type Config struct {
	// Master is host:port of the master's metalogger port. The host is
	// resolved again on every connection, so a VIP or a moved name is
	// followed.
	Master   string
	Dir      string // DATA_PATH; required
	Name     string // this metalogger's name, the first part of its ID
	AuthCode []byte
	// Timeout bounds dialing and the handshake, and how long the master
	// may be silent before the link is dropped; 0 means DefaultTimeout.
	Timeout time.Duration
	// ReconnectDelay caps the backoff between connection attempts; 0
	// means DefaultReconnectDelay.
	ReconnectDelay time.Duration
	// DumpInterval is how often the replica is dumped; 0 means
	// DefaultDumpInterval.
	DumpInterval time.Duration
	// ChangelogMaxSize rotates changelog_ml.0.mfs at this size; 0 means
	// DefaultChangelogSize. Keep is how many rotated files are kept
	// (BACK_LOGS); 0 means changelog.DefaultKeep.
	ChangelogMaxSize int64
	Keep             int
	Logger           *slog.Logger
}

// Metalogger stores a master's changelog and keeps a replica of its
// metadata.
type Metalogger struct {
	cfg  Config
	log  *slog.Logger
	lock *os.File

	mu       sync.Mutex
	changed  *sync.Cond // anything below moved
	st       State
	cl       *changelog.Writer
	first    uint64 // oldest version in the files; 0 when there are none
	last     uint64 // newest version in the files (or, with none, the base)
	lastT    uint64 // term of entry last
	durable  uint64 // fsynced through here
	syncing  bool   // a flush runs outside mu: the writer must stay
	filesCut bool   // a truncate changed the files: the applier reopens
	ackDue   bool   // the master wants to hear from us

	master       *wire.Mux // the link whose term is the accepted one
	masterAddr   string
	masterCommit uint64 // the commit point last heard
	heard        time.Time

	replica   *meta.State // owned by the applier goroutine
	replicaV  uint64      // its version, readable by others
	haveRep   bool
	dumpV     uint64 // version of the newest dump written or installed
	downloads int    // master's dumps fetched
	repErr    error  // why there is no replica
	closed    bool
	fatal     error // the state could not be saved: stop
	done      chan struct{}
	dumpNext  time.Time
}

// Open locks and loads the data directory: the state file, the
// changelog (a torn tail is cut and the rest fsynced, so everything
// found counts as stored), and the replica from the newest dump plus the
// committed entries after it.
func Open(ctx context.Context, cfg Config) (*Metalogger, error) {
	switch {
	case cfg.Dir == "":
		return nil, errors.New("metalogger: no data directory")
	case cfg.Timeout < 0 || cfg.ReconnectDelay < 0 || cfg.DumpInterval < 0 || cfg.ChangelogMaxSize < 0 || cfg.Keep < 0:
		return nil, errors.New("metalogger: negative setting")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ReconnectDelay == 0 {
		cfg.ReconnectDelay = DefaultReconnectDelay
	}
	if cfg.DumpInterval == 0 {
		cfg.DumpInterval = DefaultDumpInterval
	}
	if cfg.ChangelogMaxSize == 0 {
		cfg.ChangelogMaxSize = DefaultChangelogSize
	}
	if cfg.Name == "" {
		cfg.Name = "metalogger"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("metalogger: %w", err)
	}
	lock, err := lockDir(cfg.Dir, false)
	if err != nil {
		return nil, err
	}
	ml := &Metalogger{cfg: cfg, log: cfg.Logger, lock: lock, done: make(chan struct{})}
	ml.changed = sync.NewCond(&ml.mu)
	if err := ml.load(ctx); err != nil {
		lock.Close()
		return nil, err
	}
	go ml.syncer()
	go ml.applier()
	return ml, nil
}

// lockDir takes the data directory's lock; wait false fails at once
// when another process holds it.
func lockDir(dir string, wait bool) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("metalogger: %w", err)
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("metalogger: %s is in use by another mfsmetalogger", dir)
		}
		return nil, fmt.Errorf("metalogger: lock %s: %w", dir, err)
	}
	return f, nil
}

func (ml *Metalogger) load(ctx context.Context) error {
	st, saved, err := LoadState(ml.cfg.Dir, ml.cfg.Name)
	if err != nil {
		return err
	}
	if !saved {
		if err := SaveState(ml.cfg.Dir, st); err != nil {
			return err
		}
		ml.log.Info("new metalogger", "id", st.ID, "dir", ml.cfg.Dir)
	}
	ml.st = st
	if err := ml.openChangelog(); err != nil {
		return err
	}
	// Whatever the files hold now is what a crash left; make it durable
	// before it is acknowledged as stored.
	if err := ml.cl.Sync(); err != nil {
		return fmt.Errorf("metalogger: %w", err)
	}
	ml.durable = ml.last
	ml.st.Committed = min(ml.st.Committed, ml.last)
	rep, err := ml.loadReplica(ctx)
	if err != nil {
		ml.repErr = err
		ml.log.Warn("no replica yet; it is built from the master's dump", "err", err)
	} else {
		ml.replica, ml.replicaV, ml.haveRep, ml.dumpV = rep, rep.Version(), true, rep.Version()
	}
	ml.dumpNext = time.Now().Add(ml.cfg.DumpInterval)
	ml.log.Info("metalogger loaded", "id", ml.st.ID, "term", ml.st.Term, "first", ml.first, "last", ml.last,
		"committed", ml.st.Committed, "replica", ml.replicaV)
	return nil
}

func (ml *Metalogger) openChangelog() error {
	cl, err := changelog.Open(ml.cfg.Dir, changelog.PrefixMetalogger, changelog.Options{
		MaxSize: ml.cfg.ChangelogMaxSize, Keep: ml.cfg.Keep, Logger: ml.log,
	})
	if err != nil {
		return fmt.Errorf("metalogger: %w", err)
	}
	ml.cl = cl
	ml.last, ml.lastT = cl.LastVersion(), cl.LastTerm()
	ml.first, err = firstVersion(ml.cfg.Dir)
	if err != nil {
		cl.Close()
		return fmt.Errorf("metalogger: %w", err)
	}
	return nil
}

// firstVersion is the oldest version the changelog files hold, 0 if
// none.
func firstVersion(dir string) (uint64, error) {
	files, err := changelog.List(dir, changelog.PrefixMetalogger)
	if err != nil {
		return 0, err
	}
	for i := range files { // oldest first
		fr, err := changelog.OpenFile(files[i].Path)
		if err != nil {
			return 0, err
		}
		e, err := fr.Next()
		fr.Close()
		if err == nil {
			return e.Version, nil
		}
		if err != io.EOF {
			return 0, err
		}
	}
	return 0, nil
}

// loadReplica reads the newest dump and applies the committed entries
// after it.
func (ml *Metalogger) loadReplica(ctx context.Context) (*meta.State, error) {
	path := filepath.Join(ml.cfg.Dir, DumpName)
	s, h, err := metadump.LoadFile(path, metadump.ReadOptions{})
	if err != nil {
		return nil, err
	}
	if ml.st.MetaID != 0 && h.MetaID != ml.st.MetaID {
		return nil, fmt.Errorf("%s belongs to file system %016x, this metalogger to %016x", path, h.MetaID, ml.st.MetaID)
	}
	if err := ml.replay(ctx, s, ml.st.Committed); err != nil {
		return nil, err
	}
	return s, nil
}

// replay applies this metalogger's entries after s's version up to to.
func (ml *Metalogger) replay(ctx context.Context, s *meta.State, to uint64) error {
	t, err := ml.replayFrom(ctx, s, to, nil)
	if t != nil {
		t.Close()
	}
	return err
}

// replayFrom is replay reading from t, which it opens when nil and
// returns for the next call: a Tail goes on from where it stopped (it
// reads the files again at its end), where opening one anew reads the
// file from its start to find the version. On error it closes t.
func (ml *Metalogger) replayFrom(ctx context.Context, s *meta.State, to uint64, t *changelog.Tail) (*changelog.Tail, error) {
	for s.Version() < to {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		if t == nil {
			var err error
			if t, err = changelog.OpenTail(ml.cfg.Dir, changelog.PrefixMetalogger, s.Version()+1); err != nil {
				return nil, fmt.Errorf("replica at version %d: %w", s.Version(), err)
			}
		}
		_, e, err := t.Next()
		if err == io.EOF {
			// The Tail met the end before the entry was written; it
			// looks again now that it is.
			_, e, err = t.Next()
		}
		if err == nil {
			err = s.Replay(&e)
		}
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("replica at version %d, committed %d: %w", s.Version(), to, err)
		}
	}
	return t, nil
}

// syncer fsyncs what the master sent and acknowledges it: one
// fdatasync for every line that arrived while the previous one ran.
func (ml *Metalogger) syncer() {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	for {
		for !ml.closed && !ml.ackDue && ml.last <= ml.durable {
			ml.changed.Wait()
		}
		if ml.closed {
			return
		}
		ml.ackDue = false
		target, cl, mux := ml.last, ml.cl, ml.master
		var err error
		if target > ml.durable {
			if err = cl.Flush(); err == nil {
				ml.syncing = true
				ml.mu.Unlock()
				err = cl.SyncData()
				ml.mu.Lock()
				ml.syncing = false
			}
			if err != nil {
				ml.fail(fmt.Errorf("changelog: %w", err))
				return
			}
			ml.durable = max(ml.durable, target)
			ml.changed.Broadcast()
		}
		if mux != nil && mux == ml.master {
			ack := &wire.MLAck{Version: ml.durable}
			ml.mu.Unlock()
			if err := mux.Send(ack); err != nil {
				mux.Close()
			}
			ml.mu.Lock()
		}
	}
}

// fail stops the metalogger for good: something it must not lose could
// not be written. Called with mu held.
func (ml *Metalogger) fail(err error) {
	if ml.fatal == nil {
		ml.fatal = err
		ml.log.Error("metalogger stops: it can no longer store what it acknowledges", "err", err)
	}
	if ml.master != nil {
		ml.master.Abort(0, "")
		ml.master = nil
	}
	ml.changed.Broadcast()
}

// applier applies committed entries to the replica and dumps it.
func (ml *Metalogger) applier() {
	defer close(ml.done)
	ctx := context.Background()
	var tail *changelog.Tail // reading on from the replica's version
	var tailOf *meta.State
	defer func() {
		if tail != nil {
			tail.Close()
		}
	}()
	// The dump falls due while nothing else happens.
	tick := time.AfterFunc(ml.cfg.DumpInterval, ml.wake)
	defer tick.Stop()
	for {
		ml.mu.Lock()
		for !ml.closed && ml.fatal == nil && !(ml.haveRep && min(ml.st.Committed, ml.durable) > ml.replicaV) && !(ml.haveRep && time.Now().After(ml.dumpNext)) {
			ml.changed.Wait()
		}
		if ml.closed || ml.fatal != nil {
			ml.mu.Unlock()
			return
		}
		to := min(ml.st.Committed, ml.durable)
		rep := ml.replica
		if ml.filesCut || tailOf != rep {
			// The files changed under the tail (a cut), or the replica
			// is another one (a dump was installed).
			ml.filesCut = false
			if tail != nil {
				tail.Close()
				tail = nil
			}
			tailOf = rep
		}
		ml.mu.Unlock()
		var err error
		tail, err = ml.replayFrom(ctx, rep, to, tail)
		ml.mu.Lock()
		if err != nil {
			ml.log.Error("replica dropped: its entries do not apply; a new one is built from the master's dump", "err", err)
			ml.replica, ml.haveRep, ml.repErr = nil, false, err
			ml.mu.Unlock()
			continue
		}
		ml.replicaV = rep.Version()
		due := time.Now().After(ml.dumpNext)
		ml.mu.Unlock()
		if due {
			ml.dump(rep)
		}
	}
}

// dump writes the replica and, since everything in it is committed,
// records its version as the commit point's lower bound.
func (ml *Metalogger) dump(rep *meta.State) {
	t0 := time.Now()
	_, err := metadump.Write(ml.cfg.Dir, DumpName, rep, metadump.Options{Logger: ml.log})
	ml.mu.Lock()
	defer ml.mu.Unlock()
	ml.dumpNext = time.Now().Add(ml.cfg.DumpInterval)
	time.AfterFunc(ml.cfg.DumpInterval, ml.wake)
	if err != nil {
		ml.log.Error("replica dump failed; retrying at the next interval", "err", err)
		return
	}
	ml.dumpV = rep.Version()
	ml.log.Info("replica dumped", "version", rep.Version(), "took", time.Since(t0).Round(time.Millisecond))
	if err := SaveState(ml.cfg.Dir, ml.st); err != nil {
		ml.fail(err)
	}
}

// wake makes the applier look at the clock.
func (ml *Metalogger) wake() {
	ml.mu.Lock()
	ml.changed.Broadcast()
	ml.mu.Unlock()
}

// Close stops the metalogger: it waits for the applier, dumps the
// replica, saves the state and closes the changelog.
func (ml *Metalogger) Close() error {
	ml.mu.Lock()
	if ml.closed {
		ml.mu.Unlock()
		return errors.New("metalogger already closed")
	}
	ml.closed = true
	if ml.master != nil {
		ml.master.Abort(0, "")
		ml.master = nil
	}
	ml.changed.Broadcast()
	ml.mu.Unlock()
	<-ml.done
	ml.mu.Lock()
	for ml.syncing {
		ml.changed.Wait()
	}
	var errs []error
	if err := ml.cl.Close(); err != nil {
		errs = append(errs, err)
	} else {
		ml.durable = ml.last
	}
	rep, fatal := ml.replica, ml.fatal
	ml.mu.Unlock()
	if rep != nil && fatal == nil {
		ctx := context.Background()
		if err := ml.replay(ctx, rep, min(ml.st.Committed, ml.durable)); err != nil {
			errs = append(errs, err)
		} else if rep.Version() > ml.dumpV {
			if _, err := metadump.Write(ml.cfg.Dir, DumpName, rep, metadump.Options{Logger: ml.log}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if fatal == nil {
		if err := SaveState(ml.cfg.Dir, ml.st); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, ml.lock.Close())
	return errors.Join(errs...)
}
