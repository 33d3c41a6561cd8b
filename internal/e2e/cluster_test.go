// Package e2e runs whole clusters of the real binaries (mfsmaster, three
// mfschunkservers, mfsmount on a real FUSE mount) as child processes on
// 127.0.0.1 and checks what the issue asks of the file system as a user
// sees it: data survives remounts, a chunkserver's death, a damaged chunk
// file and a master's kill -9; and bad peers are refused.
//
// The tests need root (FUSE mounts) and skip, saying so, without it.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bins holds the binaries TestMain built.
var bins struct {
	dir string
	err error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "carpfs-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	for _, b := range [][2]string{{"mfsmaster", "mfsmaster"}, {"mfschunkserver", "chunkserver"}, {"mfsmount", "mount"},
		{"mfsmetalogger", "metalogger"}, {"mfsmetarestore", "metarestore"}} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b[0]), "github.com/carpfs/carpfs/"+b[1]).CombinedOutput()
		if err != nil {
			bins.err = fmt.Errorf("build %s: %v\n%s", b[0], err, out)
			break
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needRoot skips a test that needs FUSE mounts on a machine where it
// cannot have them.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for FUSE mounts; CI runs as root")
	}
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("no /dev/fuse: %v (install fuse3; scripts/install-test-deps.sh does)", err)
	}
}

func bin(name string) string { return filepath.Join(bins.dir, name) }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a daemon the test started; its PID is the only handle used to
// stop it.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *logBuf
}

// logBuf keeps a daemon's output for the failure report and lets a test
// wait for a line.
type logBuf struct {
	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
}

func newLogBuf() *logBuf {
	l := &logBuf{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *logBuf) feed(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, sc.Text())
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// startProc starts a daemon that is killed when the test ends.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := spawn(t, name, args...)
	t.Cleanup(func() { p.finish(t) })
	return p
}

// finish kills p and shows its output if the test failed.
func (p *proc) finish(t *testing.T) {
	p.kill()
	if t.Failed() {
		t.Logf("--- %s (pid %d) output:\n%s", p.name, p.cmd.Process.Pid, p.log)
	}
}

// spawn starts a daemon; its caller stops it.
func spawn(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return spawnCmd(t, name, bin(strings.Fields(name)[0]), args...)
}

// spawnCmd starts path with args under the given name.
func spawnCmd(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(path, args...), done: make(chan struct{}), log: newLogBuf()}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go p.log.feed(pr)
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits up to 30 s, then kills.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop on SIGTERM within 30 s; killing it", p.name)
		p.kill()
	}
}

// cluster is one master, its chunkservers and a mount, all in dir.
type cluster struct {
	t          *testing.T
	dir        string
	masterAddr string // client port
	csAddr     string // chunkserver port
	master     *proc
	cs         []*chunkserver
	mnt        string
	mount      *proc
	exports    string
	masterCfg  string
	authCode   string
	procs      []*proc // every daemon started, for the cleanup
	mlAddr     string  // the master's metalogger port
	mls        []*metaloggerProc
}

// metaloggerProc is one mfsmetalogger of a cluster.
type metaloggerProc struct {
	*proc
	dir string // DATA_PATH
}

// start spawns a daemon of the cluster.
func (c *cluster) start(name string, args ...string) *proc {
	p := spawn(c.t, name, args...)
	c.procs = append(c.procs, p)
	return p
}

// startCmd spawns a process of the cluster that is not one of the
// binaries (a launcher).
func (c *cluster) startCmd(name, path string, args ...string) *proc {
	p := spawnCmd(c.t, name, path, args...)
	c.procs = append(c.procs, p)
	return p
}

type chunkserver struct {
	*proc
	dir  string // DATA_PATH
	hdd  string // the one chunk directory
	data string // data port address
}

type clusterOpts struct {
	chunkservers int
	exports      string // mfsexports.cfg text; "" allows 127.0.0.1 rw
	masterCfg    string // mfsmaster.cfg text
	authCode     string // AUTH_CODE of the master and the chunkservers
	noMount      bool
	// metaloggers starts that many mfsmetaloggers and makes the master
	// wait for a majority of them (METALOGGERS).
	metaloggers int
}

