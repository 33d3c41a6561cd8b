package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/metalogger"
)

// downTimeout bounds how long `down` waits for `up` to stop everything:
// each daemon's grace, one after the other, and some slack.
const downTimeout = mountGrace + csGrace + masterGrace + mlGrace + 30*time.Second

// resolveDir makes dir absolute and free of symbolic links, as `up`
// recorded it, without creating it.
func resolveDir(dir string) (string, error) {
	if dir == "" {
		dir = DefaultDir
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	return abs, nil
}

// Down stops the cluster of the state directory dir from another
// process: it asks the `up` process to stop (SIGTERM, as Ctrl-C would)
// and waits until it has; if `up` is gone but daemons of its run are
// not (it was killed), it stops them itself in the same order.
func Down(dir string, out io.Writer) error {
	dir, err := resolveDir(dir)
	if err != nil {
		return err
	}
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w (no %s)", dir, errNotRunning, stateFile)
	}
	if err != nil {
		return err
	}
	if pid, err := readPID(dir); err == nil && pid != st.Up.PID {
		fmt.Fprintf(out, "note: %s names pid %d, %s pid %d; going by the latter\n", pidFile, pid, stateFile, st.Up.PID)
	}
	stopped := false
	if st.Up.Alive() {
		if err := st.Up.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("stop mfslocal up: %w", err)
		}
		fmt.Fprintf(out, "asked mfslocal up (pid %d) to stop the cluster; its terminal shows each step\n", st.Up.PID)
		if !foreign(st.Up).wait(downTimeout) {
			return fmt.Errorf("mfslocal up (pid %d) still runs %s after SIGTERM; see its terminal and %s",
				st.Up.PID, downTimeout, filepath.Join(dir, logDir))
		}
		stopped = true
	}
	// What is left belongs to an `up` that was killed, or that could not
	// stop everything.
	live := st.liveDaemons()
	m, mounted, _ := mountAt(st.Mount)
	mounted = mounted && isFUSE(m.FSType)
	if len(live) > 0 || mounted {
		fmt.Fprintf(out, "stopping what mfslocal up (pid %d) left running\n", st.Up.PID)
		var mount, master *daemon
		var cs, ml []*daemon
		for _, p := range live {
			switch {
			case p.Name == binMount:
				mount = foreign(p)
			case p.Name == binMaster:
				master = foreign(p)
			case strings.HasPrefix(p.Name, binMetalogger):
				ml = append(ml, foreign(p))
			default:
				cs = append(cs, foreign(p))
			}
		}
		if !stopAll(out, st.Mount, mount, cs, master, ml) {
			return errors.New("not everything stopped cleanly (see above)")
		}
		stopped = true
	}
	if live := st.liveDaemons(); len(live) > 0 {
		return fmt.Errorf("still running: %s", procList(live))
	}
	os.Remove(filepath.Join(dir, pidFile))
	if !stopped {
		return fmt.Errorf("%s: %w", dir, errNotRunning)
	}
	fmt.Fprintf(out, "the local cluster in %s is stopped; its data stays there for the next `up`\n", dir)
	return nil
}

// mlStatus words what a running metalogger in dir says of itself.
func mlStatus(dir string) string {
	st, err := metalogger.Ask(dir, "status", 0, "")
	if err != nil {
		return fmt.Sprintf("data dir %s: no answer: %v", dir, err)
	}
	link := "no link to a master"
	if st.Master != "" {
		link = "following " + st.Master
	}
	return fmt.Sprintf("data dir %s: term %d, version %d stored, %d committed, %s", dir, st.Term, st.Version, st.Committed, link)
}

// Status prints what runs for the state directory dir, and returns
// errNotRunning unless the whole cluster runs and the mount answers.
func Status(ctx context.Context, dir string, out io.Writer) error {
	dir, err := resolveDir(dir)
	if err != nil {
		return err
	}
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w (never started there)", dir, errNotRunning)
	}
	if err != nil {
		return err
	}
	ok := st.Up.Alive()
	if !ok && len(st.liveDaemons()) == 0 {
		fmt.Fprintf(out, "nothing runs in %s: last started %s by pid %d, since stopped\n", dir, st.Started.Local().Format(time.DateTime), st.Up.PID)
		return fmt.Errorf("%s: %w", dir, errNotRunning)
	}
	if ok {
		fmt.Fprintf(out, "mfslocal up runs: pid %d, since %s, state in %s\n", st.Up.PID, st.Started.Local().Format(time.DateTime), dir)
	} else {
		fmt.Fprintf(out, "mfslocal up does not run (last started %s, pid %d), state in %s\n", st.Started.Local().Format(time.DateTime), st.Up.PID, dir)
	}
	for _, p := range st.Daemons {
		what := "not running"
		if p.Alive() {
			what = "running"
		} else {
			ok = false
		}
		fmt.Fprintf(out, "  %-16s pid %-7d %-11s log %s\n", p.Name, p.PID, what, p.Log)
		if what == "running" && strings.HasPrefix(p.Name, binMetalogger) && p.Data != "" {
			fmt.Fprintf(out, "  %-16s %s\n", "", mlStatus(p.Data))
		}
	}
	if m, mounted, _ := mountAt(st.Mount); mounted && isFUSE(m.FSType) {
		if fuseMounted(st.Mount) {
			fmt.Fprintf(out, "mounted at %s (%s from %s)\n", st.Mount, m.FSType, m.Source)
		} else {
			fmt.Fprintf(out, "mounted at %s, but the mount does not answer\n", st.Mount)
			ok = false
		}
	} else {
		fmt.Fprintf(out, "nothing mounted at %s\n", st.Mount)
		ok = false
	}
	if st.MasterAddr != "" {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if cl, err := client.Dial(sctx, st.MasterAddr, client.Config{Name: hostname(), Info: "mfslocal status"}); err != nil {
			fmt.Fprintf(out, "the master at %s does not answer: %v\n", st.MasterAddr, err)
			ok = false
		} else {
			fs, err := cl.StatFS(sctx, client.Cred{})
			cl.Close(sctx)
			if err != nil {
				fmt.Fprintf(out, "the master at %s: statfs: %v\n", st.MasterAddr, err)
				ok = false
			} else {
				fmt.Fprintf(out, "the master at %s answers: %d files, %d directories, %s total, %s free\n",
					st.MasterAddr, fs.Files, fs.Dirs, size(fs.TotalSpace), size(fs.AvailSpace))
			}
		}
	}
	if !ok {
		return fmt.Errorf("%s: %w, or not all of it", dir, errNotRunning)
	}
	return nil
}
