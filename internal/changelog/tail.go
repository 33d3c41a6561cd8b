package changelog

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/carpfs/carpfs/internal/meta"
)

// ErrTooOld says the files no longer hold a version asked for: rotation
// has deleted it, and whoever needs it must start from a dump instead.
var ErrTooOld = errors.New("changelog no longer holds the version asked for")

// ErrAhead says a Tail was asked to start past the version after the last
// one in the files: the asker knows of entries these files lack.
var ErrAhead = errors.New("changelog ends before the version asked for")

// snapshotTries bounds how often OpenTail lists the directory again when
// rotations keep changing it while it opens the files.
const snapshotTries = 20

// Tail yields the lines of a prefix's files from one version on, across
// rotated files, oldest to newest, while a Writer may be appending to the
// current file and rotating. It holds every file it is going to read open,
// so a rotation that renames or deletes one does not take it away; a
// file's successor is found by the version it starts with, never by its
// number.
//
// A Tail is for one goroutine.
type Tail struct {
	dir, prefix string
	want        uint64      // the version the next line must have
	files       []*tailFile // files[0] is being read; the rest follow it by version
	r           *Reader     // reads files[0]; nil while no file holds an entry
	olderGone   bool        // files[0] was no longer listed when its successors were found
	err         error       // sticky: damage, a gap, ErrTooOld, an I/O error, or Close
	closed      bool
}

// tailFile is one open file of a Tail.
type tailFile struct {
	f     *os.File
	name  string // its path when it was opened; a rotation may rename it since
	first uint64 // its first entry's version
	// final is set once a newer file is known to exist: the Writer has
	// rotated this one, and rotation syncs a file before renaming it, so
	// nothing will be appended to it.
	final bool
}

// OpenTail opens the files of prefix in dir for reading from version from
// on. If the oldest entry the files hold is after from, it fails with an
// error matching ErrTooOld. If they hold no entry at all it succeeds and
// Next returns io.EOF: the files alone cannot tell whether from is old or
// yet to come.
//
// Only what a Writer has flushed (Flush, Sync, Rotate) is in the files; a
// Tail never sees the Writer's buffer.
func OpenTail(dir, prefix string, from uint64) (*Tail, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, fmt.Errorf("open changelog tail: %w", err)
	}
	t := &Tail{dir: dir, prefix: prefix, want: from}
	if err := t.start(); err != nil {
		return nil, err
	}
	return t, nil
}

// Next returns the next line, newline included, and its entry: versions
// from, from+1, ... in order. The line stays valid until the next call.
//
// At the end of what the files hold it returns io.EOF; a line still being
// written at the end of the current file is not yet there. A later Next
// looks again and yields what has been appended since, following the
// Writer into files it rotates to. If from is past the last version + 1,
// it returns an error matching ErrAhead in place of io.EOF.
//
// Damage is never skipped: a corrupt line, or a torn one at the end of a
// rotated file, is a *CorruptError; versions missing between two files are
// a *GapError naming them, or ErrTooOld when rotation deleted them while
// the Tail was reading. These errors and I/O errors end the Tail.
func (t *Tail) Next() ([]byte, meta.Entry, error) {
	if t.err != nil {
		return nil, meta.Entry{}, t.err
	}
	if t.r == nil {
		if err := t.start(); err != nil {
			t.err = err
			return nil, meta.Entry{}, err
		}
		if t.r == nil {
			return nil, meta.Entry{}, io.EOF
		}
	}
	for {
		e, err := t.r.Next()
		if err != nil {
			if err = t.atEnd(err); err != nil {
				return nil, meta.Entry{}, err
			}
			continue
		}
		switch {
		case e.Version < t.want: // before from
			continue
		case e.Version > t.want:
			// Inside a file versions rise by 1 and a file starts at or
			// before want, so this is a file that changed under the Tail.
			t.err = fmt.Errorf("changelog tail: %s line %d has version %d where %d was due", t.files[0].name, t.r.Lines(), e.Version, t.want)
			return nil, meta.Entry{}, t.err
		}
		t.want++
		return t.r.Raw(), e, nil
	}
}

// Close closes the files. Next fails afterwards.
func (t *Tail) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	t.err = fmt.Errorf("changelog tail: %w", os.ErrClosed)
	err := closeFiles(t.files)
	t.files, t.r = nil, nil
	return err
}

// start finds the file holding want among the files there are now. It
// leaves r nil if no file holds an entry.
func (t *Tail) start() error {
	fs, err := snapshot(t.dir, t.prefix)
	if err != nil {
		return fmt.Errorf("changelog tail from version %d: %w", t.want, err)
	}
	if len(fs) == 0 {
		return nil
	}
	if fs[0].first > t.want {
		closeFiles(fs)
		return fmt.Errorf("changelog tail from version %d: the oldest entry, in %s, is version %d: %w", t.want, fs[0].name, fs[0].first, ErrTooOld)
	}
	i := 0
	for i+1 < len(fs) && fs[i+1].first <= t.want {
		i++
	}
	closeFiles(fs[:i])
	t.files = fs[i:]
	t.r = NewReader(fileFrom(t.files[0].f, 0), t.files[0].name)
	return nil
}

