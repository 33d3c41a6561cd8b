package chunkserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/app/chunkserver"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metastore"
	"github.com/carpfs/carpfs/internal/wire"
)

// testLog shows the daemons' logs with -v.
func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startMaster serves a chunkserver registry on a loopback port.
func startMaster(t *testing.T, cfg master.RegistryConfig) (*master.Registry, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLog(t).With("side", "master")
	}
	reg, err := master.NewRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry serve: %v", err)
		}
	})
	return reg, ln.Addr().String()
}

// cs is a chunkserver under test: a real chunk store and a link.
type cs struct {
	store  *chunkstore.Store
	link   *chunkserver.Link
	disk   string
	state  string
	cancel context.CancelFunc
	done   chan error
}

// openStore opens a chunk store on disk with no reserve, so tmpfs
// space does not matter.
func openStore(t *testing.T, disk string) *chunkstore.Store {
	t.Helper()
	st, err := chunkstore.Open([]chunkstore.DiskSpec{{Path: disk}}, chunkstore.Options{LeaveFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// startCS runs a link for a store on disk with its state in stateDir.
func startCS(t *testing.T, store *chunkstore.Store, cfg chunkserver.LinkConfig) *cs {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 50 * time.Millisecond
	}
	if cfg.ReconnectDelay == 0 {
		cfg.ReconnectDelay = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = testLog(t).With("side", cfg.Name)
	}
	l, err := chunkserver.NewLink(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &cs{store: store, link: l, state: cfg.StateDir, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- l.Run(ctx) }()
	t.Cleanup(c.stop)
	return c
}

// stop ends the link (the connection closes) and waits for it.
func (c *cs) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.cancel = nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func server(reg *master.Registry, addr string) (master.ServerInfo, bool) {
	for _, s := range reg.Servers() {
		if s.Addr == addr {
			return s, true
		}
	}
	return master.ServerInfo{}, false
}

func registered(reg *master.Registry, addr string) bool {
	s, ok := server(reg, addr)
	return ok && s.Registered && s.Connected
}

// TestRegisterHeartbeatDown: three chunkservers register, one with
// enough chunks to need several pages; every copy arrives; heartbeats
// refresh the figures; a stopped chunkserver is marked down and its
// copies forgotten.
func TestRegisterHeartbeatDown(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1", AuthCode: []byte("secret"), Term: func() uint64 { return 2 }})
	const many = 2*wire.CSRegisterPage + 123
	var servers []*cs
	for i := range 3 {
		st := openStore(t, t.TempDir())
		t.Cleanup(func() { st.Close() })
		n := 3
		if i == 1 {
			n = many
		}
		for id := range uint64(n) {
			if err := st.Create(id+1, uint32(i+1)); err != nil {
				t.Fatal(err)
			}
		}
		servers = append(servers, startCS(t, st, chunkserver.LinkConfig{
			Master: maddr, DataAddr: fmt.Sprintf("127.0.0.1:%d", 19000+i), Name: fmt.Sprintf("cs%d", i),
			DataCenter: "dc1", Rack: fmt.Sprintf("r%d", i), AuthCode: []byte("secret"), StateDir: t.TempDir(),
		}))
	}
	for i := range 3 {
		waitFor(t, "registration", func() bool { return registered(reg, fmt.Sprintf("127.0.0.1:%d", 19000+i)) })
	}
	s1, _ := server(reg, "127.0.0.1:19001")
	if s1.Chunks != many || s1.Rack != "r1" || s1.DataCenter != "dc1" || s1.Name != "cs1" || s1.Total == 0 || s1.Free == 0 {
		t.Fatalf("server 1 = %+v", s1)
	}
	if got := reg.Copies(1); len(got) != 3 || got[0].Version != 1 || got[2].Version != 3 {
		t.Fatalf("copies of chunk 1 = %+v", got)
	}
	for _, id := range []uint64{4, wire.CSRegisterPage, wire.CSRegisterPage + 1, many} {
		if got := reg.Copies(id); len(got) != 1 || got[0].Server != "127.0.0.1:19001" || got[0].Version != 2 {
			t.Fatalf("copies of chunk %d = %+v", id, got)
		}
	}
	if got := reg.Copies(many + 1); len(got) != 0 {
		t.Fatalf("copies of an unknown chunk = %+v", got)
	}

	// A chunk created behind the master's back shows in the next
	// heartbeat's count.
	before, _ := server(reg, "127.0.0.1:19000")
	if err := servers[0].store.Create(500, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a heartbeat with the new count", func() bool {
		s, _ := server(reg, "127.0.0.1:19000")
		return s.Chunks == 4 && s.LastHeartbeat.After(before.LastHeartbeat)
	})

	servers[1].stop()
	waitFor(t, "server 1 down", func() bool {
		s, ok := server(reg, "127.0.0.1:19001")
		return ok && !s.Connected
	})
	if got := reg.Copies(4); len(got) != 0 {
		t.Fatalf("copies of a down server's chunk = %+v", got)
	}
	if got := reg.Copies(1); len(got) != 2 {
		t.Fatalf("copies of chunk 1 after server 1 left = %+v", got)
	}
	err := reg.Command(context.Background(), "127.0.0.1:19001", &wire.CSCreate{ID: 9, Version: 1})
	if !errors.Is(err, master.ErrNoServer) {
		t.Fatalf("command to a down server: %v", err)
	}
}

// TestCommands: the master's commands change the chunkserver's store and
// the registry's view; refusals carry their errno.
func TestCommands(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1"})
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	startCS(t, st, chunkserver.LinkConfig{Master: maddr, DataAddr: ":19100", Name: "cs", StateDir: t.TempDir()})
	// An empty host is the address the connection comes from.
	const addr = "127.0.0.1:19100"
	waitFor(t, "registration", func() bool { return registered(reg, addr) })
	ctx := context.Background()
	do := func(cmd wire.Message) error { return reg.Command(ctx, addr, cmd) }

	if err := do(&wire.CSCreate{ID: 7, Version: 1}); err != nil {
		t.Fatal(err)
	}
	if ci, err := st.Stat(7); err != nil || ci.Version != 1 {
		t.Fatalf("after create: %+v, %v", ci, err)
	}
	if err := do(&wire.CSCreate{ID: 7, Version: 1}); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second create: %v", err)
	}
	if err := do(&wire.CSSetVersion{ID: 7, Old: 1, New: 2}); err != nil {
		t.Fatal(err)
	}
	if err := do(&wire.CSSetVersion{ID: 7, Old: 1, New: 3}); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("set version from a wrong one: %v", err)
	}
	if err := do(&wire.CSTruncate{ID: 7, Version: 2, Length: 100000}); err != nil {
		t.Fatal(err)
	}
	if ci, err := st.Stat(7); err != nil || ci.Version != 2 || ci.Length != 100000 {
		t.Fatalf("after set version and truncate: %+v, %v", ci, err)
	}
	if got := reg.Copies(7); len(got) != 1 || got[0].Version != 2 || got[0].Length != 100000 || got[0].Server != addr {
		t.Fatalf("registry's copies = %+v", got)
	}
	if err := do(&wire.CSTruncate{ID: 7, Version: 2, Length: 1 << 30}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("truncate past the chunk size: %v", err)
	}
	if err := do(&wire.CSDelete{ID: 7, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(7); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if got := reg.Copies(7); len(got) != 0 {
		t.Fatalf("registry's copies after delete = %+v", got)
	}
	if err := do(&wire.CSDelete{ID: 7, Version: 2}); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("delete of a missing chunk: %v", err)
	}
	if err := do(&wire.Ping{}); err == nil {
		t.Fatal("Command accepted a Ping")
	}
}

// TestAuthCode: a wrong or missing AUTH_CODE is refused, with the reason
// on the chunkserver's side, and nothing registers.
func TestAuthCode(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1", AuthCode: []byte("right")})
	for _, tc := range []struct {
		code string
		want wire.RefuseCode
	}{{"wrong", wire.RefuseAuthFailed}, {"", wire.RefuseAuthMissing}} {
		st := openStore(t, t.TempDir())
		c := startCS(t, st, chunkserver.LinkConfig{Master: maddr, DataAddr: "127.0.0.1:19200", Name: "cs", AuthCode: []byte(tc.code), StateDir: t.TempDir()})
		var re *wire.RefusedError
		waitFor(t, "a refusal", func() bool { return errors.As(c.link.LastErr(), &re) })
		if re.Code != tc.want {
			t.Fatalf("AUTH_CODE %q: refused with %v, want %v", tc.code, c.link.LastErr(), tc.want)
		}
		t.Logf("AUTH_CODE %q: %v", tc.code, c.link.LastErr())
		c.stop()
		st.Close()
	}
	if s := reg.Servers(); len(s) != 0 {
		t.Fatalf("servers after refusals: %+v", s)
	}
}

// TestTermPersisted: a chunkserver that saw term 5 refuses a master at
// term 3 after a restart, because the term is on disk.
func TestTermPersisted(t *testing.T) {
	disk, stateDir := t.TempDir(), t.TempDir()
	reg5, addr5 := startMaster(t, master.RegistryConfig{Name: "new", MetaID: 0xaa, Term: func() uint64 { return 5 }})
	st := openStore(t, disk)
	c := startCS(t, st, chunkserver.LinkConfig{Master: addr5, DataAddr: "127.0.0.1:19300", Name: "cs", StateDir: stateDir})
	waitFor(t, "registration at term 5", func() bool { return registered(reg5, "127.0.0.1:19300") })
	if c.link.Term() != 5 {
		t.Fatalf("term after registering = %d", c.link.Term())
	}
	c.stop()
	st.Close()

	// "Restart": a new store and link on the same disk and state.
	reg3, addr3 := startMaster(t, master.RegistryConfig{Name: "old", MetaID: 0xaa, Term: func() uint64 { return 3 }})
	st = openStore(t, disk)
	t.Cleanup(func() { st.Close() })
	c = startCS(t, st, chunkserver.LinkConfig{Master: addr3, DataAddr: "127.0.0.1:19300", Name: "cs", StateDir: stateDir})
	var re *wire.RefusedError
	waitFor(t, "a refusal", func() bool { return errors.As(c.link.LastErr(), &re) })
	if re.Code != wire.RefuseTerm {
		t.Fatalf("refused with %v, want a term refusal", c.link.LastErr())
	}
	if s := reg3.Servers(); len(s) != 0 {
		t.Fatalf("the stale master registered %+v", s)
	}
	c.stop()

	// A master of another file system is refused as well.
	regX, addrX := startMaster(t, master.RegistryConfig{Name: "other", MetaID: 0xbb, Term: func() uint64 { return 9 }})
	c = startCS(t, st, chunkserver.LinkConfig{Master: addrX, DataAddr: "127.0.0.1:19300", Name: "cs", StateDir: stateDir})
	waitFor(t, "a refusal", func() bool { return errors.As(c.link.LastErr(), &re) })
	if re.Code != wire.RefuseMetaID || len(regX.Servers()) != 0 {
		t.Fatalf("other file system: %v, servers %+v", c.link.LastErr(), regX.Servers())
	}

	// A damaged state file is an error, not a fresh start.
	c.stop()
	path := filepath.Join(stateDir, chunkserver.StateFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-5] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := chunkserver.NewLink(st, chunkserver.LinkConfig{Master: addr3, StateDir: stateDir}); err == nil {
		t.Fatal("a damaged state file was accepted")
	}
}

// TestStaleCopies: against metadata where a chunk is at version 2, a
// registered copy at version 1 is stale, and a chunk the metadata does
// not know is an orphan.
func TestStaleCopies(t *testing.T) {
	ctx := context.Background()
	ms, err := metastore.Open(ctx, metastore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	do := func(op meta.Op) meta.Result {
		t.Helper()
		res, err := ms.Do(ctx, op)
		if err != nil || !res.Ok() {
			t.Fatalf("%T: %v %v", op, res, err)
		}
		return res
	}
	ino := uint32(do(&meta.Create{Parent: 1, Name: "f", Type: meta.TypeFile, Mode: 0o644}).Val[0])
	chunk := do(&meta.Write{Inode: ino}).Val[0]
	do(&meta.Unlock{Chunk: chunk})
	if v := do(&meta.Write{Inode: ino}).Val[1]; v != 2 {
		t.Fatalf("second write gave version %d", v)
	}
	versions := func() (v map[uint64]uint32, err error) {
		ms.Read(func(s *meta.State) { v, err = master.ChunkVersions(s) })
		return v, err
	}
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1", MetaID: ms.MetaID(), Versions: versions})

	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	for _, c := range []struct {
		id uint64
		v  uint32
	}{{chunk, 1}, {999, 1}} {
		if err := st.Create(c.id, c.v); err != nil {
			t.Fatal(err)
		}
	}
	st2 := openStore(t, t.TempDir())
	t.Cleanup(func() { st2.Close() })
	if err := st2.Create(chunk, 2); err != nil {
		t.Fatal(err)
	}
	startCS(t, st, chunkserver.LinkConfig{Master: maddr, DataAddr: "127.0.0.1:19400", Name: "old", StateDir: t.TempDir()})
	startCS(t, st2, chunkserver.LinkConfig{Master: maddr, DataAddr: "127.0.0.1:19401", Name: "new", StateDir: t.TempDir()})
	waitFor(t, "registration", func() bool { return registered(reg, "127.0.0.1:19400") && registered(reg, "127.0.0.1:19401") })

	v, err := versions()
	if err != nil || v[chunk] != 2 || len(v) != 1 {
		t.Fatalf("ChunkVersions = %v, %v", v, err)
	}
	rep := reg.Check(v)
	want := master.Finding{Chunk: chunk, Server: "127.0.0.1:19400", Have: 1, Want: 2}
	if len(rep.Stale) != 1 || rep.Stale[0] != want {
		t.Fatalf("stale = %+v, want %+v", rep.Stale, want)
	}
	if len(rep.Orphans) != 1 || rep.Orphans[0].Chunk != 999 || len(rep.Newer) != 0 {
		t.Fatalf("report = %+v", rep)
	}
}

// TestScrubReportsDamage: a block corrupted on disk is found by the
// background scrub and reported; the master marks the copy damaged.
func TestScrubReportsDamage(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1"})
	disk := t.TempDir()
	st := openStore(t, disk)
	t.Cleanup(func() { st.Close() })
	const id = 0x1234
	if err := st.Create(id, 3); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteAt(id, 3, make([]byte, 100000), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(id); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(disk, "34", fmt.Sprintf("chunk_%016X_%08X.mfs", id, 3)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 8192+70000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	startCS(t, st, chunkserver.LinkConfig{Master: maddr, DataAddr: "127.0.0.1:19500", Name: "cs", StateDir: t.TempDir(),
		ScrubRate: 100 << 20, ScrubPause: 50 * time.Millisecond})
	waitFor(t, "the damage to reach the master", func() bool {
		c := reg.Copies(id)
		return len(c) == 1 && c[0].Damaged
	})
}

// TestReconnect: when the master goes away and another comes up at the
// same address (a failover), the chunkserver registers with it.
func TestReconnect(t *testing.T) {
	serve := func(addr string, term uint64) (*master.Registry, func()) {
		reg, err := master.NewRegistry(master.RegistryConfig{Name: "m", Term: func() uint64 { return term }, Logger: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		var ln net.Listener
		waitFor(t, "the port", func() bool { ln, err = net.Listen("tcp", addr); return err == nil })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- reg.Serve(ctx, ln) }()
		stop := func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		return reg, stop
	}
	addr := freeAddr(t)
	reg1, stop1 := serve(addr, 1)
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	if err := st.Create(42, 1); err != nil {
		t.Fatal(err)
	}
	c := startCS(t, st, chunkserver.LinkConfig{Master: addr, DataAddr: "127.0.0.1:19600", Name: "cs", StateDir: t.TempDir()})
	waitFor(t, "registration with the first master", func() bool { return registered(reg1, "127.0.0.1:19600") })
	stop1()
	reg2, stop2 := serve(addr, 2)
	defer stop2()
	waitFor(t, "registration with the second master", func() bool { return registered(reg2, "127.0.0.1:19600") })
	if len(reg2.Copies(42)) != 1 || c.link.Term() != 2 {
		t.Fatalf("copies %v, term %d", reg2.Copies(42), c.link.Term())
	}
}
