package chunkserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/app/chunkserver"
	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/wire"
)

// node is a chunkserver's data side under test: a real chunk store on a
// temporary disk and a DataServer on a loopback port.
type node struct {
	addr  string
	disk  string
	store *chunkstore.Store
}

// startData serves store's data port on a free loopback port until the
// test ends.
func startData(t *testing.T, store *chunkstore.Store, cfg chunkserver.DataConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLog(t).With("side", "data "+ln.Addr().String())
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	ds := chunkserver.NewDataServer(store, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ds.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("data server: %v", err)
		}
	})
	return ln.Addr().String()
}

// newNode makes a store on a fresh disk and serves it.
func newNode(t *testing.T, cfg chunkserver.DataConfig) *node {
	t.Helper()
	disk := t.TempDir()
	st := openStore(t, disk)
	t.Cleanup(func() { st.Close() })
	return &node{addr: startData(t, st, cfg), disk: disk, store: st}
}

// newPool is a client pool closed at the end of the test.
func newPool(t *testing.T, role wire.Role, auth string) *chunkio.Pool {
	t.Helper()
	p := chunkio.NewPool(chunkio.Config{Role: role, Name: "test-" + role.String(), AuthCode: []byte(auth), Timeout: 5 * time.Second, Logger: testLog(t)})
	t.Cleanup(func() { p.Close() })
	return p
}

// randomData is n reproducible bytes.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func create(t *testing.T, id uint64, version uint32, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		if err := n.store.Create(id, version); err != nil {
			t.Fatal(err)
		}
	}
}

// chunkFile is where a store on disk keeps a chunk (chunkstore's doc).
func chunkFile(disk string, id uint64, version uint32) string {
	return filepath.Join(disk, fmt.Sprintf("%02X", id&0xff), fmt.Sprintf("chunk_%016X_%08X.mfs", id, version))
}

// flipByte damages data byte off of a chunk file behind the store's back.
func flipByte(t *testing.T, disk string, id uint64, version uint32, off int64) {
	t.Helper()
	f, err := os.OpenFile(chunkFile(disk, id, version), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, chunkstore.HeaderSize+off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, chunkstore.HeaderSize+off); err != nil {
		t.Fatal(err)
	}
}

// TestChainWriteRead: a write through a chain of three reaches every
// copy; each copy reads back the same bytes, with zeros past its data;
// the chunkservers prove AUTH_CODE to each other, and one that cannot is
// refused.
func TestChainWriteRead(t *testing.T) {
	cfg := chunkserver.DataConfig{Name: "cs", AuthCode: []byte("secret")}
	nodes := []*node{newNode(t, cfg), newNode(t, cfg), newNode(t, cfg)}
	const id, v = 0xABC, 3
	create(t, id, v, nodes...)
	chain := []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}
	pool := newPool(t, wire.RoleClient, "")
	ctx := context.Background()

	// Over two CSMaxIO requests, at an offset that aligns with nothing.
	const off = 12345
	data := randomData(1, 2*wire.CSMaxIO+54321)
	if err := pool.Write(ctx, id, v, chain, off, data); err != nil {
		t.Fatal(err)
	}
	if err := pool.Sync(ctx, id, v, chain); err != nil {
		t.Fatal(err)
	}
	want := append(make([]byte, off), data...)
	want = append(want, make([]byte, 100000)...) // past the data: zeros
	for _, n := range nodes {
		if ci, err := n.store.Stat(id); err != nil || ci.Length != off+uint32(len(data)) {
			t.Fatalf("%s: %+v, %v", n.addr, ci, err)
		}
		got := bytes.Repeat([]byte{0xEE}, len(want))
		if err := pool.Read(ctx, id, v, []string{n.addr}, 0, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read back differs", n.addr)
		}
	}

	// ReadFrom says where the copy's data ends.
	buf := make([]byte, 1<<20)
	end := uint32(off + len(data))
	n, err := pool.ReadFrom(ctx, nodes[2].addr, id, v, end-1000, buf)
	if err != nil || n != 1000 || !bytes.Equal(buf[:n], data[len(data)-1000:]) {
		t.Fatalf("ReadFrom across the end: %d, %v", n, err)
	}
	if n, err := pool.ReadFrom(ctx, nodes[2].addr, id, v, end+5, buf); err != nil || n != 0 {
		t.Fatalf("ReadFrom past the end: %d, %v", n, err)
	}

	// A chunkserver without the AUTH_CODE is refused; one with it is not.
	if err := newPool(t, wire.RoleChunkserver, "").Read(ctx, id, v, chain[:1], 0, buf); !errors.Is(err, wire.ErrRefused) {
		t.Fatalf("chunkserver without AUTH_CODE: %v", err)
	}
	if err := newPool(t, wire.RoleChunkserver, "secret").Read(ctx, id, v, chain[:1], 0, buf); err != nil {
		t.Fatalf("chunkserver with AUTH_CODE: %v", err)
	}
	if err := pool.Write(ctx, id, v, chain, chunkio.ChunkSize-10, make([]byte, 11)); err == nil {
		t.Fatal("a write past the chunk's end was accepted")
	}
}

