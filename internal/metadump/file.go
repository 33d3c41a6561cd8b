package metadump

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/carpfs/carpfs/internal/fsutil"
	"github.com/carpfs/carpfs/internal/meta"
)

// FS is the little of a file system that Write needs, so tests can fail
// any step of publishing a dump.
type FS interface {
	// Create opens a file for writing, truncating it if it exists.
	Create(path string) (File, error)
	Rename(oldpath, newpath string) error
	Link(oldpath, newpath string) error
	Remove(path string) error
	// SyncDir makes renames and links in dir durable.
	SyncDir(dir string) error
}

// File is a file Write writes a dump to.
type File interface {
	io.Writer
	Sync() error
	Close() error
}

// OSFS is the operating system's file system.
type OSFS struct{}

var _ FS = OSFS{}

// Create creates path with mode 0640: the dump holds every file name, so it
// is not world-readable.
func (OSFS) Create(path string) (File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
}

func (OSFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
func (OSFS) Link(oldpath, newpath string) error   { return os.Link(oldpath, newpath) }
func (OSFS) Remove(path string) error             { return os.Remove(path) }

func (OSFS) SyncDir(dir string) error { return fsutil.SyncDir(dir) }

// TempName is the file a dump called name is written to before it is
// renamed into place. A leftover one is from a crash and can be removed.
func TempName(name string) string { return name + ".tmp" }

// BackName is the i-th kept older copy of the dump called name, i from 1
// (the newest).
func BackName(name string, i int) string { return name + ".back." + strconv.Itoa(i) }

// Write publishes s as dir/name, keeping older copies as described in the
// package doc, and returns the new dump's header. On an error before the
// dump is in place, dir/name is as it was and no temp file is left; the
// kept copies may have shifted one place (name.back.1 then equals name). An error from the
// final directory sync means the new dump is in place but may not survive
// a power loss.
func Write(dir, name string, s *meta.State, opts Options) (Header, error) {
	final := filepath.Join(dir, name)
	if err := checkName(name); err != nil {
		return Header{}, fmt.Errorf("write dump %s: %w", final, err)
	}
	if err := opts.Validate(); err != nil {
		return Header{}, fmt.Errorf("write dump %s: %w", final, err)
	}
	fsys := opts.FS
	if fsys == nil {
		fsys = OSFS{}
	}
	log := opts.logger()
	start := time.Now()
	tmp := filepath.Join(dir, TempName(name))
	fail := func(err error) (Header, error) {
		if rerr := fsys.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove temp file: %w", rerr))
		}
		return Header{}, fmt.Errorf("write dump %s: %w", final, err)
	}

	h, err := writeTemp(fsys, tmp, s, opts)
	if err != nil {
		return fail(err)
	}
	keep := opts.keep()
	if err := rotate(fsys, final, keep, log); err != nil {
		return fail(err)
	}
	if err := fsys.Rename(tmp, final); err != nil {
		return fail(err)
	}
	if err := fsys.SyncDir(dir); err != nil {
		return h, fmt.Errorf("write dump %s: published, but sync directory: %w", final, err)
	}
	prune(fsys, final, keep, log)
	log.Info("metadata dump written", "path", final, "version", h.Version, "term", h.Term,
		"records", h.Records, "bytes", h.Size, "took", time.Since(start).Round(time.Millisecond))
	return h, nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("bad dump name %q: want a plain file name", name)
	}
	return nil
}

// writeTemp writes the dump to path and makes it durable.
func writeTemp(fsys FS, path string, s *meta.State, opts Options) (Header, error) {
	f, err := fsys.Create(path)
	if err != nil {
		return Header{}, err
	}
	h, err := Encode(f, s, opts)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return h, err
}

// rotate shifts the kept copies up by one and makes the current dump the
// newest of them. name.back.1 is a hard link, so name never disappears;
// where links are not supported the dump is renamed instead, which opens a
// window in which only name.back.1 exists.
func rotate(fsys FS, final string, keep int, log *slog.Logger) error {
	if keep == 0 {
		return nil
	}
	for i := keep - 1; i >= 1; i-- {
		err := fsys.Rename(BackName(final, i), BackName(final, i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keep older copy: %w", err)
		}
	}
	// Only with keep == 1 is name.back.1 still there: it is dropped.
	back := BackName(final, 1)
	if err := fsys.Remove(back); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keep older copy: %w", err)
	}
	err := fsys.Link(final, back)
	switch {
	case err == nil || errors.Is(err, fs.ErrNotExist): // no dump yet: nothing to keep
		return nil
	case !errors.Is(err, errors.ErrUnsupported) && !errors.Is(err, fs.ErrPermission):
		// FAT and some FUSE file systems say EPERM or ENOTSUP; anything
		// else is a real failure.
		return fmt.Errorf("keep older copy: %w", err)
	}
	log.Warn("cannot hard-link the current dump, renaming it instead", "path", final, "err", err)
	if err := fsys.Rename(final, back); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keep older copy: %w", err)
	}
	return nil
}

// prune removes copies past keep, left by an earlier, larger Keep. It stops
// at the first number missing.
func prune(fsys FS, final string, keep int, log *slog.Logger) {
	for i := keep + 1; i <= keep+maxKeep; i++ {
		err := fsys.Remove(BackName(final, i))
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			log.Warn("cannot remove old dump copy", "path", BackName(final, i), "err", err)
			return
		}
	}
}