func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	needRoot(t)
	if o.chunkservers == 0 {
		o.chunkservers = 3
	}
	if o.exports == "" {
		o.exports = "127.0.0.1 / rw,alldirs,maproot=0\n"
	}
	c := &cluster{t: t, dir: t.TempDir(), masterAddr: freeAddr(t), csAddr: freeAddr(t), authCode: o.authCode, mlAddr: freeAddr(t)}
	if o.metaloggers > 0 {
		o.masterCfg += fmt.Sprintf("METALOGGERS = %d\n", o.metaloggers)
	}
	if o.authCode != "" {
		o.masterCfg += "AUTH_CODE = " + o.authCode + "\n"
	}
	// One cleanup, in order: the mount first (while its master still
	// answers), then the chunkservers and the master, whichever
	// incarnations run by then.
	t.Cleanup(func() {
		c.unmount()
		for _, p := range c.procs {
			p.finish(t)
		}
	})
	// Replicate soon after a start: the tests kill servers within seconds.
	o.masterCfg += "REPLICATIONS_DELAY_INIT = 2\n"
	c.exports = filepath.Join(c.dir, "mfsexports.cfg")
	c.masterCfg = filepath.Join(c.dir, "mfsmaster.cfg")
	if err := os.WriteFile(c.exports, []byte(o.exports), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.masterCfg, []byte(o.masterCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.master = c.start("mfsmaster", c.masterArgs()...)
	for i := range o.metaloggers {
		c.mls = append(c.mls, c.startMetalogger(i))
	}
	waitDial(c.t, c.masterAddr, c.master)
	for i := range o.chunkservers {
		c.cs = append(c.cs, c.startChunkserver(i, ""))
	}
	c.waitServers(o.chunkservers)
	if !o.noMount {
		c.mnt = filepath.Join(c.dir, "mnt")
		if err := os.Mkdir(c.mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		c.mountFS()
	}
	return c
}

// masterArgs are the master's command line.
func (c *cluster) masterArgs() []string {
	return []string{"-c", c.masterCfg, "--exports", c.exports, "-d", filepath.Join(c.dir, "master"),
		"--listen", c.masterAddr, "--cs-listen", c.csAddr, "--ml-listen", c.mlAddr}
}

// startMaster starts the master again and waits until it serves.
func (c *cluster) startMaster() {
	c.master = c.start("mfsmaster", c.masterArgs()...)
	waitDial(c.t, c.masterAddr, c.master)
}

// startMetalogger starts metalogger i on its data directory.
func (c *cluster) startMetalogger(i int) *metaloggerProc {
	dir := filepath.Join(c.dir, "ml"+strconv.Itoa(i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mfsmetalogger.cfg")
	text := "NAME = ml" + strconv.Itoa(i) + "\nMASTER_TIMEOUT = 5\n"
	if c.authCode != "" {
		text += "AUTH_CODE = " + c.authCode + "\n"
	}
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		c.t.Fatal(err)
	}
	p := c.start("mfsmetalogger "+strconv.Itoa(i), "-c", cfg, "-d", dir, "--master", c.mlAddr)
	return &metaloggerProc{proc: p, dir: dir}
}

// startChunkserver starts chunkserver i; data "" picks a new free port,
// else the address it had.
func (c *cluster) startChunkserver(i int, data string) *chunkserver {
	if data == "" {
		data = freeAddr(c.t)
	}
	dir := filepath.Join(c.dir, "cs"+strconv.Itoa(i))
	hdd := filepath.Join(dir, "hdd")
	if err := os.MkdirAll(hdd, 0o755); err != nil {
		c.t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mfschunkserver.cfg")
	// A test disk is small: keep nothing free beyond what the test needs.
	text := "HDD_LEAVE_SPACE_DEFAULT = 0\n"
	if c.authCode != "" {
		text += "AUTH_CODE = " + c.authCode + "\n"
	}
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		c.t.Fatal(err)
	}
	p := c.start("mfschunkserver "+strconv.Itoa(i), "-c", cfg, "-d", dir, "--hdd", hdd,
		"--master", c.csAddr, "--data-port", data)
	return &chunkserver{proc: p, dir: dir, hdd: hdd, data: data}
}

// waitDial waits until addr accepts connections.
func waitDial(t *testing.T, addr string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			nc.Close()
			return
		}
		if !p.running() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never listened on %s\n%s", p.name, addr, p.log)
}

// waitServers waits until n chunkservers are registered, as the master's
// log says.
func (c *cluster) waitServers(n int) {
	c.t.Helper()
	eventually(c.t, 30*time.Second, func() error {
		got := 0
		for _, cs := range c.cs {
			if cs.running() && lineWith(c.master.log, "chunkserver registered", cs.data) != "" {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d of %d chunkservers registered", got, n)
		}
		return nil
	})
}

// mountFS mounts the file system at c.mnt and waits until it is there.
func (c *cluster) mountFS() {
	c.t.Helper()
	host, port, _ := net.SplitHostPort(c.masterAddr)
	c.mount = c.start("mfsmount", c.mnt, "-f", "-H", host, "-P", port)
	eventually(c.t, 30*time.Second, func() error {
		if !c.mount.running() {
			c.t.Fatalf("mfsmount exited: %v\n%s", c.mount.err, c.mount.log)
		}
		if !isMounted(c.mnt) {
			return fmt.Errorf("%s is not mounted yet", c.mnt)
		}
		return nil
	})
}

// unmount unmounts c.mnt and waits for mfsmount to exit.
func (c *cluster) unmount() {
	if c.mount == nil {
		return
	}
	if isMounted(c.mnt) {
		if err := unix.Unmount(c.mnt, 0); err != nil {
			_ = unix.Unmount(c.mnt, unix.MNT_DETACH)
		}
	}
	select {
	case <-c.mount.done:
	case <-time.After(20 * time.Second):
		c.t.Errorf("mfsmount still runs 20 s after the unmount; killing it")
		c.mount.kill()
	}
	if isMounted(c.mnt) {
		// A killed mount leaves a dead connection behind.
		_ = unix.Unmount(c.mnt, unix.MNT_DETACH)
	}
	c.mount = nil
}

// isMounted reports whether dir is a mount point of carpfs, from
// /proc/self/mountinfo: no system call into the mount, which could hang
// on a mount whose master is gone.
func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir && strings.Contains(line, " - fuse") {
			return true
		}
	}
	return false
}

// eventually retries f until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chunkFiles maps chunk id to the chunkservers (indexes) whose disk holds
// a copy, with the file's path, from the names chunk_<id>_<version>.mfs.
type chunkCopy struct {
	server  int
	version uint32
	path    string
}

func (c *cluster) chunkFiles(alive bool) map[uint64][]chunkCopy {
	c.t.Helper()
	out := map[uint64][]chunkCopy{}
	for i, cs := range c.cs {
		if alive && !cs.running() {
			continue
		}
		_ = filepath.WalkDir(cs.hdd, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			var id uint64
			var ver uint32
			if n, _ := fmt.Sscanf(d.Name(), "chunk_%016X_%08X.mfs", &id, &ver); n == 2 {
				out[id] = append(out[id], chunkCopy{server: i, version: ver, path: path})
			}
			return nil
		})
	}
	return out
}

// ctx returns a context bounded by the test's deadline.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
