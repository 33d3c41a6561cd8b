// Package mount is mfsmount, the carpfs client: it mounts an exported
// directory of a master with FUSE (see internal/mount) and serves it
// until it is unmounted, by umount(8) or fusermount -u from outside, or
// by SIGTERM or SIGINT, after which it ends its session with the master.
//
// Invoked as mount.mfs (the name mount(8) looks for, through a link),
// it takes mount(8)'s calling convention, so /etc/fstab can hold
//
//	mfsmaster:9421:/ /mnt/mfs mfs defaults,_netdev 0 0
//
// Options follow MooseFS's mfsmount: -H, -P, -S and -o mfsmaster=,
// mfsport=, mfssubfolder=, mfspassword= and the others listed by -h;
// -c names an mfsmount.cfg holding more (one -o list per line, or the
// mount point). A mount point may come before or after the options.
//
// Unless -f (or -d) keeps it in the foreground, it starts itself again
// as a daemon in a new session and waits until that one has mounted (or
// failed to), so that its exit status tells mount(8) the outcome. The
// daemon logs to syslog; in the foreground the log goes to stderr.
package mount

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/carpfs/carpfs/internal/app/cliutil"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/mount"
	"github.com/carpfs/carpfs/internal/mount/fileio"
	"github.com/carpfs/carpfs/internal/mount/session"
)

// daemonEnv marks the daemon started by a backgrounding mfsmount; its
// value is the descriptor on which it reports the mount's outcome.
const daemonEnv = "CARPFS_MFSMOUNT_DAEMON"

// startTimeout bounds the wait for an unreachable master at start-up.
const startTimeout = 30 * time.Second

// Main runs mfsmount with args (args[0] is the program name) and
// returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	prog := filepath.Base(args[0])
	helper := strings.HasPrefix(prog, "mount.")
	inv, err := parseArgs(args[1:], helper, DefaultConfigFile)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n%s", prog, err, "run with -h for help\n")
		return 1
	case inv.Help:
		fmt.Fprint(stdout, usage)
		return 0
	case inv.Version:
		fmt.Fprintln(stdout, "mfsmount (carpfs)")
		return 0
	}
	s := inv.Settings
	if s.Fake {
		return 0
	}
	if fd := os.Getenv(daemonEnv); fd != "" {
		return runDaemon(ctx, s, fd)
	}
	if !s.Foreground || helper {
		return daemonize(args, stderr, prog)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	return serve(ctx, s, log, nil)
}

// serve mounts and serves until unmounted. ready, if set, is told the
// outcome of mounting (nil once mounted).
func serve(ctx context.Context, s Settings, log *slog.Logger, ready func(error)) int {
	if ready == nil {
		ready = func(error) {}
	}
	dir, err := filepath.Abs(s.Mountpoint)
	if err != nil {
		ready(err)
		return 1
	}
	s.Mountpoint = dir
	cliutil.StartPprof()
	fs, err := start(ctx, s, log)
	if err != nil {
		log.Error("mount failed", "err", err)
		ready(err)
		return 1
	}
	ready(nil)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("could not tell systemd we are ready", "err", err)
	}
	unmounted := make(chan struct{})
	go func() { fs.Wait(); close(unmounted) }()
	select {
	case <-unmounted:
		log.Info("unmounted", "mountpoint", s.Mountpoint)
	case <-ctx.Done():
		log.Info("stopping: unmounting", "mountpoint", s.Mountpoint)
		if err := fs.Unmount(); err != nil {
			// Files are still open: detach the mount now and serve them
			// until they are closed.
			log.Warn("mount busy; detached, serving open files until they close", "err", err)
			if err := syscall.Unmount(s.Mountpoint, syscall.MNT_DETACH); err != nil {
				log.Error("detach failed", "err", err)
			}
		}
		<-unmounted
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	cctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	if err := fs.Close(cctx); err != nil {
		log.Error("session not closed cleanly", "err", err)
		return 1
	}
	return 0
}

// start opens the session and mounts.
func start(ctx context.Context, s Settings, log *slog.Logger) (*mount.FS, error) {
	dir := s.Mountpoint
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", dir)
	}
	host, _ := os.Hostname()
	cfg := mount.Config{
		Master: session.Config{
			Addr: s.Addr(),
			Client: client.Config{
				Name: host, Path: s.Subdir, Password: s.Password, AuthCode: []byte(s.AuthCode),
				Info: fmt.Sprintf("%s pid %d", dir, os.Getpid()),
			},
			Timeout: s.Timeout,
		},
		AttrTimeout: ttl(s.AttrTTL), EntryTimeout: ttl(s.EntryTTL), NegativeTimeout: ttl(s.NegTTL),
		IO:     fileio.Config{WriteBuffer: s.WriteCache, ReadAhead: readAhead(s.ReadAhead)},
		Logger: log,
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	fs, err := mount.New(sctx, cfg)
	if err != nil {
		return nil, err
	}
	o := mount.Options{
		FsName: mount.FsNameOf(s.Addr(), s.Subdir), ReadOnly: s.ReadOnly, AllowOther: s.AllowOther,
		Extra: s.Extra, Debug: s.Debug,
	}
	if s.Debug {
		o.DebugLog = slog.NewLogLogger(log.Handler(), slog.LevelInfo) // asked for with -d: shown at the level the log shows
	}
	if err := fs.Mount(dir, o); err != nil {
		fs.Close(context.Background())
		return nil, err
	}
	return fs, nil
}

// ttl maps a zero cache time (disabled, in the options) to mount's
// "disabled".
func ttl(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func readAhead(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// daemonize starts this program again as a daemon and waits for it to
// report the mount's outcome.
func daemonize(args []string, stderr io.Writer, prog string) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	defer null.Close()
	cmd := &exec.Cmd{
		Path: self, Args: args, Env: append(os.Environ(), daemonEnv+"=3"),
		Stdin: null, Stdout: null, Stderr: null, ExtraFiles: []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		fmt.Fprintf(stderr, "%s: start the daemon: %v\n", prog, err)
		return 1
	}
	msg, _ := io.ReadAll(r)
	r.Close()
	switch {
	case string(msg) == "ok\n":
		cmd.Process.Release()
		return 0
	case len(msg) > 0:
		fmt.Fprintf(stderr, "%s: %s", prog, msg)
	default:
		fmt.Fprintf(stderr, "%s: the daemon exited before mounting (see the system log)\n", prog)
	}
	cmd.Wait()
	return 1
}

// runDaemon is the daemon's side: it logs to syslog and reports the
// outcome of mounting on descriptor fd.
func runDaemon(ctx context.Context, s Settings, fd string) int {
	n, err := strconv.Atoi(fd)
	if err != nil {
		return 1
	}
	report := os.NewFile(uintptr(n), "report")
	var h slog.Handler = slog.DiscardHandler
	if w, err := syslog.New(syslog.LOG_INFO|syslog.LOG_DAEMON, "mfsmount"); err == nil {
		defer w.Close()
		h = slog.NewTextHandler(w, nil)
	}
	log := slog.New(h)
	return serve(ctx, s, log, func(err error) {
		if err != nil {
			fmt.Fprintf(report, "%v\n", err)
		} else {
			fmt.Fprint(report, "ok\n")
		}
		report.Close()
		os.Chdir("/")
	})
}
