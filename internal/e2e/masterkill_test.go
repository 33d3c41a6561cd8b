package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMasterKilledMidWrite: writers create, write and fsync files while
// the master is killed with SIGKILL and started again. Every file whose
// fsync returned before the kill is present and correct afterwards.
func TestMasterKilledMidWrite(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	type done struct {
		path string
		sum  [32]byte
		at   time.Time
	}
	var (
		mu     sync.Mutex
		synced []done
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	// The next master is forked now, while this process holds no file of
	// the mount open: a fork while writers hold some would close them in
	// the child at exec, and each close waits for the master that the
	// child is about to become.
	restart := c.prepareMaster(t)
	for w := range 4 {
		dir := filepath.Join(c.mnt, fmt.Sprintf("w%d", w))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				p := filepath.Join(dir, fmt.Sprintf("f%05d", i))
				sum, err := tryWriteRandom(p, uint64(w<<20|i), int64(i%7)*300_000+int64(i))
				if err != nil {
					// The master is away: the mount waits for it, but a
					// write may still fail; that file was never
					// acknowledged as synced.
					time.Sleep(50 * time.Millisecond)
					continue
				}
				mu.Lock()
				synced = append(synced, done{p, sum, time.Now()})
				mu.Unlock()
			}
		})
	}
	time.Sleep(3 * time.Second)
	mu.Lock()
	before := len(synced)
	mu.Unlock()
	killedAt := time.Now()
	c.master.kill()
	t.Logf("master killed after %d fsynced files", before)
	time.Sleep(time.Second)
	c.master = restart.exec(t)
	waitDial(t, c.masterAddr, c.master)
	c.waitServers(len(c.cs))
	time.Sleep(3 * time.Second) // writers go on against the new master
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if before == 0 {
		t.Fatal("no file was fsynced before the kill: the workload did not run")
	}
	checked, after := 0, 0
	for _, d := range synced {
		got, _, err := hashFile(d.path)
		if err != nil || got != d.sum {
			when := "after"
			if d.at.Before(killedAt) {
				when = "before"
			}
			t.Errorf("%s, fsynced %s the kill: %v (content right: %v)", d.path, when, err, got == d.sum)
			continue
		}
		checked++
		if d.at.After(killedAt) {
			after++
		}
	}
	t.Logf("%d fsynced files intact (%d of them written after the restart)", checked, after)
	if after == 0 {
		t.Error("no file could be written after the master came back")
	}
}

// pending is a daemon forked ahead of time, waiting on a FIFO to exec.
type pending struct {
	p    *proc
	fifo string
}

// prepareMaster forks a shell that becomes the cluster's next master
// when exec is called.
func (c *cluster) prepareMaster(t *testing.T) *pending {
	t.Helper()
	fifo := filepath.Join(c.dir, "start-master")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	args := c.masterArgs()
	script := `read go < "$0" && exec "$@"`
	p := c.startCmd("mfsmaster (restarted)", "/bin/sh", append([]string{"-c", script, fifo, bin("mfsmaster")}, args...)...)
	return &pending{p: p, fifo: fifo}
}

// exec lets the pending daemon start.
func (pd *pending) exec(t *testing.T) *proc {
	t.Helper()
	if err := os.WriteFile(pd.fifo, []byte("go\n"), 0); err != nil {
		t.Fatal(err)
	}
	return pd.p
}
