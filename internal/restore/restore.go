// Package restore rebuilds metadata from a dump and changelogs: the code
// behind mfsmetarestore, and what carpwatch and a starting master run after
// a crash. It never writes anything itself; callers publish the State it
// returns with metadump, so a refused restore leaves every file as it was.
//
// A restore starts from one dump and applies, in version order, every
// changelog entry newer than it, merged from all the files given (a
// master's and several metaloggers' files may overlap; identical entries
// count once, different ones for one version stop the restore). Each entry
// must reproduce the result it recorded. A missing version range stops the
// restore with a *changelog.GapError naming it.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
)

// Options tune Run and Auto. The zero value is ready to use.
type Options struct {
	// Logger gets one line per event an operator may act on (a dump or
	// changelog skipped as damaged); nil discards.
	Logger *slog.Logger
	// Progress, if set, is called about every ProgressEvery while loading
	// and replaying, and once at the end of each stage.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// MetaID, if not 0, is the file system the result must belong to.
	MetaID uint64
}

// Progress reports long work.
type Progress struct {
	Stage   string // "load" or "replay"
	Done    uint64 // records loaded or entries replayed so far
	Version uint64 // replay: version reached
	Elapsed time.Duration
	Final   bool
}

// Result is a finished restore.
type Result struct {
	State    *meta.State
	DumpPath string
	Dump     metadump.Header // the dump the restore started from
	Applied  uint64          // changelog entries replayed onto it
	// Warnings are damaged inputs that were passed over: a torn changelog
	// tail that other files covered, a corrupt older dump.
	Warnings             []error
	LoadTime, ReplayTime time.Duration
}

// Version and Term are where the restore ended.
func (r *Result) Version() uint64 { return r.State.Version() }
func (r *Result) Term() uint64    { return r.State.Term() }

const gcPercent = 400

// ErrMetaID is returned for inputs of another file system.
var ErrMetaID = errors.New("metaid mismatch")

// Run loads the dump at dumpPath and replays the changelog files onto it.
func Run(ctx context.Context, dumpPath string, changelogs []string, opts Options) (*Result, error) {
	res := &Result{DumpPath: dumpPath}
	// A restore allocates an operation per entry and keeps most of what it
	// builds: a higher GC target cuts collector work by half for this
	// batch job, at the cost of a larger heap while it runs.
	if prev := debug.SetGCPercent(gcPercent); prev < 0 || prev > gcPercent {
		debug.SetGCPercent(prev)
	} else {
		defer debug.SetGCPercent(prev)
	}
	t0 := time.Now()
	s, h, err := metadump.LoadFile(dumpPath, metadump.ReadOptions{Progress: opts.ticker("load", t0, nil)})
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	res.State, res.Dump, res.LoadTime = s, h, time.Since(t0)
	opts.report(Progress{Stage: "load", Done: h.Records, Elapsed: res.LoadTime, Final: true})
	if opts.MetaID != 0 && h.MetaID != opts.MetaID {
		return nil, fmt.Errorf("restore: dump %s belongs to file system %016x, not %016x: %w", dumpPath, h.MetaID, opts.MetaID, ErrMetaID)
	}
	if err := res.replay(ctx, changelogs, opts); err != nil {
		return nil, err
	}
	return res, nil
}

// replay merges the changelogs and applies everything past the dump. A
// reader goroutine parses and merges while this one applies, so the two
// halves of the work use both cores.
func (res *Result) replay(ctx context.Context, paths []string, opts Options) error {
	t0 := time.Now()
	srcs, closeAll, err := changelog.OpenSourcesFrom(res.State.Version()+1, paths...)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	m := changelog.NewMerger(changelog.MergeOptions{From: res.State.Version() + 1}, srcs...)

	const batchSize = 4096
	type batch struct {
		entries []meta.Entry
		err     error // the merge's end: io.EOF or a real error
	}
	batches := make(chan batch, 8)
	free := make(chan []meta.Entry, 10)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// However replay ends, the reader goroutine is gone when it returns:
	// cancel stops it between batches, closing the files ends a read.
	defer func() {
		cancel()
		closeAll()
		<-done
	}()
	go func() {
		defer close(done)
		defer close(batches)
		for {
			var b []meta.Entry
			select {
			case b = <-free:
				b = b[:0]
			default:
				b = make([]meta.Entry, 0, batchSize)
			}
			var err error
			for len(b) < batchSize {
				var e meta.Entry
				if e, err = m.Next(); err != nil {
					break
				}
				b = append(b, e)
			}
			select {
			case batches <- batch{b, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	tick := opts.ticker("replay", t0, res.State)
	var end error
	for b := range batches {
		for i := range b.entries {
			if err := res.State.Replay(&b.entries[i]); err != nil {
				cancel()
				return fmt.Errorf("restore: replay: %w", err)
			}
		}
		res.Applied += uint64(len(b.entries))
		if tick != nil {
			tick(res.Applied)
		}
		if b.err != nil {
			end = b.err
			break
		}
		select {
		case free <- b.entries:
		default:
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	res.ReplayTime = time.Since(t0)
	for _, w := range m.Warnings() {
		res.Warnings = append(res.Warnings, w)
		opts.logger().Warn("changelog ends early; other files covered what followed", "err", w)
	}
	if end != nil && end != io.EOF {
		return fmt.Errorf("restore: after version %d: %w", res.State.Version(), end)
	}
	// A file damaged in the middle (good lines after a bad one) held
	// entries past its last good one. If no other file carried the restore
	// beyond that point, those entries are lost to it: refuse rather than
	// quietly stop short. A torn last line is an interrupted append and
	// fine to end on.
	for _, w := range m.Warnings() {
		var ce *changelog.CorruptError
		if errors.As(w, &ce) && !ce.Torn && res.State.Version() <= ce.After {
			return fmt.Errorf("restore: stopped at version %d: %w; add changelog files from another metalogger or the master that continue past it", res.State.Version(), w)
		}
	}
	opts.report(Progress{Stage: "replay", Done: res.Applied, Version: res.State.Version(), Elapsed: res.ReplayTime, Final: true})
	return nil
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o Options) report(p Progress) {
	if o.Progress != nil {
		o.Progress(p)
	}
}

// ticker returns a callback that reports progress at most every
// ProgressEvery, or nil when nobody listens.
func (o Options) ticker(stage string, t0 time.Time, s *meta.State) func(uint64) {
	if o.Progress == nil {
		return nil
	}
	every := o.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	next := t0.Add(every)
	return func(done uint64) {
		if now := time.Now(); now.After(next) {
			next = now.Add(every)
			p := Progress{Stage: stage, Done: done, Elapsed: now.Sub(t0)}
			if s != nil {
				p.Version = s.Version()
			}
			o.Progress(p)
		}
	}
}
