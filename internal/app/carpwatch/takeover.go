package carpwatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/carpfs/carpfs/internal/fsutil"
	"github.com/carpfs/carpfs/internal/metalogger"
)

// remote is one metalogger host, reached over SSH (internal/fetch).
type remote interface {
	Fence(ctx context.Context, term uint64, holder string) (metalogger.Status, error)
	Status(ctx context.Context) (metalogger.Status, error)
	// FetchLog copies into dir the metalogger's newest dump and the
	// changelog files from it up to version to, and returns their paths.
	FetchLog(ctx context.Context, to uint64, dir string) ([]string, error)
	Close() error
}

// dialer reaches a metalogger host.
type dialer func(ctx context.Context, h mlHost) (remote, error)

// step is one timed step of a takeover, for the log and the status.
type step struct {
	Name string        `json:"name"`
	Took time.Duration `json:"took_ns"`
	Note string        `json:"note,omitempty"`
}

// takeover fences a majority of metaloggers with a new term and fetches
// the log the new master starts from (DESIGN.md section 5, steps 3-4).
type takeover struct {
	hosts  []mlHost
	holder string
	dir    string // the master's DATA_PATH
	force  bool   // start with fewer than a majority (operator's choice)
	dial   dialer
	log    *slog.Logger
	steps  []step
}

// errNoMajority is a takeover refused for want of metaloggers.
var errNoMajority = errors.New("no majority of metaloggers")

func (t *takeover) timed(name string, f func() (string, error)) error {
	t0 := time.Now()
	note, err := f()
	s := step{Name: name, Took: time.Since(t0), Note: note}
	if err != nil {
		s.Note = err.Error()
	}
	t.steps = append(t.steps, s)
	t.log.Info("takeover step", "step", name, "took", s.Took.Round(time.Microsecond), "note", s.Note)
	return err
}

// fenced is a metalogger that accepted the new term.
type fenced struct {
	host mlHost
	r    remote
	st   metalogger.Status
}

// run fences and fetches; it returns the term the master must serve
// under. It starts nothing: the caller starts the master once run
// returns nil.
func (t *takeover) run(ctx context.Context) (uint64, error) {
	majority := len(t.hosts)/2 + 1
	conns := make([]remote, len(t.hosts))
	errs := make([]error, len(t.hosts))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	// Reach every metalogger and learn its term.
	stats := make([]metalogger.Status, len(t.hosts))
	err := t.timed("reach metaloggers", func() (string, error) {
		var wg sync.WaitGroup
		for i, h := range t.hosts {
			wg.Go(func() {
				c, err := t.dial(ctx, h)
				if err == nil {
					conns[i] = c
					stats[i], err = c.Status(ctx)
				}
				errs[i] = err
			})
		}
		wg.Wait()
		return t.count(errs, majority)
	})
	if err != nil {
		return 0, err
	}
	var term uint64
	for i, st := range stats {
		if errs[i] == nil {
			term = max(term, st.Term)
		}
	}
	term++
	// Fence: raise the term on every reachable one; a majority must take it.
	var won []fenced
	err = t.timed("fence", func() (string, error) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, h := range t.hosts {
			if errs[i] != nil {
				continue
			}
			wg.Go(func() {
				st, err := conns[i].Fence(ctx, term, t.holder)
				if err == nil && (st.Term != term || st.Holder != t.holder) {
					err = fmt.Errorf("it holds term %d for %q", st.Term, st.Holder)
				}
				mu.Lock()
				defer mu.Unlock()
				errs[i] = err
				if err == nil {
					won = append(won, fenced{h, conns[i], st})
				}
			})
		}
		wg.Wait()
		note, err := t.count(errs, majority)
		return fmt.Sprintf("term %d: %s", term, note), err
	})
	if err != nil {
		return 0, err
	}
	// The best log of the majority: the highest last term, then version.
	slices.SortFunc(won, func(a, b fenced) int {
		return cmp.Or(cmp.Compare(b.st.LastTerm, a.st.LastTerm), cmp.Compare(b.st.Version, a.st.Version),
			strings.Compare(a.host.Name, b.host.Name))
	})
	best := won[0]
	err = t.timed("fetch", func() (string, error) {
		if err := t.setAside(); err != nil {
			return "", err
		}
		files, err := best.r.FetchLog(ctx, best.st.Version, t.dir)
		if err != nil {
			return "", fmt.Errorf("from %s: %w", best.host.Name, err)
		}
		return fmt.Sprintf("from %s: %d files to version %d (term %d)", best.host.Name, len(files), best.st.Version, best.st.LastTerm), nil
	})
	if err != nil {
		return 0, err
	}
	return term, nil
}

// count says who answered and who did not, and fails unless a majority
// did (or the operator forced it).
func (t *takeover) count(errs []error, majority int) (string, error) {
	var ok, bad []string
	for i, err := range errs {
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s (%v)", t.hosts[i].Name, err))
		} else {
			ok = append(ok, t.hosts[i].Name)
		}
	}
	note := fmt.Sprintf("%d of %d: %s", len(ok), len(t.hosts), strings.Join(ok, ", "))
	if len(ok) >= majority || (t.force && len(ok) > 0) {
		if len(bad) > 0 {
			note += "; missing: " + strings.Join(bad, "; ")
		}
		return note, nil
	}
	return note, fmt.Errorf("%w: %d of %d needed, %d answered; missing: %s", errNoMajority, majority, len(t.hosts), len(ok), strings.Join(bad, "; "))
}

// setAside moves the master's old metadata and changelogs out of the
// way, into DATA_PATH/carpwatch-old/TIME: the new master starts from the
// metaloggers' log alone, since a local tail may hold entries of an
// older term that no majority has. The last few sets are kept.
func (t *takeover) setAside() error {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return os.MkdirAll(t.dir, 0o750)
		}
		return err
	}
	old := filepath.Join(t.dir, "carpwatch-old", time.Now().UTC().Format("20060102T150405.000000000Z"))
	moved := 0
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".mfs") && !strings.Contains(n, ".mfs.") {
			continue
		}
		if moved == 0 {
			if err := os.MkdirAll(old, 0o750); err != nil {
				return err
			}
		}
		if err := os.Rename(filepath.Join(t.dir, n), filepath.Join(old, n)); err != nil {
			return err
		}
		moved++
	}
	if moved == 0 {
		return nil
	}
	t.log.Info("old metadata set aside", "dir", old, "files", moved)
	if err := fsutil.SyncDir(t.dir); err != nil {
		return err
	}
	return pruneOld(filepath.Join(t.dir, "carpwatch-old"), keepOld)
}

// keepOld is how many set-aside metadata directories are kept.
const keepOld = 3

func pruneOld(dir string, keep int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names) // timestamps: oldest first
	for len(names) > keep {
		if err := os.RemoveAll(filepath.Join(dir, names[0])); err != nil {
			return err
		}
		names = names[1:]
	}
	return nil
}
