package fetch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/fsutil"
	"github.com/carpfs/carpfs/internal/metalogger"
	"github.com/carpfs/carpfs/internal/metastore"
)

// partSuffix marks a copy under way: no restore reads NAME.part.
const partSuffix = ".part"

// copy copies the remote file open as f, which had size bytes when it was
// listed, to dir/name.part, and returns that path once the copy is
// checked and fsynced.
func (fr *fetcher) copy(f *sftp.File, remote, name string, size int64) (string, error) {
	before, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", remote, err)
	}
	if before.Size() != size {
		return "", fmt.Errorf("%w: %s has %d bytes, %d when it was listed", ErrChanged, remote, before.Size(), size)
	}
	tmp := filepath.Join(fr.dir, name+partSuffix)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return "", fmt.Errorf("copy %s: %w", remote, err)
	}
	fr.wrote = append(fr.wrote, tmp)
	defer out.Close() // after an error; the good path closes it below
	t0 := time.Now()
	buf := make([]byte, max(1, min(int64(fr.c.chunk), size)))
	for off := int64(0); off < size; {
		if err := fr.ctx.Err(); err != nil {
			return "", err
		}
		n := min(int64(len(buf)), size-off)
		if err := readFull(f, buf[:n], off); errors.Is(err, io.ErrUnexpectedEOF) {
			return "", fmt.Errorf("%w: %s ends before byte %d of the %d it had: it shrank during the copy", ErrChanged, remote, off+n, size)
		} else if err != nil {
			return "", fmt.Errorf("copy %s: %w", remote, err)
		}
		if _, err := out.Write(buf[:n]); err != nil {
			return "", fmt.Errorf("copy %s: %w", remote, err)
		}
		off += n
		fr.done += n
		fr.progress(name, off, size, off == size)
	}
	after, err := f.Stat()
	switch {
	case err != nil:
		return "", fmt.Errorf("stat %s: %w", remote, err)
	case after.Size() != size || !after.ModTime().Equal(before.ModTime()):
		return "", fmt.Errorf("%w: %s had %d bytes (modified %s) when the copy began and %d (modified %s) when it ended",
			ErrChanged, remote, size, before.ModTime().Format(time.RFC3339), after.Size(), after.ModTime().Format(time.RFC3339))
	}
	if err := out.Sync(); err != nil {
		return "", fmt.Errorf("copy %s: %w", remote, err)
	}
	if fi, err := out.Stat(); err != nil {
		return "", fmt.Errorf("copy %s: %w", remote, err)
	} else if fi.Size() != size {
		return "", fmt.Errorf("copy %s: %s holds %d bytes, want %d", remote, tmp, fi.Size(), size)
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("copy %s: %w", remote, err)
	}
	if size == 0 {
		fr.progress(name, 0, 0, true)
	}
	fr.c.log.Debug("copied", "file", name, "bytes", size, "elapsed", time.Since(t0))
	return tmp, nil
}

func (fr *fetcher) progress(name string, done, size int64, final bool) {
	if fr.want.Progress != nil {
		fr.want.Progress(Progress{File: name, Done: done, Size: size, TotalDone: fr.done, Total: fr.total,
			Elapsed: time.Since(fr.t0), Final: final})
	}
}

// publish renames a checked copy to its name; the directory is synced
// once all are in place.
func (fr *fetcher) publish(tmp, final string) error {
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fr.wrote = append(fr.wrote, final)
	return nil
}

// removeWritten removes what a failed fetch wrote, so that dir never
// holds part of a fetch that a restore could take for all of it.
func (fr *fetcher) removeWritten() {
	for _, p := range fr.wrote {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			fr.c.log.Warn("could not remove a file of the failed fetch", "file", p, "err", err)
		}
	}
	if len(fr.wrote) > 0 {
		_ = fsutil.SyncDir(fr.dir)
	}
}

