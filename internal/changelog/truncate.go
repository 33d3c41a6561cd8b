package changelog

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/carpfs/carpfs/internal/fsutil"
)

// TruncateAfter removes every entry after version v from the files of
// prefix in dir, the current one and the rotated ones: files that hold
// only later entries are deleted, the file holding v is cut right after
// v's line, and that file, when rotated, becomes prefix.0.mfs again so
// that Open appends after v. If v is before every file's first entry,
// every file is deleted. An empty prefix.0.mfs, as a rotation leaves it,
// is left as it is: Open appends to it after the newest rotated file's
// last entry. It returns how many entries it removed, counting a whole
// file by its first and last versions.
//
// A metalogger uses it to drop entries a master logged but never
// committed before another master took over: they are not part of the
// history the new master continues.
//
// No Writer and no Tail may be open on the prefix meanwhile, in this
// process or another: TruncateAfter works on the files by name and
// assumes they do not change under it.
//
// It is safe against a crash at any point: deleting goes from the newest
// file down and each step is made durable before the next, so the files
// left always hold one run of versions from the oldest on, ending at v or
// later, which Open, Tail and Merger read as an intact log. Calling
// TruncateAfter again after a crash or an error finishes the job. Bytes
// after v's line are cut without being kept, a damaged or torn line among
// them included, since they are being thrown away; but a damaged line
// before v in the file that holds v is an error, and nothing is changed:
// what follows it cannot be known to lie after v.
func TruncateAfter(dir, prefix string, v uint64) (removed uint64, err error) {
	if err := checkPrefix(prefix); err != nil {
		return 0, fmt.Errorf("truncate changelog after version %d: %w", v, err)
	}
	steps, removed, err := planTruncate(dir, prefix, v)
	if err != nil {
		return 0, fmt.Errorf("truncate changelog %s after version %d: %w", filepath.Join(dir, prefix), v, err)
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return 0, fmt.Errorf("truncate changelog %s after version %d: %s: %w", filepath.Join(dir, prefix), v, s.what, err)
		}
	}
	return removed, nil
}

// truncStep is one durable change TruncateAfter makes. The steps are
// worked out before the first is taken, so that an error found while
// reading changes nothing, and so that tests can stop after any step as a
// crash would.
type truncStep struct {
	what string
	do   func() error
}

// planTruncate lists the steps that remove the entries after v and counts
// those entries.
func planTruncate(dir, prefix string, v uint64) ([]truncStep, uint64, error) {
	files, err := List(dir, prefix)
	if err != nil {
		return nil, 0, err
	}
	var steps []truncStep
	var removed uint64
	emptyCurrent := false
	for i := len(files) - 1; i >= 0; i-- { // newest first
		fl := files[i]
		if fl.N == 0 {
			if fi, err := os.Stat(fl.Path); err == nil && fi.Size() == 0 {
				// An empty current file, as a rotation leaves it,
				// already is where Open will append after v.
				emptyCurrent = true
				continue
			}
		}
		first, ok, err := firstVersion(fl.Path)
		if err != nil {
			return nil, 0, err
		}
		if !ok || first > v {
			n, err := countEntries(fl.Path, first, ok)
			if err != nil {
				return nil, 0, err
			}
			removed += n
			steps = append(steps, truncStep{"remove " + fl.Path, func() error {
				if err := os.Remove(fl.Path); err != nil {
					return err
				}
				// Durable before the next step: were an older file's
				// removal or cut to reach the disk and this one's not,
				// the log would have a hole.
				return fsutil.SyncDir(dir)
			}})
			continue
		}
		// fl holds v, or ends before it: everything older stays.
		keep, n, err := keepLength(fl.Path, v)
		if err != nil {
			return nil, 0, err
		}
		removed += n
		if keep >= 0 {
			steps = append(steps, truncStep{fmt.Sprintf("cut %s to %d bytes", fl.Path, keep), func() error {
				return cutFile(fl.Path, keep)
			}})
		}
		if fl.N != 0 && !emptyCurrent {
			// Every newer file is gone by now.
			cur := filepath.Join(dir, FileName(prefix, 0))
			steps = append(steps, truncStep{"rename " + fl.Path + " to " + cur, func() error {
				if err := os.Rename(fl.Path, cur); err != nil {
					return err
				}
				return fsutil.SyncDir(dir)
			}})
		}
		break
	}
	return steps, removed, nil
}

// firstVersion is the version of a file's first entry; ok is false when
// the file holds no complete line.
func firstVersion(path string) (v uint64, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	e, ok, err := firstEntry(f, path)
	return e.Version, ok, err
}

// countEntries counts the entries of a file about to be deleted, whose
// first version firstVersion found. A file that ends in a good line is
// counted from its first and last versions, without parsing what lies
// between; one with a torn or damaged end is read, and its good entries
// are counted.
func countEntries(path string, first uint64, ok bool) (uint64, error) {
	if !ok {
		return 0, nil
	}
	if last, err := lastEntry(path); err == nil && last != nil && last.Version >= first {
		return last.Version - first + 1, nil
	}
	fr, err := OpenFile(path)
	if err != nil {
		return 0, err
	}
	defer fr.Close()
	for {
		_, err := fr.Next()
		if err == io.EOF {
			return uint64(fr.Lines()), nil
		}
		if _, corrupt := asCorrupt(err); corrupt {
			return uint64(fr.Lines()), nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// keepLength reads the file that holds v and returns the length to cut it
// to, -1 when nothing follows v's line, and how many entries come after
// v.
func keepLength(path string, v uint64) (keep int64, after uint64, err error) {
	fr, err := OpenFile(path)
	if err != nil {
		return 0, 0, err
	}
	defer fr.Close()
	for {
		e, err := fr.Next()
		if err == nil {
			if e.Version <= v {
				keep = fr.Offset()
			} else {
				after++
			}
			continue
		}
		if err == io.EOF {
			break
		}
		// A torn line is an unfinished append, and damage after v is
		// thrown away with the rest; damage before v is not ours to drop.
		if ce, corrupt := asCorrupt(err); !corrupt || !ce.Torn && fr.LastVersion() < v {
			return 0, 0, err
		}
		break
	}
	fi, err := fr.f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if keep == fi.Size() {
		keep = -1
	}
	return keep, after, nil
}

// cutFile truncates the file at path to size and fsyncs it: the new
// length must be on disk before the file is renamed or appended to.
func cutFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
