package chunkio_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/app/chunkserver"
	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/wire"
)

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serve runs a real chunkserver data port for store on ln; the returned
// func stops it and waits.
func serve(t *testing.T, store *chunkstore.Store, ln net.Listener, timeout time.Duration) (stop func()) {
	t.Helper()
	ds := chunkserver.NewDataServer(store, chunkserver.DataConfig{Name: "cs", Timeout: timeout, Logger: testLog(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ds.Serve(ctx, ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("data server: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func openStore(t *testing.T) *chunkstore.Store {
	t.Helper()
	st, err := chunkstore.Open([]chunkstore.DiskSpec{{Path: t.TempDir()}}, chunkstore.Options{LeaveFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedial: a server that restarts at the same address is reached
// again by the same Pool; a closed Pool refuses calls.
func TestRedial(t *testing.T) {
	st := openStore(t)
	if err := st.Create(1, 1); err != nil {
		t.Fatal(err)
	}
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	stop := serve(t, st, ln, 0)
	p := chunkio.NewPool(chunkio.Config{Role: wire.RoleClient, Name: "t", Timeout: 5 * time.Second, Logger: testLog(t)})
	defer p.Close()
	ctx := context.Background()
	if err := p.Write(ctx, 1, 1, []string{addr}, 0, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	stop()
	buf := make([]byte, 5)
	if err := p.Read(ctx, 1, 1, []string{addr}, 0, buf); err == nil {
		t.Fatal("read from a stopped server")
	}
	serve(t, st, listen(t, addr), 0)
	// Both connections of the pool were lost; each is dialled again.
	for range 4 {
		if err := p.Read(ctx, 1, 1, []string{addr}, 0, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("read after the restart: %q, %v", buf, err)
		}
	}
	p.Close()
	if err := p.Read(ctx, 1, 1, []string{addr}, 0, buf); !errors.Is(err, chunkio.ErrClosed) {
		t.Fatalf("read on a closed pool: %v", err)
	}
}

// TestSilentTail: the last server of a chain accepts connections and
// never answers. Each server up the chain waits longer than the one
// below it, so the one that gives up on the silent server names it, and
// the client gets that answer instead of timing out on the first.
func TestSilentTail(t *testing.T) {
	const timeout = 400 * time.Millisecond
	var chain []string
	for range 2 {
		st := openStore(t)
		if err := st.Create(9, 1); err != nil {
			t.Fatal(err)
		}
		ln := listen(t, "127.0.0.1:0")
		serve(t, st, ln, timeout)
		chain = append(chain, ln.Addr().String())
	}
	silent := listen(t, "127.0.0.1:0")
	defer silent.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			nc, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, nc)
		}
	}()
	chain = append(chain, silent.Addr().String())
	p := chunkio.NewPool(chunkio.Config{Role: wire.RoleClient, Name: "t", Timeout: timeout, Logger: testLog(t)})
	defer p.Close()
	err := p.Write(context.Background(), 9, 1, chain, 0, []byte("data"))
	var ce *chunkio.ChainError
	if !errors.As(err, &ce) || ce.Server != chain[2] {
		t.Fatalf("write with a silent tail: %v, want %s blamed", err, chain[2])
	}
}

// TestBlameChecked: a server may only blame a server of the chain it
// was given; a message naming another blames the server itself. The
// peer here is a bare protocol server, since a real chunkserver never
// sends such a message.
func TestBlameChecked(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	defer ln.Close()
	blame := make(chan string, 1)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				conn, err := wire.ServerHandshake(context.Background(), nc, wire.ServerConfig{Role: wire.RoleChunkserver})
				if err != nil {
					return
				}
				_ = wire.Serve(context.Background(), conn, wire.MuxConfig{Handler: func(context.Context, wire.Frame) (wire.Message, error) {
					return nil, chunkio.Blame(<-blame, syscall.ENOSPC)
				}})
			}()
		}
	}()
	p := chunkio.NewPool(chunkio.Config{Role: wire.RoleClient, Name: "t", Timeout: 5 * time.Second, Logger: testLog(t)})
	defer p.Close()
	chain := []string{ln.Addr().String(), "192.0.2.1:9422"}
	for _, tc := range []struct{ named, want string }{
		{chain[1], chain[1]},
		{"192.0.2.99:9422", chain[0]},
	} {
		blame <- tc.named
		err := p.Write(context.Background(), 1, 1, chain, 0, []byte("x"))
		var ce *chunkio.ChainError
		if !errors.As(err, &ce) || ce.Server != tc.want || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("server blames %s: %v, want %s blamed", tc.named, err, tc.want)
		}
	}
}

// TestBadArguments: requests that cannot be valid are refused before
// anything is sent.
func TestBadArguments(t *testing.T) {
	p := chunkio.NewPool(chunkio.Config{Role: wire.RoleClient})
	defer p.Close()
	ctx := context.Background()
	buf := make([]byte, 10)
	for name, err := range map[string]error{
		"read without servers":   p.Read(ctx, 1, 1, nil, 0, buf),
		"read past the end":      p.Read(ctx, 1, 1, []string{"127.0.0.1:1"}, chunkio.ChunkSize-5, buf),
		"write with no chain":    p.Write(ctx, 1, 1, nil, 0, buf),
		"write past the end":     p.Write(ctx, 1, 1, []string{"127.0.0.1:1"}, chunkio.ChunkSize-5, buf),
		"sync with no chain":     p.Sync(ctx, 1, 1, nil),
		"read from past the end": func() error { _, err := p.ReadFrom(ctx, "127.0.0.1:1", 1, 1, chunkio.ChunkSize, buf); return err }(),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := p.Read(ctx, 1, 1, []string{"127.0.0.1:1"}, 0, nil); err != nil {
		t.Errorf("empty read: %v", err)
	}
	if err := p.Write(ctx, 1, 1, []string{"127.0.0.1:1"}, 0, nil); err != nil {
		t.Errorf("empty write: %v", err)
	}
	if !bytes.Equal(buf, make([]byte, 10)) {
		t.Error("a refused read changed the buffer")
	}
}