// cutAfter cuts the changelog copy at path after the line of version to:
// at is where that line ends, or -1 when it must be found by reading.
func cutAfter(path string, at int64, to uint64) error {
	if at < 0 {
		fr, err := changelog.OpenFile(path)
		if err != nil {
			return err
		}
		for at < 0 {
			e, err := fr.Next()
			if err != nil {
				fr.Close()
				return fmt.Errorf("cut %s after version %d: %w", path, to, err)
			}
			if e.Version == to {
				at = fr.Offset()
			}
		}
		fr.Close()
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cut %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(at); err != nil {
		return fmt.Errorf("cut %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cut %s: %w", path, err)
	}
	return f.Close()
}

// prepareDir makes dir, refuses it if it is a data directory, and
// removes what an earlier fetch left in it.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("fetch directory: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("fetch directory: %w", err)
	}
	var stale []string
	for _, de := range des {
		name := de.Name()
		switch {
		case name == metalogger.StateFile || name == metalogger.LockFile || name == metastore.DumpName || isLog(changelog.PrefixMaster, name):
			return fmt.Errorf("fetch directory %s holds %s: it is a master's or a metalogger's data directory; fetch into a directory of its own (fetch.Dir)", dir, name)
		case isFetched(name) || isFetched(strings.TrimSuffix(name, partSuffix)):
			stale = append(stale, name)
		}
	}
	for _, name := range stale {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("fetch directory: remove an earlier fetch: %w", err)
		}
	}
	if len(stale) > 0 {
		if err := fsutil.SyncDir(dir); err != nil {
			return fmt.Errorf("fetch directory: %w", err)
		}
	}
	return nil
}

// isFetched matches the names Fetch writes.
func isFetched(name string) bool {
	return name == metalogger.DumpName || isLog(changelog.PrefixMetalogger, name)
}

// isLog matches PREFIX.N.mfs exactly as the changelog package names
// files.
func isLog(prefix, name string) bool {
	_, ok := logN(prefix, name)
	return ok
}

func logN(prefix, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix+".")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(rest, ".mfs"))
	return n, err == nil && n >= 0 && changelog.FileName(prefix, n) == name
}

// readFull reads len(b) bytes at off; fewer is io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	switch {
	case n == len(b):
		return nil
	case err == nil || err == io.EOF:
		return io.ErrUnexpectedEOF
	}
	return err
}

// firstVersion reads the version of a changelog's first line; ok is false
// when the file holds no complete line.
func firstVersion(f io.ReaderAt, size int64) (v uint64, ok bool, err error) {
	for n := int64(4 << 10); ; n *= 16 {
		buf := make([]byte, min(n, size))
		if err := readFull(f, buf, 0); err != nil {
			return 0, false, err
		}
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			e, err := changelog.ParseLine(buf[:i+1])
			if err != nil {
				return 0, false, err
			}
			return e.Version, true, nil
		}
		switch {
		case int64(len(buf)) == size:
			return 0, false, nil // empty, or one torn line
		case len(buf) > changelog.MaxLineSize:
			return 0, false, fmt.Errorf("first line is longer than %d bytes", changelog.MaxLineSize)
		}
	}
}

// lineEnd is a good line found at the end of a changelog.
type lineEnd struct {
	version uint64
	end     int64 // offset just after its newline
}

// readTail parses the complete lines in the last 64 KiB of a changelog
// (more if no line fits) and returns those that parse, in order. Bytes
// after the last one are a torn or damaged tail.
func readTail(f io.ReaderAt, size int64) ([]lineEnd, error) {
	var p changelog.Parser
	for window := int64(64 << 10); ; window *= 16 {
		start := max(0, size-window)
		buf := make([]byte, size-start)
		if err := readFull(f, buf, start); err != nil {
			return nil, err
		}
		var lines []lineEnd
		from := 0
		if start > 0 { // the window may begin inside a line
			from = bytes.IndexByte(buf, '\n') + 1
		}
		for from > 0 || start == 0 { // from 0 with start > 0: no line begins in the window
			i := bytes.IndexByte(buf[from:], '\n')
			if i < 0 {
				break
			}
			if e, err := p.ParseLine(buf[from : from+i+1]); err == nil {
				lines = append(lines, lineEnd{e.Version, start + int64(from+i+1)})
			}
			from += i + 1
		}
		if len(lines) > 0 || start == 0 || window > 2*changelog.MaxLineSize {
			return lines, nil
		}
	}
}