// TestChainFailures: whichever server of a chain fails, the write fails
// naming it in ChainError.Server: the last one down, the middle one
// down, the first one down, and a full disk, which is never written
// past.
func TestChainFailures(t *testing.T) {
	a, b := newNode(t, chunkserver.DataConfig{}), newNode(t, chunkserver.DataConfig{})
	dead := freeAddr(t) // nothing listens there
	const id, v = 7, 1
	create(t, id, v, a, b)
	pool := newPool(t, wire.RoleClient, "")
	ctx := context.Background()
	data := randomData(2, 300000)

	for _, tc := range []struct {
		name  string
		chain []string
	}{
		{"last down", []string{a.addr, b.addr, dead}},
		{"middle down", []string{a.addr, dead, b.addr}},
		{"first down", []string{dead, a.addr, b.addr}},
	} {
		err := pool.Write(ctx, id, v, tc.chain, 0, data)
		var ce *chunkio.ChainError
		if !errors.As(err, &ce) || ce.Server != dead {
			t.Fatalf("%s: %v, want a ChainError naming %s", tc.name, err, dead)
		}
		t.Logf("%s: %v", tc.name, err)
		if err := pool.Sync(ctx, id, v, tc.chain); !errors.As(err, &ce) || ce.Server != dead {
			t.Fatalf("%s: sync: %v", tc.name, err)
		}
	}
	// Where the chain was reached, the copies have the data.
	got := make([]byte, len(data))
	for _, n := range []*node{a, b} {
		if err := pool.Read(ctx, id, v, []string{n.addr}, 0, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %v", n.addr, err)
		}
	}

	// A full disk at the end of the chain: ENOSPC, blamed on that server,
	// and its copy does not grow.
	fullDisk := t.TempDir()
	st := openStore(t, fullDisk)
	if err := st.Create(id, v); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err := chunkstore.Open([]chunkstore.DiskSpec{{Path: fullDisk}}, chunkstore.Options{LeaveFree: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	full := startData(t, st, chunkserver.DataConfig{})
	err = pool.Write(ctx, id, v, []string{a.addr, full}, 1<<20, data)
	var ce *chunkio.ChainError
	if !errors.As(err, &ce) || ce.Server != full || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write to a full disk: %v", err)
	}
	if ci, err := st.Stat(id); err != nil || ci.Length != 0 {
		t.Fatalf("the full copy: %+v, %v", ci, err)
	}
	// The full server first: it is chain[0] that failed.
	if err := pool.Write(ctx, id, v, []string{full, a.addr}, 1<<20, data); !errors.As(err, &ce) || ce.Server != full {
		t.Fatalf("full server first: %v", err)
	}
}

// TestWrongVersion: another version is ESTALE, a missing chunk ENOENT,
// from reads, writes and syncs, and a refused write is not forwarded.
func TestWrongVersion(t *testing.T) {
	a, b := newNode(t, chunkserver.DataConfig{}), newNode(t, chunkserver.DataConfig{})
	create(t, 5, 2, a, b)
	pool := newPool(t, wire.RoleClient, "")
	ctx := context.Background()
	buf := make([]byte, 1000)
	err := pool.Read(ctx, 5, 1, []string{a.addr}, 0, buf)
	if !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("read at another version: %v", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(a.addr)) {
		t.Fatalf("the read error does not name the server: %v", err)
	}
	if err := pool.Read(ctx, 6, 1, []string{a.addr}, 0, buf); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("read of a missing chunk: %v", err)
	}
	err = pool.Write(ctx, 5, 3, []string{a.addr, b.addr}, 0, []byte("x"))
	var ce *chunkio.ChainError
	if !errors.As(err, &ce) || ce.Server != a.addr || !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("write at another version: %v", err)
	}
	if err := pool.Sync(ctx, 5, 3, []string{a.addr}); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("sync at another version: %v", err)
	}
	if ci, _ := b.store.Stat(5); ci.Length != 0 {
		t.Fatalf("a refused write was forwarded: %+v", ci)
	}
	// The second server's version differs: it is the one blamed.
	if err := b.store.SetVersion(5, 2, 9); err != nil {
		t.Fatal(err)
	}
	err = pool.Write(ctx, 5, 2, []string{a.addr, b.addr}, 0, []byte("x"))
	if !errors.As(err, &ce) || ce.Server != b.addr || !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("write with a stale second copy: %v", err)
	}
	// All copies fail: every server is named.
	err = pool.Read(ctx, 5, 7, []string{a.addr, b.addr}, 0, buf)
	if !bytes.Contains([]byte(err.Error()), []byte(a.addr)) || !bytes.Contains([]byte(err.Error()), []byte(b.addr)) {
		t.Fatalf("read failing everywhere: %v", err)
	}
}

