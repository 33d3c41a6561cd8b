package master

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/replication"
	"github.com/carpfs/carpfs/internal/wire"
)

// This file is the replication loop: it walks every chunk, compares its
// valid copies with its file's goal, and sends chunkservers CSReplicate
// and CSDelete to close the gap, at a bounded rate.
//
// The loop runs in ticks (Interval, 1 s by default). Each tick examines
// up to MaxCPS×Interval chunks, continuing where the last tick stopped,
// so a pass over a large file system is spread over many ticks and never
// holds the metadata's read lock for long; a small one is walked whole
// every tick. A pass first looks for orphans (copies of chunk ids the
// metadata no longer holds: their file was truncated or deleted) among
// the ids the chunkservers reported when the pass began, then walks the
// files by inode number, running replication.Plan on each chunk with its
// file's goal. The actions go through a replication.Limiter, which bounds
// replications per source and target server and deletions per server and
// tick (MooseFS's CHUNKS_READ_REP_LIMIT, CHUNKS_WRITE_REP_LIMIT and
// CHUNKS_DEL_LIMIT); what does not fit waits for the next pass.
//
// Safety comes from replication.Plan, which never deletes below the goal
// nor the last valid copies, and from two rules here: a chunk locked for
// writing is never planned (its copies are about to change version), and
// a chunk with an action still running is not planned again. Every
// command names the version it expects, so a chunkserver refuses one that
// a write made stale in between. A lock with no lease behind it (granted
// by a previous master) is cleared once it has been seen for a lease
// time, after which no writer can still count on it.

// Defaults of the replication loop.
const (
	DefaultLoopInterval     = time.Second
	DefaultLoopMaxCPS       = 100000
	DefaultWriteRepLimit    = 2
	DefaultReadRepLimit     = 10
	DefaultDeleteLimit      = 100
	DefaultReplicateTimeout = 2 * time.Minute
)

// ReplicatorConfig configures the replication loop. Zero values mean the
// defaults above.
type ReplicatorConfig struct {
	Interval time.Duration // between ticks
	MaxCPS   int           // chunks examined per second (CHUNKS_LOOP_MAX_CPS)
	// WriteLimit bounds replications writing to one server at once
	// (CHUNKS_WRITE_REP_LIMIT), ReadLimit those reading from one server
	// (CHUNKS_READ_REP_LIMIT), DeleteLimit the deletions sent to one
	// server per tick (CHUNKS_DEL_LIMIT).
	WriteLimit, ReadLimit, DeleteLimit int
	// StartDelay holds replications back for this long after Run starts,
	// while chunkservers register (REPLICATIONS_DELAY_INIT): a copy on a
	// server not yet registered would otherwise be made again. Deletions
	// need no delay: they count only copies that are there.
	StartDelay time.Duration
	// ReplicateTimeout bounds one CSReplicate; deletions take the
	// server's command timeout.
	ReplicateTimeout time.Duration
	// NoDelete plans only replications (see replication.Options).
	NoDelete bool
	Logger   *slog.Logger // nil: the server's
}

func (c *ReplicatorConfig) validate() error {
	if c.Interval < 0 || c.MaxCPS < 0 || c.WriteLimit < 0 || c.ReadLimit < 0 || c.DeleteLimit < 0 ||
		c.StartDelay < 0 || c.ReplicateTimeout < 0 {
		return fmt.Errorf("master: replication loop: negative setting in %+v", *c)
	}
	return nil
}

// ReplicationStatus is what the loop has seen and done.
type ReplicationStatus struct {
	// Of the last complete pass:
	Passes     uint64 // passes completed since start
	Chunks     int    // chunks examined (locked ones not included)
	Lost       int    // chunks with no valid copy
	Endangered int    // one valid copy left, goal above 1
	Undergoal  int    // fewer valid copies than the goal (Endangered included)
	Overgoal   int    // more valid copies than the goal
	Invalid    int    // stale or damaged copies
	Orphans    int    // copies of chunks the metadata does not hold
	// Since start:
	Ticks      uint64
	Replicated uint64 // copies made
	Deleted    uint64 // copies deleted
	Failed     uint64 // commands that failed
	InFlight   int    // commands running now
}

