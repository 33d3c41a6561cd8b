package mount_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary a lock helper (see TestMain): fcntl
// locks belong to a process, so another owner needs another process.
const helperEnv = "CARPFS_MOUNT_LOCK_HELPER"

func TestMain(m *testing.M) {
	if what := os.Getenv(helperEnv); what != "" {
		os.Exit(lockHelper(what))
	}
	os.Exit(m.Run())
}

// lockHelper runs "hold PATH" (take a write lock on the whole file, say
// "locked", hold it until stdin closes) or "try PATH" (say whether a
// write lock can be taken at once).
func lockHelper(what string) int {
	verb, path, _ := strings.Cut(what, " ")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	err = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
	switch {
	case verb == "try" && err == nil:
		fmt.Println("free")
	case verb == "try" && errors.Is(err, syscall.EAGAIN):
		fmt.Println("busy")
	case verb == "hold" && err == nil:
		fmt.Println("locked")
		bufio.NewReader(os.Stdin).ReadString('\n')
	default:
		fmt.Println(err)
		return 1
	}
	return 0
}

// helper starts a lock helper and returns its first line.
func helper(t *testing.T, verb, path string) (*exec.Cmd, *os.File, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+verb+" "+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	return cmd, stdin.(*os.File), strings.TrimSpace(line)
}

// TestPOSIXLocks: fcntl locks between processes, F_GETLK naming the
// holder, F_SETLKW waiting for a release, and the locks of a process
// going when it closes any descriptor of the file.
func TestPOSIXLocks(t *testing.T) {
	needFUSE(t)
	c := startCluster(t, 1)
	m := c.mount(nil)
	p := m.path("f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	holder, release, line := helper(t, "hold", p)
	if line != "locked" {
		t.Fatalf("helper: %s", line)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd := syscall.Flock_t{Type: syscall.F_RDLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &rd); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_SETLK against another process's write lock: %v, want EAGAIN", err)
	}
	q := syscall.Flock_t{Type: syscall.F_WRLCK, Start: 1, Len: 2}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &q); err != nil {
		t.Fatal(err)
	}
	if q.Type != syscall.F_WRLCK || q.Pid != int32(holder.Process.Pid) || q.Start != 0 || q.Len != 0 {
		t.Fatalf("F_GETLK: %+v, want the helper's (pid %d) write lock on the whole file", q, holder.Process.Pid)
	}

	got := make(chan error, 1)
	go func() {
		wr := syscall.Flock_t{Type: syscall.F_WRLCK}
		got <- syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &wr)
	}()
	select {
	case err := <-got:
		t.Fatalf("F_SETLKW returned while the lock was held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	release.Close() // the helper exits; closing its descriptor drops its lock
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("F_SETLKW: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("F_SETLKW not granted 10 s after the holder exited")
	}
	if _, _, line := helper(t, "try", p); line != "busy" {
		t.Fatalf("another process tried our lock: %s, want busy", line)
	}
	// Closing any descriptor of the file drops the process's locks.
	g, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if _, _, line := helper(t, "try", p); line != "free" {
		t.Fatalf("after closing another descriptor: %s, want free", line)
	}
}

// TestFlock: flock(2) between two open files and between two mounts;
// a waiting LOCK_EX is granted when the holder closes.
func TestFlock(t *testing.T) {
	needFUSE(t)
	c := startCluster(t, 1)
	a, b := c.mount(nil), c.mount(nil)
	if err := os.WriteFile(a.path("f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f1, err := os.Open(a.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	f2, err := os.Open(a.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	other, err := os.Open(b.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := unix.Flock(int(f1.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("second LOCK_EX on the same mount: %v, want EWOULDBLOCK", err)
	}
	if err := unix.Flock(int(other.Fd()), unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("LOCK_SH on another mount: %v, want EWOULDBLOCK", err)
	}
	got := make(chan error, 1)
	go func() { got <- unix.Flock(int(other.Fd()), unix.LOCK_SH) }()
	select {
	case err := <-got:
		t.Fatalf("LOCK_SH returned while LOCK_EX was held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	f1.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("LOCK_SH not granted 10 s after the holder closed")
	}
	if err := unix.Flock(int(f2.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Fatalf("a second shared lock: %v", err)
	}
	if err := unix.Flock(int(f2.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
}
