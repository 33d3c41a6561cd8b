package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	mfscli "github.com/carpfs/carpfs/internal/app/cli"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/metalogger"
	"github.com/carpfs/carpfs/internal/replication"
	"github.com/carpfs/carpfs/internal/wire"
)

// Options configures `mfslocal up`.
type Options struct {
	Dir          string // state directory, created if missing
	Mount        string // mount point; "" is Dir/mnt
	Chunkservers int
	Goal         replication.Goal // set on the root directory once mounted
	// AnyPorts takes ports the kernel picks, even where MooseFS's
	// defaults are free: for several clusters (or tests) at once.
	AnyPorts bool
	// BinDir holds mfsmaster, mfsmetalogger, mfschunkserver and
	// mfsmount; "" is the directory of the running executable.
	BinDir string
	// Self is how the report tells the user to run mfslocal again
	// ("bin/mfslocal"); "" is "mfslocal".
	Self string
	Out  io.Writer // progress and the final report; nil discards
}

// Default ports, as MooseFS's, used when free; the chunkservers' data
// ports count up from DefaultDataPort.
const (
	DefaultClientPort = 9421
	DefaultCSPort     = 9420
	DefaultMLPort     = 9419
	DefaultDataPort   = 9422
	DefaultDir        = "/var/tmp/carpfs-local"
)

// Metaloggers is how many metaloggers a local cluster runs: the fewest
// with which the quorum survives one of them missing.
const Metaloggers = 3

// How long each step may take before `up` gives up. Generous: a slow
// or busy machine should get a cluster, not a timeout.
var (
	// The master answers only once a majority of the metaloggers has
	// joined it, so this covers their start too.
	masterTimeout = 60 * time.Second
	mlTimeout     = 30 * time.Second
	csTimeout     = 60 * time.Second
	mountTimeout  = 30 * time.Second
)

// How long each daemon has to stop on SIGTERM before SIGKILL. The master
// writes metadata.mfs when it stops, and each metalogger its replica's
// metadata_ml.mfs, which take a while on big metadata.
const (
	mountGrace  = 10 * time.Second
	csGrace     = 15 * time.Second
	masterGrace = 120 * time.Second
	mlGrace     = 120 * time.Second
)

// Daemon binaries mfslocal runs.
const (
	binMaster      = "mfsmaster"
	binMetalogger  = "mfsmetalogger"
	binChunkserver = "mfschunkserver"
	binMount       = "mfsmount"
)

type cluster struct {
	opt    Options
	out    io.Writer
	bins   map[string]string
	st     State
	master *daemon
	ml     []*daemon
	cs     []*daemon
	mount  *daemon
	// exited receives every daemon that ends, expected or not.
	exited chan *daemon
}

// Up runs a local cluster until ctx ends, then stops it. It returns an
// error if the cluster could not be started or did not stop cleanly.
func Up(ctx context.Context, opt Options) error {
	c, unlock, err := prepare(opt)
	if err != nil {
		return err
	}
	defer unlock()
	err = c.start(ctx)
	if err == nil {
		c.report()
		c.run(ctx)
	}
	clean := c.stop()
	if err == nil && !clean {
		err = errors.New("the cluster did not stop cleanly (see above)")
	}
	if err == nil {
		os.Remove(filepath.Join(c.opt.Dir, pidFile))
	}
	return err
}

