package carpwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"

	"github.com/carpfs/carpfs/internal/fsutil"
)

// vipEvent says whether the VIP is on the interface now.
type vipEvent struct {
	Present bool
	Why     string
}

// parts are the pieces of the machine carpwatch drives, replaceable in
// tests.
type parts struct {
	watch    func(ctx context.Context) <-chan vipEvent
	probe    func(ctx context.Context) (net.HardwareAddr, error) // who else answers for the VIP
	announce func()                                              // gratuitous ARP for the VIP
	dial     dialer
	master   masterCtl
	demote   func(ctx context.Context) error
	// serving returns once the started master serves, or why not.
	serving func(ctx context.Context, done <-chan struct{}) error
}

// State is what `carpwatch status` prints.
type State struct {
	State     string    `json:"state"` // backup, taking-over, active, refused, demoted
	VIP       string    `json:"vip"`
	HasVIP    bool      `json:"has_vip"`
	Term      uint64    `json:"term,omitempty"`
	MasterPID int       `json:"master_pid,omitempty"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	Steps     []step    `json:"last_takeover,omitempty"`
	PID       int       `json:"carpwatch_pid"`
}

// watcher is carpwatch's loop.
type watcher struct {
	cfg    Config
	vip    netip.Addr
	hosts  []mlHost
	holder string
	force  bool
	p      parts
	log    *slog.Logger

	mu sync.Mutex
	st State
}

func (w *watcher) set(f func(*State)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(&w.st)
	w.st.PID = os.Getpid()
	b, _ := json.Marshal(w.st)
	if err := fsutil.WriteFileAtomic(filepath.Dir(w.cfg.StatusFile), filepath.Base(w.cfg.StatusFile), append(b, '\n'), 0o644); err != nil {
		w.log.Warn("status not written", "file", w.cfg.StatusFile, "err", err)
	}
}

func (w *watcher) state(name string) {
	w.set(func(s *State) { s.State, s.Since = name, time.Now().UTC() })
}

// retryRefused is how long carpwatch waits before trying again a
// takeover that was refused while it still holds the VIP.
var retryRefused = 3 * time.Second

// run reacts to the VIP until ctx ends; it stops a master it started.
func (w *watcher) run(ctx context.Context) error {
	w.set(func(s *State) { s.VIP = w.vip.String() })
	w.state("backup")
	events := w.p.watch(ctx)
	var has bool
	var retry <-chan time.Time
	var masterDone <-chan struct{}
	defer func() {
		if w.p.master.PID() != 0 {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := w.p.master.Stop(sctx); err != nil {
				w.log.Error("master not stopped cleanly", "err", err)
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return errors.New("the VIP watch ended")
			}
			w.log.Info("VIP event", "vip", w.vip, "present", ev.Present, "why", ev.Why)
			w.set(func(s *State) { s.HasVIP = ev.Present })
			if ev.Present == has {
				continue
			}
			has = ev.Present
			retry = nil
			if has {
				masterDone = w.takeOver(ctx)
				if masterDone == nil {
					retry = time.After(retryRefused)
				}
				continue
			}
			w.release(ctx)
			masterDone = nil
		case <-retry:
			retry = nil
			if has && masterDone == nil {
				if masterDone = w.takeOver(ctx); masterDone == nil {
					retry = time.After(retryRefused)
				}
			}
		case <-masterDone:
			masterDone = nil
			w.log.Error("the master died while this host holds the VIP; demoting the CARP speaker so the other host takes over")
			w.set(func(s *State) { s.MasterPID, s.LastError = 0, "the master exited while holding the VIP" })
			w.state("demoted")
			if err := w.p.demote(ctx); err != nil {
				w.log.Error("demote failed", "err", err)
			}
		}
	}
}

// takeOver runs a takeover and starts the master; it returns the
// master's Done channel, or nil when it refused or failed (said in the
// log and the status).
func (w *watcher) takeOver(ctx context.Context) <-chan struct{} {
	t0 := time.Now()
	w.state("taking-over")
	tk := &takeover{hosts: w.hosts, holder: w.holder, dir: w.cfg.DataPath, force: w.force, dial: w.p.dial, log: w.log}
	fail := func(what string, err error) <-chan struct{} {
		w.log.Error("takeover refused; no master started", "why", what, "err", err, "took", time.Since(t0).Round(time.Millisecond))
		w.set(func(s *State) { s.LastError, s.Steps = what+": "+err.Error(), tk.steps })
		w.state("refused")
		return nil
	}
	if w.cfg.ARPProbes > 0 {
		var owner net.HardwareAddr
		err := tk.timed("ARP probe", func() (string, error) {
			var err error
			owner, err = w.p.probe(ctx)
			if err == nil && owner != nil {
				err = fmt.Errorf("%s still answers for %s", owner, w.vip)
			}
			return "nobody else answers", err
		})
		if err != nil {
			return fail("another host holds the VIP", err)
		}
	}
	term, err := tk.run(ctx)
	if err != nil {
		return fail("fencing and fetching the log", err)
	}
	err = tk.timed("start master", func() (string, error) {
		if err := w.p.master.Start(ctx, term, w.holder); err != nil {
			return "", err
		}
		return fmt.Sprintf("term %d", term), w.p.serving(ctx, w.p.master.Done())
	})
	if err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		w.p.master.Stop(sctx)
		return fail("starting the master", err)
	}
	_ = tk.timed("gratuitous ARP", func() (string, error) { w.p.announce(); return "", nil })
	w.log.Info("took over: the master serves", "term", term, "took", time.Since(t0).Round(time.Millisecond))
	w.set(func(s *State) { s.Term, s.MasterPID, s.LastError, s.Steps = term, w.p.master.PID(), "", tk.steps })
	w.state("active")
	return w.p.master.Done()
}

// release stops the master once the VIP has left.
func (w *watcher) release(ctx context.Context) {
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := w.p.master.Stop(sctx); err != nil {
		w.log.Error("master stop failed", "err", err)
	}
	w.log.Info("the VIP left: master stopped", "took", time.Since(t0).Round(time.Millisecond))
	w.set(func(s *State) { s.MasterPID = 0 })
	w.state("backup")
}

// demoter gives the VIP away: a command, or stopping a unit.
func demoter(cfg Config, log *slog.Logger) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		switch {
		case strings.TrimSpace(cfg.DemoteCommand) != "":
			argv := strings.Fields(cfg.DemoteCommand)
			out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %v: %s", cfg.DemoteCommand, err, strings.TrimSpace(string(out)))
			}
			log.Info("demoted the CARP speaker", "command", cfg.DemoteCommand)
			return nil
		case cfg.DemoteUnit != "":
			conn, err := dbus.NewSystemConnectionContext(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			if _, err := conn.StopUnitContext(ctx, cfg.DemoteUnit, "replace", nil); err != nil {
				return err
			}
			log.Info("demoted the CARP speaker", "unit", cfg.DemoteUnit)
			return nil
		}
		return errors.New("no DEMOTE_COMMAND or DEMOTE_UNIT configured: the VIP stays here with no master behind it")
	}
}
