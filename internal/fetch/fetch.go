package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/pkg/sftp"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/fsutil"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/metalogger"
)

// Errors of Fetch, matched with errors.Is.
var (
	// ErrNotCovered: the metalogger's changelogs and dump do not hold
	// every version the caller asked for. Nothing was copied.
	ErrNotCovered = errors.New("versions not held by the metalogger")
	// ErrChanged: a remote file changed while it was listed or copied.
	// Trying again may succeed.
	ErrChanged = errors.New("remote file changed during the fetch")
)

// Want is what Fetch is asked to bring.
type Want struct {
	// From is the first version the caller's restore needs: the
	// version of its own newest dump + 1.
	From uint64
	// To is the version the restore must reach: the highest
	// (last_term, version) the fence found among the majority.
	To uint64
	// NeedDump asks for the metalogger's dump whatever From says, for a
	// caller that has no dump of its own that loads; the changelogs then
	// start after the dump.
	NeedDump bool
	// MetaID, if not 0, is the file system the dump must belong to.
	MetaID uint64
	// Progress, if set, is called after each piece copied (up to 2 MiB)
	// and when each file is complete.
	Progress func(Progress)
}

// Progress reports a copy under way.
type Progress struct {
	File       string // the file's name
	Done, Size int64  // bytes of this file copied so far, and its size
	// TotalDone and Total count every file of the fetch, all chosen
	// before the first byte is copied.
	TotalDone, Total int64
	Elapsed          time.Duration // since Fetch began
	Final            bool          // this file is complete
}

// File is one file fetched.
type File struct {
	Name   string // the same on both sides: changelog_ml.N.mfs or metadata_ml.mfs
	Remote string // path on the metalogger's host
	Path   string // path here
	Size   int64  // bytes copied; the file here is shorter if Cut
	// First and Last are the versions the file holds here: a
	// changelog's first and last entries, a dump's version twice.
	First, Last uint64
	// Cut says entries after To (or a damaged tail) were cut off the
	// copy.
	Cut bool
}

// Fetched is what a Fetch brought.
type Fetched struct {
	Host string // Host.Name
	Dir  string
	Dump *File // nil when the caller's own dump serves
	// DumpHeader is the fetched dump's header; zero without Dump.
	DumpHeader metadump.Header
	// Changelogs, oldest first, hold versions From..To with no hole.
	// From > To when none are needed.
	Changelogs []File
	From, To   uint64
	Bytes      int64 // copied in all
	Elapsed    time.Duration
}

// Paths lists every fetched file's local path: the dump first, if one
// was fetched, then the changelogs, oldest first.
func (f *Fetched) Paths() []string {
	var ps []string
	if f.Dump != nil {
		ps = append(ps, f.Dump.Path)
	}
	return append(ps, f.ChangelogPaths()...)
}

// ChangelogPaths lists the fetched changelogs' local paths, oldest first,
// as restore.Run takes them.
func (f *Fetched) ChangelogPaths() []string {
	ps := make([]string, len(f.Changelogs))
	for i, c := range f.Changelogs {
		ps[i] = c.Path
	}
	return ps
}

// remoteLog is a changelog file on the metalogger.
type remoteLog struct {
	name  string
	n     int // the N of changelog_ml.N.mfs
	first uint64
	has   bool       // first is known: the file holds a complete line
	f     *sftp.File // kept open once picked
	info  os.FileInfo
	last  uint64
	cutAt int64 // > 0: cut the copy to this length; -1: after To's line, to be found
}

// fetcher holds one Fetch's state.
type fetcher struct {
	c     *Conn
	ctx   context.Context
	s     *sftp.Client
	want  Want
	dir   string
	t0    time.Time
	logs  []*remoteLog // newest first, as N rises
	seen  int          // logs[:seen] have had their first line read
	total int64
	done  int64
	wrote []string // local paths written, removed if the fetch fails
}