// prepare checks everything that can be checked before a process runs:
// options, binaries, FUSE, an earlier run in the same directory; it
// takes the directory's lock.
func prepare(opt Options) (*cluster, func(), error) {
	if opt.Chunkservers < 1 || opt.Chunkservers > 32 {
		return nil, nil, fmt.Errorf("--chunkservers %d: want 1 to 32", opt.Chunkservers)
	}
	if err := opt.Goal.Validate(); err != nil {
		return nil, nil, err
	}
	if opt.Dir == "" {
		opt.Dir = DefaultDir
	}
	var err error
	if opt.Dir, err = makeDir(opt.Dir); err != nil {
		return nil, nil, fmt.Errorf("state directory: %w", err)
	}
	if opt.Mount == "" {
		opt.Mount = filepath.Join(opt.Dir, mountDir)
	}
	c := &cluster{opt: opt, out: opt.Out, exited: make(chan *daemon, Metaloggers+opt.Chunkservers+2)}
	if c.out == nil {
		c.out = io.Discard
	}
	if c.bins, err = findBinaries(opt.BinDir); err != nil {
		return nil, nil, err
	}
	if err := checkFUSE(); err != nil {
		return nil, nil, err
	}
	unlock, err := lockDir(opt.Dir)
	if err != nil {
		return nil, nil, err
	}
	if err := c.checkEarlierRun(); err != nil {
		unlock()
		return nil, nil, err
	}
	// The mount point is resolved after a stale mount is gone: resolving
	// symbolic links through a dead FUSE mount fails.
	if c.opt.Mount, err = makeDir(c.opt.Mount); err != nil {
		unlock()
		return nil, nil, fmt.Errorf("mount point: %w", err)
	}
	if m, ok, err := mountAt(c.opt.Mount); err != nil || ok {
		unlock()
		if err != nil {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%s is already a mount point (%s from %s): choose another with --mount", c.opt.Mount, m.FSType, m.Source)
	}
	return c, unlock, nil
}

// makeDir creates dir and returns its absolute path without symbolic
// links, as /proc/self/mountinfo shows mount points.
func makeDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// findBinaries finds the daemons in dir, or next to this executable.
func findBinaries(dir string) (map[string]string, error) {
	if dir == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the daemons: %w", err)
		}
		dir = filepath.Dir(exe)
	}
	bins := map[string]string{}
	var missing []string
	for _, name := range []string{binMaster, binMetalogger, binChunkserver, binMount} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, name)
			continue
		}
		bins[name] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s not found in %s, where mfslocal runs the daemons from: build them with `make build`", strings.Join(missing, ", "), dir)
	}
	return bins, nil
}

// lockDir keeps a second `up` off the same state directory. The lock
// goes with the process, however it ends.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "mfslocal.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another mfslocal uses %s: see `mfslocal status -d %s`", dir, dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// checkEarlierRun refuses to start beside daemons of an earlier run
// whose mfslocal was killed, and unmounts the dead FUSE mount such a run
// leaves behind.
func (c *cluster) checkEarlierRun() error {
	old, err := ReadState(c.opt.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if live := old.liveDaemons(); len(live) > 0 {
		return fmt.Errorf("daemons of an earlier run still run in %s (%s): stop them with `%s down -d %s`",
			c.opt.Dir, procList(live), c.self(), c.opt.Dir)
	}
	if old.Mount == "" {
		return nil
	}
	if m, ok, err := mountAt(old.Mount); err == nil && ok && isFUSE(m.FSType) {
		note, err := unmount(old.Mount)
		if err != nil {
			return fmt.Errorf("a mount of an earlier run is left at %s: %w", old.Mount, err)
		}
		fmt.Fprintf(c.out, "unmounted %s, left mounted by an earlier run %s\n", old.Mount, note)
	}
	return nil
}

func (c *cluster) self() string {
	if c.opt.Self != "" {
		return c.opt.Self
	}
	return "mfslocal"
}

func procList(ps []Proc) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%s pid %d", p.Name, p.PID))
	}
	return strings.Join(s, ", ")
}

// start brings the cluster up step by step, each step waiting until the
// previous one answers.
func (c *cluster) start(ctx context.Context) error {
	dir := c.opt.Dir
	for _, d := range []string{logDir, masterDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := writeExports(filepath.Join(dir, exportsCfg)); err != nil {
		return err
	}
	self, err := selfProc()
	if err != nil {
		return err
	}
	c.st = State{Dir: dir, Started: time.Now().UTC().Truncate(time.Second), Up: self, Mount: c.opt.Mount}
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(self.PID)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	fmt.Fprintf(c.out, "mfslocal: state and data in %s, daemon logs in %s\n", dir, filepath.Join(dir, logDir))

	if err := c.startMaster(ctx); err != nil {
		return err
	}
	if err := c.startChunkservers(ctx); err != nil {
		return err
	}
	if err := c.startMount(ctx); err != nil {
		return err
	}
	if err := setRootGoal(ctx, c.opt.Mount, c.opt.Goal); err != nil {
		return fmt.Errorf("set the goal of %s: %w", c.opt.Mount, err)
	}
	fmt.Fprintf(c.out, "goal of %s set to %s (new files and directories inherit it)\n", c.opt.Mount, c.opt.Goal)
	if c.opt.Goal.Copies() > c.opt.Chunkservers {
		fmt.Fprintf(c.out, "note: goal %s wants %d copies but there are only %d chunkservers\n", c.opt.Goal, c.opt.Goal.Copies(), c.opt.Chunkservers)
	}
	return nil
}

// selfProc is this process, as `down` will check it.
func selfProc() (Proc, error) {
	pid := os.Getpid()
	start, args, err := procIdentity(pid)
	if err != nil {
		return Proc{}, fmt.Errorf("read my own /proc entry: %w", err)
	}
	return Proc{Name: "mfslocal up", PID: pid, Start: start, Args: args}, nil
}

// writeExports writes an exports file admitting this host alone, unless
// one is there already (an operator may have edited it).
func writeExports(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	const text = "# Written by mfslocal: the local cluster serves this host only.\n" +
		"127.0.0.1  /  rw,alldirs,maproot=0\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// pickPort returns 127.0.0.1:port if nothing listens there, else a port
// the kernel picks. Another program may take it before the daemon binds
// it; the daemon then fails and says so in its log.
func pickPort(port int, taken []string) (string, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if port > 0 && !slices.Contains(taken, addr) {
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr, nil
		}
	}
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free port: %w", err)
		}
		addr = ln.Addr().String()
		ln.Close()
		if !slices.Contains(taken, addr) {
			return addr, nil
		}
	}
}

