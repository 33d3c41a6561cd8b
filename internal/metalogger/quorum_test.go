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
		m.t.Fatalf("master did not start: %v", err)
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
	ml, err := metalogger.Open(context.Background(), metalogger.Config{
		Master: masterAddr, Dir: dir, Name: filepath.Base(dir), Timeout: 2 * time.Second,
		ReconnectDelay: 200 * time.Millisecond, Logger: testLog(t, filepath.Base(dir)),
	})
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
