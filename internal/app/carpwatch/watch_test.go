package carpwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/config"
	"github.com/carpfs/carpfs/internal/metalogger"
)

// fakeML is a metalogger host as carpwatch sees it over SSH.
type fakeML struct {
	mu       sync.Mutex
	st       metalogger.Status
	dialErr  error
	fetched  int
	refuseAt uint64 // a fence to this term or below is refused
}

func (f *fakeML) Status(context.Context) (metalogger.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, nil
}

func (f *fakeML) Fence(_ context.Context, term uint64, holder string) (metalogger.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if term <= f.st.Term || term <= f.refuseAt {
		return f.st, fmt.Errorf("term %d refused", term)
	}
	f.st.Term, f.st.Holder = term, holder
	return f.st, nil
}

func (f *fakeML) FetchLog(_ context.Context, to uint64, dir string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetched++
	p := filepath.Join(dir, fmt.Sprintf("fetched-%s-%d.mfs", f.st.ID, to))
	return []string{p}, os.WriteFile(p, []byte("log"), 0o644)
}

func (f *fakeML) Close() error { return nil }

// fakeMaster records starts and stops.
type fakeMaster struct {
	mu     sync.Mutex
	terms  []uint64
	done   chan struct{}
	stops  int
	failAt int // the start with this number (1-based) fails to serve
}

func (m *fakeMaster) Start(_ context.Context, term uint64, holder string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.terms = append(m.terms, term)
	m.done = make(chan struct{})
	return nil
}

func (m *fakeMaster) Stop(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stops++
	if m.done != nil {
		close(m.done)
		m.done = nil
	}
	return nil
}

func (m *fakeMaster) die() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.done)
	m.done = nil
}

func (m *fakeMaster) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return m.done
}

func (m *fakeMaster) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		return 0
	}
	return 4242
}

type rig struct {
	t       *testing.T
	w       *watcher
	ev      chan vipEvent
	mls     map[string]*fakeML
	master  *fakeMaster
	owner   net.HardwareAddr
	demoted chan struct{}
	garps   int
	cancel  context.CancelFunc
	done    chan error
}

func newRig(t *testing.T, force bool) *rig {
	retryRefused = 100 * time.Millisecond
	dir := t.TempDir()
	cfg := Defaults()
	cfg.VIP, cfg.Metaloggers = "10.9.0.100/24", "ml1,ml2,ml3:2222"
	cfg.DataPath = filepath.Join(dir, "data")
	cfg.StatusFile = filepath.Join(dir, "status")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	vip, _ := cfg.vip()
	hosts, _ := cfg.metaloggers()
	r := &rig{t: t, ev: make(chan vipEvent, 4), master: &fakeMaster{}, demoted: make(chan struct{}, 4), done: make(chan error, 1),
		mls: map[string]*fakeML{
			"ml1": {st: metalogger.Status{ID: "a", Term: 4, Version: 100, LastTerm: 4}},
			"ml2": {st: metalogger.Status{ID: "b", Term: 5, Version: 90, LastTerm: 5}},
			"ml3": {st: metalogger.Status{ID: "c", Term: 4, Version: 120, LastTerm: 4}},
		}}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	r.w = &watcher{cfg: cfg, vip: vip, hosts: hosts, holder: "m2", force: force, log: log, p: parts{
		watch: func(context.Context) <-chan vipEvent { return r.ev },
		probe: func(context.Context) (net.HardwareAddr, error) { return r.owner, nil },
		announce: func() {
			r.w.mu.Lock()
			r.garps++
			r.w.mu.Unlock()
		},
		dial: func(_ context.Context, h mlHost) (remote, error) {
			f := r.mls[h.Name]
			if f.dialErr != nil {
				return nil, f.dialErr
			}
			return f, nil
		},
		master:  r.master,
		demote:  func(context.Context) error { r.demoted <- struct{}{}; return nil },
		serving: func(context.Context, <-chan struct{}) error { return nil },
	}}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.w.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Error(err)
		}
	})
	return r
}

