package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/metalogger"
	"github.com/carpfs/carpfs/internal/replication"
)

// built holds the binaries buildAll made, once per test run.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// buildAll builds mfslocal and every binary it runs (and mfscli, with
// its goal aliases) into one directory, as `make build` lays out bin/.
func buildAll(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "mfslocal-test-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		for _, b := range [][2]string{
			{"mfslocal", "local"}, {"mfsmaster", "mfsmaster"}, {"mfsmetalogger", "metalogger"},
			{"mfschunkserver", "chunkserver"}, {"mfsmount", "mount"}, {"mfscli", "cli"},
		} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b[0]), "github.com/carpfs/carpfs/"+b[1]).CombinedOutput()
			if err != nil {
				built.err = fmt.Errorf("build %s: %v\n%s", b[0], err, out)
				return
			}
		}
		for _, alias := range []string{"mfsgetgoal", "mfssetgoal"} {
			if err := os.Symlink("mfscli", filepath.Join(dir, alias)); err != nil {
				built.err = err
				return
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// upProc is a running `mfslocal up` and the lines it has printed.
type upProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   []string
	lines chan string
	done  chan struct{}
	err   error
}

func startUp(t *testing.T, bin, dir string, extra ...string) *upProc {
	t.Helper()
	args := append([]string{"up", "-d", dir, "--any-ports"}, extra...)
	u := &upProc{cmd: exec.Command(filepath.Join(bin, "mfslocal"), args...), lines: make(chan string, 100), done: make(chan struct{})}
	pr, pw := io.Pipe()
	u.cmd.Stdout, u.cmd.Stderr = pw, pw
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			u.mu.Lock()
			u.out = append(u.out, sc.Text())
			u.mu.Unlock()
			select {
			case u.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		u.err = u.cmd.Wait()
		pw.Close()
		close(u.done)
	}()
	t.Cleanup(func() {
		select {
		case <-u.done:
		default:
			// Ctrl-C, as a user would: up stops its daemons in order.
			u.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-u.done:
			case <-time.After(3 * time.Minute):
				u.cmd.Process.Kill()
				<-u.done
			}
		}
		// Whatever a failed test left behind (up killed, or stuck).
		if err := Down(dir, io.Discard); err != nil && !errors.Is(err, errNotRunning) && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cleanup: %v", err)
		}
		if t.Failed() {
			t.Logf("mfslocal up output:\n%s", u.output())
		}
	})
	return u
}

func (u *upProc) output() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.out, "\n")
}

// waitFor waits for a printed line containing s.
func (u *upProc) waitFor(t *testing.T, s string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l := <-u.lines:
			if strings.Contains(l, s) {
				return l
			}
		case <-u.done:
			t.Fatalf("mfslocal up exited (%v) before printing %q:\n%s", u.err, s, u.output())
		case <-timeout:
			t.Fatalf("mfslocal up did not print %q within %s:\n%s", s, d, u.output())
		}
	}
}

func (u *upProc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-u.done:
		return u.err
	case <-time.After(d):
		t.Fatalf("mfslocal up still runs %s later:\n%s", d, u.output())
		return nil
	}
}

// run runs one of the built binaries, as from another shell.
func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mfslocal mounts FUSE and runs every daemon; CI runs as root")
	}
	if err := checkFUSE(); err != nil {
		t.Fatal(err)
	}
}