// Fetch copies into dir the metalogger's files that a restore needs to
// go from version want.From - 1 (the caller's dump) to want.To: the
// changelogs holding those versions and, when they do not reach back to
// want.From or want.NeedDump is set, the dump they continue. See the
// package doc for how the files are chosen and checked, and why dir
// must be a directory of its own (Dir). On error, dir holds none of this
// fetch's files.
func (c *Conn) Fetch(ctx context.Context, want Want, dir string) (Fetched, error) {
	res := Fetched{Host: c.h.Name, Dir: dir}
	fail := func(err error) (Fetched, error) {
		return Fetched{}, fmt.Errorf("fetch from metalogger %s: %w", c.h.Name, err)
	}
	switch {
	case want.From == 0 && !want.NeedDump:
		return fail(errors.New("want.From 0: the first version needed is the dump's + 1; set NeedDump without a dump"))
	case want.To == 0:
		return fail(errors.New("want.To 0: nothing to reach"))
	}
	if err := prepareDir(dir); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if want.To < want.From && !want.NeedDump {
		res.From, res.To = want.From, want.To
		return res, nil // the caller's dump reaches To
	}
	// Each Fetch has its own SFTP session, so that cancelling one, which
	// closes the session to stop the calls under way (they take no ctx),
	// leaves the connection and other fetches alone.
	s, err := c.openSFTP(ctx)
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	fr := &fetcher{c: c, ctx: ctx, s: s, want: want, dir: dir, t0: time.Now()}
	defer fr.closeLogs()
	err = fr.run(&res)
	if err != nil && ctx.Err() != nil {
		// What failed was most likely the session closed under it.
		err = fmt.Errorf("stopped: %w (%v)", context.Cause(ctx), err)
	}
	if err != nil {
		fr.removeWritten()
		return fail(err)
	}
	res.Bytes, res.Elapsed = fr.done, time.Since(fr.t0)
	c.log.Info("fetched", "dir", dir, "dump", res.Dump != nil, "changelogs", len(res.Changelogs),
		"from", res.From, "to", res.To, "bytes", res.Bytes, "elapsed", res.Elapsed)
	return res, nil
}

func (fr *fetcher) run(res *Fetched) error {
	dataPath := fr.c.h.DataPath
	ents, err := fr.s.ReadDir(dataPath)
	if err != nil {
		return fmt.Errorf("list %s: %w", dataPath, err)
	}
	var dump os.FileInfo
	for _, fi := range ents {
		if !fi.Mode().IsRegular() {
			continue
		}
		if n, ok := logN(changelog.PrefixMetalogger, fi.Name()); ok {
			fr.logs = append(fr.logs, &remoteLog{name: fi.Name(), n: n, info: fi})
		} else if fi.Name() == metalogger.DumpName {
			dump = fi
		}
	}
	// A metalogger's files hold one run of versions, the highest N the
	// oldest: newest first here, as the search goes back from To.
	slices.SortFunc(fr.logs, func(a, b *remoteLog) int { return a.n - b.n })

	// The dump is needed if the caller has none or the changelogs do
	// not reach back to From; the changelogs then start after it.
	start := fr.want.From
	why := "the caller has none"
	if !fr.want.NeedDump {
		if err := fr.readFirsts(start); err != nil {
			return err
		}
		switch oldest := fr.oldestFirst(); {
		case oldest == 0 && fr.want.To >= start:
			why = "its changelogs hold no entry"
		case oldest > start:
			why = fmt.Sprintf("its changelogs start at version %d, after %d", oldest, start)
		default:
			why = ""
		}
	}
	var df *sftp.File
	if why != "" {
		if dump == nil {
			return fmt.Errorf("%w: a dump is needed (%s) and it has no %s", ErrNotCovered, why, metalogger.DumpName)
		}
		if df, err = fr.openDump(res); err != nil {
			return err
		}
		defer df.Close()
		start = res.DumpHeader.Version + 1
		if err := fr.readFirsts(start); err != nil {
			return err
		}
	}
	picked, err := fr.pick(start, res.Dump)
	if err != nil {
		return err
	}
	for _, l := range fr.logs {
		if l.f != nil && !slices.Contains(picked, l) {
			l.f.Close()
			l.f = nil
		}
	}
	res.From, res.To = start, fr.want.To
	fr.c.log.Info("fetching", "from", start, "to", fr.want.To, "dump", df != nil, "changelogs", len(picked), "bytes", fr.total)
	return fr.fetchFiles(res, df, picked)
}

