package master_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/app/chunkserver"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/exports"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metastore"
	"github.com/carpfs/carpfs/internal/wire"
)

// This file is the harness of the data-path tests: a master (metadata
// store, client link, chunkserver registry, optionally the replication
// loop) and real chunkservers on loopback, each a chunk store in a
// temporary directory.
//
// A chunkserver is the real one's parts wired as mfschunkserver wires
// them: its master link (chunkserver.NewLink) and its data port
// (chunkserver.NewDataServer) over one chunk store, which the test can
// read while it runs.

// logFor shows the master's and chunkservers' logs with -v.
func logFor(t *testing.T, side string) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", side)
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// dataCluster is a master with its chunkserver port.
type dataCluster struct {
	t      *testing.T
	addr   string // client port
	csAddr string // chunkserver port
	store  *metastore.Store
	reg    *master.Registry
	srv    *master.Server
	rep    *master.Replicator // nil unless started
}

type dataOpts struct {
	lease time.Duration
	rep   *master.ReplicatorConfig // nil: no replication loop
}

func startData(t *testing.T, o dataOpts) *dataCluster {
	t.Helper()
	st, err := metastore.Open(context.Background(), metastore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := master.NewRegistry(master.RegistryConfig{Name: "m1", MetaID: st.MetaID(), Logger: logFor(t, "registry")})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := master.New(master.Config{Store: st, Name: "m1", Chunks: reg, LeaseTime: o.lease, Logger: logFor(t, "master")})
	if err != nil {
		t.Fatal(err)
	}
	c := &dataCluster{t: t, store: st, reg: reg, srv: srv}
	if o.rep != nil {
		if c.rep, err = master.NewReplicator(srv, *o.rep); err != nil {
			t.Fatal(err)
		}
	}
	ln := listen(t)
	csln := listen(t)
	c.addr, c.csAddr = ln.Addr().String(), csln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() { errs <- srv.Serve(ctx, ln) })
	wg.Go(func() { errs <- reg.Serve(ctx, csln) })
	if c.rep != nil {
		wg.Go(func() { errs <- c.rep.Run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("master: %v", err)
			}
		}
		if err := st.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	return c
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (c *dataCluster) dial(t *testing.T) *client.Client {
	t.Helper()
	cl, err := client.Dial(testCtx(t), c.addr, client.Config{Name: "t", Info: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Drop)
	return cl
}

// chunkRef reads a file's chunk at index from the metadata.
func (c *dataCluster) chunkRef(ino, index uint32) meta.ChunkRef {
	var ref meta.ChunkRef
	c.store.Read(func(s *meta.State) {
		refs, _ := s.FileChunks(ino)
		if int(index) < len(refs) {
			ref = refs[index]
		}
	})
	return ref
}

// copies lists the registry's copies of id as "server@version" (with
// "!" for damaged ones), sorted.
func (c *dataCluster) copies(id uint64) []string {
	var out []string
	for _, cp := range c.reg.Copies(id) {
		s := fmt.Sprintf("%s@%d", cp.Server, cp.Version)
		if cp.Damaged {
			s += "!"
		}
		out = append(out, s)
	}
	return out
}

// testCS is a chunkserver under test.
type testCS struct {
	t     *testing.T
	c     *dataCluster
	name  string
	disk  string
	state string
	addr  string // data address

	mu     sync.Mutex
	store  *chunkstore.Store // while running
	cancel context.CancelFunc
	done   chan error
}

// addCS starts a chunkserver and waits for its registration.
func (c *dataCluster) addCS(t *testing.T, name string) *testCS {
	t.Helper()
	cs := &testCS{t: t, c: c, name: name, disk: t.TempDir(), state: t.TempDir()}
	cs.start()
	t.Cleanup(cs.stop)
	return cs
}

// start runs the chunkserver and waits until it is registered. It
// listens on the data address it had before, if any.
func (cs *testCS) start() {
	t := cs.t
	t.Helper()
	addr := cs.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cs.addr = ln.Addr().String()
	log := logFor(t, cs.name)
	store := openStore(t, cs.disk)
	link, err := chunkserver.NewLink(store, chunkserver.LinkConfig{
		Master: cs.c.csAddr, DataAddr: cs.addr, Name: cs.name,
		StateDir: cs.state, Timeout: 5 * time.Second, Heartbeat: 50 * time.Millisecond,
		ReconnectDelay: 200 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	data := chunkserver.NewDataServer(store, chunkserver.DataConfig{
		Name: cs.name, MetaID: link.MetaID, Term: link.Term, Damaged: link.ReportDamaged, Logger: log,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		dataDone := make(chan error, 1)
		go func() { dataDone <- data.Serve(ctx, ln) }()
		err := link.Run(ctx)
		cancel()
		err = errors.Join(err, <-dataDone)
		cs.mu.Lock()
		cs.store = nil
		cs.mu.Unlock()
		done <- errors.Join(err, store.Close())
	}()
	cs.mu.Lock()
	cs.store, cs.cancel, cs.done = store, cancel, done
	cs.mu.Unlock()
	waitUntil(t, cs.name+" registered", func() bool { return cs.registered() })
}

func (cs *testCS) registered() bool {
	for _, s := range cs.c.reg.Servers() {
		if s.Addr == cs.addr {
			return s.Registered && s.Connected
		}
	}
	return false
}

// stop ends the chunkserver; the master sees its connection end.
func (cs *testCS) stop() {
	cs.mu.Lock()
	cancel, done := cs.cancel, cs.done
	cs.cancel = nil
	cs.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		cs.t.Errorf("chunkserver %s: %v", cs.name, err)
	}
}

func openStore(t *testing.T, disk string) *chunkstore.Store {
	t.Helper()
	st, err := chunkstore.Open([]chunkstore.DiskSpec{{Path: disk}}, chunkstore.Options{LeaveFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// withStore runs f on the chunkserver's store: the live one while it
// runs, else its disk opened for f.
func (cs *testCS) withStore(f func(*chunkstore.Store)) {
	cs.t.Helper()
	cs.mu.Lock()
	st := cs.store
	cs.mu.Unlock()
	if st != nil {
		f(st)
		return
	}
	st = openStore(cs.t, cs.disk)
	defer st.Close()
	f(st)
}

// chunk returns the chunkserver's copy of id, if it has one.
func (cs *testCS) chunk(id uint64) (chunkstore.ChunkInfo, bool) {
	var ci chunkstore.ChunkInfo
	var err error
	cs.withStore(func(st *chunkstore.Store) { ci, err = st.Stat(id) })
	return ci, err == nil
}

// corruptHeader damages the header of the stopped chunkserver's copy of
// id, so the store reports the copy damaged when it opens.
func (cs *testCS) corruptHeader(id uint64) {
	t := cs.t
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(cs.disk, "*", fmt.Sprintf("chunk_%016X_*.mfs", id)))
	if len(files) != 1 {
		t.Fatalf("%s: chunk files of %016X: %v", cs.name, id, files)
	}
	f, err := os.OpenFile(files[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("garbage!"), 16); err != nil {
		t.Fatal(err)
	}
}

// writeChunk takes the lease on chunk index of ino, then ends it with
// the given length.
func writeChunk(t *testing.T, cl *client.Client, ino, index uint32, length uint64) wire.ChunkInfo {
	t.Helper()
	ctx := testCtx(t)
	ci, err := cl.ChunkWrite(ctx, user, ino, index)
	if err != nil {
		t.Fatalf("chunk write %d/%d: %v", ino, index, err)
	}
	if err := cl.ChunkWriteEnd(ctx, user, ino, ci.ID, length, nil); err != nil {
		t.Fatalf("chunk write end %d/%d: %v", ino, index, err)
	}
	return ci
}

// newFile creates a file with the given goal in the root.
func newFile(t *testing.T, cl *client.Client, name string, goal uint8) uint32 {
	t.Helper()
	ctx := testCtx(t)
	a := must[wire.Attr](t, "create "+name)(cl.Create(ctx, user, 1, name, client.TypeFile, 0o644, 0, false))
	if goal != 0 {
		must[wire.Attr](t, "setgoal")(cl.SetGoal(ctx, user, a.Inode, goal))
	}
	return a.Inode
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustExports(t *testing.T, text string) *exports.Table {
	t.Helper()
	tab, err := exports.Parse(strings.NewReader(text), "mfsexports.cfg")
	if err != nil {
		t.Fatal(err)
	}
	return tab
}