// checkGone fails unless every process of st and its mount are gone.
func checkGone(t *testing.T, st *State) {
	t.Helper()
	if st.Up.Alive() {
		t.Errorf("mfslocal up (pid %d) still runs", st.Up.PID)
	}
	if len(st.Daemons) != 2+Metaloggers+3 {
		t.Errorf("state lists %d daemons, want master, %d metaloggers, 3 chunkservers, mount: %+v", len(st.Daemons), Metaloggers, st.Daemons)
	}
	for _, p := range st.Daemons {
		if p.Alive() {
			t.Errorf("%s (pid %d) still runs", p.Name, p.PID)
		}
		// An orphan's exit is reaped by init, a moment later.
		deadline := time.Now().Add(10 * time.Second)
		for {
			start, _, err := procIdentity(p.PID)
			if err != nil || start != p.Start {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s (pid %d) still exists 10 s after it ended (a zombie nobody reaps?)", p.Name, p.PID)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if m, ok, err := mountAt(st.Mount); err != nil || ok {
		t.Errorf("%s still mounted (%+v) or mountinfo unreadable (%v)", st.Mount, m, err)
	}
}

// TestUpDown is the README's first command from a user's side: up
// prints where it is mounted, a file written there reads back, goals
// work through the mount, status and down from another shell do their
// job, and nothing is left running or mounted. A second up on the same
// directory finds the file again, and Ctrl-C stops that one.
func TestUpDown(t *testing.T) {
	needRoot(t)
	bin := buildAll(t)
	dir := t.TempDir()

	u := startUp(t, bin, dir)
	line := u.waitFor(t, "mounted at ", 3*time.Minute)
	mnt := filepath.Join(dir, mountDir)
	if !strings.HasSuffix(line, "mounted at "+mnt) {
		t.Fatalf("up says %q, want the mount point %s", line, mnt)
	}
	u.waitFor(t, "down -d "+dir, 10*time.Second)

	data := bytes.Repeat([]byte("carpfs local cluster\n"), 50000) // 1 MiB
	file := filepath.Join(mnt, "hello.txt")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatalf("write through the mount: %v", err)
	}
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back through the mount: %d bytes, %v", len(got), err)
	}

	// The root's goal is the default --goal 2; a new file inherits it.
	for _, args := range [][]string{{"mfscli", "goal", "get", mnt}, {"mfsgetgoal", file}} {
		out, err := run(t, filepath.Join(bin, args[0]), args[1:]...)
		if err != nil || !strings.HasSuffix(strings.TrimSpace(out), ": 2") {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	sub := filepath.Join(mnt, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "deeper", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, filepath.Join(bin, "mfssetgoal"), "-r", "3", sub); err != nil ||
		!regexpMatch(out, `inodes with goal changed: +3\b`) {
		t.Fatalf("mfssetgoal -r 3: %v\n%s", err, out)
	}
	if out, err := run(t, filepath.Join(bin, "mfscli"), "goal", "get", "-r", sub); err != nil ||
		!regexpMatch(out, `files with goal +3 : +1\b`) || !regexpMatch(out, `directories with goal +3 : +2\b`) {
		t.Fatalf("goal get -r: %v\n%s", err, out)
	}
	if out, err := run(t, filepath.Join(bin, "mfscli"), "goal", "get", file); err != nil || !strings.HasSuffix(strings.TrimSpace(out), ": 2") {
		t.Fatalf("a file outside the tree changed: %v\n%s", err, out)
	}
	// A new file takes its directory's goal.
	if err := os.WriteFile(filepath.Join(sub, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, filepath.Join(bin, "mfsgetgoal"), filepath.Join(sub, "new")); err != nil || !strings.HasSuffix(strings.TrimSpace(out), ": 3") {
		t.Fatalf("a new file in a goal-3 directory: %v\n%s", err, out)
	}

	out, err := run(t, filepath.Join(bin, "mfslocal"), "status", "-d", dir)
	if err != nil || !strings.Contains(out, "mounted at "+mnt) || strings.Contains(out, "not running") {
		t.Fatalf("status while up: %v\n%s", err, out)
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Up.PID != u.cmd.Process.Pid {
		t.Fatalf("state names pid %d for up, which is %d", st.Up.PID, u.cmd.Process.Pid)
	}
	// Every metalogger runs, follows the master in its first term, has
	// stored what was written above, and status lists it.
	ml := metaloggers(t, st)
	stored := make([]uint64, len(ml))
	for i, p := range ml {
		if !regexpMatch(out, `(?m)^  `+p.Name+` +pid `+fmt.Sprint(p.PID)+` +running +log `) ||
			!strings.Contains(out, "data dir "+p.Data+": term 1, ") {
			t.Errorf("status does not list %s (pid %d) running in %s:\n%s", p.Name, p.PID, p.Data, out)
		}
		ms := askML(t, bin, p)
		if !ms.Running || ms.Master != st.MLAddr || ms.Term != 1 || ms.Version < 10 || ms.Error != "" {
			t.Errorf("%s: %+v, want it running, following %s in term 1, with the entries written", p.Name, ms, st.MLAddr)
		}
		stored[i] = ms.Version
	}

	if out, err := run(t, filepath.Join(bin, "mfslocal"), "down", "-d", dir); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if err := u.wait(t, 10*time.Second); err != nil {
		t.Fatalf("up ended with %v after down:\n%s", err, u.output())
	}
	if !strings.Contains(u.output(), "metadata saved") {
		t.Errorf("up did not report the master's clean stop:\n%s", u.output())
	}
	checkStopOrder(t, u.output())
	checkGone(t, st)
	// Stopped after the master, each metalogger kept all it had and
	// wrote its replica.
	for i, p := range ml {
		if ms := askML(t, bin, p); ms.Running || ms.Version < stored[i] || ms.Term != 1 {
			t.Errorf("%s after down: %+v, want stopped with at least version %d", p.Name, ms, stored[i])
		}
		if _, err := os.Stat(filepath.Join(p.Data, metalogger.DumpName)); err != nil {
			t.Errorf("%s wrote no replica on stop: %v", p.Name, err)
		}
	}
	if out, err := run(t, filepath.Join(bin, "mfslocal"), "status", "-d", dir); err == nil {
		t.Errorf("status exits 0 with nothing running:\n%s", out)
	}
	if out, err := run(t, filepath.Join(bin, "mfslocal"), "down", "-d", dir); err == nil || !strings.Contains(out, "no local cluster is running") {
		t.Errorf("a second down: %v\n%s", err, out)
	}

	// Again on the same directory: the data is still there, and the
	// metaloggers, which remember the term they accepted, take the new
	// master's next one.
	u = startUp(t, bin, dir)
	u.waitFor(t, "mounted at ", 3*time.Minute)
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after a restart: %d bytes, %v", len(got), err)
	}
	st, err = ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range metaloggers(t, st) {
		if ms := askML(t, bin, p); !ms.Running || ms.Term != 2 || ms.Version < stored[i] {
			t.Errorf("%s after a restart: %+v, want it running in term 2 from version %d on", p.Name, ms, stored[i])
		}
	}
	u.cmd.Process.Signal(syscall.SIGINT)
	if err := u.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("up ended with %v after Ctrl-C", err)
	}
	checkStopOrder(t, u.output())
	checkGone(t, st)
}

// TestDownAfterUpKilled: `up` killed with SIGKILL leaves its daemons;
// a new `up` refuses to start beside them, and `down` stops them
// itself, found by the PIDs in the state file.
func TestDownAfterUpKilled(t *testing.T) {
	needRoot(t)
	bin := buildAll(t)
	dir := t.TempDir()
	u := startUp(t, bin, dir, "--chunkservers", "3")
	u.waitFor(t, "mounted at ", 3*time.Minute)
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	u.cmd.Process.Kill()
	u.wait(t, 10*time.Second)
	if len(st.liveDaemons()) != 2+Metaloggers+3 {
		t.Fatalf("want every daemon running after up was killed, have %+v", st.liveDaemons())
	}
	if out, err := run(t, filepath.Join(bin, "mfslocal"), "up", "-d", dir, "--any-ports"); err == nil || !strings.Contains(out, "still run") {
		t.Fatalf("a second up beside the first one's daemons: %v\n%s", err, out)
	}
	out, err := run(t, filepath.Join(bin, "mfslocal"), "down", "-d", dir)
	if err != nil || !strings.Contains(out, "left running") {
		t.Fatalf("down: %v\n%s", err, out)
	}
	checkStopOrder(t, out)
	checkGone(t, st)
}

// metaloggers returns the metaloggers st records, in order.
func metaloggers(t *testing.T, st *State) []Proc {
	t.Helper()
	var ml []Proc
	for _, p := range st.Daemons {
		if strings.HasPrefix(p.Name, binMetalogger) {
			ml = append(ml, p)
		}
	}
	if len(ml) != Metaloggers {
		t.Fatalf("state lists %d metaloggers, want %d: %+v", len(ml), Metaloggers, st.Daemons)
	}
	for i, p := range ml {
		if want := filepath.Join(st.Dir, mlDir+fmt.Sprint(i+1)); p.Data != want {
			t.Fatalf("%s has data dir %q, want %s", p.Name, p.Data, want)
		}
	}
	return ml
}

// askML runs `mfsmetalogger status` on a metalogger's data directory,
// as an operator would.
func askML(t *testing.T, bin string, p Proc) metalogger.Status {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, binMetalogger), "status", "-d", p.Data).Output()
	if err != nil {
		t.Fatalf("mfsmetalogger status -d %s: %v\n%s", p.Data, err, out)
	}
	var ms metalogger.Status
	if err := json.Unmarshal(out, &ms); err != nil {
		t.Fatalf("mfsmetalogger status -d %s: %v\n%s", p.Data, err, out)
	}
	return ms
}