// fetchFiles copies, checks and publishes the dump (if df is set) and
// the picked changelogs.
func (fr *fetcher) fetchFiles(res *Fetched, df *sftp.File, picked []*remoteLog) error {
	if df != nil {
		tmp, err := fr.copy(df, res.Dump.Remote, res.Dump.Name, res.Dump.Size)
		if err != nil {
			return err
		}
		h, err := metadump.ReadHeader(tmp)
		if err != nil {
			return fmt.Errorf("copy of %s: %w", res.Dump.Remote, err)
		}
		if h.Version != res.DumpHeader.Version || h.MetaID != res.DumpHeader.MetaID {
			return fmt.Errorf("%w: %s was at version %d of %016x, its copy is at %d of %016x",
				ErrChanged, res.Dump.Remote, res.DumpHeader.Version, res.DumpHeader.MetaID, h.Version, h.MetaID)
		}
		if err := fr.publish(tmp, res.Dump.Path); err != nil {
			return err
		}
	}
	for _, l := range picked {
		f := File{Name: l.name, Remote: path.Join(fr.c.h.DataPath, l.name), Path: filepath.Join(fr.dir, l.name),
			Size: l.info.Size(), First: l.first, Last: min(l.last, fr.want.To)}
		tmp, err := fr.copy(l.f, f.Remote, l.name, f.Size)
		if err != nil {
			return err
		}
		if l.cutAt != 0 {
			if err := cutAfter(tmp, l.cutAt, fr.want.To); err != nil {
				return err
			}
			f.Cut = true
		}
		if err := fr.publish(tmp, f.Path); err != nil {
			return err
		}
		res.Changelogs = append(res.Changelogs, f)
	}
	if err := fsutil.SyncDir(fr.dir); err != nil {
		return fmt.Errorf("sync %s: %w", fr.dir, err)
	}
	return nil
}

// openSFTP starts an SFTP session, within the connection's timeout.
func (c *Conn) openSFTP(ctx context.Context) (*sftp.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	type result struct {
		s   *sftp.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := sftp.NewClient(c.client)
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("SFTP session: %w", r.err)
		}
		return r.s, nil
	case <-ctx.Done():
		go func() { // the session may still start: close it then
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("SFTP session: not started (timeout %s): %w", c.timeout, context.Cause(ctx))
	}
}

// readFirsts reads first lines, newest file back, until a file starts at
// or before version v or none is left.
func (fr *fetcher) readFirsts(v uint64) error {
	for ; fr.seen < len(fr.logs); fr.seen++ {
		if fr.seen > 0 {
			if p := fr.logs[fr.seen-1]; p.has && p.first <= v {
				return nil
			}
		}
		l := fr.logs[fr.seen]
		f, err := fr.s.Open(path.Join(fr.c.h.DataPath, l.name))
		if err != nil {
			return fmt.Errorf("open %s: %w", l.name, err)
		}
		if l.info, err = f.Stat(); err != nil {
			f.Close()
			return fmt.Errorf("stat %s: %w", l.name, err)
		}
		l.first, l.has, err = firstVersion(f, l.info.Size())
		switch {
		case err != nil:
			// No reader gets past a bad first line, so the file holds
			// nothing usable; if it was needed, the check of the run
			// says so.
			fr.c.log.Warn("changelog passed over: its first line is damaged", "file", l.name, "err", err)
			f.Close()
		case l.has && l.first <= fr.want.To:
			l.f = f // may be picked: read the rest through this handle
		default:
			f.Close()
		}
	}
	return nil
}

// oldestFirst is the oldest version the files read so far hold, 0 if
// none holds any.
func (fr *fetcher) oldestFirst() uint64 {
	for i := fr.seen - 1; i >= 0; i-- {
		if fr.logs[i].has {
			return fr.logs[i].first
		}
	}
	return 0
}

