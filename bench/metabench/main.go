// Command metabench measures the metadata core at scale: memory per file,
// apply+log rate, dump write and load rates, and changelog replay rate.
//
// The workload mirrors MooseFS's master benchmark (anchors/moosefs
// bench-master.sh): empty files created in a few directories, each costing
// three changelog entries (CREATE, OPEN, RELEASE, as MooseFS logs CREATE,
// ACQUIRE, RELEASE), so replay rates compare line for line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/restore"
)

var replayProfile string

type result struct {
	Files           int     `json:"files"`
	Entries         uint64  `json:"entries"`
	HeapBytesFile   float64 `json:"heap_bytes_per_file"`
	RSSBytesFile    float64 `json:"rss_bytes_per_file"`
	ApplyLogPerSec  float64 `json:"apply_and_log_entries_per_sec"`
	DumpBytes       int64   `json:"dump_bytes"`
	DumpWriteSecs   float64 `json:"dump_write_secs"`
	DumpWriteMBs    float64 `json:"dump_write_mb_per_sec"`
	DumpLoadSecs    float64 `json:"dump_load_secs"`
	DumpLoadMBs     float64 `json:"dump_load_mb_per_sec"`
	ReplaySecs      float64 `json:"replay_secs"`
	ReplayPerSec    float64 `json:"replay_entries_per_sec"`
	RestoreSecs     float64 `json:"restore_total_secs"`
	RestoreLinesSec float64 `json:"restore_lines_per_sec"`
}

func main() {
	files := flag.Int("files", 1_000_000, "files to create")
	dirs := flag.Int("dirs", 4, "directories they are spread over")
	dir := flag.String("dir", "", "work directory for changelogs and dumps (required; emptied)")
	asJSON := flag.Bool("json", false, "print only a JSON line")
	flag.StringVar(&replayProfile, "replayprofile", "", "write a CPU profile of the replay to this file")
	flag.Parse()
	if *dir == "" || *files < 1 || *dirs < 1 {
		fmt.Fprintln(os.Stderr, "metabench: -dir is required; -files and -dirs must be positive")
		os.Exit(2)
	}
	r, err := run(*dir, *files, *dirs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "metabench:", err)
		os.Exit(1)
	}
	js, _ := json.Marshal(r)
	if !*asJSON {
		printTable(r)
	}
	fmt.Println(string(js))
}

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "metabench: "+format+"\n", a...)
}