// port is the port to try first: def, or none with AnyPorts.
func (c *cluster) port(def int) int {
	if c.opt.AnyPorts {
		return 0
	}
	return def
}

func (c *cluster) logPath(name string) string { return filepath.Join(c.opt.Dir, logDir, name+".log") }

// add starts a daemon whose data directory is data and records it in
// the state file at once, so that `down` from another shell finds it
// even while `up` still waits.
func (c *cluster) add(name, bin, data string, args []string) (*daemon, error) {
	d, err := startDaemon(name, c.bins[bin], args, c.logPath(name), c.exited)
	if err != nil {
		return nil, err
	}
	d.Data = data
	c.st.Daemons = append(c.st.Daemons, d.Proc)
	return d, writeState(c.opt.Dir, &c.st)
}

// core is what every later step needs running: the master and its
// metaloggers.
func (c *cluster) core() []*daemon { return append([]*daemon{c.master}, c.ml...) }

// startMaster starts the master, then the metaloggers: the master
// serves clients only once a majority of them has accepted its term, so
// they must run before it is asked anything.
func (c *cluster) startMaster(ctx context.Context) error {
	var taken []string
	for _, p := range []struct {
		addr *string
		def  int
	}{{&c.st.MasterAddr, DefaultClientPort}, {&c.st.CSAddr, DefaultCSPort}, {&c.st.MLAddr, DefaultMLPort}} {
		addr, err := pickPort(c.port(p.def), taken)
		if err != nil {
			return err
		}
		*p.addr, taken = addr, append(taken, addr)
	}
	dir := c.opt.Dir
	data := filepath.Join(dir, masterDir)
	var err error
	c.master, err = c.add(binMaster, binMaster, data, []string{
		"-c", filepath.Join(dir, masterCfg), "-d", data, "--exports", filepath.Join(dir, exportsCfg),
		"--listen", c.st.MasterAddr, "--cs-listen", c.st.CSAddr,
		"--ml-listen", c.st.MLAddr, "--metaloggers", strconv.Itoa(Metaloggers),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%-16s pid %-7d clients %s, chunkservers %s, metaloggers %s\n",
		binMaster, c.master.PID, c.st.MasterAddr, c.st.CSAddr, c.st.MLAddr)
	if err := c.startMetaloggers(); err != nil {
		return err
	}
	what := fmt.Sprintf("mfsmaster to serve clients at %s (it waits for %d of the %d metaloggers)",
		c.st.MasterAddr, Metaloggers/2+1, Metaloggers)
	err = c.poll(ctx, what, masterTimeout, c.core(), func() (bool, error) {
		_, err := c.statFS(ctx)
		return err == nil, err
	})
	if err != nil {
		return err
	}
	return c.waitMetaloggers(ctx)
}

// startMetaloggers starts the metaloggers, each in a directory of its
// own, all following the master's metalogger port.
func (c *cluster) startMetaloggers() error {
	for i := 1; i <= Metaloggers; i++ {
		name := binMetalogger + strconv.Itoa(i)
		data := filepath.Join(c.opt.Dir, mlDir+strconv.Itoa(i))
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		d, err := c.add(name, binMetalogger, data, []string{
			"-c", filepath.Join(data, mlCfg), "-d", data, "--master", c.st.MLAddr,
		})
		if err != nil {
			return err
		}
		c.ml = append(c.ml, d)
		fmt.Fprintf(c.out, "%-16s pid %-7d data dir %s\n", name, d.PID, data)
	}
	return nil
}

// waitMetaloggers waits until every metalogger follows the master, not
// just the majority the master needed to serve, and says how far they
// are: each answers on its admin socket.
func (c *cluster) waitMetaloggers(ctx context.Context) error {
	var sts []metalogger.Status
	err := c.poll(ctx, fmt.Sprintf("all %d metaloggers to follow the master", Metaloggers), mlTimeout, c.core(), func() (bool, error) {
		sts = sts[:0]
		for _, d := range c.ml {
			st, err := metalogger.Ask(d.Data, "status", 0, "")
			if err != nil {
				return false, fmt.Errorf("%s: %w", d.Name, err)
			}
			if st.Master == "" {
				return false, fmt.Errorf("%s has no link to the master", d.Name)
			}
			sts = append(sts, st)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "the master serves with all %d metaloggers: term %d, version %d\n", len(sts), sts[0].Term, sts[0].Version)
	return nil
}

// statFS asks the master for the file system's totals in a session of
// its own: a real answer proves the master serves mounts.
func (c *cluster) statFS(ctx context.Context) (wire.FSStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.st.MasterAddr, client.Config{Name: hostname(), Info: "mfslocal"})
	if err != nil {
		return wire.FSStats{}, err
	}
	defer cl.Close(ctx)
	return cl.StatFS(ctx, client.Cred{})
}

func (c *cluster) startChunkservers(ctx context.Context) error {
	// The master's log is read from here on for its registrations.
	masterLog := c.logPath(binMaster)
	fi, err := os.Stat(masterLog)
	if err != nil {
		return err
	}
	from := fi.Size()
	taken := []string{c.st.MasterAddr, c.st.CSAddr, c.st.MLAddr}
	var addrs []string
	for i := 1; i <= c.opt.Chunkservers; i++ {
		name := binChunkserver + strconv.Itoa(i)
		state := filepath.Join(c.opt.Dir, "chunkserver"+strconv.Itoa(i))
		hdd := filepath.Join(state, "hdd")
		if err := os.MkdirAll(hdd, 0o755); err != nil {
			return err
		}
		addr, err := pickPort(c.port(DefaultDataPort+i-1), taken)
		if err != nil {
			return err
		}
		taken = append(taken, addr)
		d, err := c.add(name, binChunkserver, state, []string{
			"-c", filepath.Join(state, csCfg), "-d", state, "--hdd", hdd,
			"--master", c.st.CSAddr, "--data-port", addr,
		})
		if err != nil {
			return err
		}
		c.cs = append(c.cs, d)
		addrs = append(addrs, addr)
		fmt.Fprintf(c.out, "%-16s pid %-7d data %s, disk %s\n", name, d.PID, addr, hdd)
	}
	// The master logs each registration it accepts; nothing on the
	// client link reports chunkservers yet.
	err = c.poll(ctx, fmt.Sprintf("the master to register %d chunkservers", len(addrs)), csTimeout, append(c.core(), c.cs...), func() (bool, error) {
		seen, err := registrations(masterLog, from)
		if err != nil {
			return false, err
		}
		var missing []string
		for _, a := range addrs {
			if !seen[a] {
				missing = append(missing, a)
			}
		}
		if len(missing) > 0 {
			return false, fmt.Errorf("not registered yet: %s", strings.Join(missing, ", "))
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	line := fmt.Sprintf("the master registered all %d chunkservers", len(addrs))
	if st, err := c.statFS(ctx); err == nil && st.TotalSpace > 0 {
		line += fmt.Sprintf(": %s total, %s free", size(st.TotalSpace), size(st.AvailSpace))
	}
	fmt.Fprintln(c.out, line)
	return nil
}

// registrations returns the chunkserver addresses a master log records
// as registered after offset from.
func registrations(path string, from int64) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="chunkserver registered"`) {
			continue
		}
		if _, rest, ok := strings.Cut(line, " server="); ok {
			addr, _, _ := strings.Cut(rest, " ")
			seen[addr] = true
		}
	}
	return seen, sc.Err()
}

func (c *cluster) startMount(ctx context.Context) error {
	host, port, _ := net.SplitHostPort(c.st.MasterAddr)
	var err error
	c.mount, err = c.add(binMount, binMount, "", []string{c.opt.Mount, "-H", host, "-P", port, "-f"})
	if err != nil {
		return err
	}
	err = c.poll(ctx, "mfsmount to mount "+c.opt.Mount, mountTimeout, append(c.core(), c.mount), func() (bool, error) {
		if fuseMounted(c.opt.Mount) {
			return true, nil
		}
		return false, fmt.Errorf("no FUSE file system answers at %s", c.opt.Mount)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%-16s pid %-7d %s at %s\n", binMount, c.mount.PID, c.st.MasterAddr, c.opt.Mount)
	return nil
}

// poll calls check every 100 ms until it is true. It gives up when ctx
// ends, when timeout passes, or when one of watch exits, with an error
// holding the end of that daemon's log.
func (c *cluster) poll(ctx context.Context, what string, timeout time.Duration, watch []*daemon, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if ok {
			return nil
		}
		for _, d := range watch {
			if d.exited() {
				return fmt.Errorf("waiting for %s: %s (pid %d) %s; the end of %s:\n%s",
					what, d.Name, d.PID, d.exitNote("exited"), d.Log, logTail(d.Log, 15))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: no success within %s: %v", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: interrupted", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// report prints where the file system is and how to stop it.
func (c *cluster) report() {
	fmt.Fprintf(c.out, "\ncarpfs is mounted at %s\n", c.opt.Mount)
	fmt.Fprintf(c.out, "Stop it with Ctrl-C here, or from another shell: %s down -d %s\n", c.self(), c.opt.Dir)
	fmt.Fprintf(c.out, "What runs: %s status -d %s\n", c.self(), c.opt.Dir)
}

// run waits for ctx, saying so when a daemon ends on its own meanwhile.
func (c *cluster) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(c.out, "\nstopping the local cluster")
			return
		case d := <-c.exited:
			fmt.Fprintf(c.out, "%s (pid %d) %s by itself; see %s\n", d.Name, d.PID, d.exitNote("exited"), d.Log)
		}
	}
}

// stop stops whatever runs, mount first, then the master (it saves the
// metadata) and last the metaloggers (they store the master's last
// entries), and reports each. It returns false if something did not
// stop cleanly.
func (c *cluster) stop() bool {
	return stopAll(c.out, c.st.Mount, c.mount, c.cs, c.master, c.ml)
}

// stopAll is the stop sequence, for `up` (its children) and for `down`
// (the daemons of a run whose mfslocal is gone). nil daemons are
// skipped.
func stopAll(out io.Writer, mnt string, mount *daemon, cs []*daemon, master *daemon, ml []*daemon) bool {
	clean, unmounted := true, false
	if mnt != "" {
		if m, ok, err := mountAt(mnt); err == nil && ok && isFUSE(m.FSType) {
			note, err := unmount(mnt)
			switch {
			case err != nil:
				fmt.Fprintf(out, "%s: %v\n", mnt, err)
				clean = false
			case note != "":
				fmt.Fprintf(out, "unmounted %s: %s\n", mnt, note)
			default:
				fmt.Fprintf(out, "unmounted %s\n", mnt)
			}
			unmounted = err == nil
		}
	}
	if mount != nil {
		// mfsmount ends by itself once unmounted; otherwise, or if it
		// does not, it is told to.
		note := "exited after the unmount"
		if !unmounted || !mount.wait(mountGrace) {
			note = mount.stop(mountGrace)
		} else if mount.failed() {
			note = mount.exitNote(note)
		}
		clean = reportStop(out, mount, note) && clean
	}
	clean = stopTogether(out, cs, csGrace) && clean
	if master != nil {
		note := master.stop(masterGrace)
		if master.cmd != nil && !master.failed() && note == "stopped" {
			note += ", metadata saved"
		}
		clean = reportStop(out, master, note) && clean
	}
	// The metaloggers go last: until the master has stopped, they may
	// still be sent entries it must not lose.
	return stopTogether(out, ml, mlGrace) && clean
}

// stopTogether stops daemons of which none depends on another, at once,
// and reports each in order.
func stopTogether(out io.Writer, ds []*daemon, grace time.Duration) bool {
	notes := make([]chan string, len(ds))
	for i, d := range ds {
		notes[i] = make(chan string, 1)
		go func() { notes[i] <- d.stop(grace) }()
	}
	clean := true
	for i, d := range ds {
		clean = reportStop(out, d, <-notes[i]) && clean
	}
	return clean
}

func reportStop(out io.Writer, d *daemon, note string) bool {
	fmt.Fprintf(out, "%-16s pid %-7d %s\n", d.Name, d.PID, note)
	// A daemon that had exited by itself was reported when it did.
	return note == "stopped" || note == "stopped, metadata saved" || note == "had already exited" || note == "exited after the unmount"
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "mfslocal"
	}
	return h
}

// size formats bytes for people.
func size(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// setRootGoal sets the goal of the mount's root through the mount, as
// mfscli does.
func setRootGoal(_ context.Context, mnt string, g replication.Goal) error {
	return mfscli.SetGoal(mnt, g)
}