// pick chooses the files holding start..To, oldest first, checks that
// their versions run on without a hole, and works out the cut of the
// newest.
func (fr *fetcher) pick(start uint64, dump *File) ([]*remoteLog, error) {
	to := fr.want.To
	if start > to {
		return nil, nil
	}
	var picked []*remoteLog
	for _, l := range fr.logs[:fr.seen] { // newest first
		if !l.has || l.first > to {
			continue
		}
		picked = append(picked, l)
		if l.first <= start {
			break
		}
	}
	slices.Reverse(picked)
	if len(picked) == 0 || picked[0].first > start {
		held := "none"
		if o := fr.oldestFirst(); o > 0 {
			held = "from version " + strconv.FormatUint(o, 10)
		}
		by := ""
		if dump != nil {
			by = fmt.Sprintf(" after its dump at version %d", dump.Last)
		}
		return nil, fmt.Errorf("%w: versions %d..%d are needed%s, its changelogs hold %s", ErrNotCovered, start, to, by, held)
	}
	for i, l := range picked {
		if err := fr.readLast(l, i == len(picked)-1); err != nil {
			return nil, err
		}
		if i == 0 {
			continue
		}
		switch p := picked[i-1]; {
		case p.last+1 < l.first:
			return nil, fmt.Errorf("%w: %s ends at version %d and %s starts at %d", ErrNotCovered, p.name, p.last, l.name, l.first)
		case p.last+1 > l.first:
			return nil, fmt.Errorf("%w: %s ends at version %d but %s starts at %d: the files were rotated while they were read", ErrChanged, p.name, p.last, l.name, l.first)
		}
	}
	if l := picked[len(picked)-1]; l.last < to {
		return nil, fmt.Errorf("%w: versions %d..%d are needed, its changelogs end at %d (%s)", ErrNotCovered, start, to, l.last, l.name)
	}
	for _, l := range picked {
		fr.total += l.info.Size()
	}
	return picked, nil
}

// readLast reads l's last good entry. For the newest file it also finds
// where To's line ends, when anything follows it.
func (fr *fetcher) readLast(l *remoteLog, newest bool) error {
	size := l.info.Size()
	tail, err := readTail(l.f, size)
	if err != nil {
		return fmt.Errorf("read the end of %s: %w", l.name, err)
	}
	if len(tail) == 0 {
		return fmt.Errorf("%s starts with version %d but no line of it at its end parses", l.name, l.first)
	}
	last := tail[len(tail)-1]
	l.last = last.version
	if last.end < size {
		fr.c.log.Warn("changelog ends in a torn or damaged line", "file", l.name, "last", l.last, "good_bytes", last.end, "size", size)
	}
	if !newest {
		return nil
	}
	to := fr.want.To
	for _, t := range tail {
		if t.version == to && t.end < size {
			l.cutAt = t.end
		}
	}
	if l.last > to && l.cutAt == 0 {
		l.cutAt = -1 // To's line is before the tail read: find it in the copy
	}
	return nil
}

// openDump opens the metalogger's dump and reads its header.
func (fr *fetcher) openDump(res *Fetched) (*sftp.File, error) {
	remote := path.Join(fr.c.h.DataPath, metalogger.DumpName)
	f, err := fr.s.Open(remote)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", remote, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", remote, err)
	}
	h, err := dumpHeader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", remote, err)
	}
	switch want := fr.want; {
	case want.MetaID != 0 && h.MetaID != want.MetaID:
		err = fmt.Errorf("%s belongs to file system %016x, not %016x", remote, h.MetaID, want.MetaID)
	case h.Version > want.To:
		err = fmt.Errorf("%s is at version %d, past version %d to reach", remote, h.Version, want.To)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	res.DumpHeader = h
	res.Dump = &File{Name: metalogger.DumpName, Remote: remote, Path: filepath.Join(fr.dir, metalogger.DumpName),
		Size: fi.Size(), First: h.Version, Last: h.Version}
	fr.total += fi.Size()
	return f, nil
}

// dumpHeader reads a dump's header from its first bytes. metadump reads
// headers from paths, so the prefix goes through Decode, which returns
// the header it read before failing on the cut-off blocks.
func dumpHeader(f io.ReaderAt) (metadump.Header, error) {
	_, h, err := metadump.Decode(io.NewSectionReader(f, 0, 4<<10), metadump.ReadOptions{})
	if h.Format == 0 {
		return h, fmt.Errorf("dump header: %w", err)
	}
	return h, nil
}

func (fr *fetcher) closeLogs() {
	for _, l := range fr.logs {
		if l.f != nil {
			l.f.Close()
		}
	}
}
