package metalogger_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metalogger"
	"github.com/carpfs/carpfs/internal/metastore"
	"github.com/carpfs/carpfs/internal/restore"
)

// testLog shows daemons' lines in -v runs.
func testLog(t *testing.T, who string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("who", who)
}

// qmaster is an in-process master: its metadata store and journal.
type qmaster struct {
	t      *testing.T
	dir    string
	addr   string
	store  *metastore.Store
	j      *master.Journal
	cancel context.CancelFunc
	done   chan error
}

// startMaster opens dir with a journal for n metaloggers listening on
// addr ("" picks a port) and starts it in the background; started is
// closed when it serves.
func startMaster(t *testing.T, dir, addr string, n int, cfg master.JournalConfig) (*qmaster, chan struct{}) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metaloggers = n
	cfg.Dir = dir
	if cfg.Holder == "" {
		cfg.Holder = fmt.Sprintf("test/%d", time.Now().UnixNano())
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 100 * time.Millisecond
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = 20 * time.Second
	}
	cfg.Logger = testLog(t, "master")
	j, err := master.NewJournal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	store, err := metastore.Open(ctx, metastore.Options{Dir: dir, Replicator: j, Logger: testLog(t, "store")})
	if err != nil {
		cancel()
		ln.Close()
		t.Fatal(err)
	}
	m := &qmaster{t: t, dir: dir, addr: ln.Addr().String(), store: store, j: j, cancel: cancel, done: make(chan error, 1)}
	started := make(chan struct{})
	go func() {
		err := j.Start(ctx, ln, store)
		if err == nil {
			close(started)
		}
		m.done <- err
	}()
	t.Cleanup(m.stop)
	return m, started
}

func (m *qmaster) stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	m.store.Close()
}

// wait waits for started or fails with the Start error.
func (m *qmaster) wait(started chan struct{}, d time.Duration) {
	m.t.Helper()
	select {
	case <-started:
	case err := <-m.done:
		if err != nil {
			m.t.Fatalf("master did not start: %v", err)
		}
	case <-time.After(d):
		m.t.Fatalf("master not started within %s", d)
	}
}

// qml is an in-process metalogger.
type qml struct {
	t      *testing.T
	dir    string
	ml     *metalogger.Metalogger
	cancel context.CancelFunc
	done   chan error
}

func startML(t *testing.T, dir, masterAddr string) *qml {
	t.Helper()
	return startMLWith(t, metalogger.Config{Master: masterAddr, Dir: dir})
}

// startMLWith starts a metalogger with cfg, filling in the test's
// timeouts, name and logger where cfg has none.
func startMLWith(t *testing.T, cfg metalogger.Config) *qml {
	t.Helper()
	dir := cfg.Dir
	cfg.Name = filepath.Base(dir)
	cfg.Timeout = 2 * time.Second
	cfg.ReconnectDelay = 200 * time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = testLog(t, filepath.Base(dir))
	}
	ml, err := metalogger.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &qml{t: t, dir: dir, ml: ml, cancel: cancel, done: make(chan error, 1)}
	go func() { q.done <- ml.Run(ctx) }()
	t.Cleanup(q.stop)
	return q
}

func (q *qml) stop() {
	if q.cancel == nil {
		return
	}
	q.cancel()
	q.cancel = nil
	if err := <-q.done; err != nil {
		q.t.Errorf("metalogger %s: %v", q.dir, err)
	}
	if err := q.ml.Close(); err != nil {
		q.t.Errorf("metalogger %s close: %v", q.dir, err)
	}
}

func create(ctx context.Context, st *metastore.Store, name string) error {
	res, err := st.Do(ctx, &meta.Create{Parent: meta.RootInode, Name: name, Type: meta.TypeFile, Mode: 0o644})
	if err != nil {
		return err
	}
	if !res.Ok() {
		return res.Err
	}
	return nil
}

