// Command commitbench measures how fast a file system commits small
// files: concurrent clients each create files in a directory of their
// own, write a few KiB to each and close it, and later unlink them all.
//
// It is the workload of bench/commit.sh, which runs it on carpfs with a
// quorum of metaloggers (every change acknowledged once a majority
// fsynced it), on carpfs in async mode, and on MooseFS. Each file costs
// the master several changes (create, open, chunk allocation, length on
// close, release), and close waits for the data on the chunkservers, so
// the first phase shows what a commit costs; concurrent clients show
// whether group commit shares one fsync between many changes.
//
// Two timed phases, each started for all clients at once and ended when
// the last client is done; ops/s is files / that wall time:
//
//	create_write  open(O_CREAT|O_EXCL|O_WRONLY), write -size bytes, close
//	unlink        unlink of each of those files
//
// Everything happens in DIR/commitbench.<host>.<pid>.<ns>, removed at the
// end unless -keep. Output: a table, then one JSON line (only the JSON
// line with -json), with the same shape as the shared tool mdbench's.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
)

type phaseResult struct {
	Phase     string  `json:"phase"`
	Ops       int     `json:"ops"`
	Secs      float64 `json:"secs"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	MaxUs     float64 `json:"max_us"`
}

type report struct {
	Tool       string        `json:"tool"`
	Version    int           `json:"version"`
	Label      string        `json:"label,omitempty"`
	Dir        string        `json:"dir"`
	N          int           `json:"n"`
	Clients    int           `json:"clients"`
	Size       int           `json:"size"`
	Start      string        `json:"start"`
	GoVersion  string        `json:"go"`
	GOMAXPROCS int           `json:"gomaxprocs"`
	Phases     []phaseResult `json:"phases"`
	TotalSecs  float64       `json:"total_secs"`
}

// client is one worker: its directory, how many files it handles and
// the latency of each operation in the current phase.
type client struct {
	dir   string
	count int
	lat   []time.Duration
}

func (c *client) file(i int) string { return filepath.Join(c.dir, fmt.Sprintf("f%07d", i)) }

// createWrite creates file i, writes data to it and closes it; the close
// is part of the operation, as it flushes the data to the chunkservers.
func (c *client) createWrite(i int, data []byte) error {
	f, err := os.OpenFile(c.file(i), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	return errors.Join(werr, cerr)
}

// runPhase releases every client at once on op and times them until the
// last one is done.
func runPhase(name string, clients []*client, op func(c *client, i int) error) (phaseResult, error) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, len(clients))
	for k, c := range clients {
		c.lat = c.lat[:0]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range c.count {
				t0 := time.Now()
				if err := op(c, i); err != nil {
					errs[k] = fmt.Errorf("%s #%d in %s: %w", name, i, c.dir, err)
					return
				}
				c.lat = append(c.lat, time.Since(t0))
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	secs := time.Since(t0).Seconds()
	if err := errors.Join(errs...); err != nil {
		return phaseResult{}, err
	}
	var lat []time.Duration
	for _, c := range clients {
		lat = append(lat, c.lat...)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1)+0.5)].Nanoseconds()) / 1e3
	}
	r := phaseResult{Phase: name, Ops: len(lat), Secs: secs, P50us: pct(0.50), P99us: pct(0.99), MaxUs: pct(1)}
	if secs > 0 {
		r.OpsPerSec = float64(r.Ops) / secs
	}
	return r, nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("commitbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory to run in (required; a fresh subdirectory is made inside)")
	n := fs.Int("n", 2000, "files in all (split between the clients)")
	clients := fs.Int("clients", 1, "concurrent clients, each in a directory of its own")
	size := fs.Int("size", 4096, "bytes written to each file")
	asJSON := fs.Bool("json", false, "print only the JSON line")
	keep := fs.Bool("keep", false, "keep the run directory")
	label := fs.String("label", "", "free-form label copied into the JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || *clients < 1 || *n < *clients || *size < 0 {
		fmt.Fprintln(stderr, "commitbench: -dir is required; want 1 <= -clients <= -n and -size >= 0")
		return 2
	}
	rep, err := bench(*dir, *n, *clients, *size, *keep)
	if err != nil {
		fmt.Fprintln(stderr, "commitbench:", err)
		return 1
	}
	rep.Label = *label
	if !*asJSON {
		fmt.Fprintf(stdout, "commitbench dir=%s n=%d clients=%d size=%d\n", *dir, *n, *clients, *size)
		fmt.Fprintf(stdout, "%-13s %7s %9s %10s %9s %9s %10s\n", "phase", "ops", "secs", "ops/s", "p50_us", "p99_us", "max_us")
		for _, r := range rep.Phases {
			fmt.Fprintf(stdout, "%-13s %7d %9.3f %10.1f %9.1f %9.1f %10.1f\n", r.Phase, r.Ops, r.Secs, r.OpsPerSec, r.P50us, r.P99us, r.MaxUs)
		}
	}
	b, _ := json.Marshal(rep)
	fmt.Fprintf(stdout, "%s\n", b)
	return 0
}

// bench makes the clients' directories, runs both phases and removes
// the run directory (unless keep).
func bench(dir string, n, nclients, size int, keep bool) (rep report, err error) {
	host, _ := os.Hostname()
	runDir := filepath.Join(dir, fmt.Sprintf("commitbench.%s.%d.%d", host, os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(runDir, 0o755); err != nil {
		return rep, err
	}
	if !keep {
		defer func() {
			if rerr := os.RemoveAll(runDir); err == nil && rerr != nil {
				err = rerr
			}
		}()
	}
	clients := make([]*client, nclients)
	for k := range clients {
		c := &client{dir: filepath.Join(runDir, fmt.Sprintf("c%03d", k)), count: n / nclients}
		if k < n%nclients {
			c.count++
		}
		c.lat = make([]time.Duration, 0, c.count)
		if err := os.Mkdir(c.dir, 0o755); err != nil {
			return rep, err
		}
		clients[k] = c
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	rep = report{Tool: "commitbench", Version: 1, Dir: dir, N: n, Clients: nclients, Size: size,
		Start: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0)}
	t0 := time.Now()
	phases := []struct {
		name string
		op   func(c *client, i int) error
	}{
		{"create_write", func(c *client, i int) error { return c.createWrite(i, data) }},
		{"unlink", func(c *client, i int) error { return syscall.Unlink(c.file(i)) }},
	}
	for _, p := range phases {
		r, err := runPhase(p.name, clients, p.op)
		if err != nil {
			return rep, err
		}
		rep.Phases = append(rep.Phases, r)
	}
	rep.TotalSecs = time.Since(t0).Seconds()
	return rep, nil
}
