package changelog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/carpfs/carpfs/internal/fsutil"
	"github.com/carpfs/carpfs/internal/meta"
)

// DefaultKeep is how many rotated files a Writer keeps unless told
// otherwise; MooseFS's BACK_LOGS defaults to the same.
const DefaultKeep = 50

const defaultBufferSize = 256 << 10

// Options tune a Writer. The zero value is valid.
type Options struct {
	// Keep is how many rotated files are kept: prefix.1.mfs up to
	// prefix.Keep.mfs. 0 means DefaultKeep.
	Keep int
	// MaxSize makes Sync rotate once the current file has reached this
	// many bytes. Rotation happens at a sync so that a rotated file is
	// always durable and ends at a whole line. 0 rotates only on Rotate.
	MaxSize int64
	// BufferSize is the append buffer; 0 means 256 KiB. Appends reach the
	// file when the buffer fills or at Sync.
	BufferSize int
	// Logger hears about repairs at Open and rotations; nil discards.
	Logger *slog.Logger
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	switch {
	case o.Keep < 0:
		return fmt.Errorf("changelog options: Keep %d is negative", o.Keep)
	case o.MaxSize < 0:
		return fmt.Errorf("changelog options: MaxSize %d is negative", o.MaxSize)
	case o.BufferSize < 0:
		return fmt.Errorf("changelog options: BufferSize %d is negative", o.BufferSize)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Keep == 0 {
		o.Keep = DefaultKeep
	}
	if o.BufferSize == 0 {
		o.BufferSize = defaultBufferSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// ErrSequence is returned by Append for an entry whose version is not the
// last one plus 1, or whose term is below the last one's. Nothing is
// written and the Writer stays usable.
var ErrSequence = errors.New("entry out of sequence")

// ErrClosed is returned by a Writer after Close.
var ErrClosed = errors.New("changelog writer closed")

// Repair describes what Open cut from the end of the current file.
type Repair struct {
	Path    string
	Offset  int64  // the file now ends here, after its last good line
	Cut     int64  // bytes removed
	Torn    bool   // only an unfinished last line was cut
	Reason  string // the CorruptError that ended the good prefix
	SavedTo string // copy of the cut bytes; "" when only a torn line was cut
}

// Writer appends entries to dir/prefix.0.mfs and rotates it. It is not safe
// for concurrent use: the master's log loop owns it, appending a batch and
// calling Sync once for the whole batch (group commit) while new requests
// queue up elsewhere.
type Writer struct {
	dir, prefix string
	opts        Options
	f           *os.File
	bw          *bufio.Writer
	enc         Encoder
	p           Parser // for AppendLine
	buf         []byte
	size        int64
	last        uint64
	lastTerm    uint64
	known       bool // last and lastTerm are set
	repair      *Repair
	// err is sticky: after a failed write or fsync the page cache may
	// hold data the disk lost, so nothing more is trusted until the
	// caller reopens and Open re-reads the file.
	err    error
	closed bool
}

// Open opens dir/prefix.0.mfs for appending, creating it if needed. An
// existing file is read first; a torn or corrupt tail is cut back to the
// end of the last good line and the cut is logged and reported by
// Repaired. The last version is taken from the file, or when it is empty
// from the newest rotated file, so Append can refuse a gap from the start.
func Open(dir, prefix string, opts Options) (*Writer, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open changelog: %w", err)
	}
	if err := checkPrefix(prefix); err != nil {
		return nil, fmt.Errorf("open changelog: %w", err)
	}
	w := &Writer{dir: dir, prefix: prefix, opts: opts.withDefaults()}
	if err := w.open(); err != nil {
		return nil, fmt.Errorf("open changelog %s: %w", w.Path(), err)
	}
	return w, nil
}

// checkPrefix refuses a prefix that would name files outside the directory.
func checkPrefix(prefix string) error {
	if prefix == "" || strings.ContainsAny(prefix, `/\`) {
		return fmt.Errorf("bad file name prefix %q", prefix)
	}
	return nil
}

// Path is the file being appended to.
func (w *Writer) Path() string { return filepath.Join(w.dir, FileName(w.prefix, 0)) }

// LastVersion is the version of the last entry appended or found at Open,
// or 0 when there is none.
func (w *Writer) LastVersion() uint64 { return w.last }

// LastTerm is the term of the entry LastVersion names, 0 when there is
// none.
func (w *Writer) LastTerm() uint64 { return w.lastTerm }

// Size is the current file's length, buffered appends included.
func (w *Writer) Size() int64 { return w.size }

// Repaired says what Open cut from the file, or nil if it was intact.
func (w *Writer) Repaired() *Repair { return w.repair }

func (w *Writer) open() error {
	path := w.Path()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	created := err == nil
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return err
	}
	if created {
		if err := fsutil.SyncDir(w.dir); err != nil {
			f.Close()
			return err
		}
	}
	end, err := w.scan(f)
	if err != nil {
		f.Close()
		return err
	}
	if _, err := f.Seek(end, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, end
	w.bw = bufio.NewWriterSize(f, w.opts.BufferSize)
	if !w.known {
		w.findLastRotated()
	}
	return nil
}

// scan reads f to its end, cuts a bad tail, and returns the good length.
func (w *Writer) scan(f *os.File) (int64, error) {
	r := NewReader(f, f.Name())
	for {
		e, err := r.Next()
		if err == nil {
			w.last, w.lastTerm, w.known = e.Version, e.Term, true
			continue
		}
		if err == io.EOF {
			return r.Offset(), nil
		}
		ce, ok := asCorrupt(err)
		if !ok {
			return 0, err
		}
		return r.Offset(), w.cut(f, ce)
	}
}

// cut truncates f to ce.Offset. Bytes past a merely torn line are kept in
// a side file first: a complete but bad line may be damage an operator
// wants to look at, and the lines after it may be entries no other copy
// has.
func (w *Writer) cut(f *os.File, ce *CorruptError) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	rep := &Repair{Path: f.Name(), Offset: ce.Offset, Cut: fi.Size() - ce.Offset, Torn: ce.Torn, Reason: ce.Error()}
	if !ce.Torn {
		rep.SavedTo = f.Name() + ".cut." + strconv.FormatInt(ce.Offset, 10)
		if err := saveRange(f, ce.Offset, rep.SavedTo); err != nil {
			return fmt.Errorf("keep cut tail: %w", err)
		}
	}
	if err := f.Truncate(ce.Offset); err != nil {
		return err
	}
	// A full fsync: the new length is metadata that must reach the disk
	// before anything is appended after it.
	if err := f.Sync(); err != nil {
		return err
	}
	if rep.SavedTo != "" {
		if err := fsutil.SyncDir(w.dir); err != nil {
			return err
		}
	}
	w.repair = rep
	w.opts.Logger.Warn("changelog tail cut", "file", rep.Path, "offset", rep.Offset,
		"bytes", rep.Cut, "torn", rep.Torn, "reason", ce.Reason, "saved_to", rep.SavedTo)
	return nil
}

func saveRange(f *os.File, from int64, path string) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = io.Copy(out, io.NewSectionReader(f, from, fi.Size()-from))
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// findLastRotated takes the last version from the newest rotated file when
// the current one is empty, as it is right after a rotation. Failing that
// the first Append sets the sequence; the state machine still refuses a
// gap at apply time, so this is a best effort, logged, not an error.
func (w *Writer) findLastRotated() {
	files, err := List(w.dir, w.prefix)
	if err != nil {
		w.opts.Logger.Warn("changelog: cannot list rotated files", "err", err)
		return
	}
	for i := len(files) - 1; i >= 0; i-- {
		if files[i].N == 0 {
			continue
		}
		e, err := lastEntry(files[i].Path)
		if err != nil {
			w.opts.Logger.Warn("changelog: last version unknown", "file", files[i].Path, "err", err)
			return
		}
		if e != nil {
			w.last, w.lastTerm, w.known = e.Version, e.Term, true
		}
		return
	}
}

// lastEntry parses the last line of a file by reading only its tail; a
// rotated file may be large and was complete when it was rotated. It
// returns nil for an empty file.
func lastEntry(path string) (*meta.Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() == 0 {
		return nil, nil
	}
	// Almost every line fits the small window; only a huge xattr needs
	// the large one.
	var line []byte
	for _, window := range []int64{64 << 10, MaxLineSize + 1} {
		start := max(0, fi.Size()-window)
		buf := make([]byte, fi.Size()-start)
		if _, err := f.ReadAt(buf, start); err != nil {
			return nil, err
		}
		if i := bytes.LastIndexByte(buf[:len(buf)-1], '\n'); i >= 0 {
			line = buf[i+1:]
			break
		}
		if start == 0 {
			line = buf
			break
		}
	}
	if line == nil {
		return nil, fmt.Errorf("last line of %s is longer than %d bytes", path, MaxLineSize)
	}
	e, err := ParseLine(line)
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// Append buffers e's line. The entry is durable only after Sync.
func (w *Writer) Append(e *meta.Entry) error {
	return w.add(e, nil)
}

// AppendLine buffers line, which must be one changelog line exactly as
// Encoder writes it, newline included: what a metalogger receives from a
// master. It is parsed as strictly as a Reader parses, so a line that
// AppendLine accepts is one every reader accepts, and it must continue the
// log as Append requires. The caller's bytes are written as they are (the
// format is canonical, so they are what encoding the entry would give) and
// are not retained. The entry is returned for the caller to apply.
//
// A line that does not parse or is longer than MaxLineSize gives an error
// matching ErrCorrupt, one out of sequence ErrSequence; either way nothing
// is written and the Writer stays usable.
func (w *Writer) AppendLine(line []byte) (meta.Entry, error) {
	var e meta.Entry
	var err error
	if len(line) > MaxLineSize {
		err = &ParseError{Col: MaxLineSize + 1, Reason: tooLong}
	} else {
		e, err = w.p.ParseLine(line)
	}
	if err != nil {
		// %.40q quotes the first 40 bytes: enough to show the version
		// the sender meant, short enough for a log line.
		return meta.Entry{}, fmt.Errorf("append changelog line %.40q (%d bytes) after version %d: %w", line, len(line), w.last, err)
	}
	if err := w.add(&e, line); err != nil {
		return meta.Entry{}, err
	}
	return e, nil
}

// add is Append and AppendLine: it checks that e continues the log and
// buffers its line, which is line when the caller has it and else e
// encoded.
func (w *Writer) add(e *meta.Entry, line []byte) error {
	if err := w.usable(); err != nil {
		return fmt.Errorf("append changelog entry %d: %w", e.Version, err)
	}
	if w.known && e.Version != w.last+1 {
		return fmt.Errorf("append changelog entry %d: %w: the last version is %d", e.Version, ErrSequence, w.last)
	}
	if w.known && e.Term < w.lastTerm {
		return fmt.Errorf("append changelog entry %d: %w: term %d is below the last term %d", e.Version, ErrSequence, e.Term, w.lastTerm)
	}
	if line == nil {
		buf, err := w.enc.AppendEntry(w.buf[:0], e)
		if err != nil {
			return err // already says which entry and why
		}
		w.buf, line = buf, buf
	}
	if _, err := w.bw.Write(line); err != nil {
		w.err = err
		return fmt.Errorf("append changelog entry %d: %w", e.Version, err)
	}
	w.size += int64(len(line))
	w.last, w.lastTerm, w.known = e.Version, e.Term, true
	return nil
}

// Sync writes the buffered entries and fdatasyncs the file: once it
// returns nil every appended entry is on disk. It then rotates if the file
// has reached Options.MaxSize.
func (w *Writer) Sync() error {
	if err := w.sync(); err != nil {
		return fmt.Errorf("sync changelog: %w", err)
	}
	if w.opts.MaxSize > 0 && w.size >= w.opts.MaxSize {
		return w.Rotate()
	}
	return nil
}

func (w *Writer) usable() error {
	if w.closed {
		return ErrClosed
	}
	return w.err
}

func (w *Writer) sync() error {
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
		return err
	}
	if err := fdatasync(w.f); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Rotate makes the current file prefix.1.mfs, shifting older files up by
// one and deleting those past Keep, and starts an empty prefix.0.mfs. An
// empty current file is not rotated. Each step leaves a directory that
// Open and List handle if the process dies in the middle: files are
// renamed from the oldest down, so a crash leaves at most a hole in the
// numbering, never two files with one name.
func (w *Writer) Rotate() error {
	if err := w.rotate(); err != nil {
		return fmt.Errorf("rotate changelog %s: %w", w.Path(), err)
	}
	return nil
}

func (w *Writer) rotate() error {
	if err := w.sync(); err != nil {
		return err
	}
	if w.size == 0 {
		return nil
	}
	// From here on a failure leaves the files in an unknown arrangement;
	// the Writer refuses further use until it is reopened.
	err := w.shift()
	if err != nil {
		w.err = err
	}
	return err
}

func (w *Writer) shift() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	files, err := List(w.dir, w.prefix)
	if err != nil {
		return err
	}
	for _, fl := range files { // highest N first
		if fl.N >= w.opts.Keep {
			if err := os.Remove(fl.Path); err != nil {
				return err
			}
			continue
		}
		if err := os.Rename(fl.Path, filepath.Join(w.dir, FileName(w.prefix, fl.N+1))); err != nil {
			return err
		}
	}
	if err := fsutil.SyncDir(w.dir); err != nil {
		return err
	}
	f, err := os.OpenFile(w.Path(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w.f = f
	w.bw.Reset(f)
	w.size = 0
	if err := fsutil.SyncDir(w.dir); err != nil {
		return err
	}
	w.opts.Logger.Info("changelog rotated", "dir", w.dir, "prefix", w.prefix, "last_version", w.last)
	return nil
}

// Close syncs and closes the file. The Writer cannot be used afterwards.
func (w *Writer) Close() error {
	if w.closed {
		return fmt.Errorf("close changelog: %w", ErrClosed)
	}
	err := w.sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.closed = true
	if err != nil {
		return fmt.Errorf("close changelog %s: %w", w.Path(), err)
	}
	return nil
}