// member is a whole chunkserver under test: a node whose link is
// registered with a master, and whose data server reports damage
// through it.
type member struct {
	*node
	cs      *cs
	linkCfg chunkserver.LinkConfig
	reports atomic.Int32 // damage reports from the data server
}

// startMember starts a chunkserver registered with the master at maddr.
// A zero timeout is the test default.
func startMember(t *testing.T, reg *master.Registry, maddr, name string, timeout time.Duration) *member {
	t.Helper()
	disk := t.TempDir()
	st := openStore(t, disk)
	t.Cleanup(func() { st.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	m := &member{node: &node{addr: addr, disk: disk, store: st}}
	m.linkCfg = chunkserver.LinkConfig{Master: maddr, DataAddr: addr, Name: name, StateDir: t.TempDir(), Timeout: timeout}
	m.cs = startCS(t, st, m.linkCfg)
	ds := chunkserver.NewDataServer(st, chunkserver.DataConfig{
		Name: name, MetaID: m.cs.link.MetaID, Term: m.cs.link.Term, Logger: testLog(t).With("side", name+" data"),
		Damaged: func(id uint64, v uint32) { m.reports.Add(1); m.cs.link.ReportDamaged(id, v) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ds.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "registration", func() bool { return registered(reg, addr) })
	return m
}

// restartLink stops m's link and starts another on the same store and
// state, which registers again.
func (m *member) restartLink(t *testing.T, reg *master.Registry) {
	t.Helper()
	m.cs.stop()
	waitFor(t, "the server down", func() bool { s, ok := server(reg, m.addr); return ok && !s.Connected })
	m.cs = startCS(t, m.store, m.linkCfg)
	waitFor(t, "registration", func() bool { return registered(reg, m.addr) })
}

// copyOf is the master's record of m's copy of id.
func copyOf(reg *master.Registry, id uint64, m *member) (master.Copy, bool) {
	for _, c := range reg.Copies(id) {
		if c.Server == m.addr {
			return c, true
		}
	}
	return master.Copy{}, false
}

// TestDamagedBlock: a byte flipped in a chunk file makes that server
// answer EBADMSG; Read falls back to another copy and returns the right
// bytes; the damage reaches the master, reported once.
func TestDamagedBlock(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1"})
	nodes := []*member{startMember(t, reg, maddr, "cs0", 0), startMember(t, reg, maddr, "cs1", 0)}
	const id, v = 0x77, 1
	for _, n := range nodes {
		if err := reg.Command(context.Background(), n.addr, &wire.CSCreate{ID: id, Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	pool := newPool(t, wire.RoleClient, "")
	ctx := context.Background()
	chain := []string{nodes[0].addr, nodes[1].addr}
	data := randomData(3, 5<<20)
	if err := pool.Write(ctx, id, v, chain, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := pool.Sync(ctx, id, v, chain); err != nil {
		t.Fatal(err)
	}
	flipByte(t, nodes[0].disk, id, v, 3<<20+777)

	got := make([]byte, len(data))
	err := pool.Read(ctx, id, v, chain[:1], 0, got)
	if !errors.Is(err, syscall.EBADMSG) {
		t.Fatalf("read of the damaged copy: %v", err)
	}
	for range 3 {
		clear(got)
		if err := pool.Read(ctx, id, v, chain, 0, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("the fallback read returned wrong bytes")
		}
	}
	// A read that misses the damaged block is still served by the copy.
	if err := pool.Read(ctx, id, v, chain[:1], 0, got[:1<<20]); err != nil || !bytes.Equal(got[:1<<20], data[:1<<20]) {
		t.Fatalf("read of good blocks of the damaged copy: %v", err)
	}
	waitFor(t, "the damage to reach the master", func() bool { c, _ := copyOf(reg, id, nodes[0]); return c.Damaged })
	if c, ok := copyOf(reg, id, nodes[1]); !ok || c.Damaged {
		t.Fatalf("the good copy: %+v", c)
	}
	if n := nodes[0].reports.Load(); n != 1 {
		t.Fatalf("the damaged copy was reported %d times", n)
	}
}

// BenchmarkChainWrite writes whole chunks through a chain of two
// chunkservers on loopback, as a mount writing a file sequentially:
//
//	go test -run '^$' -bench ChainWrite -benchtime 16x ./internal/app/chunkserver
//
// writes 1 GiB.
func BenchmarkChainWrite(b *testing.B) {
	var nodes []*node
	for range 2 {
		disk := b.TempDir()
		st, err := chunkstore.Open([]chunkstore.DiskSpec{{Path: disk}}, chunkstore.Options{LeaveFree: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ds := chunkserver.NewDataServer(st, chunkserver.DataConfig{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ds.Serve(ctx, ln) }()
		b.Cleanup(func() { cancel(); <-done })
		nodes = append(nodes, &node{addr: ln.Addr().String(), disk: disk, store: st})
	}
	pool := chunkio.NewPool(chunkio.Config{Role: wire.RoleClient, Name: "bench"})
	defer pool.Close()
	chain := []string{nodes[0].addr, nodes[1].addr}
	data := randomData(4, chunkio.ChunkSize)
	ctx := context.Background()
	b.SetBytes(chunkio.ChunkSize)
	b.ResetTimer()
	for i := range b.N {
		id := uint64(i + 1)
		b.StopTimer()
		for _, n := range nodes {
			if err := n.store.Create(id, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := pool.Write(ctx, id, 1, chain, 0, data); err != nil {
			b.Fatal(err)
		}
	}
	if err := pool.Sync(ctx, uint64(b.N), 1, chain); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRead reads whole chunks from one chunkserver on loopback:
//
//	go test -run '^$' -bench Read -benchtime 16x ./internal/app/chunkserver
func BenchmarkRead(b *testing.B) {
	disk := b.TempDir()
	st, err := chunkstore.Open([]chunkstore.DiskSpec{{Path: disk}}, chunkstore.Options{LeaveFree: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ds := chunkserver.NewDataServer(st, chunkserver.DataConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ds.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	data := randomData(7, chunkio.ChunkSize)
	const chunks = 4
	for id := range uint64(chunks) {
		if err := st.Create(id, 1); err != nil {
			b.Fatal(err)
		}
		if err := st.WriteAt(id, 1, data, 0); err != nil {
			b.Fatal(err)
		}
	}
	pool := chunkio.NewPool(chunkio.Config{Role: wire.RoleClient, Name: "bench"})
	defer pool.Close()
	buf := make([]byte, chunkio.ChunkSize)
	servers := []string{ln.Addr().String()}
	b.SetBytes(chunkio.ChunkSize)
	b.ResetTimer()
	for i := range b.N {
		if err := pool.Read(ctx, uint64(i%chunks), 1, servers, 0, buf); err != nil {
			b.Fatal(err)
		}
	}
}
