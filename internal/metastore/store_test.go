package metastore

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
)

func create(t testing.TB, st *Store, parent uint32, name string) uint32 {
	t.Helper()
	res, err := st.Do(context.Background(), &meta.Create{Parent: parent, Name: name, Type: meta.TypeFile, Mode: 0o644})
	if err != nil || !res.Ok() {
		t.Fatalf("create %q: %v %v", name, res, err)
	}
	return uint32(res.Val[0])
}

func lookup(st *Store, parent uint32, name string) (ino uint32, e syscall.Errno) {
	st.Read(func(s *meta.State) { ino, e = s.Lookup(parent, name) })
	return
}

func TestFormatReopen(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	id := st.MetaID()
	for i := range 100 {
		create(t, st, meta.RootInode, "f"+strconv.Itoa(i))
	}
	res, err := st.Do(context.Background(), &meta.Create{Parent: meta.RootInode, Name: "f1", Type: meta.TypeFile})
	if err != nil || res.Err != syscall.EEXIST {
		t.Fatalf("duplicate create: %v %v", res, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Do(context.Background(), &meta.Create{Parent: 1, Name: "late", Type: meta.TypeFile}); err != ErrClosed {
		t.Fatalf("Do after Close: %v", err)
	}
	st, err = Open(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.MetaID() != id {
		t.Fatalf("metaid changed across restart: %x -> %x", id, st.MetaID())
	}
	if _, e := lookup(st, meta.RootInode, "f99"); e != 0 {
		t.Fatalf("f99 lost across a clean restart: %v", e)
	}
}

// TestGroupCommit: concurrent operations share flushes.
func TestGroupCommit(t *testing.T) {
	st, err := Open(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const workers, each = 16, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				create(t, st, meta.RootInode, fmt.Sprintf("w%d-%d", w, i))
			}
		}()
	}
	wg.Wait()
	flushes := st.Flushes()
	if flushes >= workers*each/2 {
		t.Fatalf("%d operations took %d flushes: no group commit", workers*each, flushes)
	}
	t.Logf("%d operations, %d flushes", workers*each, flushes)
}

// TestKill9LosesNothingAcknowledged runs a store in a child process,
// kills it with SIGKILL at random moments, and checks after each restart
// that every operation the child acknowledged is there.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	if os.Getenv("CARPFS_STORE_CHILD") != "" {
		childWorkload(os.Getenv("CARPFS_STORE_CHILD"))
		return
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9LosesNothingAcknowledged$")
		cmd.Env = append(os.Environ(), "CARPFS_STORE_CHILD="+dir+"|"+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Let it work for a random while, then kill it mid-flight.
		deadline := time.After(time.Duration(50+r.IntN(250)) * time.Millisecond)
		n := 0
	collect:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break collect
				}
				if name, ok := strings.CutPrefix(l, "ack "); ok {
					acked[name] = true
					n++
				}
			case <-deadline:
				cmd.Process.Kill()
				deadline = nil
			}
		}
		cmd.Wait()
		st, err := Open(context.Background(), Options{Dir: dir})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		for name := range acked {
			if _, e := lookup(st, meta.RootInode, name); e != 0 {
				t.Fatalf("round %d: acknowledged %q lost after kill -9", round, name)
			}
		}
		// Leave the directory as a crash would: no Close.
		st.abandon()
		t.Logf("round %d: %d acknowledged this round, %d in all, all present", round, n, len(acked))
	}
	if len(acked) == 0 {
		t.Fatal("the child acknowledged nothing")
	}
}

