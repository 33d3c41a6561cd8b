package mount_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/carpfs/carpfs/internal/app/chunkserver"
	"github.com/carpfs/carpfs/internal/app/master"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/mount"
	"github.com/carpfs/carpfs/internal/mount/session"
)

// needFUSE skips a test that mounts unless it can: root and /dev/fuse.
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root; run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
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

// logBuf collects a daemon's log, shown if the test fails.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// cluster is a real master (mfsmaster's Main) and real chunkservers, in
// this process, on loopback ports in a temporary directory.
type cluster struct {
	t      *testing.T
	addr   string // the master's client port
	csAddr string
	dir    string
	log    *logBuf
}

// startCluster starts a master and n chunkservers and waits until every
// chunkserver has registered.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, addr: freeAddr(t), csAddr: freeAddr(t), dir: t.TempDir(), log: &logBuf{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Logf("cluster log:\n%s", c.log)
		}
	})
	args := []string{"mfsmaster", "-c", filepath.Join(c.dir, "none.cfg"), "--exports", filepath.Join(c.dir, "none-exports.cfg"),
		"-d", filepath.Join(c.dir, "master"), "--listen", c.addr, "--cs-listen", c.csAddr}
	if err := os.MkdirAll(filepath.Join(c.dir, "master"), 0o755); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		if code := master.Main(ctx, args, c.log, c.log); code != 0 && ctx.Err() == nil {
			t.Errorf("mfsmaster exited with %d", code)
		}
	})
	registered := make(chan struct{}, n)
	host, port, _ := net.SplitHostPort(c.csAddr)
	mport, _ := strconv.Atoi(port)
	for i := range n {
		cfg := chunkserver.Defaults()
		cfg.MasterHost, cfg.MasterPort = host, uint16(mport)
		_, dport, _ := net.SplitHostPort(freeAddr(t))
		p, _ := strconv.Atoi(dport)
		cfg.DataHost, cfg.DataPort = "127.0.0.1", uint16(p)
		cfg.DataPath = filepath.Join(c.dir, "cs"+strconv.Itoa(i))
		cfg.Disks = []string{filepath.Join(c.dir, "hdd"+strconv.Itoa(i))}
		cfg.LeaveFree = "0"
		cfg.ReconnectDelay = 200 * time.Millisecond
		if err := os.MkdirAll(cfg.Disks[0], 0o755); err != nil {
			t.Fatal(err)
		}
		h := &watchHandler{Handler: slog.NewTextHandler(c.log, nil), msg: "registered with the master", ch: registered}
		wg.Go(func() {
			if err := chunkserver.Run(ctx, cfg, slog.New(h)); err != nil && ctx.Err() == nil {
				t.Errorf("chunkserver %d: %v", i, err)
			}
		})
	}
	deadline := time.After(30 * time.Second)
	for range n {
		select {
		case <-registered:
		case <-deadline:
			t.Fatalf("chunkservers did not register in 30 s:\n%s", c.log)
		}
	}
	return c
}

// watchHandler signals once when a record with message msg is logged.
type watchHandler struct {
	slog.Handler
	msg  string
	ch   chan struct{}
	once sync.Once
}

func (h *watchHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { h.ch <- struct{}{} })
	}
	return h.Handler.Handle(ctx, r)
}

func (h *watchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &watchHandler{Handler: h.Handler.WithAttrs(as), msg: h.msg, ch: h.ch}
}

// mounted is a carpfs mount of the cluster.
type mounted struct {
	fs  *mount.FS
	dir string
}

// mountFS mounts the cluster's root in a temporary directory; tweak may
// change the configuration first.
func (c *cluster) mount(tweak func(*mount.Config)) *mounted {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	cfg := mount.Config{
		Master: session.Config{Addr: c.addr, Client: client.Config{Name: "test", Info: dir}, Timeout: 30 * time.Second},
		Logger: slog.New(slog.NewTextHandler(c.log, nil)),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs, err := mount.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Mount(dir, mount.Options{FsName: mount.FsNameOf(c.addr, "/")}); err != nil {
		fs.Close(ctx)
		t.Fatal(err)
	}
	m := &mounted{fs: fs, dir: dir}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

// unmount detaches the mount and ends its session, retrying while
// files the kernel has not released yet keep it busy. A mount still busy
// after that (a test that failed with a file open) is detached and its
// FUSE connection aborted: a process that exits while serving its own
// busy mount hangs in exit.
func (m *mounted) unmount(t *testing.T) {
	if m.fs == nil {
		return
	}
	var err error
	for range 30 {
		if err = m.fs.Unmount(); err == nil || !strings.Contains(err.Error(), "busy") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("unmount: %v", err)
		abort(t, m.dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.fs.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
	m.fs = nil
}

// abort detaches the mount at dir and aborts its FUSE connection
// through fusectl, failing every request still waiting.
func abort(t *testing.T, dir string) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Logf("abort %s: %v", dir, err)
		return
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		t.Logf("detach %s: %v", dir, err)
	}
	const ctl = "/sys/fs/fuse/connections"
	if mounts, _ := os.ReadFile("/proc/self/mounts"); !bytes.Contains(mounts, []byte(" "+ctl+" fusectl ")) {
		syscall.Mount("none", ctl, "fusectl", 0, "")
	}
	p := filepath.Join(ctl, strconv.Itoa(int(unix.Minor(st.Dev))), "abort")
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		t.Logf("abort %s: %v", dir, err)
	}
}

func (m *mounted) path(name string) string { return filepath.Join(m.dir, name) }
