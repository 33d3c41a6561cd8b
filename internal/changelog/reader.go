package changelog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/carpfs/carpfs/internal/meta"
)

// readBufSize is a Reader's buffer: large enough that reading costs a few
// syscalls per thousand lines, small enough that a merge over a few hundred
// files stays within tens of MiB. Longer lines are still read, by copying.
const readBufSize = 256 << 10

// CorruptError says where a changelog stops being valid. Everything before
// Offset was read and is good; nothing at or after it was yielded.
type CorruptError struct {
	File   string // name the Reader was given, usually the path
	Line   int    // 1-based number of the bad line
	Offset int64  // byte offset where the bad line starts: the good prefix's length
	Reason string // what is wrong with the line
	Torn   bool   // the data ends inside this line: an interrupted append, not damage
	Err    error  // the *ParseError when the line did not parse, else nil
	// After is the version of the last good entry before the bad line
	// (0 if none): whatever the file held past it must come from elsewhere.
	After uint64
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt changelog %s line %d (byte offset %d): %s", e.File, e.Line, e.Offset, e.Reason)
}

// Is makes every CorruptError match ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func (e *CorruptError) Unwrap() error { return e.Err }

// Reader yields the entries of one changelog file in order. It stops at the
// first line that is torn, does not parse, or does not continue the version
// sequence, and returns a *CorruptError there and on every later call.
type Reader struct {
	name string
	br   *bufio.Reader
	long []byte // holds a line longer than br's buffer
	raw  []byte // the last yielded line
	p    Parser
	line int   // lines yielded
	off  int64 // end of the last yielded line
	last uint64
	err  error
}

// NewReader reads changelog lines from r. name appears in errors; use the
// file's path.
func NewReader(r io.Reader, name string) *Reader {
	return newReaderSize(r, name, readBufSize)
}

// newReaderSize is NewReader with a buffer of size bytes, for reads of one
// or two lines that should not cost a full buffer each.
func newReaderSize(r io.Reader, name string, size int) *Reader {
	return &Reader{name: name, br: bufio.NewReaderSize(r, size)}
}

// resume lets a Reader that ended with io.EOF or a torn line read on from
// src, which must continue where Offset says the good data ends: the file
// may have grown since. Line numbers, offsets and the version check carry
// on as if the Reader had never stopped.
func (r *Reader) resume(src io.Reader) {
	r.br.Reset(src)
	r.err, r.raw = nil, nil
}

// Name is the name the Reader was given.
func (r *Reader) Name() string { return r.name }

// Lines is the number of entries yielded so far.
func (r *Reader) Lines() int { return r.line }

// Offset is the byte length of the good prefix read so far: where a writer
// cuts a file whose tail is torn or corrupt.
func (r *Reader) Offset() int64 { return r.off }

// LastVersion is the version of the last entry yielded, or 0 before the first.
func (r *Reader) LastVersion() uint64 { return r.last }

// Raw is the line of the last entry yielded, newline included. It stays
// valid until the next call to Next. Since the format is canonical, two
// entries are equal exactly when their lines are.
func (r *Reader) Raw() []byte { return r.raw }

// Next returns the next entry, io.EOF after the last complete line, a
// *CorruptError at a bad or torn line, or an I/O error.
func (r *Reader) Next() (meta.Entry, error) {
	if r.err != nil {
		return meta.Entry{}, r.err
	}
	line, err := r.readLine()
	if err != nil {
		r.err = err
		return meta.Entry{}, err
	}
	e, perr := r.p.parse(line)
	if perr != nil {
		r.err = r.corrupt("column "+strconv.Itoa(perr.Col)+": "+perr.Reason, false, perr)
		return meta.Entry{}, r.err
	}
	if r.line > 0 && e.Version != r.last+1 {
		r.err = r.corrupt(fmt.Sprintf("version %d follows version %d; inside one file versions rise by exactly 1", e.Version, r.last), false, nil)
		return meta.Entry{}, r.err
	}
	r.raw = line
	r.line++
	r.off += int64(len(line))
	r.last = e.Version
	return e, nil
}

