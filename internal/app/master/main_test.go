package master

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
)

// buildMaster builds the real mfsmaster binary once per test run.
func buildMaster(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mfsmaster")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/carpfs/carpfs/mfsmaster").CombinedOutput()
	if err != nil {
		t.Fatalf("build mfsmaster: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type proc struct {
	cmd  *exec.Cmd
	addr string
}

func start(t *testing.T, bin, dir string) *proc {
	t.Helper()
	addr := freePort(t)
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "none.cfg"), "--exports", filepath.Join(dir, "none-exports.cfg"),
		"-d", filepath.Join(dir, "data"), "--listen", addr, "--cs-listen", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &proc{cmd, addr}
}

// dial waits for the master to serve and opens a session.
func dial(t *testing.T, addr string) *client.Client {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := client.Dial(ctx, addr, client.Config{Name: "test"})
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("master at %s never served: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMasterProcess runs the real binary: files created before a kill -9
// are there after the restart, and a SIGTERM stop writes metadata.mfs.
func TestMasterProcess(t *testing.T) {
	bin := buildMaster(t)
	dir := t.TempDir()
	ctx := context.Background()
	cr := client.Cred{}

	p := start(t, bin, dir)
	c := dial(t, p.addr)
	for i := range 200 {
		if _, err := c.Create(ctx, cr, meta.RootInode, "f"+strconv.Itoa(i), uint8(meta.TypeFile), 0o644, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	if _, err := os.Stat(filepath.Join(dir, "data", "changelog.0.mfs")); err != nil {
		t.Fatalf("no changelog after the crash: %v", err)
	}

	p = start(t, bin, dir)
	c = dial(t, p.addr)
	for i := range 200 {
		if _, err := c.Lookup(ctx, cr, meta.RootInode, "f"+strconv.Itoa(i)); err != nil {
			t.Fatalf("f%d acknowledged before kill -9, missing after restart: %v", i, err)
		}
	}
	if _, err := c.Create(ctx, cr, meta.RootInode, "after", uint8(meta.TypeFile), 0o644, 0, false); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	dump := filepath.Join(dir, "data", "metadata.mfs")
	before, _ := os.Stat(dump)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	after, err := os.Stat(dump)
	if err != nil || (before != nil && !after.ModTime().After(before.ModTime()) && after.Size() == before.Size()) {
		t.Fatalf("no fresh metadata.mfs after a clean stop: %v", err)
	}
}

func TestBadConfigRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mfsmaster.cfg")
	os.WriteFile(cfg, []byte("COMMIT_MODE = maybe\n"), 0o644)
	var out, errb fakeWriter
	if code := Main(context.Background(), []string{"mfsmaster", "-c", cfg, "-d", dir}, &out, &errb); code != 1 {
		t.Fatalf("exit %d for a bad COMMIT_MODE", code)
	}
	if !containsAll(string(errb), "COMMIT_MODE", "maybe") {
		t.Fatalf("error does not name the setting: %s", errb)
	}
	os.WriteFile(cfg, []byte("CHUNKS_WRITE_REP_LIMIT = 0\n"), 0o644)
	errb = nil
	if code := Main(context.Background(), []string{"mfsmaster", "-c", cfg, "-d", dir}, &out, &errb); code != 1 || !containsAll(string(errb), "CHUNKS_WRITE_REP_LIMIT", "at least 1") {
		t.Fatalf("exit %d for a replication limit of 0: %s", code, errb)
	}
	os.WriteFile(cfg, []byte("DATA_PAHT = /x\n"), 0o644)
	errb = nil
	if code := Main(context.Background(), []string{"mfsmaster", "-c", cfg}, &out, &errb); code != 1 || !containsAll(string(errb), "mfsmaster.cfg:1", "DATA_PAHT") {
		t.Fatalf("exit %d, %s", code, errb)
	}
}

type fakeWriter []byte

func (w *fakeWriter) Write(p []byte) (int, error) { *w = append(*w, p...); return len(p), nil }

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestPackagedSamples keeps the shipped sample files loadable.
func TestPackagedSamples(t *testing.T) {
	dir := t.TempDir()
	var out, errb fakeWriter
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // load everything, then stop at once
	code := Main(ctx, []string{"mfsmaster", "-c", "../../../packaging/etc/mfsmaster.cfg",
		"--exports", "../../../packaging/etc/mfsexports.cfg", "-d", dir, "--listen", "127.0.0.1:0", "--cs-listen", "127.0.0.1:0"}, &out, &errb)
	if code != 0 {
		t.Fatalf("the sample configuration does not start a master: exit %d\n%s", code, errb)
	}
}

func TestMetaloggerSettings(t *testing.T) {
	for _, tc := range []struct {
		mls, mode string
		n         int
		hosts     []string
		wantMode  string
		bad       string
	}{
		{"", "", 0, nil, "sync", ""},
		{"3", "", 3, nil, "quorum", ""},
		{"0", "", 0, nil, "sync", ""},
		{"ml1, ml2,ml3", "", 3, []string{"ml1", "ml2", "ml3"}, "quorum", ""},
		{"10.0.0.1 10.0.0.2", "async", 2, []string{"10.0.0.1", "10.0.0.2"}, "async", ""},
		{"3", "sync", 0, nil, "", "COMMIT_MODE sync"},
		{"", "quorum", 0, nil, "", "needs METALOGGERS"},
		{"-1", "", 0, nil, "", "METALOGGERS -1"},
		{"3", "fast", 0, nil, "", "COMMIT_MODE \"fast\""},
	} {
		c := Defaults()
		c.Metaloggers, c.CommitMode = tc.mls, tc.mode
		err := c.Validate()
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("METALOGGERS %q COMMIT_MODE %q: error %v, want one saying %q", tc.mls, tc.mode, err, tc.bad)
			}
			continue
		}
		if err != nil {
			t.Errorf("METALOGGERS %q COMMIT_MODE %q: %v", tc.mls, tc.mode, err)
			continue
		}
		n, hosts, _ := c.metaloggers()
		if n != tc.n || strings.Join(hosts, ",") != strings.Join(tc.hosts, ",") || c.commitMode() != tc.wantMode {
			t.Errorf("METALOGGERS %q COMMIT_MODE %q: %d %v %s, want %d %v %s", tc.mls, tc.mode, n, hosts, c.commitMode(), tc.n, tc.hosts, tc.wantMode)
		}
	}
}
