package wire

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// sessions handshakes a client with a master over loopback TCP and runs
// a Mux on each end. The muxes are closed at cleanup; a goroutine leak
// would show as a hang there.
func sessions(t *testing.T, client, server MuxConfig) (*Mux, *Mux) {
	t.Helper()
	c, s := handshake(t, ClientConfig{Role: RoleClient, Name: "mnt"}, master())
	if c.err != nil || s.err != nil {
		t.Fatalf("handshake: %v / %v", c.err, s.err)
	}
	cm, sm := NewMux(c.conn, client), NewMux(s.conn, server)
	t.Cleanup(func() {
		cm.Close()
		sm.Close()
	})
	return cm, sm
}

// testCtx bounds a call, so that a lost or misdelivered reply fails the
// test instead of hanging it.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echo answers a Ping with a Pong of the same data.
func echo(delay func() time.Duration) Handler {
	return func(ctx context.Context, req Frame) (Message, error) {
		var p Ping
		if err := Unmarshal(req.Payload, &p); err != nil {
			return nil, err
		}
		if delay != nil {
			time.Sleep(delay())
		}
		return &Pong{Data: p.Data}, nil
	}
}

// TestMuxPipelining makes 1000 concurrent calls on one connection to a
// server that answers after a random delay, so replies come back out of
// order. Every call must get the answer to its own request.
func TestMuxPipelining(t *testing.T) {
	var order []uint64
	var mu sync.Mutex
	slow := echo(func() time.Duration { return time.Duration(rand.IntN(2000)) * time.Microsecond })
	handler := func(ctx context.Context, req Frame) (Message, error) {
		reply, err := slow(ctx, req)
		mu.Lock()
		order = append(order, req.ID)
		mu.Unlock()
		return reply, err
	}
	cm, _ := sessions(t, MuxConfig{}, MuxConfig{Handler: handler, MaxInFlight: 256})

	const calls = 1000
	var wg sync.WaitGroup
	var failed atomic.Int32
	ctx := testCtx(t)
	for i := range calls {
		wg.Go(func() {
			want := "call " + strconv.Itoa(i)
			var pong Pong
			if err := cm.CallInto(ctx, &Ping{Data: []byte(want)}, &pong); err != nil {
				t.Errorf("call %d: %v", i, err)
				failed.Add(1)
				return
			}
			if string(pong.Data) != want {
				t.Errorf("call %d got the reply %q", i, pong.Data)
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d calls failed", failed.Load(), calls)
	}
	inversions := 0
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			inversions++
		}
	}
	if inversions == 0 {
		t.Fatal("replies were sent in request order: the test did not exercise reordering")
	}
	if n := cm.pending(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	t.Logf("%d replies out of order", inversions)
}

func TestMuxCancel(t *testing.T) {
	release := make(chan struct{})
	handler := func(ctx context.Context, req Frame) (Message, error) {
		if string(req.Payload[1:]) == "block" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return &Pong{}, nil
	}
	cm, _ := sessions(t, MuxConfig{}, MuxConfig{Handler: handler})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := cm.Call(ctx, &Ping{Data: []byte("block")})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "wire: call Ping") {
		t.Fatalf("%v", err)
	}
	if n := cm.pending(); n != 0 {
		t.Fatalf("cancelled call left %d waiters", n)
	}
	// The late reply is dropped and the session goes on.
	close(release)
	time.Sleep(20 * time.Millisecond)
	if _, err := cm.Call(testCtx(t), &Ping{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if cm.Err() != nil {
		t.Fatal(cm.Err())
	}
}

// TestMuxConnectionLost drops the connection under 50 calls in flight:
// every one must fail, saying the connection was lost, and so must
// every later call.
func TestMuxConnectionLost(t *testing.T) {
	started := make(chan struct{}, 100)
	handler := func(ctx context.Context, req Frame) (Message, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	cm, sm := sessions(t, MuxConfig{}, MuxConfig{Handler: handler, MaxInFlight: 100})
	const calls = 50
	errs := make(chan error, calls)
	for range calls {
		go func() {
			_, err := cm.Call(testCtx(t), &Ping{})
			errs <- err
		}()
	}
	for range calls {
		<-started
	}
	sm.Conn().NetConn.Close() // the master host vanishes
	for range calls {
		err := <-errs
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), `wire: call Ping: connection to master "m1" (127.0.0.1:`) ||
			!strings.Contains(err.Error(), "lost") {
			t.Fatalf("%v", err)
		}
	}
	select {
	case <-cm.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client mux still running")
	}
	if _, err := cm.Call(testCtx(t), &Ping{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after the loss: %v", err)
	}
	if err := cm.Send(&Ping{}); err == nil {
		t.Fatal("send after the loss succeeded")
	}
}

func TestMuxRemoteError(t *testing.T) {
	handler := func(ctx context.Context, req Frame) (Message, error) {
		return nil, fmt.Errorf("lookup inode 7: %w", syscall.ENOENT)
	}
	cm, _ := sessions(t, MuxConfig{}, MuxConfig{Handler: handler})
	_, err := cm.Call(testCtx(t), &Ping{})
	var re *RemoteError
	if !errors.As(err, &re) || !errors.Is(err, syscall.ENOENT) || re.Message != "lookup inode 7: no such file or directory" {
		t.Fatalf("%v", err)
	}
	if cm.Err() != nil {
		t.Fatalf("an error reply ended the session: %v", cm.Err())
	}
}

func TestMuxNoHandler(t *testing.T) {
	cm, _ := sessions(t, MuxConfig{}, MuxConfig{})
	_, err := cm.Call(testCtx(t), &Ping{})
	if !errors.Is(err, syscall.ENOSYS) || !strings.Contains(err.Error(), "this master serves no requests") {
		t.Fatalf("%v", err)
	}
}

// TestMuxBothWays: the master calls the client while the client calls
// the master, on one connection; both number their requests from 1.
func TestMuxBothWays(t *testing.T) {
	cm, sm := sessions(t, MuxConfig{Handler: echo(nil)}, MuxConfig{Handler: echo(nil)})
	var wg sync.WaitGroup
	for i := range 100 {
		for _, m := range []*Mux{cm, sm} {
			wg.Go(func() {
				var pong Pong
				want := fmt.Sprintf("%s %d", m.Conn().Local, i)
				if err := m.CallInto(testCtx(t), &Ping{Data: []byte(want)}, &pong); err != nil || string(pong.Data) != want {
					t.Errorf("%s call %d: %q, %v", m.Conn().Local, i, pong.Data, err)
				}
			})
		}
	}
	wg.Wait()
}

// TestMuxSerial: with MaxInFlight 1 requests are served one at a time in
// the order they were sent.
func TestMuxSerial(t *testing.T) {
	var got []string
	var mu sync.Mutex
	done := make(chan struct{})
	handler := func(ctx context.Context, req Frame) (Message, error) {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		mu.Lock()
		got = append(got, string(req.Payload[1:]))
		if len(got) == 100 {
			close(done)
		}
		mu.Unlock()
		return nil, nil
	}
	cm, _ := sessions(t, MuxConfig{}, MuxConfig{Handler: handler, MaxInFlight: 1})
	for i := range 100 {
		if err := cm.Send(&Ping{Data: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	for i, s := range got {
		if s != strconv.Itoa(i) {
			t.Fatalf("served %v", got)
		}
	}
}

// TestMuxInline: Ping is served inline, GetAttr (standing in for a slow
// request) on a goroutine of its own. A Ping sent while a Hello blocks
// is answered at once, and inline requests run in the reading goroutine,
// one at a time.
func TestMuxInline(t *testing.T) {
	release := make(chan struct{})
	var inside, most atomic.Int32
	handler := func(ctx context.Context, req Frame) (Message, error) {
		if req.Type == TypeGetAttr {
			<-release
			return &Ok{}, nil
		}
		n := inside.Add(1)
		defer inside.Add(-1)
		if n > most.Load() {
			most.Store(n)
		}
		time.Sleep(10 * time.Microsecond)
		return echo(nil)(ctx, req)
	}
	inline := func(t Type) bool { return t == TypePing }
	cm, _ := sessions(t, MuxConfig{}, MuxConfig{Handler: handler, Inline: inline})
	ctx := testCtx(t)
	slow := make(chan error, 1)
	go func() {
		_, err := cm.Call(ctx, &GetAttr{})
		slow <- err
	}()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p Pong
			if err := cm.CallInto(ctx, &Ping{Data: []byte{byte(i)}}, &p); err != nil || len(p.Data) != 1 || p.Data[0] != byte(i) {
				t.Errorf("ping %d: %v %v", i, p.Data, err)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-slow:
		t.Fatalf("the blocked request returned early: %v", err)
	default:
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if most.Load() != 1 {
		t.Fatalf("%d inline requests ran at once; they must run one at a time", most.Load())
	}
}

// TestMuxRefuse: a master stepping down tells its peers why; their calls
// fail with that reason.
func TestMuxRefuse(t *testing.T) {
	started := make(chan struct{})
	handler := func(ctx context.Context, req Frame) (Message, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	cm, sm := sessions(t, MuxConfig{}, MuxConfig{Handler: handler})
	errc := make(chan error, 1)
	go func() {
		_, err := cm.Call(testCtx(t), &Ping{})
		errc <- err
	}()
	<-started
	if err := sm.Refuse(RefuseShutdown, "master m1 is stepping down: term 6 was raised elsewhere"); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	var re *RefusedError
	if !errors.As(err, &re) || !re.ByPeer || re.Code != RefuseShutdown || !strings.Contains(err.Error(), "stepping down") {
		t.Fatalf("%v", err)
	}
}

// TestMuxCorruptFrame: a frame damaged on the way is refused, the
// handler never sees it, and the sender is told why.
func TestMuxCorruptFrame(t *testing.T) {
	var served atomic.Int32
	handler := func(ctx context.Context, req Frame) (Message, error) {
		served.Add(1)
		return &Pong{}, nil
	}
	cm, sm := sessions(t, MuxConfig{}, MuxConfig{Handler: handler})
	bad := AppendFrame(nil, Frame{Type: TypePing, ID: 1, Payload: Marshal(&Ping{Data: []byte("write chunk")})})
	bad[20] ^= 0x10
	if _, err := cm.Conn().NetConn.Write(bad); err != nil {
		t.Fatal(err)
	}
	<-sm.Done()
	if err := sm.Err(); !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "CRC-32C mismatch") {
		t.Fatalf("server: %v", err)
	}
	<-cm.Done()
	err := cm.Err()
	var re *RefusedError
	if !errors.As(err, &re) || re.Code != RefuseProtocol ||
		!strings.Contains(err.Error(), "refused by peer (protocol): received a bad frame at stream byte ") || !strings.Contains(err.Error(), "CRC-32C mismatch") {
		t.Fatalf("client: %v", err)
	}
	if served.Load() != 0 {
		t.Fatal("the damaged request was served")
	}
}

// TestMuxStrayReply: a reply to a request never sent means the peer is
// broken; the session ends.
func TestMuxStrayReply(t *testing.T) {
	cm, sm := sessions(t, MuxConfig{}, MuxConfig{})
	if err := sm.Conn().W.Send(999, FlagReply, &Pong{}); err != nil {
		t.Fatal(err)
	}
	<-cm.Done()
	if err := cm.Err(); !errors.Is(err, ErrMessage) || !strings.Contains(err.Error(), "request 999, which was never sent") {
		t.Fatalf("%v", err)
	}
}

// TestServe: Serve returns nil when the peer hangs up cleanly.
func TestServe(t *testing.T) {
	c, s := handshake(t, ClientConfig{Role: RoleClient}, master())
	if c.err != nil || s.err != nil {
		t.Fatal(c.err, s.err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), s.conn, MuxConfig{Handler: echo(nil)}) }()
	cm := NewMux(c.conn, MuxConfig{})
	if _, err := cm.Call(testCtx(t), &Ping{}); err != nil {
		t.Fatal(err)
	}
	cm.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