// atEnd handles the end of files[0]'s good data, where the Reader stopped
// with err. It returns nil once there is more to read, from files[0] or
// the next file, and else the error for Next to return.
func (t *Tail) atEnd(err error) error {
	if ce, corrupt := asCorrupt(err); err != io.EOF && !(corrupt && ce.Torn) {
		t.err = err
		return err
	}
	cur := t.files[0]
	if len(t.files) == 1 {
		if t.isCurrent(cur) {
			return t.endOfData()
		}
		// Perhaps rotated: look for files that start after what was read.
		fs, err := snapshot(t.dir, t.prefix)
		if err != nil {
			t.err = fmt.Errorf("changelog tail: %w", err)
			return t.err
		}
		last := t.last()
		i := 0
		for i < len(fs) && fs[i].first <= last {
			i++
		}
		closeFiles(fs[:i])
		if i == len(fs) {
			return t.endOfData()
		}
		// With cur and everything older gone, Keep deleted them: a
		// missing version is then one rotation took, not a hole.
		t.olderGone = i == 0
		t.files = append(t.files, fs[i:]...)
	}
	if !cur.final {
		// A newer file exists, so cur has been rotated and is complete,
		// but it may have grown since the Reader reached its end.
		cur.final = true
		t.r.resume(fileFrom(cur.f, t.r.Offset()))
		return nil
	}
	if err != io.EOF {
		// A rotated file was synced whole; a torn line in it is damage.
		t.err = err
		return err
	}
	next, last := t.files[1], t.last()
	switch {
	case next.first <= last:
		t.err = fmt.Errorf("changelog tail: %s starts at version %d, but %s already went up to %d", next.name, next.first, cur.name, last)
		return t.err
	case next.first > max(last+1, t.want):
		gap := &GapError{From: max(last+1, t.want), To: next.first - 1}
		if t.olderGone {
			t.err = fmt.Errorf("changelog tail: versions %d-%d were rotated away while %s was read: %w", gap.From, gap.To, cur.name, ErrTooOld)
		} else {
			t.err = fmt.Errorf("changelog tail: %s ends at version %d and the next file, %s, starts at %d: %w", cur.name, last, next.name, next.first, gap)
		}
		return t.err
	}
	cur.f.Close()
	t.files[0] = nil
	t.files = t.files[1:]
	t.r = NewReader(fileFrom(next.f, 0), next.name)
	return nil
}

// endOfData ends a Next at the end of the newest file. The Reader is
// rewound to the end of the good data, so that the next Next reads what
// has been appended since.
func (t *Tail) endOfData() error {
	t.r.resume(fileFrom(t.files[0].f, t.r.Offset()))
	if last := t.last(); t.want > last+1 {
		return fmt.Errorf("changelog tail from version %d: the last entry, in %s, is version %d: %w", t.want, t.files[0].name, last, ErrAhead)
	}
	return io.EOF
}

// last is the version of the last entry read from files[0], or the one
// before its first if none was.
func (t *Tail) last() uint64 {
	if t.r.Lines() == 0 {
		return t.files[0].first - 1
	}
	return t.r.LastVersion()
}

// isCurrent says whether f is still prefix.0.mfs. If so no rotation has
// renamed it, so no newer file exists and a directory listing is spared.
func (t *Tail) isCurrent(f *tailFile) bool {
	st, err := os.Stat(filepath.Join(t.dir, FileName(t.prefix, 0)))
	if err != nil {
		return false
	}
	fst, err := f.f.Stat()
	return err == nil && os.SameFile(st, fst)
}

// fileFrom reads f from off on without moving f's offset.
func fileFrom(f *os.File, off int64) io.Reader {
	return io.NewSectionReader(f, off, math.MaxInt64-off)
}

// snapshot opens the files of prefix that hold an entry, sorted by their
// first versions, all but the newest marked final. The files are opened
// from one listing and kept only if a second listing finds each name
// still naming the file opened, so that a rotation in between cannot make
// a file be missed or seen twice.
func snapshot(dir, prefix string) ([]*tailFile, error) {
	for range snapshotTries {
		tfs, stable, err := trySnapshot(dir, prefix)
		if err != nil || stable {
			return tfs, err
		}
	}
	return nil, fmt.Errorf("changelog files %s changed each of the %d times they were opened", filepath.Join(dir, prefix), snapshotTries)
}

func trySnapshot(dir, prefix string) ([]*tailFile, bool, error) {
	files, err := List(dir, prefix)
	if err != nil {
		return nil, false, err
	}
	all := make([]*tailFile, 0, len(files))
	keep, stable, err := func() ([]*tailFile, bool, error) {
		for _, fl := range files {
			f, err := os.Open(fl.Path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil, false, nil // renamed or deleted since the listing
			}
			if err != nil {
				return nil, false, err
			}
			all = append(all, &tailFile{f: f, name: fl.Path})
		}
		again, err := List(dir, prefix)
		if err != nil || len(again) != len(files) {
			return nil, false, err
		}
		for i, fl := range again {
			st, serr := os.Stat(fl.Path)
			fst, ferr := all[i].f.Stat()
			if fl.Path != files[i].Path || serr != nil || ferr != nil || !os.SameFile(st, fst) {
				return nil, false, nil
			}
		}
		var keep []*tailFile
		for _, tf := range all {
			e, ok, err := firstEntry(tf.f, tf.name)
			if err != nil {
				return nil, true, err
			}
			if ok {
				tf.first = e.Version
				keep = append(keep, tf)
			}
		}
		return keep, true, nil
	}()
	for _, tf := range all {
		if !slices.Contains(keep, tf) {
			tf.f.Close()
		}
	}
	if err != nil || !stable {
		return nil, stable, err
	}
	slices.SortStableFunc(keep, func(a, b *tailFile) int { return cmp.Compare(a.first, b.first) })
	for _, tf := range keep[:max(len(keep)-1, 0)] {
		tf.final = true
	}
	return keep, true, nil
}

// closeFiles closes every file, returning the first error.
func closeFiles(tfs []*tailFile) error {
	var first error
	for _, tf := range tfs {
		if err := tf.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