// rss is the process's resident set in bytes.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func heap() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func run(dir string, files, dirs int) (*result, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &result{Files: files}
	now := uint32(1_700_000_000)
	s := meta.New(1, now)
	empty := filepath.Join(dir, "empty.mfs")
	if _, err := metadump.Write(dir, "empty.mfs", s, metadump.Options{Keep: -1}); err != nil {
		return nil, err
	}
	cl, err := changelog.Open(dir, changelog.PrefixMaster, changelog.Options{MaxSize: 512 << 20, Keep: 1000})
	if err != nil {
		return nil, err
	}
	apply := func(op meta.Op) (meta.Result, error) {
		e := meta.Entry{Version: s.Version() + 1, Term: 1, Time: now, Op: op}
		res, err := s.Apply(&e)
		if err == nil && !res.Ok() {
			err = fmt.Errorf("%s: %v", op.OpName(), res)
		}
		if err != nil {
			return res, err
		}
		e.Result = res
		return res, cl.Append(&e)
	}
	var parents []uint32
	res, err := apply(&meta.Session{Info: "metabench"})
	if err != nil {
		return nil, err
	}
	sid := res.Val[0]
	for i := range dirs {
		res, err := apply(&meta.Create{Parent: meta.RootInode, Name: "d" + strconv.Itoa(i), Type: meta.TypeDir, Mode: 0o755})
		if err != nil {
			return nil, err
		}
		parents = append(parents, uint32(res.Val[0]))
	}
	if err := cl.Sync(); err != nil {
		return nil, err
	}
	h0, r0 := heap(), rss()
	t0 := time.Now()
	name := make([]byte, 0, 16)
	for i := range files {
		if i%1_000_000 == 0 && i > 0 {
			progress("created %d files", i)
		}
		name = strconv.AppendInt(append(name[:0], 'f'), int64(i), 10)
		res, err := apply(&meta.Create{Parent: parents[i%dirs], Name: string(name), Type: meta.TypeFile, Mode: 0o644})
		if err != nil {
			return nil, err
		}
		ino := uint32(res.Val[0])
		if _, err := apply(&meta.Open{Session: sid, Inode: ino}); err != nil {
			return nil, err
		}
		if _, err := apply(&meta.Release{Session: sid, Inode: ino}); err != nil {
			return nil, err
		}
		if now++; i%64 == 0 {
			now++
		}
	}
	if err := cl.Close(); err != nil {
		return nil, err
	}
	created := time.Since(t0)
	r.Entries = s.Version()
	r.ApplyLogPerSec = float64(3*files) / created.Seconds()
	h1, r1 := heap(), rss()
	r.HeapBytesFile = float64(h1-h0) / float64(files)
	r.RSSBytesFile = float64(int64(r1)-int64(r0)) / float64(files)
	progress("created %d files in %.1fs: %.0f heap bytes/file", files, created.Seconds(), r.HeapBytesFile)

	t0 = time.Now()
	hd, err := metadump.Write(dir, "metadata.mfs", s, metadump.Options{Keep: -1})
	if err != nil {
		return nil, err
	}
	r.DumpWriteSecs = time.Since(t0).Seconds()
	r.DumpBytes = hd.Size
	r.DumpWriteMBs = float64(hd.Size) / 1e6 / r.DumpWriteSecs
	progress("dump written: %d bytes in %.2fs", hd.Size, r.DumpWriteSecs)
	s = nil
	heap()

	t0 = time.Now()
	loaded, _, err := metadump.LoadFile(filepath.Join(dir, "metadata.mfs"), metadump.ReadOptions{})
	if err != nil {
		return nil, err
	}
	r.DumpLoadSecs = time.Since(t0).Seconds()
	r.DumpLoadMBs = float64(hd.Size) / 1e6 / r.DumpLoadSecs
	progress("dump loaded in %.2fs", r.DumpLoadSecs)
	loaded = nil
	_ = loaded
	heap()

	cls, err := changelog.List(dir, changelog.PrefixMaster)
	if err != nil {
		return nil, err
	}
	paths := make([]string, len(cls))
	for i, c := range cls {
		paths[i] = c.Path
		dropCache(c.Path)
	}
	dropCache(empty)
	// Like `mfsmaster -a restore`: load the empty dump, replay every
	// line, write the result.
	if replayProfile != "" {
		f, err := os.Create(replayProfile)
		if err != nil {
			return nil, err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	t0 = time.Now()
	rr, err := restore.Run(context.Background(), empty, paths, restore.Options{})
	if err != nil {
		return nil, err
	}
	r.ReplaySecs = rr.ReplayTime.Seconds()
	r.ReplayPerSec = float64(rr.Applied) / r.ReplaySecs
	if _, err := metadump.Write(dir, "restored.mfs", rr.State, metadump.Options{Keep: -1}); err != nil {
		return nil, err
	}
	r.RestoreSecs = time.Since(t0).Seconds()
	r.RestoreLinesSec = float64(rr.Applied) / r.RestoreSecs
	if rr.Version() != r.Entries {
		return nil, fmt.Errorf("replay reached %d, want %d", rr.Version(), r.Entries)
	}
	progress("replayed %d entries in %.2fs", rr.Applied, r.ReplaySecs)
	return r, nil
}

// dropCache evicts a file's pages so replay reads from disk, as after a
// reboot (the MooseFS anchor does the same before its restores).
func dropCache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	f.Sync()
	fadviseDontNeed(f)
}

func printTable(r *result) {
	fmt.Printf("files                        %d (%d changelog entries)\n", r.Files, r.Entries)
	fmt.Printf("RAM per file (Go heap)       %.0f bytes\n", r.HeapBytesFile)
	fmt.Printf("RAM per file (RSS growth)    %.0f bytes\n", r.RSSBytesFile)
	fmt.Printf("apply + log                  %.0f entries/s\n", r.ApplyLogPerSec)
	fmt.Printf("dump write                   %.2f s, %.0f MB/s (%d bytes)\n", r.DumpWriteSecs, r.DumpWriteMBs, r.DumpBytes)
	fmt.Printf("dump load                    %.2f s, %.0f MB/s\n", r.DumpLoadSecs, r.DumpLoadMBs)
	fmt.Printf("changelog replay             %.2f s, %.0f entries/s\n", r.ReplaySecs, r.ReplayPerSec)
	fmt.Printf("restore (load+replay+write)  %.2f s, %.0f lines/s\n", r.RestoreSecs, r.RestoreLinesSec)
}
