package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/wire"
)

// needBins fails a test whose binaries did not build; these tests need
// no root (no FUSE mount: they speak the client protocol).
func needBins(t *testing.T) {
	t.Helper()
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// ackedFile is a file whose last operation (a rename into place) was
// acknowledged.
type ackedFile struct {
	dir  string // worker directory under the root
	name string
	size uint64
}

// quorumWorkload runs writers against the master through the client
// protocol: each makes a file under a temporary name, writes it (a
// write lease and its end, which records the length) and renames it into
// place, and records the file once the rename is acknowledged. It runs
// until the connection fails after stop is closed (the master is killed
// then); a failure before is the test's.
func quorumWorkload(ctx context.Context, t *testing.T, addr string, round, workers int, stop <-chan struct{}) (acked []ackedFile, inflight []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			cl, err := client.Dial(ctx, addr, client.Config{Name: "quorum-test"})
			if err != nil {
				t.Errorf("round %d worker %d: dial: %v", round, w, err)
				return
			}
			defer cl.Close(context.Background())
			cr := client.Cred{}
			dirName := fmt.Sprintf("w%d", w)
			dir, err := cl.Lookup(ctx, cr, meta.RootInode, dirName)
			if err != nil {
				dir, err = cl.Create(ctx, cr, meta.RootInode, dirName, client.TypeDir, 0o755, 0, false)
			}
			if err != nil {
				mu.Lock()
				inflight = append(inflight, dirName)
				mu.Unlock()
				return
			}
			for i := 0; ; i++ {
				final := fmt.Sprintf("r%02d-%05d", round, i)
				tmp := final + ".tmp"
				size := uint64(1000 + i*37%65536)
				a, err := cl.Create(ctx, cr, dir.Inode, tmp, client.TypeFile, 0o644, 0, false)
				if err == nil {
					var ci wire.ChunkInfo
					if ci, err = cl.ChunkWrite(ctx, cr, a.Inode, 0); err == nil {
						err = cl.ChunkWriteEnd(ctx, cr, a.Inode, ci.ID, size, nil)
					}
				}
				if err == nil {
					err = cl.Rename(ctx, cr, dir.Inode, tmp, dir.Inode, final)
				}
				if err != nil {
					select {
					case <-stop: // the master is gone
					default:
						t.Errorf("round %d worker %d: %s before the kill: %v", round, w, final, err)
					}
					mu.Lock()
					inflight = append(inflight, dirName+"/"+tmp, dirName+"/"+final)
					mu.Unlock()
					return
				}
				mu.Lock()
				acked = append(acked, ackedFile{dirName, final, size})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked, inflight
}

// restoreFrom runs mfsmetarestore on the newest metalogger dump of dirs
// and every changelog file they hold, as an operator restoring from a
// majority would, and loads the result.
func restoreFrom(t *testing.T, out string, dirs ...string) *meta.State {
	t.Helper()
	var dump string
	var dumpV uint64
	var logs []string
	for _, d := range dirs {
		p := filepath.Join(d, "metadata_ml.mfs")
		if h, err := metadump.ReadHeader(p); err == nil && (dump == "" || h.Version > dumpV) {
			dump, dumpV = p, h.Version
		}
		m, _ := filepath.Glob(filepath.Join(d, "changelog_ml.*.mfs"))
		logs = append(logs, m...)
	}
	if dump == "" {
		t.Fatalf("no metalogger dump in %v", dirs)
	}
	args := append([]string{"-q", "-m", dump, "-o", out}, logs...)
	if b, err := exec.Command(bin("mfsmetarestore"), args...).CombinedOutput(); err != nil {
		t.Fatalf("mfsmetarestore %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	s, _, err := metadump.LoadFile(out, metadump.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// listing maps "dir/name" to size for the workers' directories.
func listing(t *testing.T, s *meta.State) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	top, errno := s.ReadDir(meta.RootInode)
	if errno != 0 {
		t.Fatal(errno)
	}
	for _, d := range top {
		ents, errno := s.ReadDir(d.Inode)
		if errno != 0 {
			continue
		}
		for _, e := range ents {
			a, _ := s.GetAttr(e.Inode)
			out[d.Name+"/"+e.Name] = a.Size
		}
	}
	return out
}

// TestQuorumMasterKills: a master whose metaloggers are a quorum of
// three is killed with SIGKILL at random moments of a workload of
// concurrent creates, writes and renames, 20 times. After each kill, a
// restore from the metaloggers' files alone, from each of the three
// majorities, holds every acknowledged operation, and the three agree
// on everything but operations in flight at the kill.
func TestQuorumMasterKills(t *testing.T) {
	needBins(t)
	c := newCluster(t, clusterOpts{metaloggers: 3, noMount: true, masterCfg: "COMMIT_TIMEOUT = 60\n"})
	ctx := testCtx(t)
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	all := map[string]uint64{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for round := range rounds {
		stop := make(chan struct{})
		type result struct {
			acked    []ackedFile
			inflight []string
		}
		res := make(chan result, 1)
		go func() {
			a, f := quorumWorkload(ctx, t, c.masterAddr, round, 4, stop)
			res <- result{a, f}
		}()
		time.Sleep(time.Duration(100+rng.IntN(1200)) * time.Millisecond)
		close(stop) // errors from here on are the kill's
		c.master.kill()
		r := <-res
		for _, a := range r.acked {
			all[a.dir+"/"+a.name] = a.size
		}
		if len(all) == 0 {
			t.Fatalf("round %d: nothing acknowledged", round)
		}
		inflight := map[string]bool{}
		for _, n := range r.inflight {
			inflight[n] = true
		}
		// Restore from each majority of the metaloggers' files.
		var lists []map[string]uint64
		for _, pair := range [][2]int{{0, 1}, {0, 2}, {1, 2}} {
			out := filepath.Join(c.dir, fmt.Sprintf("restore-%d-%d%d.mfs", round, pair[0], pair[1]))
			s := restoreFrom(t, out, c.mls[pair[0]].dir, c.mls[pair[1]].dir)
			l := listing(t, s)
			for name, size := range all {
				if got, ok := l[name]; !ok || got != size {
					t.Fatalf("round %d, restore from metaloggers %v: acknowledged %s (size %d) is missing or has size %d (present %v)",
						round, pair, name, size, got, ok)
				}
			}
			lists = append(lists, l)
			os.Remove(out)
		}
		for i := 1; i < len(lists); i++ {
			if d := diffListings(lists[0], lists[i], inflight); d != "" {
				t.Fatalf("round %d: restores from two majorities differ beyond operations in flight: %s", round, d)
			}
		}
		t.Logf("round %d: %d acknowledged in all, %d in flight at the kill; all three majorities restore them", round, len(all), len(r.inflight))
		c.startMaster()
		c.waitServers(len(c.cs))
	}
	// The last master serves them too.
	cl, err := client.Dial(ctx, c.masterAddr, client.Config{Name: "quorum-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(ctx)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range all {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		dir, name, _ := strings.Cut(n, "/")
		d, err := cl.Lookup(ctx, client.Cred{}, meta.RootInode, dir)
		if err == nil {
			var a wire.Attr
			if a, err = cl.Lookup(ctx, client.Cred{}, d.Inode, name); err == nil && a.Size != all[n] {
				err = fmt.Errorf("size %d, want %d", a.Size, all[n])
			}
		}
		if err != nil {
			t.Fatalf("after %d kills the master lost acknowledged %s: %v", rounds, n, err)
		}
	}
}

// diffListings describes how a and b differ on names not in flight.
func diffListings(a, b map[string]uint64, inflight map[string]bool) string {
	var d []string
	for n, s := range a {
		if t, ok := b[n]; (!ok || t != s) && !inflight[n] && !inflight[strings.SplitN(n, "/", 2)[0]] {
			d = append(d, fmt.Sprintf("%s: %d vs %d (%v)", n, s, t, ok))
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok && !inflight[n] && !inflight[strings.SplitN(n, "/", 2)[0]] {
			d = append(d, n+": only in the second")
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("and %d more", len(d)-5))
	}
	return strings.Join(d, "; ")
}

// TestQuorumMetaloggersDown: with one of three metaloggers killed,
// clients go on; with two, a create is not acknowledged (it waits);
// when one comes back the create completes, and a restore from the
// metaloggers' files holds everything acknowledged.
func TestQuorumMetaloggersDown(t *testing.T) {
	needBins(t)
	c := newCluster(t, clusterOpts{metaloggers: 3, noMount: true, masterCfg: "COMMIT_TIMEOUT = 60\n"})
	ctx := testCtx(t)
	cl, err := client.Dial(ctx, c.masterAddr, client.Config{Name: "quorum-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(ctx)
	mk := func(name string) error {
		_, err := cl.Create(ctx, client.Cred{}, meta.RootInode, name, client.TypeFile, 0o644, 0, false)
		return err
	}
	if err := mk("all-three"); err != nil {
		t.Fatal(err)
	}
	c.mls[2].kill()
	t0 := time.Now()
	for i := range 50 {
		if err := mk(fmt.Sprintf("two-%02d", i)); err != nil {
			t.Fatalf("create with 2 of 3 metaloggers: %v", err)
		}
	}
	t.Logf("50 creates with one metalogger killed took %s", time.Since(t0).Round(time.Millisecond))
	c.mls[1].kill()
	done := make(chan error, 1)
	go func() { done <- mk("waits") }()
	select {
	case err := <-done:
		t.Fatalf("create acknowledged with 1 of 3 metaloggers (err %v)", err)
	case <-time.After(2 * time.Second):
	}
	// Reads go on.
	if _, err := cl.Lookup(ctx, client.Cred{}, meta.RootInode, "two-49"); err != nil {
		t.Fatalf("lookup while the quorum is lost: %v", err)
	}
	c.mls[1] = c.startMetalogger(1)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("create after a metalogger came back: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("create still waits 30 s after a metalogger came back")
	}
	t.Logf("the waiting create completed once metalogger 1 was back")
	s := restoreFrom(t, filepath.Join(c.dir, "restore.mfs"), c.mls[0].dir, c.mls[1].dir)
	ents, _ := s.ReadDir(meta.RootInode)
	have := map[string]bool{}
	for _, e := range ents {
		have[e.Name] = true
	}
	for _, n := range []string{"all-three", "two-00", "two-49", "waits"} {
		if !have[n] {
			t.Errorf("restore from metaloggers 0 and 1 lacks acknowledged %s", n)
		}
	}
}
