package metalogger_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master"
)

// cutProxy forwards TCP connections to a target until it is cut: then
// nothing passes either way, and connections made meanwhile wait. On
// healing, the connections that lived through the cut are reset, as a
// long partition ends them, and new ones pass again.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	cut    bool
	conns  []net.Conn
	closed bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	go p.serve()
	t.Cleanup(func() {
		p.mu.Lock()
		p.closed, p.cut = true, false
		for _, c := range p.conns {
			c.Close()
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		ln.Close()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

// waitOpen blocks while the proxy is cut; false means give up.
func (p *cutProxy) waitOpen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.cut && !p.closed {
		p.cond.Wait()
	}
	return !p.closed
}

func (p *cutProxy) forward(c net.Conn) {
	p.track(c)
	if !p.waitOpen() {
		c.Close()
		return
	}
	d, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.track(d)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && p.waitOpen() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go pipe(d, c)
	go pipe(c, d)
}

func (p *cutProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !cut {
		for _, c := range p.conns {
			c.Close() // what lived through the cut is gone
		}
		p.conns = nil
	}
	p.cut = cut
	p.cond.Broadcast()
}

// workload creates files until stop, failing the test on any error.
func workload(t *testing.T, m *qmaster, prefix string, stop <-chan struct{}) (done func() int) {
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := create(context.Background(), m.store, fmt.Sprintf("%s%06d", prefix, i)); err != nil {
				t.Errorf("create while a metalogger is away: %v", err)
				return
			}
			n.Add(1)
		}
	})
	return func() int { wg.Wait(); return int(n.Load()) }
}

// TestCatchUp: a metalogger restarted in the middle of a stream, and one
// cut off from the master for a minute, catch up by themselves, from the
// master's memory or (past what memory holds) its changelog files,
// without downloading a dump again; clients never wait for them.
func TestCatchUp(t *testing.T) {
	cutFor := time.Minute
	if testing.Short() {
		cutFor = 3 * time.Second
	}
	base := t.TempDir()
	// Little memory: a minute's entries must come from the files.
	m, started := startMaster(t, filepath.Join(base, "master"), "", 3, master.JournalConfig{MemoryBytes: 64 << 10})
	proxy := newCutProxy(t, m.addr)
	dirs := []string{filepath.Join(base, "ml0"), filepath.Join(base, "ml1"), filepath.Join(base, "ml2")}
	mls := []*qml{startML(t, dirs[0], m.addr), startML(t, dirs[1], m.addr), startML(t, dirs[2], proxy.addr())}
	m.wait(started, 20*time.Second)
	for _, q := range mls {
		caughtUp(t, q, m)
	}
	var firsts []uint64
	for _, q := range mls {
		firsts = append(firsts, q.ml.Status().First)
	}

	// Restart metalogger 1 in the middle of a stream.
	stop := make(chan struct{})
	done := workload(t, m, "a", stop)
	time.Sleep(300 * time.Millisecond)
	mls[1].stop()
	time.Sleep(300 * time.Millisecond)
	mls[1] = startML(t, dirs[1], m.addr)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	n := done()
	caughtUp(t, mls[1], m)
	t.Logf("metalogger 1 restarted during %d creates and caught up", n)

	// Cut metalogger 2 off for a minute while clients go on.
	proxy.setCut(true)
	stop = make(chan struct{})
	done = workload(t, m, "b", stop)
	time.Sleep(cutFor)
	close(stop)
	n = done()
	v0, _ := m.store.Position()
	behind := v0 - mls[2].ml.Status().Version
	proxy.setCut(false)
	t0 := time.Now()
	caughtUp(t, mls[2], m)
	t.Logf("metalogger 2, cut off for %s during %d creates (%d entries behind), caught up in %s", cutFor, n, behind, time.Since(t0).Round(time.Millisecond))
	if behind < 100 {
		t.Fatalf("metalogger 2 was only %d entries behind: the cut did not hold it back", behind)
	}
	for i, q := range mls {
		st := q.ml.Status()
		if st.First != firsts[i] {
			t.Errorf("metalogger %d's log starts at %d now, %d before: it was downloaded again", i, st.First, firsts[i])
		}
		if want := []int{1, 0, 1}[i]; st.Downloads != want {
			t.Errorf("metalogger %d downloaded the master's dump %d times, want %d", i, st.Downloads, want)
		}
	}
}
