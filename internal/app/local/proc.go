package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc names one process mfslocal started, as kept in the state file.
// A PID alone is not enough to signal it later: after a reboot or a long
// time the number may belong to another program, so Start (the kernel's
// start time of the process) and Args must match /proc too.
type Proc struct {
	Name  string   `json:"name"` // "mfsmaster", "mfsmetalogger1", "mfschunkserver2", "mfsmount", "mfslocal up"
	PID   int      `json:"pid"`
	Start uint64   `json:"start"` // /proc/PID/stat field 22, clock ticks since boot
	Args  []string `json:"args"`  // argv, as /proc/PID/cmdline shows it
	Log   string   `json:"log,omitempty"`
	Data  string   `json:"data,omitempty"` // its DATA_PATH, if it has one
}

// procIdentity reads a process's start time and argv from /proc. A
// zombie has an empty cmdline, so it never matches a Proc: a process
// that has exited counts as gone even before its parent reaps it.
func procIdentity(pid int) (start uint64, args []string, err error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, nil, err
	}
	// The command name in parentheses may hold spaces and parentheses;
	// the fields after the last ')' start with field 3 (state).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return 0, nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	if start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return 0, nil, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return 0, nil, err
	}
	if len(cmdline) > 0 {
		args = strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	}
	return start, args, nil
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

// Alive reports whether p still runs: its PID exists with the same start
// time and command line.
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	start, args, err := procIdentity(p.PID)
	return err == nil && start == p.Start && slices.Equal(args, p.Args)
}

// signal sends sig to p after checking it is still the process started.
func (p Proc) signal(sig syscall.Signal) error {
	if !p.Alive() {
		return fmt.Errorf("%s (pid %d): %w", p.Name, p.PID, os.ErrProcessDone)
	}
	if err := syscall.Kill(p.PID, sig); err != nil {
		return fmt.Errorf("%s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// daemon is a process to stop: a child of this mfslocal (cmd set, so
// its exit is seen by Wait), or one found in the state file of a run
// whose mfslocal is gone (polled through /proc).
type daemon struct {
	Proc
	cmd  *exec.Cmd
	done chan struct{} // closed once the child is reaped
	err  error         // Wait's result, valid after done
}

// startDaemon runs bin with args in its own process group, so that a
// Ctrl-C on the terminal reaches only mfslocal, which then stops the
// daemons in order. Output is appended to logPath after a line naming
// the start. exited, if not nil, receives the daemon once it ends.
func startDaemon(name, bin string, args []string, logPath string, exited chan<- *daemon) (*daemon, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	fmt.Fprintf(f, "--- %s mfslocal: %s\n", time.Now().Format(time.RFC3339), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{Proc: Proc{Name: name, PID: cmd.Process.Pid, Args: cmd.Args, Log: logPath}, cmd: cmd, done: make(chan struct{})}
	// Read the start time before anyone can reap the child: until Wait,
	// the PID stays ours even if it exits at once. The kernel shows the
	// new command line a moment after exec has returned to us; wait for
	// it, so that the Proc matches /proc from the start.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		start, args, err := procIdentity(d.PID)
		d.Start = start
		if err != nil || slices.Equal(args, d.Args) || zombie(d.PID) || time.Now().After(deadline) {
			break
		}
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
		if exited != nil {
			exited <- d
		}
	}()
	return d, nil
}

// foreign wraps a process of an earlier run, found in its state file.
func foreign(p Proc) *daemon { return &daemon{Proc: p} }

// exited reports whether the daemon has ended.
func (d *daemon) exited() bool {
	if d.cmd == nil {
		return !d.Alive()
	}
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the daemon to end and reports whether it
// did.
func (d *daemon) wait(timeout time.Duration) bool {
	if d.cmd != nil {
		select {
		case <-d.done:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	deadline := time.Now().Add(timeout)
	for d.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// kill sends sig to a daemon still running. A child is signalled through
// its *os.Process, which cannot hit a reused PID before Wait.
func (d *daemon) kill(sig syscall.Signal) error {
	if d.cmd == nil {
		return d.signal(sig)
	}
	if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s (pid %d): %w", d.Name, d.PID, err)
	}
	return nil
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. It reports how
// the daemon ended, for the summary printed at the end.
func (d *daemon) stop(grace time.Duration) string {
	if d.exited() {
		return d.exitNote("had already exited")
	}
	if err := d.kill(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return "could not be stopped: " + err.Error()
	}
	if d.wait(grace) {
		return d.exitNote("stopped")
	}
	_ = d.kill(syscall.SIGKILL)
	if d.wait(5 * time.Second) {
		return fmt.Sprintf("killed: it did not stop within %s of SIGTERM", grace)
	}
	return "still running after SIGKILL"
}

// exitNote words an ended daemon's exit status.
func (d *daemon) exitNote(what string) string {
	if d.cmd == nil {
		return what
	}
	if d.err != nil {
		return fmt.Sprintf("%s (%v)", what, d.err)
	}
	return what
}

// failed says whether a child ended with a non-zero status.
func (d *daemon) failed() bool { return d.cmd != nil && d.exited() && d.err != nil }

// logTail returns the last lines of path, for an error message that
// shows why a daemon did not start.
func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