// childWorkload creates files from 8 goroutines and prints each name once
// its create is acknowledged, until killed.
func childWorkload(arg string) {
	dir, round, _ := strings.Cut(arg, "|")
	st, err := Open(context.Background(), Options{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				name := fmt.Sprintf("r%s-g%d-%d", round, g, i)
				res, err := st.Do(context.Background(), &meta.Create{Parent: meta.RootInode, Name: name, Type: meta.TypeFile, Mode: 0o600})
				if err != nil || !res.Ok() {
					fmt.Fprintln(os.Stderr, "child:", res, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %s\n", name)
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// abandon stops the store the way a crash would leave its directory: no
// dump, no rotation.
func (st *Store) abandon() {
	st.cmu.Lock()
	st.closing = true
	st.work.Broadcast()
	st.cmu.Unlock()
	<-st.done
	st.mu.Lock()
	defer st.mu.Unlock()
	st.cl.Close()
	st.cl = nil
}

// TestDoManyAndLazy: DoMany applies in order, stops at the first failure
// and returns once everything applied is durable; DoLazy's entry becomes
// durable without anyone waiting for it.
func TestDoManyAndLazy(t *testing.T) {
	st, err := Open(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	res, err := st.DoMany(ctx,
		&meta.Create{Parent: meta.RootInode, Name: "a", Type: meta.TypeFile, Mode: 0o644},
		&meta.Create{Parent: meta.RootInode, Name: "b", Type: meta.TypeFile, Mode: 0o644},
		&meta.Create{Parent: meta.RootInode, Name: "a", Type: meta.TypeFile, Mode: 0o644},
		&meta.Create{Parent: meta.RootInode, Name: "never", Type: meta.TypeFile, Mode: 0o644})
	if err != nil || len(res) != 3 || !res[0].Ok() || !res[1].Ok() || res[2].Err != syscall.EEXIST {
		t.Fatalf("DoMany: %v %v", res, err)
	}
	if _, e := lookup(st, meta.RootInode, "never"); e != syscall.ENOENT {
		t.Fatalf("DoMany went on after a failure: %v", e)
	}
	var v uint64
	st.Read(func(s *meta.State) { v = s.Version() })
	if d := st.Durable(); d < v {
		t.Fatalf("DoMany returned with version %d applied, %d durable", v, d)
	}

	sres, err := st.Do(ctx, &meta.Session{Info: "t"})
	if err != nil || !sres.Ok() {
		t.Fatal(sres, err)
	}
	ino := uint32(res[0].Val[0])
	if r, err := st.DoLazy(&meta.Open{Session: sres.Val[0], Inode: ino}); err != nil || !r.Ok() {
		t.Fatalf("DoLazy: %v %v", r, err)
	}
	if r, err := st.DoLazy(&meta.Open{Session: sres.Val[0], Inode: 999}); err != nil || r.Err != syscall.ENOENT {
		t.Fatalf("DoLazy of a failing op: %v %v", r, err)
	}
	st.Read(func(s *meta.State) { v = s.Version() })
	waitWritten(t, st, v, "a lazy entry")
}

// TestLazyRidesAlong: a lazy entry followed at once by a durable
// operation costs one flush, not two, and nothing flushes again when
// LazyFlushDelay passes; on its own, a lazy entry is flushed after the
// delay.
func TestLazyRidesAlong(t *testing.T) {
	// A delay far longer than a round on a loaded machine, so the shared
	// flush is told apart from the delayed one without timing luck.
	const delay = 2 * time.Second
	st, err := Open(context.Background(), Options{Dir: t.TempDir(), LazyDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	sres, err := st.Do(ctx, &meta.Session{Info: "t"})
	if err != nil || !sres.Ok() {
		t.Fatal(sres, err)
	}
	ino := create(t, st, meta.RootInode, "a")
	before := st.Flushes()
	start := time.Now()
	if r, err := st.DoLazy(&meta.Open{Session: sres.Val[0], Inode: ino}); err != nil || !r.Ok() {
		t.Fatalf("DoLazy: %v %v", r, err)
	}
	if st.Flushes() != before {
		t.Fatal("a lazy entry started a flush of its own")
	}
	create(t, st, meta.RootInode, "b")
	if time.Since(start) >= delay {
		t.Fatalf("one create took %s, longer than the lazy delay", time.Since(start))
	}
	time.Sleep(delay + delay/2)
	if n := st.Flushes() - before; n != 1 {
		t.Fatalf("a lazy entry and a durable one took %d flushes, want 1", n)
	}
	// On its own, a lazy entry is flushed after the delay.
	if r, err := st.DoLazy(&meta.Release{Session: sres.Val[0], Inode: ino}); err != nil || !r.Ok() {
		t.Fatalf("DoLazy: %v %v", r, err)
	}
	var v uint64
	st.Read(func(s *meta.State) { v = s.Version() })
	waitWritten(t, st, v, "a lazy entry")
}

// TestAsyncWrites: an async store acknowledges before the flush, writes
// the entries to the changelog file soon after without anyone waiting,
// and so loses none of them to a crash of the process.
func TestAsyncWrites(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(context.Background(), Options{Dir: dir, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 200 {
		if _, err := st.Do(context.Background(), &meta.Create{Parent: meta.RootInode, Name: fmt.Sprint("f", i), Type: meta.TypeFile}); err != nil {
			t.Fatal(err)
		}
		st.Read(func(s *meta.State) { last = s.Version() })
	}
	waitWritten(t, st, last, "an async entry")
	st.abandon()
	st, err = Open(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 200 {
		if _, e := lookup(st, meta.RootInode, fmt.Sprint("f", i)); e != 0 {
			t.Fatalf("f%d acknowledged and written, lost with the process: %v", i, e)
		}
	}
}

// waitWritten waits up to 10 s for the store to flush version v, an
// entry nobody waits for (what names it).
func waitWritten(t *testing.T, st *Store, v uint64, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st.Durable() < v {
		if time.Now().After(deadline) {
			t.Fatalf("%s (version %d) never became durable (durable %d)", what, v, st.Durable())
		}
		time.Sleep(time.Millisecond)
	}
}
