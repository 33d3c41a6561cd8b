package chunkserver_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/carpfs/carpfs/internal/app/chunkserver"
	mfsmaster "github.com/carpfs/carpfs/internal/app/master"
	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/wire"
)

// syncBuf is a log sink two daemons' goroutines may write at once.
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

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestMainWithMfsmaster runs both daemons' Main in-process, the
// chunkserver with the packaged sample configuration and its disks from
// --hdd: it registers with mfsmaster's chunkserver port, records the
// master's term, and both stop cleanly.
func TestMainWithMfsmaster(t *testing.T) {
	dir := t.TempDir()
	csAddr := freeAddr(t)
	var mlog, clog syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mdone := make(chan int, 1)
	go func() {
		mdone <- mfsmaster.Main(ctx, []string{"mfsmaster", "-c", filepath.Join(dir, "none.cfg"),
			"--exports", "../../../packaging/etc/mfsexports.cfg", "-d", filepath.Join(dir, "meta"),
			"--listen", "127.0.0.1:0", "--cs-listen", csAddr}, &mlog, &mlog)
	}()
	// urfave/cli applies its global help flag while parsing: two Mains
	// parsing at once race on it, so the chunkserver starts after the
	// master is up.
	waitFor(t, "the master to serve chunkservers", func() bool {
		return strings.Contains(mlog.String(), "serving chunkservers")
	})
	// The disks exist before the chunkserver starts: it refuses missing
	// ones.
	for _, d := range []string{"hd1", "hd2"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cdone := make(chan int, 1)
	go func() {
		cdone <- chunkserver.Main(ctx, []string{"mfschunkserver", "-c", "../../../packaging/etc/mfschunkserver.cfg",
			"--hdd", filepath.Join(dir, "hd1") + "," + filepath.Join(dir, "hd2"),
			"--master", csAddr, "--data-port", "127.0.0.1:0", "-d", filepath.Join(dir, "cs")}, &clog, &clog)
	}()
	waitFor(t, "the master to log a registration", func() bool {
		return strings.Contains(mlog.String(), "chunkserver registered")
	})
	// The data port answers: a chunk it does not have is ENOENT.
	m := regexp.MustCompile(`msg="serving the data port" addr=(\S+)`).FindStringSubmatch(clog.String())
	if m == nil {
		t.Fatalf("no data port in the chunkserver's log:\n%s", clog.String())
	}
	pool := chunkio.NewPool(chunkio.Config{Role: wire.RoleClient, Name: "test"})
	defer pool.Close()
	if err := pool.Read(ctx, 1, 1, []string{m[1]}, 0, make([]byte, 10)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("read from the data port: %v", err)
	}
	cancel()
	if code := <-cdone; code != 0 {
		t.Errorf("mfschunkserver exit %d\n%s", code, clog.String())
	}
	if code := <-mdone; code != 0 {
		t.Errorf("mfsmaster exit %d\n%s", code, mlog.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "cs", chunkserver.StateFile))
	if err != nil || !strings.Contains(string(b), " term=1 ") {
		t.Fatalf("state file: %q, %v", b, err)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("master:\n%s\nchunkserver:\n%s", mlog.String(), clog.String())
	}
}

// TestMainBadConfig: a bad setting is refused with exit 1 and a reason.
func TestMainBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "cs.cfg")
	if err := os.WriteFile(cfg, []byte("HDD_TEST_SPEED = fast\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out syncBuf
	code := chunkserver.Main(context.Background(), []string{"mfschunkserver", "-c", cfg, "--hdd", t.TempDir()}, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "HDD_TEST_SPEED") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}
