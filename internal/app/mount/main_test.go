package mount

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/carpfs/carpfs/internal/app/master"
)

const fuseMagic = 0x65735546

func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root; run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// syncBuf is a log the master writes while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMaster runs mfsmaster in this process and returns its client
// address and log. Metadata operations need no chunkservers.
func startMaster(t *testing.T) (string, *syncBuf) {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	log := &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		master.Main(ctx, []string{"mfsmaster", "-c", filepath.Join(dir, "none.cfg"), "--exports", filepath.Join(dir, "none.exports"),
			"-d", dir, "--listen", addr, "--cs-listen", "127.0.0.1:0"}, log, log)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("master log:\n%s", log)
		}
	})
	waitFor(t, "the master to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr, log
}

func buildMount(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mfsmount")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/carpfs/carpfs/mount").CombinedOutput(); err != nil {
		t.Fatalf("build mfsmount: %v\n%s", err, out)
	}
	return bin
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isMounted(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == fuseMagic
}

// mountSource returns the source and type /proc/self/mountinfo shows
// for dir.
func mountSource(t *testing.T, dir string) (string, string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[4] == dir {
			for i := 6; i+2 < len(f); i++ {
				if f[i] == "-" {
					return f[i+2], f[i+1]
				}
			}
		}
	}
	return "", ""
}

// cleanupMount unmounts dir if a failed test left it mounted.
func cleanupMount(t *testing.T, dir string) {
	t.Cleanup(func() {
		if isMounted(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// TestForeground runs mfsmount -f as mfslocal and systemd do: options
// after the mount point, SIGTERM unmounts and ends the session.
func TestForeground(t *testing.T) {
	needFUSE(t)
	addr, mlog := startMaster(t)
	bin := buildMount(t)
	dir := t.TempDir()
	cleanupMount(t, dir)
	host, port, _ := net.SplitHostPort(addr)
	var out syncBuf
	cmd := exec.Command(bin, dir, "-H", host, "-P", port, "-f", "-o", "mfsattrcacheto=0.5")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mfsmount output:\n%s", &out)
		}
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Errorf("mfsmount (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
			}
		}
	})
	waitFor(t, "the mount", func() bool { return isMounted(dir) })
	if src, typ := mountSource(t, dir); src != addr+":/" || typ != "fuse.carpfs" {
		t.Fatalf("mounted from %q type %q, want %q fuse.carpfs", src, typ, addr+":/")
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("mfsmount after SIGTERM: %v", waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("mfsmount still running 20 s after SIGTERM")
	}
	if isMounted(dir) {
		t.Fatal("still mounted after SIGTERM")
	}
	if !strings.Contains(mlog.String(), "session closed by its client") {
		t.Fatal("the master did not see the session end")
	}
}

// TestMountHelper runs mount(8)'s convention through a mount.mfs link:
// it returns once mounted, the daemon goes on serving, and an umount
// from outside ends it and its session.
func TestMountHelper(t *testing.T) {
	needFUSE(t)
	addr, mlog := startMaster(t)
	bin := buildMount(t)
	helper := filepath.Join(filepath.Dir(bin), "mount.mfs")
	if err := os.Symlink(bin, helper); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cleanupMount(t, dir)
	spec := addr + ":/"

	// -f is mount(8)'s fake mount: nothing happens.
	if out, err := exec.Command(helper, spec, dir, "-f", "-o", "defaults").CombinedOutput(); err != nil || isMounted(dir) {
		t.Fatalf("fake mount: %v, mounted %v\n%s", err, isMounted(dir), out)
	}
	// A directory the master does not have: the daemon's error comes
	// back through the helper's exit status.
	out, err := exec.Command(helper, addr+":/missing", dir, "-o", "_netdev").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no such file or directory") {
		t.Fatalf("mounting a missing directory: %v\n%s", err, out)
	}
	out, err = exec.Command(helper, spec, dir, "-o", "rw,_netdev,mfstimeout=10").CombinedOutput()
	if err != nil {
		t.Fatalf("mount.mfs: %v\n%s", err, out)
	}
	if !isMounted(dir) {
		t.Fatal("mount.mfs returned before the mount was there")
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the daemon to end its session", func() bool {
		return strings.Contains(mlog.String(), "session closed by its client")
	})
}
