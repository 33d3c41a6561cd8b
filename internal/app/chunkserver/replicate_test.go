package chunkserver_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/app/chunkserver"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/wire"
)

// replicaData is a chunk's content for replication tests: longer than
// one round of replication reads (16 MiB), not block-aligned, with a
// 3 MiB run of zeros that the copy should keep sparse.
func replicaData() []byte {
	data := randomData(5, 20<<20+777)
	clear(data[1<<20 : 4<<20])
	return data
}

// readAll reads a copy straight from its store.
func readAll(t *testing.T, st *chunkstore.Store, id uint64, v uint32) []byte {
	t.Helper()
	ci, err := st.Stat(id)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Version != v {
		t.Fatalf("copy at version %d, want %d", ci.Version, v)
	}
	b := make([]byte, ci.Length)
	if _, err := st.ReadAt(id, v, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplicate: CSReplicate makes a byte-identical, sparse copy, skipping
// a source that is down; a copy already there is Ok at once; another
// version is refused; a damaged copy is replaced.
func TestReplicate(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1"})
	src := []*member{startMember(t, reg, maddr, "src0", 0), startMember(t, reg, maddr, "src1", 0)}
	dst := startMember(t, reg, maddr, "dst", 0)
	ctx := context.Background()
	const id, v = 0x99, 2
	for _, s := range src {
		if err := reg.Command(ctx, s.addr, &wire.CSCreate{ID: id, Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	data := replicaData()
	pool := newPool(t, wire.RoleClient, "")
	chain := []string{src[0].addr, src[1].addr}
	if err := pool.Write(ctx, id, v, chain, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := pool.Sync(ctx, id, v, chain); err != nil {
		t.Fatal(err)
	}

	rep := &wire.CSReplicate{ID: id, Version: v, Sources: []string{freeAddr(t), src[0].addr}}
	if err := reg.Command(ctx, dst.addr, rep); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, dst.store, id, v), data) {
		t.Fatal("the copy differs from the source")
	}
	if c, ok := copyOf(reg, id, dst); !ok || c.Version != v {
		t.Fatalf("the master's record of the copy: %+v", c)
	}
	var fi syscall.Stat_t
	if err := syscall.Stat(chunkFile(dst.disk, id, v), &fi); err != nil {
		t.Fatal(err)
	}
	if used := fi.Blocks * 512; used > int64(len(data))-2<<20 {
		t.Errorf("the copy takes %d bytes on disk for %d of data with 3 MiB of zeros", used, len(data))
	}

	start := time.Now()
	if err := reg.Command(ctx, dst.addr, rep); err != nil {
		t.Fatalf("replicating a copy that is there: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a copy that is there took %v", d)
	}
	if err := reg.Command(ctx, dst.addr, &wire.CSReplicate{ID: id, Version: v + 1, Sources: chain}); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("replicating another version over a copy: %v", err)
	}
	if err := reg.Command(ctx, dst.addr, &wire.CSReplicate{ID: id + 1, Version: v}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("replicating from no source: %v", err)
	}

	// A damaged copy at that version is replaced by a good one.
	flipByte(t, dst.disk, id, v, 10<<20)
	if _, err := dst.store.ReadAt(id, v, make([]byte, 100), 10<<20); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("the damaged copy reads: %v", err)
	}
	if err := reg.Command(ctx, dst.addr, &wire.CSReplicate{ID: id, Version: v, Sources: chain[1:]}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, dst.store, id, v), data) {
		t.Fatal("the replaced copy differs from the source")
	}
}

// TestReplicateFailure: a source that fails mid-copy, with no other
// source, fails the replication and leaves nothing: no file, no copy at
// the master, not even after registering again. With a second source
// the copy goes on from where the first failed.
func TestReplicateFailure(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1"})
	src := []*member{startMember(t, reg, maddr, "src0", 0), startMember(t, reg, maddr, "src1", 0)}
	dst := startMember(t, reg, maddr, "dst", 0)
	ctx := context.Background()
	const id, v = 0x1234, 1
	for _, s := range src {
		if err := reg.Command(ctx, s.addr, &wire.CSCreate{ID: id, Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	data := replicaData()
	pool := newPool(t, wire.RoleClient, "")
	chain := []string{src[0].addr, src[1].addr}
	if err := pool.Write(ctx, id, v, chain, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := pool.Sync(ctx, id, v, chain); err != nil {
		t.Fatal(err)
	}
	// Past the first round of reads: the first 16 MiB are copied before
	// the damage is met.
	flipByte(t, src[0].disk, id, v, 18<<20)

	err := reg.Command(ctx, dst.addr, &wire.CSReplicate{ID: id, Version: v, Sources: chain[:1]})
	if !errors.Is(err, syscall.EBADMSG) {
		t.Fatalf("replicating from a damaged source: %v", err)
	}
	t.Logf("failed replication: %v", err)
	if _, err := dst.store.Stat(id); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("the partial copy was left: %v", err)
	}
	if c, ok := copyOf(reg, id, dst); ok {
		t.Fatalf("the master records a copy: %+v", c)
	}
	dst.restartLink(t, reg)
	if c, ok := copyOf(reg, id, dst); ok {
		t.Fatalf("the master records a copy after registering again: %+v", c)
	}

	if err := reg.Command(ctx, dst.addr, &wire.CSReplicate{ID: id, Version: v, Sources: chain}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, dst.store, id, v), data) {
		t.Fatal("the copy made from two sources differs")
	}
}

// TestReplicateConcurrent: while a replication waits on a source that
// never answers, the master's other commands are served and heartbeats
// go on; when the source times out the next one is used.
func TestReplicateConcurrent(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1"})
	src := startMember(t, reg, maddr, "src", 0)
	const timeout = 3 * time.Second
	dst := startMember(t, reg, maddr, "dst", timeout)
	ctx := context.Background()
	const id, v = 0x55, 4
	if err := reg.Command(ctx, src.addr, &wire.CSCreate{ID: id, Version: v}); err != nil {
		t.Fatal(err)
	}
	data := randomData(6, 3<<20)
	pool := newPool(t, wire.RoleClient, "")
	if err := pool.Write(ctx, id, v, []string{src.addr}, 0, data); err != nil {
		t.Fatal(err)
	}

	// A source that accepts connections and says nothing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := make(chan net.Conn, 16)
	defer func() {
		ln.Close()
		for nc := range silent {
			nc.Close()
		}
	}()
	go func() {
		defer close(silent)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case silent <- nc:
			default:
				nc.Close()
			}
		}
	}()

	start := time.Now()
	done := make(chan error, 1)
	go func() {
		done <- reg.Command(ctx, dst.addr, &wire.CSReplicate{ID: id, Version: v, Sources: []string{ln.Addr().String(), src.addr}})
	}()
	time.Sleep(100 * time.Millisecond)
	before, _ := server(reg, dst.addr)
	if err := reg.Command(ctx, dst.addr, &wire.CSCreate{ID: id + 1, Version: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a heartbeat during the replication", func() bool {
		s, _ := server(reg, dst.addr)
		return s.LastHeartbeat.After(before.LastHeartbeat)
	})
	// Both happened while the replication still waited for its source.
	select {
	case err := <-done:
		t.Fatalf("the replication ended (after %v) before the create and a heartbeat got through: %v", time.Since(start), err)
	default:
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < timeout {
		t.Errorf("the replication took %v, less than the silent source's timeout", d)
	}
	if !bytes.Equal(readAll(t, dst.store, id, v), data) {
		t.Fatal("the copy differs")
	}
}

// TestPartialCopyAtStart: a copy left under the replication's temporary
// version by a crash is deleted when the link starts, never registered.
func TestPartialCopyAtStart(t *testing.T) {
	reg, maddr := startMaster(t, master.RegistryConfig{Name: "m1"})
	disk := t.TempDir()
	st := openStore(t, disk)
	t.Cleanup(func() { st.Close() })
	const id = 0x4242
	if err := st.Create(id, 0); err != nil { // replicaVersion
		t.Fatal(err)
	}
	if err := st.Create(id+1, 1); err != nil {
		t.Fatal(err)
	}
	startCS(t, st, chunkserver.LinkConfig{Master: maddr, DataAddr: "127.0.0.1:19700", Name: "cs", StateDir: t.TempDir()})
	waitFor(t, "registration", func() bool { return registered(reg, "127.0.0.1:19700") })
	if c := reg.Copies(id); len(c) != 0 {
		t.Fatalf("the partial copy was registered: %+v", c)
	}
	if c := reg.Copies(id + 1); len(c) != 1 {
		t.Fatalf("the whole copy: %+v", c)
	}
	if _, err := st.Stat(id); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("the partial copy is still there: %v", err)
	}
	if _, err := os.Stat(chunkFile(disk, id, 0)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the partial copy's file: %v", err)
	}
}