// Replicator is the replication loop of a Server.
type Replicator struct {
	srv *Server
	cfg ReplicatorConfig
	log *slog.Logger
	lim *replication.Limiter

	// Used by Run's goroutine only.
	start     time.Time
	orphanIDs []uint64 // still to check in this pass
	orphansOK bool     // the orphan phase of this pass is done
	cursor    uint32   // next inode of this pass
	pass      ReplicationStatus
	staleLock map[uint64]time.Time // locked chunks without a lease: since when
	seenLock  map[uint64]bool      // ... seen this pass
	inflight  map[uint64]int       // commands running, by chunk
	done      chan finished
	wg        sync.WaitGroup

	mu     sync.Mutex
	status ReplicationStatus
}

// finished is the outcome of one action.
type finished struct {
	a   replication.Action
	err error
}

// NewReplicator returns the replication loop for srv's chunks.
func NewReplicator(srv *Server, cfg ReplicatorConfig) (*Replicator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Interval = cmp.Or(cfg.Interval, DefaultLoopInterval)
	cfg.MaxCPS = cmp.Or(cfg.MaxCPS, DefaultLoopMaxCPS)
	cfg.WriteLimit = cmp.Or(cfg.WriteLimit, DefaultWriteRepLimit)
	cfg.ReadLimit = cmp.Or(cfg.ReadLimit, DefaultReadRepLimit)
	cfg.DeleteLimit = cmp.Or(cfg.DeleteLimit, DefaultDeleteLimit)
	cfg.ReplicateTimeout = cmp.Or(cfg.ReplicateTimeout, DefaultReplicateTimeout)
	if cfg.Logger == nil {
		cfg.Logger = srv.log
	}
	lim, err := replication.NewLimiter(replication.Limits{Reads: cfg.ReadLimit, Writes: cfg.WriteLimit, Deletes: cfg.DeleteLimit})
	if err != nil {
		return nil, fmt.Errorf("master: replication loop: %w", err)
	}
	return &Replicator{
		srv: srv, cfg: cfg, log: cfg.Logger, lim: lim, cursor: 1,
		staleLock: map[uint64]time.Time{}, seenLock: map[uint64]bool{}, inflight: map[uint64]int{},
		done: make(chan finished, 1024),
	}, nil
}

// Status returns the last complete pass's findings and the counters.
func (x *Replicator) Status() ReplicationStatus {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.status
}

// Run runs the loop until ctx ends, then cancels the commands under way,
// waits for them and returns nil.
func (x *Replicator) Run(ctx context.Context) error {
	x.start = x.srv.cfg.Clock()
	t := time.NewTicker(x.cfg.Interval)
	defer t.Stop()
	x.log.Info("replication loop started", "interval", x.cfg.Interval, "max_cps", x.cfg.MaxCPS,
		"write_limit", x.cfg.WriteLimit, "read_limit", x.cfg.ReadLimit, "delete_limit", x.cfg.DeleteLimit,
		"start_delay", x.cfg.StartDelay, "no_delete", x.cfg.NoDelete)
	for {
		select {
		case <-ctx.Done():
			// The commands see ctx end too; take in their outcomes, as
			// they may fill the channel before they all return.
			all := make(chan struct{})
			go func() { x.wg.Wait(); close(all) }()
			for {
				select {
				case f := <-x.done:
					x.finish(f)
				case <-all:
					x.collect()
					return nil
				}
			}
		case <-t.C:
		}
		x.tick(ctx)
	}
}

// tick runs one slice of a pass.
func (x *Replicator) tick(ctx context.Context) {
	ok, failed := x.collect()
	x.lim.Tick()
	cluster, err := x.srv.chunks.cluster()
	if err != nil {
		x.log.Warn("replication tick skipped", "err", err)
		return
	}
	budget := max(1, int(int64(x.cfg.MaxCPS)*int64(x.cfg.Interval)/int64(time.Second)))
	if x.orphanIDs == nil && !x.orphansOK {
		x.orphanIDs = x.srv.chunks.chunkIDs()
		slices.Sort(x.orphanIDs)
	}
	var actions []replication.Action
	if !x.orphansOK {
		var n int
		actions, n = x.orphans(budget)
		budget -= n
		if len(x.orphanIDs) == 0 {
			x.orphansOK = true
		}
	}
	passDone := false
	if x.orphansOK && budget > 0 {
		var items []item
		items, passDone = x.scan(budget)
		actions = x.plan(ctx, items, cluster, actions)
	}
	if x.srv.cfg.Clock().Sub(x.start) < x.cfg.StartDelay {
		actions = slices.DeleteFunc(actions, func(a replication.Action) bool { return a.Kind == replication.Replicate })
	}
	now, _ := replication.Schedule(actions, x.lim)
	reps, dels := 0, 0
	for _, a := range now {
		if a.Kind == replication.Replicate {
			reps++
		} else {
			dels++
		}
		x.run(ctx, a)
	}
	if reps+dels+ok+failed > 0 {
		x.log.Info("replication tick", "replications_started", reps, "deletions_started", dels,
			"finished", ok, "failed", failed, "in_flight", x.running())
	}
	x.mu.Lock()
	x.status.Ticks++
	x.status.InFlight = x.running()
	x.mu.Unlock()
	if passDone {
		x.endPass()
	}
}

