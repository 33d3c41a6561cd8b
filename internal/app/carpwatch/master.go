package carpwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"

	"github.com/carpfs/carpfs/internal/fsutil"
	"github.com/carpfs/carpfs/internal/master/client"
)

// masterCtl starts and stops the local master.
type masterCtl interface {
	// Start starts the master under term for holder; it returns once the
	// start was requested, not once it serves (see waitServing).
	Start(ctx context.Context, term uint64, holder string) error
	// Stop stops it and waits.
	Stop(ctx context.Context) error
	// Done is closed when the master started last has ended.
	Done() <-chan struct{}
	// PID is the running master's process id, 0 if none.
	PID() int
}

// childMaster runs the master as a child process.
type childMaster struct {
	argv []string
	log  *slog.Logger

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

var _ masterCtl = (*childMaster)(nil)

func newChildMaster(command string, log *slog.Logger) *childMaster {
	d := make(chan struct{})
	close(d)
	return &childMaster{argv: strings.Fields(command), log: log, done: d}
}

func (m *childMaster) Start(ctx context.Context, term uint64, holder string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("a master (pid %d) runs already", m.cmd.Process.Pid)
	}
	args := append(m.argv[1:len(m.argv):len(m.argv)], "--term", strconv.FormatUint(term, 10), "--holder", holder)
	cmd := exec.Command(m.argv[0], args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Its own process group: a signal meant for carpwatch (Ctrl-C) does
	// not stop the master behind its back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start master: %w", err)
	}
	done := make(chan struct{})
	m.cmd, m.done = cmd, done
	go func() {
		err := cmd.Wait()
		m.log.Warn("master exited", "pid", cmd.Process.Pid, "err", err)
		m.mu.Lock()
		if m.cmd == cmd {
			m.cmd = nil
		}
		m.mu.Unlock()
		close(done)
	}()
	m.log.Info("master started", "pid", cmd.Process.Pid, "term", term, "holder", holder)
	return nil
}

func (m *childMaster) Stop(ctx context.Context) error {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("master (pid %d) did not stop in time; killed", cmd.Process.Pid)
	}
}

func (m *childMaster) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

func (m *childMaster) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// unitMaster runs the master as a systemd unit over D-Bus. The term
// reaches it through an environment file the unit reads
// (EnvironmentFile=-DATA_PATH/carpwatch.env, with CARPFS_TERM and
// CARPFS_HOLDER, which mfsmaster takes for --term and --holder).
type unitMaster struct {
	unit, envDir string
	log          *slog.Logger

	mu   sync.Mutex
	done chan struct{}
	stop context.CancelFunc
}

var _ masterCtl = (*unitMaster)(nil)

// EnvFile is the name, in DATA_PATH, of the environment file carpwatch
// writes for the master's unit.
const EnvFile = "carpwatch.env"

func newUnitMaster(unit, dataPath string, log *slog.Logger) *unitMaster {
	d := make(chan struct{})
	close(d)
	return &unitMaster{unit: unit, envDir: dataPath, log: log, done: d}
}

func (m *unitMaster) Start(ctx context.Context, term uint64, holder string) error {
	env := fmt.Sprintf("CARPFS_TERM=%d\nCARPFS_HOLDER=%s\n", term, holder)
	if err := fsutil.WriteFileAtomic(m.envDir, EnvFile, []byte(env), 0o640); err != nil {
		return fmt.Errorf("start master unit: %w", err)
	}
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("start master unit %s: %w", m.unit, err)
	}
	defer conn.Close()
	ch := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, m.unit, "replace", ch); err != nil {
		return fmt.Errorf("start master unit %s: %w", m.unit, err)
	}
	select {
	case r := <-ch:
		if r != "done" {
			return fmt.Errorf("start master unit %s: job %s", m.unit, r)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	done := make(chan struct{})
	wctx, cancel := context.WithCancel(context.Background())
	m.mu.Lock()
	m.done, m.stop = done, cancel
	m.mu.Unlock()
	go m.watch(wctx, done)
	m.log.Info("master unit started", "unit", m.unit, "term", term, "holder", holder)
	return nil
}

// watch closes done once the unit is no longer active.
func (m *unitMaster) watch(ctx context.Context, done chan struct{}) {
	defer close(done)
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		m.log.Error("cannot watch the master unit", "unit", m.unit, "err", err)
		return
	}
	defer conn.Close()
	for {
		p, err := conn.GetUnitPropertyContext(ctx, m.unit, "ActiveState")
		if err != nil {
			return
		}
		if s := strings.Trim(p.Value.String(), `"`); s != "active" && s != "activating" && s != "reloading" {
			m.log.Warn("master unit is no longer active", "unit", m.unit, "state", s)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (m *unitMaster) Stop(ctx context.Context) error {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("stop master unit %s: %w", m.unit, err)
	}
	defer conn.Close()
	ch := make(chan string, 1)
	if _, err := conn.StopUnitContext(ctx, m.unit, "replace", ch); err != nil {
		return fmt.Errorf("stop master unit %s: %w", m.unit, err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.mu.Lock()
	if m.stop != nil {
		m.stop()
	}
	m.mu.Unlock()
	return nil
}

func (m *unitMaster) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

func (m *unitMaster) PID() int {
	conn, err := dbus.NewSystemConnectionContext(context.Background())
	if err != nil {
		return 0
	}
	defer conn.Close()
	p, err := conn.GetServicePropertyContext(context.Background(), m.unit, "MainPID")
	if err != nil {
		return 0
	}
	pid, _ := p.Value.Value().(uint32)
	return int(pid)
}

// waitServing waits until the master answers a client session at addr,
// or it ended, or timeout.
func waitServing(ctx context.Context, addr string, done <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-done:
			return errors.New("the master exited before it served")
		case <-ctx.Done():
			return fmt.Errorf("the master did not serve at %s within %s: %v", addr, timeout, last)
		default:
		}
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := client.Dial(dctx, addr, client.Config{Name: "carpwatch", Info: "carpwatch"})
		if err == nil {
			_, err = c.StatFS(dctx, client.Cred{})
			c.Close(dctx)
		}
		dcancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-done:
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// envPath is where unitMaster writes the term for the unit.
func envPath(dataPath string) string { return filepath.Join(dataPath, EnvFile) }