// readLine returns the next line with its newline. The slice is valid until
// the next read.
func (r *Reader) readLine() ([]byte, error) {
	b, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], b...)
		for err == bufio.ErrBufferFull && len(r.long) <= MaxLineSize {
			b, err = r.br.ReadSlice('\n')
			r.long = append(r.long, b...)
		}
		b = r.long
		if len(b) > MaxLineSize {
			return nil, r.corrupt(fmt.Sprintf("line is longer than %d bytes", MaxLineSize), false, nil)
		}
	}
	switch {
	case err == nil:
		return b, nil
	case err == io.EOF && len(b) == 0:
		return nil, io.EOF
	case err == io.EOF:
		return nil, r.corrupt(fmt.Sprintf("torn: the data ends %d bytes into a line that has no newline", len(b)), true, nil)
	default:
		return nil, fmt.Errorf("read changelog %s: %w", r.name, err)
	}
}

func (r *Reader) corrupt(reason string, torn bool, cause error) *CorruptError {
	return &CorruptError{File: r.name, Line: r.line + 1, Offset: r.off, Reason: reason, Torn: torn, Err: cause, After: r.last}
}

// firstEntry reads the first entry of f through a small buffer, without
// moving f's offset. ok is false when f holds no complete line: it is
// empty, or holds only the start of one, as the current file does while
// its first append is being written.
func firstEntry(f *os.File, name string) (e meta.Entry, ok bool, err error) {
	r := newReaderSize(io.NewSectionReader(f, 0, math.MaxInt64), name, 4<<10)
	e, err = r.Next()
	if err == nil {
		return e, true, nil
	}
	if ce, corrupt := asCorrupt(err); err == io.EOF || corrupt && ce.Torn {
		return meta.Entry{}, false, nil
	}
	return meta.Entry{}, false, err
}

// FileReader is a Reader over an open file.
type FileReader struct {
	*Reader
	f *os.File
}

// OpenFile opens a changelog file for reading.
func OpenFile(path string) (*FileReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open changelog: %w", err)
	}
	return &FileReader{Reader: NewReader(f, path), f: f}, nil
}

// Close closes the file.
func (fr *FileReader) Close() error { return fr.f.Close() }

// ReadFile reads a whole changelog file. It returns the entries before the
// first bad line together with the *CorruptError about that line, so a
// caller can use the good prefix and still report the damage.
func ReadFile(path string) ([]meta.Entry, error) {
	fr, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer fr.Close()
	var es []meta.Entry
	for {
		e, err := fr.Next()
		if err == io.EOF {
			return es, nil
		}
		if err != nil {
			return es, err
		}
		es = append(es, e)
	}
}

// Prefixes of changelog file names: the master writes changelog.N.mfs, a
// metalogger changelog_ml.N.mfs.
const (
	PrefixMaster     = "changelog"
	PrefixMetalogger = "changelog_ml"
)

// File is one changelog file found by List.
type File struct {
	Path string
	N    int // 0 is the file being appended to; higher is older
}

// FileName is the name of changelog file n with the given prefix.
func FileName(prefix string, n int) string {
	return prefix + "." + strconv.Itoa(n) + ".mfs"
}

// List finds the files named prefix.N.mfs in dir, oldest (highest N) first,
// which is the order their entries were written in. Names that only look
// alike (changelog.01.mfs, changelog_ml.1.mfs for prefix changelog) are not
// listed.
func List(dir, prefix string) ([]File, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list changelogs: %w", err)
	}
	var fs []File
	for _, de := range des {
		if de.IsDir() {
			continue
		}
		if n, ok := parseFileName(de.Name(), prefix); ok {
			fs = append(fs, File{Path: filepath.Join(dir, de.Name()), N: n})
		}
	}
	slices.SortFunc(fs, func(a, b File) int { return b.N - a.N })
	return fs, nil
}

func parseFileName(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix+".")
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, ".mfs")
	if !ok || num == "" || len(num) > 9 || num[0] == '0' && len(num) > 1 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' {
			return 0, false
		}
		n = n*10 + int(num[i]-'0')
	}
	return n, true
}

// asCorrupt finds the *CorruptError in err's chain.
func asCorrupt(err error) (*CorruptError, bool) {
	var ce *CorruptError
	ok := errors.As(err, &ce)
	return ce, ok
}