// item is one chunk of a file, as the scan found it.
type item struct {
	key     chunkKey
	id      uint64
	version uint32
	locked  bool
	goal    uint8
}

// scan walks files from the cursor until budget (inodes visited plus
// chunks found) is spent or the inodes end, which ends the pass.
func (x *Replicator) scan(budget int) (items []item, passDone bool) {
	x.srv.store.Read(func(st *meta.State) {
		limit := st.InodeLimit()
		ino := x.cursor
		for ; ino < limit && budget > 0; ino++ {
			budget--
			a, e := st.GetAttr(ino)
			if e != 0 || a.Type != meta.TypeFile {
				continue
			}
			// A chunk belongs to one file (meta shares none), so its
			// goal is that file's.
			refs, _ := st.FileChunks(ino)
			for i, ref := range refs {
				if ref.ID != 0 {
					budget--
					items = append(items, item{key: chunkKey{ino, uint32(i)}, id: ref.ID, version: ref.Version, locked: ref.Locked, goal: a.Goal})
				}
			}
		}
		x.cursor = ino
		passDone = ino >= limit
	})
	return items, passDone
}

// orphans checks up to budget of the pass's remaining chunk ids and
// returns deletions of the copies of those the metadata does not hold.
func (x *Replicator) orphans(budget int) ([]replication.Action, int) {
	ids := x.orphanIDs[:min(budget, len(x.orphanIDs))]
	x.orphanIDs = x.orphanIDs[len(ids):]
	var gone []uint64
	x.srv.store.Read(func(st *meta.State) {
		for _, id := range ids {
			if _, ok := st.ChunkVersion(id); !ok {
				gone = append(gone, id)
			}
		}
	})
	var out []replication.Action
	for _, id := range gone {
		if x.inflight[id] > 0 {
			continue
		}
		for _, c := range x.srv.chunks.Copies(id) {
			x.pass.Orphans++
			if !x.cfg.NoDelete {
				out = append(out, replication.Action{Kind: replication.Delete, Chunk: id, Version: c.Version,
					Server: replication.ServerID(c.Server), Priority: replication.PriorityDelete})
			}
		}
	}
	return out, len(ids)
}

// plan runs replication.Plan on items, counting what it finds for the
// pass, and appends the actions to dst.
func (x *Replicator) plan(ctx context.Context, items []item, cluster *replication.Cluster, dst []replication.Action) []replication.Action {
	now := x.srv.cfg.Clock()
	opt := replication.Options{NoDelete: x.cfg.NoDelete}
	for _, it := range items {
		if it.locked {
			x.lockedChunk(ctx, it, now)
			continue
		}
		if x.inflight[it.id] > 0 {
			continue
		}
		g, err := replication.GoalFromCode(it.goal)
		if err != nil {
			g, _ = replication.Copies(meta.DefaultGoal)
		}
		res := replication.AppendPlan(dst, x.srv.chunks.chunkState(it.id, it.version), g, cluster, opt)
		dst = res.Actions
		p := &x.pass
		p.Chunks++
		p.Invalid += res.Invalid
		switch res.Status {
		case replication.StatusLost:
			p.Lost++
		case replication.StatusEndangered:
			p.Endangered++
			p.Undergoal++
		case replication.StatusUndergoal:
			p.Undergoal++
		case replication.StatusOvergoal:
			p.Overgoal++
		}
	}
	return dst
}

// lockedChunk notes a chunk locked for writing, and clears its lock if no
// lease has covered it for a lease time.
func (x *Replicator) lockedChunk(ctx context.Context, it item, now time.Time) {
	x.seenLock[it.id] = true
	if x.srv.leases.get(it.id) != nil {
		delete(x.staleLock, it.id)
		return
	}
	since, ok := x.staleLock[it.id]
	if !ok {
		x.staleLock[it.id] = now
		return
	}
	if now.Sub(since) >= x.srv.cfg.LeaseTime && x.srv.releaseStale(ctx, it.key, it.id) {
		delete(x.staleLock, it.id)
		x.log.Info("cleared a chunk lock no lease held", "chunk", fmt.Sprintf("%016X", it.id), "inode", it.key.inode,
			"index", it.key.index, "locked_for_at_least", now.Sub(since))
	}
}