// checkStopOrder checks that a stop printed by up or down went
// chunkservers, master, metaloggers, and that every metalogger stopped
// cleanly.
func checkStopOrder(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	at := func(name string) int {
		for i, l := range lines {
			if strings.HasPrefix(l, name+" ") && strings.Contains(l, " pid ") && strings.Contains(l, "stopped") {
				return i
			}
		}
		t.Errorf("no line says %s stopped:\n%s", name, out)
		return -1
	}
	master := at(binMaster)
	for i := 1; i <= 3; i++ {
		if cs := at(binChunkserver + fmt.Sprint(i)); cs > master {
			t.Errorf("%s%d stopped after the master:\n%s", binChunkserver, i, out)
		}
	}
	for i := 1; i <= Metaloggers; i++ {
		if ml := at(binMetalogger + fmt.Sprint(i)); ml < master {
			t.Errorf("%s%d stopped before the master:\n%s", binMetalogger, i, out)
		}
	}
}

func regexpMatch(s, re string) bool { return regexp.MustCompile(re).MatchString(s) }

// TestProcIdentity: a Proc matches only the process it names.
func TestProcIdentity(t *testing.T) {
	self, err := selfProc()
	if err != nil {
		t.Fatal(err)
	}
	if !self.Alive() {
		t.Fatalf("this process does not match itself: %+v", self)
	}
	other := self
	other.Start++
	if other.Alive() {
		t.Fatal("a different start time still matches: a reused PID would be signalled")
	}
	other = self
	other.Args = append([]string{"/bin/else"}, self.Args[1:]...)
	if other.Alive() {
		t.Fatal("a different command line still matches")
	}
	if err := other.signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal to a process that is not ours: %v", err)
	}

	dir := t.TempDir()
	d, err := startDaemon("sleep", mustLookPath(t, "sleep"), []string{"60"}, filepath.Join(dir, "sleep.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Alive() {
		t.Fatalf("a started daemon does not match /proc: %+v", d.Proc)
	}
	if note := d.stop(5 * time.Second); note != "stopped (signal: terminated)" {
		t.Fatalf("stop: %q", note)
	}
	if d.Alive() || !foreign(d.Proc).wait(time.Second) {
		t.Fatal("still alive after stop")
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseMountInfo(t *testing.T) {
	in := "22 1 0:21 / /proc rw,nosuid - proc proc rw\n" +
		"98 29 0:52 / /var/tmp/carpfs\\040local/mnt rw,nosuid,nodev,relatime shared:55 - fuse.carpfs 127.0.0.1:9421:/ rw,user_id=0\n"
	ms, err := ParseMountInfo([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := MountEntry{Point: "/var/tmp/carpfs local/mnt", Root: "/", FSType: "fuse.carpfs", Source: "127.0.0.1:9421:/"}
	if len(ms) != 2 || ms[1] != want {
		t.Fatalf("got %+v", ms)
	}
	if _, err := ParseMountInfo([]byte("1 2 3 4\n")); err == nil {
		t.Fatal("a short line was accepted")
	}
	if m, ok, err := mountAt("/proc"); err != nil || !ok || m.FSType != "proc" {
		t.Fatalf("mountAt(/proc) = %+v %v %v", m, ok, err)
	}
}

// TestRegistrations reads the master's log lines as mfsmaster writes
// them, from an offset on.
func TestRegistrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mfsmaster.log")
	old := `time=2026-01-01T00:00:00Z level=INFO msg="chunkserver registered" server=127.0.0.1:1 name=h chunks=0` + "\n"
	now := `time=2026-01-01T00:00:01Z level=INFO msg="serving clients" addr=127.0.0.1:9421` + "\n" +
		`time=2026-01-01T00:00:02Z level=INFO msg="chunkserver registered" server=127.0.0.1:9422 name=h chunks=3 damaged=0 dc="" rack="" free=100` + "\n" +
		`time=2026-01-01T00:00:03Z level=WARN msg="chunkserver down; its copies are forgotten" server=127.0.0.1:9423 copies=0` + "\n"
	if err := os.WriteFile(path, []byte(old+now), 0o644); err != nil {
		t.Fatal(err)
	}
	seen, err := registrations(path, int64(len(old)))
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || !seen["127.0.0.1:9422"] {
		t.Fatalf("got %v, want only 127.0.0.1:9422", seen)
	}
}

// TestMainErrors: mistakes get one clear line and exit 1.
func TestMainErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mfslocal"}, "want a command"},
		{[]string{"mfslocal", "up", "-d", dir, "--goal", "0"}, "--goal"},
		{[]string{"mfslocal", "up", "-d", dir, "--chunkservers", "0"}, "--chunkservers 0"},
		{[]string{"mfslocal", "up", "-d", dir, "extra"}, "unexpected argument"},
		{[]string{"mfslocal", "down", "-d", dir}, "no local cluster is running"},
		{[]string{"mfslocal", "status", "-d", dir}, "never started there"},
		{[]string{"mfslocal", "up", "--bogus"}, "bogus"},
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), tc.args, &out, &errb); code != 1 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestMissingBinaries: up names what is missing and how to build it,
// before starting anything.
func TestMissingBinaries(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, binMaster), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Up(context.Background(), Options{Dir: t.TempDir(), Chunkservers: 3, Goal: replication.MustGoal("2"), BinDir: bin})
	if err == nil || !strings.Contains(err.Error(), "mfsmetalogger, mfschunkserver, mfsmount not found in "+bin) || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("got %v", err)
	}
}