func (r *rig) waitState(want string) State {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.w.mu.Lock()
		st := r.w.st
		r.w.mu.Unlock()
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("state %q, want %q (last error %q)", st.State, want, st.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTakeoverFencesAndStarts(t *testing.T) {
	r := newRig(t, false)
	if err := os.MkdirAll(r.w.cfg.DataPath, 0o755); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(r.w.cfg.DataPath, "changelog.0.mfs")
	if err := os.WriteFile(old, []byte("old tail"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.ev <- vipEvent{Present: true, Why: "test"}
	st := r.waitState("active")
	if st.Term != 6 {
		t.Fatalf("term %d, want 6 (one above the highest accepted, 5)", st.Term)
	}
	for name, f := range r.mls {
		if f.st.Term != 6 || f.st.Holder != "m2" {
			t.Errorf("%s holds term %d for %q", name, f.st.Term, f.st.Holder)
		}
	}
	// The best log is the highest last term, then version: ml2's.
	if r.mls["ml2"].fetched != 1 || r.mls["ml1"].fetched+r.mls["ml3"].fetched != 0 {
		t.Fatalf("fetched from the wrong metalogger: %d %d %d", r.mls["ml1"].fetched, r.mls["ml2"].fetched, r.mls["ml3"].fetched)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the old changelog was not set aside")
	}
	if r.master.terms[0] != 6 || r.garps != 1 {
		t.Fatalf("master started with %v, %d gratuitous ARPs", r.master.terms, r.garps)
	}
	b, err := os.ReadFile(r.w.cfg.StatusFile)
	if err != nil || !strings.Contains(string(b), `"state":"active"`) {
		t.Fatalf("status file: %s %v", b, err)
	}
	// The VIP leaves: the master stops.
	r.ev <- vipEvent{Present: false, Why: "test"}
	r.waitState("backup")
	if r.master.stops != 1 {
		t.Fatalf("%d stops", r.master.stops)
	}
}

func TestTakeoverRefusedWithoutMajority(t *testing.T) {
	r := newRig(t, false)
	r.mls["ml1"].dialErr = errors.New("ssh: host key mismatch for ml1")
	r.mls["ml3"].dialErr = errors.New("dial tcp: connection refused")
	r.ev <- vipEvent{Present: true, Why: "test"}
	st := r.waitState("refused")
	for _, want := range []string{"no majority", "ml1", "host key", "ml3", "refused"} {
		if !strings.Contains(st.LastError, want) {
			t.Errorf("the refusal does not say %q: %s", want, st.LastError)
		}
	}
	if len(r.master.terms) != 0 {
		t.Fatal("a master was started without a majority")
	}
	if r.mls["ml2"].st.Term != 5 {
		t.Fatal("a metalogger was fenced although no majority answered")
	}
	// ml3 comes back: the retry takes over.
	r.mls["ml3"].mu.Lock()
	r.mls["ml3"].dialErr = nil
	r.mls["ml3"].mu.Unlock()
	r.waitState("active")
}

func TestTakeoverForced(t *testing.T) {
	r := newRig(t, true)
	r.mls["ml1"].dialErr = errors.New("unreachable")
	r.mls["ml3"].dialErr = errors.New("unreachable")
	r.ev <- vipEvent{Present: true, Why: "test"}
	r.waitState("active")
}

func TestTakeoverRefusedWhenVIPAnswersElsewhere(t *testing.T) {
	r := newRig(t, false)
	r.owner = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	r.ev <- vipEvent{Present: true, Why: "test"}
	st := r.waitState("refused")
	if !strings.Contains(st.LastError, "02:00:00:00:00:01") {
		t.Fatalf("refusal: %s", st.LastError)
	}
}

func TestDemoteWhenMasterDies(t *testing.T) {
	r := newRig(t, false)
	r.ev <- vipEvent{Present: true, Why: "test"}
	r.waitState("active")
	r.master.die()
	select {
	case <-r.demoted:
	case <-time.After(5 * time.Second):
		t.Fatal("no demotion after the master died")
	}
	r.waitState("demoted")
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		vip, mls, bad string
	}{
		{"10.0.0.1", "a,b,c", ""},
		{"", "a", "VIP is empty"},
		{"nope", "a", "not an address"},
		{"10.0.0.1", "", "METALOGGERS is empty"},
		{"10.0.0.1", "a,a", "listed twice"},
		{"10.0.0.1", "a:99999", "HOST or HOST:PORT"},
	} {
		c := Defaults()
		c.VIP, c.Metaloggers = tc.vip, tc.mls
		err := c.Validate()
		if (err == nil) != (tc.bad == "") || err != nil && !strings.Contains(err.Error(), tc.bad) {
			t.Errorf("VIP %q METALOGGERS %q: %v, want %q", tc.vip, tc.mls, err, tc.bad)
		}
	}
}

// TestPackagedSample keeps the shipped sample loadable.
func TestPackagedSample(t *testing.T) {
	cfg := Defaults()
	f, err := config.Load("../../../packaging/etc/carpwatch.cfg")
	if err != nil {
		t.Fatal(err)
	}
	if err := config.Bind(f, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if hosts, _ := cfg.metaloggers(); len(hosts) != 3 || cfg.VIP != "10.0.0.100/24" {
		t.Fatalf("sample: %v %q", hosts, cfg.VIP)
	}
}