// run starts action a in its own goroutine.
func (x *Replicator) run(ctx context.Context, a replication.Action) {
	x.inflight[a.Chunk]++
	x.wg.Go(func() {
		var err error
		switch a.Kind {
		case replication.Replicate:
			sources := []string{string(a.From)}
			for _, s := range x.srv.chunks.validCopies(a.Chunk, a.Version) {
				if s != string(a.From) && s != string(a.To) {
					sources = append(sources, s)
				}
			}
			cctx, cancel := context.WithTimeout(ctx, x.cfg.ReplicateTimeout)
			err = x.srv.chunks.Command(cctx, string(a.To), &wire.CSReplicate{ID: a.Chunk, Version: a.Version, Sources: sources})
			cancel()
		case replication.Delete:
			cctx, cancel := context.WithTimeout(ctx, x.srv.cfg.CommandTimeout)
			err = x.srv.chunks.Command(cctx, string(a.Server), &wire.CSDelete{ID: a.Chunk, Version: a.Version})
			cancel()
			if errors.Is(err, syscall.ENOENT) {
				err = nil // gone already: what was wanted
			}
		}
		x.done <- finished{a, err}
	})
}

// collect takes in the actions that finished since the last tick and
// returns how many succeeded and failed.
func (x *Replicator) collect() (ok, failed int) {
	for {
		select {
		case f := <-x.done:
			if x.finish(f) {
				ok++
			} else {
				failed++
			}
		default:
			return ok, failed
		}
	}
}

// finish takes in one finished action and reports whether it succeeded.
func (x *Replicator) finish(f finished) bool {
	x.lim.Done(f.a)
	if x.inflight[f.a.Chunk]--; x.inflight[f.a.Chunk] <= 0 {
		delete(x.inflight, f.a.Chunk)
	}
	chunk := fmt.Sprintf("%016X", f.a.Chunk)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.status.InFlight = x.running()
	switch {
	case f.err != nil:
		x.status.Failed++
		if f.a.Kind == replication.Replicate {
			x.log.Warn("replication failed", "chunk", chunk, "version", f.a.Version, "from", f.a.From, "to", f.a.To, "err", f.err)
		} else {
			x.log.Warn("deletion failed", "chunk", chunk, "version", f.a.Version, "server", f.a.Server, "err", f.err)
		}
		return false
	case f.a.Kind == replication.Replicate:
		x.status.Replicated++
		x.log.Debug("chunk replicated", "chunk", chunk, "version", f.a.Version, "from", f.a.From, "to", f.a.To)
	default:
		x.status.Deleted++
		reason := f.a.Reason.String()
		if f.a.Reason == replication.ReasonNone {
			reason = "orphan"
		}
		x.log.Debug("copy deleted", "chunk", chunk, "version", f.a.Version, "server", f.a.Server, "reason", reason)
	}
	return true
}

// running is how many commands are running.
func (x *Replicator) running() int {
	n := 0
	for _, c := range x.inflight {
		n += c
	}
	return n
}

// endPass publishes the pass's findings and starts the next pass.
func (x *Replicator) endPass() {
	p := x.pass
	x.mu.Lock()
	prev := x.status
	x.status.Passes++
	x.status.Chunks, x.status.Lost, x.status.Endangered = p.Chunks, p.Lost, p.Endangered
	x.status.Undergoal, x.status.Overgoal, x.status.Invalid, x.status.Orphans = p.Undergoal, p.Overgoal, p.Invalid, p.Orphans
	x.mu.Unlock()
	if p.Lost != prev.Lost || p.Undergoal != prev.Undergoal || p.Endangered != prev.Endangered {
		level := slog.LevelInfo
		if p.Lost > 0 || p.Endangered > 0 {
			level = slog.LevelWarn
		}
		x.log.Log(context.Background(), level, "replication pass", "chunks", p.Chunks, "lost", p.Lost,
			"endangered", p.Endangered, "undergoal", p.Undergoal, "overgoal", p.Overgoal, "invalid", p.Invalid, "orphans", p.Orphans)
	}
	for id := range x.staleLock {
		if !x.seenLock[id] {
			delete(x.staleLock, id)
		}
	}
	clear(x.seenLock)
	x.pass = ReplicationStatus{}
	x.cursor = 1
	x.orphanIDs, x.orphansOK = nil, false
}