// restoreDir restores a metalogger's directory the way mfsmetarestore -a
// does and lists the root.
func restoreDir(t *testing.T, dir string) map[string]bool {
	t.Helper()
	res, err := restore.Auto(context.Background(), dir, restore.Options{})
	if err != nil {
		t.Fatalf("restore %s: %v", dir, err)
	}
	ents, errno := res.State.ReadDir(meta.RootInode)
	if errno != 0 {
		t.Fatal(errno)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name] = true
	}
	return names
}

func TestQuorumCommitAndRestore(t *testing.T) {
	base := t.TempDir()
	m, started := startMaster(t, filepath.Join(base, "master"), "", 3, master.JournalConfig{})
	var mls []*qml
	for i := range 3 {
		mls = append(mls, startML(t, filepath.Join(base, fmt.Sprintf("ml%d", i)), m.addr))
	}
	m.wait(started, 20*time.Second)
	ctx := context.Background()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- create(ctx, m.store, fmt.Sprintf("f%03d", i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// One metalogger down: the others are a majority.
	mls[2].stop()
	if err := create(ctx, m.store, "with-two"); err != nil {
		t.Fatalf("create with 2 of 3 metaloggers: %v", err)
	}
	// Two down: no acknowledgement until one returns.
	mls[1].stop()
	got := make(chan error, 1)
	go func() { got <- create(ctx, m.store, "needs-two") }()
	select {
	case err := <-got:
		t.Fatalf("create acknowledged with 1 of 3 metaloggers: %v", err)
	case <-time.After(time.Second):
	}
	mls[1] = startML(t, filepath.Join(base, "ml1"), m.addr)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("create after a metalogger returned: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("create still waits after a metalogger returned")
	}
	m.stop()
	for _, q := range mls {
		q.stop()
	}
	for _, d := range []string{"ml0", "ml1"} {
		names := restoreDir(t, filepath.Join(base, d))
		for i := range n {
			if !names[fmt.Sprintf("f%03d", i)] {
				t.Fatalf("%s: f%03d missing after restore", d, i)
			}
		}
		if !names["with-two"] || !names["needs-two"] {
			t.Fatalf("%s: acknowledged creates missing: %v", d, names)
		}
	}
}

func TestCommitTimeout(t *testing.T) {
	base := t.TempDir()
	m, started := startMaster(t, filepath.Join(base, "master"), "", 3, master.JournalConfig{CommitTimeout: 500 * time.Millisecond})
	a := startML(t, filepath.Join(base, "ml0"), m.addr)
	b := startML(t, filepath.Join(base, "ml1"), m.addr)
	m.wait(started, 20*time.Second)
	a.stop()
	b.stop()
	t0 := time.Now()
	err := create(context.Background(), m.store, "x")
	if err == nil {
		t.Fatal("create acknowledged with no metalogger")
	}
	if d := time.Since(t0); d < 400*time.Millisecond || d > 5*time.Second {
		t.Fatalf("create failed after %s, want about the 500ms commit timeout: %v", d, err)
	}
	t.Logf("refused as expected: %v", err)
	// The master keeps serving reads.
	var found bool
	m.store.Read(func(s *meta.State) { _, e := s.Lookup(meta.RootInode, "x"); found = e == 0 })
	_ = found
}

// eventuallyQ retries f for up to d.
func eventuallyQ(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// caughtUp waits until q stores everything m has.
func caughtUp(t *testing.T, q *qml, m *qmaster) {
	t.Helper()
	eventuallyQ(t, 15*time.Second, func() error {
		v, term := m.store.Position()
		st := q.ml.Status()
		if st.Version != v || st.LastTerm != term {
			return fmt.Errorf("%s stores %d (term %d), the master is at %d (term %d)", q.dir, st.Version, st.LastTerm, v, term)
		}
		return nil
	})
}

// copyLog copies a metalogger's dump and changelogs into dir, as
// carpwatch fetches them for a new master.
func copyLog(t *testing.T, from, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(from, "changelog_ml.*.mfs"))
	files = append(files, filepath.Join(from, metalogger.DumpName))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFencedMasterAndDivergentTail: master A's metaloggers 1 and 2 go
// away and A writes an entry only metalogger 0 stores. 1 and 2 are
// fenced with a newer term, and master B, restored from 1's files,
// serves under it. A never gets its entry acknowledged, steps down when
// a fenced metalogger refuses it, and metalogger 0's tail from A's term
// is cut when it joins B, after which it stores exactly B's log.
func TestFencedMasterAndDivergentTail(t *testing.T) {
	base := t.TempDir()
	dirs := []string{filepath.Join(base, "ml0"), filepath.Join(base, "ml1"), filepath.Join(base, "ml2")}
	a, started := startMaster(t, filepath.Join(base, "a"), "", 3, master.JournalConfig{CommitTimeout: 3 * time.Second})
	var mls [3]*qml
	for i := range mls {
		mls[i] = startML(t, dirs[i], a.addr)
	}
	a.wait(started, 20*time.Second)
	ctx := context.Background()
	if err := create(ctx, a.store, "before"); err != nil {
		t.Fatal(err)
	}
	for _, q := range mls {
		caughtUp(t, q, a)
	}
	mls[1].stop()
	mls[2].stop()
	lost := make(chan error, 1)
	go func() { lost <- create(ctx, a.store, "lost") }()
	caughtUp(t, mls[0], a) // the entry reached metalogger 0 only

	term := a.j.Term() + 1
	for _, d := range dirs[1:] {
		st, err := metalogger.FenceOffline(d, term, "B")
		if err != nil {
			t.Fatal(err)
		}
		if st.Term != term || st.Holder != "B" {
			t.Fatalf("fence: %+v", st)
		}
	}
	if _, err := metalogger.FenceOffline(dirs[1], term-1, "A"); err == nil {
		t.Fatal("a fence with an older term was accepted")
	}
	copyLog(t, dirs[1], filepath.Join(base, "b"))
	b, bstarted := startMaster(t, filepath.Join(base, "b"), "", 3, master.JournalConfig{Term: term, Holder: "B"})
	mls[1] = startML(t, dirs[1], b.addr)
	mls[2] = startML(t, dirs[2], b.addr)
	b.wait(bstarted, 20*time.Second)
	if err := create(ctx, b.store, "after"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		if err == nil {
			t.Fatal("master A got an entry acknowledged after B was fenced in")
		}
		t.Logf("A's entry not acknowledged: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("A's create neither failed nor returned")
	}

	// A fenced metalogger refuses A, and A steps down.
	mls[1].stop()
	mls[1] = startML(t, dirs[1], a.addr)
	select {
	case <-a.j.Fenced():
		t.Logf("A stepped down: %v", a.j.Err())
	case <-time.After(10 * time.Second):
		t.Fatal("A did not step down after a metalogger refused its term")
	}
	if err := create(ctx, a.store, "after-fence"); err == nil {
		t.Fatal("A acknowledged an entry after stepping down")
	}
	mls[1].stop()
	mls[1] = startML(t, dirs[1], b.addr)

	// Metalogger 0 holds A's uncommitted entry; B cuts it.
	mls[0].stop()
	mls[0] = startML(t, dirs[0], b.addr)
	for _, q := range mls {
		caughtUp(t, q, b)
	}
	if err := create(ctx, b.store, "last"); err != nil {
		t.Fatal(err)
	}
	for _, q := range mls {
		caughtUp(t, q, b)
	}
	b.stop()
	for _, q := range mls {
		q.stop()
	}
	want := restoreDir(t, filepath.Join(base, "b"))
	for i, d := range dirs {
		got := restoreDir(t, d)
		if got["lost"] || !got["before"] || !got["after"] || !got["last"] || len(got) != len(want) {
			t.Fatalf("metalogger %d restores %v, master B has %v", i, got, want)
		}
	}
}
