package master_test

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/wire"
)

// startRegistry serves a chunkserver registry on loopback.
func startRegistry(t *testing.T, cfg master.RegistryConfig) (*master.Registry, string) {
	t.Helper()
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
			t.Errorf("serve: %v", err)
		}
	})
	return reg, ln.Addr().String()
}

// rawCS dials the registry as a chunkserver speaking the wire protocol
// by hand, to play chunkservers that misbehave.
func rawCS(t *testing.T, addr string, handler wire.Handler) *wire.Mux {
	t.Helper()
	ctx := testCtx(t)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{Role: wire.RoleChunkserver, Name: "raw"})
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	m := wire.NewMux(conn, wire.MuxConfig{Handler: handler})
	t.Cleanup(func() { m.Close() })
	return m
}

func call(t *testing.T, m *wire.Mux, req wire.Message) error {
	t.Helper()
	return m.CallInto(testCtx(t), req, &wire.Ok{})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRegistryIncompleteRegistration: pages that do not add up to the
// announced count are refused, and nothing of them is kept.
func TestRegistryIncompleteRegistration(t *testing.T) {
	reg, addr := startRegistry(t, master.RegistryConfig{})
	m := rawCS(t, addr, nil)
	if err := call(t, m, &wire.CSRegisterChunks{Chunks: []wire.CSChunk{{ID: 1, Version: 1}}}); !errors.Is(err, syscall.EPROTO) {
		t.Fatalf("page before CSRegister: %v", err)
	}
	if err := call(t, m, &wire.CSRegister{Addr: ":9422", ChunkCount: 3}); err != nil {
		t.Fatal(err)
	}
	if err := call(t, m, &wire.CSRegisterChunks{Chunks: []wire.CSChunk{{ID: 1, Version: 1}, {ID: 2, Version: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := call(t, m, &wire.CSRegisterDone{}); !errors.Is(err, syscall.EPROTO) {
		t.Fatalf("short registration: %v", err)
	}
	if len(reg.Servers()) != 0 || len(reg.Copies(1)) != 0 {
		t.Fatalf("a cut registration was kept: %+v", reg.Servers())
	}
	// Starting over works, and the unspecified host is the peer's.
	if err := call(t, m, &wire.CSRegister{Addr: "0.0.0.0:9422", ChunkCount: 1}); err != nil {
		t.Fatal(err)
	}
	if err := call(t, m, &wire.CSRegisterChunks{Chunks: []wire.CSChunk{{ID: 1, Version: 4, Damaged: true}}}); err != nil {
		t.Fatal(err)
	}
	if err := call(t, m, &wire.CSRegisterDone{}); err != nil {
		t.Fatal(err)
	}
	got := reg.Copies(1)
	if len(got) != 1 || got[0] != (master.Copy{Server: "127.0.0.1:9422", Version: 4, Damaged: true}) {
		t.Fatalf("copies = %+v", got)
	}
	if s := reg.Servers(); len(s) != 1 || s[0].Damaged != 1 || s[0].Name != "raw" {
		t.Fatalf("servers = %+v", s)
	}
}

// TestRegistryHeartbeatTimeout: a chunkserver that stops heartbeating
// is marked down and its copies forgotten, even though its TCP
// connection is still open.
func TestRegistryHeartbeatTimeout(t *testing.T) {
	reg, addr := startRegistry(t, master.RegistryConfig{HeartbeatTimeout: 200 * time.Millisecond})
	m := rawCS(t, addr, nil)
	mute := rawCS(t, addr, nil) // never registers
	for _, req := range []wire.Message{
		&wire.CSRegister{Addr: "10.0.0.1:9422", ChunkCount: 1},
		&wire.CSRegisterChunks{Chunks: []wire.CSChunk{{ID: 5, Version: 2}}},
		&wire.CSRegisterDone{},
	} {
		if err := call(t, m, req); err != nil {
			t.Fatal(err)
		}
	}
	// Heartbeats keep it up past the timeout.
	for range 6 {
		time.Sleep(60 * time.Millisecond)
		if err := call(t, m, &wire.CSHeartbeat{Total: 100, Used: 40, Free: 60, Chunks: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if s := reg.Servers(); len(s) != 1 || !s[0].Connected || s[0].Free != 60 || len(reg.Copies(5)) != 1 {
		t.Fatalf("a heartbeating server: %+v", s)
	}
	// A damage report marks the copy, a loss report drops it.
	if err := call(t, m, &wire.CSChunkDamaged{ID: 5, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if c := reg.Copies(5); len(c) != 1 || !c[0].Damaged {
		t.Fatalf("after a damage report: %+v", c)
	}
	// Silence.
	waitUntil(t, "the server marked down", func() bool {
		s := reg.Servers()
		return len(s) == 1 && !s[0].Connected
	})
	if c := reg.Copies(5); len(c) != 0 {
		t.Fatalf("copies of a down server: %+v", c)
	}
	for _, c := range []*wire.Mux{m, mute} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the master kept a silent connection")
		}
	}
}

// TestRegistryReconnect: a chunkserver that registers again on a new
// connection replaces its old one, whose copies do not linger.
func TestRegistryReconnect(t *testing.T) {
	reg, addr := startRegistry(t, master.RegistryConfig{})
	register := func(m *wire.Mux, ids ...uint64) {
		t.Helper()
		var page []wire.CSChunk
		for _, id := range ids {
			page = append(page, wire.CSChunk{ID: id, Version: 1})
		}
		for _, req := range []wire.Message{
			&wire.CSRegister{Addr: "10.0.0.2:9422", ChunkCount: uint64(len(ids))},
			&wire.CSRegisterChunks{Chunks: page},
			&wire.CSRegisterDone{},
		} {
			if err := call(t, m, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := make(chan wire.Message, 10)
	m1 := rawCS(t, addr, nil)
	register(m1, 1, 2)
	m2 := rawCS(t, addr, func(ctx context.Context, f wire.Frame) (wire.Message, error) {
		msg, err := wire.Decode(f)
		got <- msg
		return &wire.Ok{}, err
	})
	register(m2, 2, 3)
	if len(reg.Copies(1)) != 0 || len(reg.Copies(2)) != 1 || len(reg.Copies(3)) != 1 {
		t.Fatalf("copies after re-registering: %v %v %v", reg.Copies(1), reg.Copies(2), reg.Copies(3))
	}
	select {
	case <-m1.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the old connection was kept")
	}
	if s := reg.Servers(); len(s) != 1 || !s[0].Connected {
		t.Fatalf("servers = %+v", s)
	}
	if err := reg.Command(testCtx(t), "10.0.0.2:9422", &wire.CSCreate{ID: 4, Version: 1}); err != nil {
		t.Fatal(err)
	}
	if msg := <-got; *msg.(*wire.CSCreate) != (wire.CSCreate{ID: 4, Version: 1}) || len(got) != 0 || len(reg.Copies(4)) != 1 {
		t.Fatalf("the new connection got %v; copies %v", msg, reg.Copies(4))
	}
}
