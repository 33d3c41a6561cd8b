package changelog

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/carpfs/carpfs/internal/meta"
)

// A Reader parses on the goroutine that calls Next. In a restore that
// goroutine also merges, and together that took longer per entry than
// meta's Replay on the other core, so it set the pace while Replay
// waited. ParallelReader splits the file into line-aligned chunks and
// parses them on several goroutines, so that the scheduler can spread
// reading, parsing and applying over every core.
//
// Only where a line starts and ends is needed to split the file, and that
// is one '\n' search per chunk. Everything that depends on the lines
// before one (its number, its offset, the version it must follow) is
// settled by Next, in order, just as Reader does it; that is what makes
// the two readers' entries and errors identical.

const (
	// firstChunkSize is the chunk Next reads and parses itself, a line at a
	// time, before any goroutine starts: a file this small costs no
	// goroutines, and a merge over hundreds of files, each waiting with one
	// entry taken, holds this much per file rather than a pipeline's worth.
	firstChunkSize = 64 << 10
	// chunkSize is the most a pipeline chunk holds (unless one line is
	// longer): large enough that the per-chunk handoff costs nothing next to
	// parsing ~15,000 lines, small enough that a few in flight stay a few
	// MiB. Chunks start smaller and double up to it, so a file's first
	// parsed chunk is ready soon after the pipeline starts.
	chunkSize = 1 << 20
	// startAfter is how many entries Next yields from the first chunk
	// before starting the pipeline. A merge takes one entry from every
	// source before it knows which it reads next; a source that goes on
	// being read is worth the goroutines.
	startAfter = 16
)

// ParallelReader yields the entries of one changelog file, like Reader,
// but parses them on worker goroutines. It yields the same entries, stops
// at the same line with an identical *CorruptError, and reports the same
// Lines, Offset and LastVersion. Close must be called to stop the
// goroutines, even after io.EOF. Like Reader it is for one goroutine, with
// one exception: Close may be called while Next runs on another, as a
// restore that gives up does; that Next then returns an error.
type ParallelReader struct {
	name    string
	src     io.Reader
	closer  io.Closer // the file, when OpenFileParallel opened it
	workers int
	// Chunk sizes; tests shrink them to put chunk boundaries everywhere.
	firstSize, maxSize, startAfter int

	// The same bookkeeping as Reader: errors are built from it, by Next,
	// so they come out the same.
	line int
	off  int64
	last uint64
	raw  []byte
	err  error

	cur *chunk // chunk being yielded; nil before the first Next
	i   int    // cur's next entry (a parsed chunk)
	pos int    // start of cur's next line (the first chunk)
	p   Parser // for the first chunk
	pl  *pipeline

	// Close may run on another goroutine than Next, so it touches none of
	// the above: it closes closing, which Next and the pipeline watch, and
	// waits on wg. mu orders a pipeline's start against that wait.
	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

var (
	_ Source    = (*ParallelReader)(nil)
	_ rawSource = (*ParallelReader)(nil)
)

// chunk is a run of whole lines read from the file and, once a worker has
// seen it, the entries they hold.
type chunk struct {
	buf []byte // buf[:n] is whole lines; the bytes after are carried on
	n   int

	// Parsed by a worker, up to the first line that is too long or does
	// not parse; that line is then described by bad, badReason, badErr.
	entries   []meta.Entry
	ends      []int // ends[i] is where entries[i]'s line ends in buf
	bad       bool
	badReason string
	badErr    *ParseError
	done      chan struct{} // a worker's token: entries are ready

	// final marks the chunk the file ends in; what follows buf[:n] is then
	// a clean end, a torn or too long line (tail, torn), or a read error.
	final bool
	tail  string
	torn  bool
	ioErr error
}

// pipeline is the goroutines behind a ParallelReader: one reads chunks,
// workers parse them, and Next takes them from order in file order.
type pipeline struct {
	work    chan *chunk     // chunks to parse
	order   chan *chunk     // the same chunks, in file order, for Next
	free    chan *chunk     // chunks Next is done with, to refill
	quit    chan struct{}   // closed by Next when it needs no more
	closing <-chan struct{} // closed by Close
	wg      *sync.WaitGroup
}

// NewParallelReader reads changelog lines from src with workers parsing
// goroutines (at least one). name appears in errors; use the file's path.
func NewParallelReader(src io.Reader, name string, workers int) *ParallelReader {
	return &ParallelReader{
		name: name, src: src, workers: max(workers, 1),
		firstSize: firstChunkSize, maxSize: chunkSize, startAfter: startAfter,
		closing: make(chan struct{}),
	}
}

// OpenFileParallel opens a changelog file for reading with a
// ParallelReader; Close closes the file too.
func OpenFileParallel(path string, workers int) (*ParallelReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open changelog: %w", err)
	}
	r := NewParallelReader(f, path, workers)
	r.closer = f
	return r, nil
}

// Name is the name the reader was given.
func (r *ParallelReader) Name() string { return r.name }

// Lines is the number of entries yielded so far.
func (r *ParallelReader) Lines() int { return r.line }

// Offset is the byte length of the good prefix read so far.
func (r *ParallelReader) Offset() int64 { return r.off }

// LastVersion is the version of the last entry yielded, or 0 before the first.
func (r *ParallelReader) LastVersion() uint64 { return r.last }

// Raw is the line of the last entry yielded, newline included, valid until
// the next call to Next.
func (r *ParallelReader) Raw() []byte { return r.raw }

// Next returns the next entry, io.EOF after the last complete line, a
// *CorruptError at a bad or torn line, or an I/O error, exactly as
// Reader.Next does.
func (r *ParallelReader) Next() (meta.Entry, error) {
	if r.err != nil {
		return meta.Entry{}, r.err
	}
	select {
	case <-r.closing:
		return r.fail(r.errClosed())
	default:
	}
	if r.cur == nil {
		r.cur = &chunk{}
		r.fill(r.cur, nil, r.firstSize)
	}
	for {
		c := r.cur
		if c.done == nil { // the first chunk, parsed here a line at a time
			if r.pos < c.n {
				if r.pl == nil && r.line >= r.startAfter && !c.final {
					r.start()
				}
				end := r.pos + bytes.IndexByte(c.buf[r.pos:c.n], '\n') + 1
				line := c.buf[r.pos:end]
				e, reason, perr := parseChecked(&r.p, line)
				if reason != "" {
					return r.fail(r.corrupt(reason, false, perr))
				}
				r.pos = end
				return r.accept(e, line)
			}
		} else if r.i < len(c.entries) {
			start := 0
			if r.i > 0 {
				start = c.ends[r.i-1]
			}
			line := c.buf[start:c.ends[r.i]]
			r.i++
			return r.accept(c.entries[r.i-1], line)
		} else if c.bad {
			return r.fail(r.corrupt(c.badReason, false, c.badErr))
		}
		if c.final {
			switch {
			case c.ioErr != nil:
				return r.fail(c.ioErr)
			case c.tail != "":
				return r.fail(r.corrupt(c.tail, c.torn, nil))
			}
			return r.fail(io.EOF)
		}
		if err := r.advance(); err != nil {
			return r.fail(err)
		}
	}
}

// accept checks e continues the file's versions and yields it.
func (r *ParallelReader) accept(e meta.Entry, line []byte) (meta.Entry, error) {
	if r.line > 0 && e.Version != r.last+1 {
		return r.fail(r.corrupt(fmt.Sprintf("version %d follows version %d; inside one file versions rise by exactly 1", e.Version, r.last), false, nil))
	}
	r.raw = line
	r.line++
	r.off += int64(len(line))
	r.last = e.Version
	return e, nil
}

// corrupt is Reader.corrupt. perr is taken as a pointer so that a nil one
// becomes a nil Err, not an error holding a nil pointer.
func (r *ParallelReader) corrupt(reason string, torn bool, perr *ParseError) *CorruptError {
	ce := &CorruptError{File: r.name, Line: r.line + 1, Offset: r.off, Reason: reason, Torn: torn, After: r.last}
	if perr != nil {
		ce.Err = perr
	}
	return ce
}

// fail ends the reader with err, which every later Next returns. The
// pipeline is stopped at once: a merge keeps finished sources open until
// it ends, and they should not keep their chunks.
func (r *ParallelReader) fail(err error) (meta.Entry, error) {
	r.err = err
	r.cur, r.raw = nil, nil
	r.stop()
	return meta.Entry{}, err
}

// Close stops the goroutines and closes the file OpenFileParallel opened.
// A Next after Close returns an error wrapping os.ErrClosed.
func (r *ParallelReader) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.closing)
	}
	r.mu.Unlock()
	r.wg.Wait()
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}

func (r *ParallelReader) errClosed() error {
	return fmt.Errorf("read changelog %s: %w", r.name, os.ErrClosed)
}

// start starts the pipeline on the rest of the file, from the unfinished
// line after the first chunk, unless the reader is closed.
func (r *ParallelReader) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	n := r.workers + 3 // one being read, one per worker, one being yielded, one spare
	pl := &pipeline{
		work:    make(chan *chunk, n),
		order:   make(chan *chunk, n),
		free:    make(chan *chunk, n),
		quit:    make(chan struct{}),
		closing: r.closing,
		wg:      &r.wg,
	}
	carry := bytes.Clone(r.cur.buf[r.cur.n:])
	r.wg.Add(1 + r.workers)
	go r.produce(pl, carry, n)
	for range r.workers {
		go pl.parse()
	}
	r.pl = pl
}

// stop makes the pipeline's goroutines return and waits for them.
func (r *ParallelReader) stop() {
	if r.pl == nil {
		return
	}
	close(r.pl.quit)
	r.wg.Wait()
	r.pl = nil
}

// advance moves Next on to the pipeline's next chunk, once it is parsed.
func (r *ParallelReader) advance() error {
	if r.pl == nil {
		if r.start(); r.pl == nil {
			return r.errClosed()
		}
	}
	if r.cur.done != nil {
		// Never blocks: free has room for every chunk there is. The first
		// chunk is left to the collector; it is smaller than the rest.
		r.pl.free <- r.cur
	}
	var c *chunk
	select {
	case c = <-r.pl.order:
	case <-r.closing:
		return r.errClosed()
	}
	select {
	case <-c.done:
	case <-r.closing:
		return r.errClosed()
	}
	r.cur, r.i, r.pos = c, 0, 0
	return nil
}

// produce is the pipeline's reading goroutine. It owns src from here on.
// It hands each chunk to order before work, so that Next waits for the
// chunk in file order whichever worker parses it; neither send blocks,
// since each channel has room for all n chunks.
func (r *ParallelReader) produce(pl *pipeline, carry []byte, n int) {
	defer pl.wg.Done()
	defer close(pl.work)
	size := min(2*r.firstSize, r.maxSize)
	made := 0
	for {
		var c *chunk
		select {
		case <-pl.quit:
			return
		case <-pl.closing:
			return
		case c = <-pl.free:
		default:
			if made < n {
				made++
				c = &chunk{done: make(chan struct{}, 1)}
			} else {
				select {
				case <-pl.quit:
					return
				case <-pl.closing:
					return
				case c = <-pl.free:
				}
			}
		}
		if cap(c.buf) > 4*r.maxSize {
			c.buf = nil // grown for a long line; do not keep it
		}
		rest := r.fill(c, carry, size)
		carry = append(carry[:0], rest...)
		pl.order <- c
		pl.work <- c
		if c.final {
			return
		}
		size = min(2*size, r.maxSize)
	}
}

// parse is a worker: it parses chunks until there are no more.
func (pl *pipeline) parse() {
	defer pl.wg.Done()
	var p Parser
	for {
		select {
		case <-pl.quit:
			return
		case <-pl.closing:
			return
		case c, ok := <-pl.work:
			if !ok {
				return
			}
			c.parse(&p)
			c.done <- struct{}{}
		}
	}
}

// parse parses c's lines up to the first bad one.
func (c *chunk) parse(p *Parser) {
	c.entries, c.ends = c.entries[:0], c.ends[:0]
	c.bad, c.badReason, c.badErr = false, "", nil
	data := c.buf[:c.n]
	for pos := 0; pos < len(data); {
		end := pos + bytes.IndexByte(data[pos:], '\n') + 1
		e, reason, perr := parseChecked(p, data[pos:end])
		if reason != "" {
			c.bad, c.badReason, c.badErr = true, reason, perr
			return
		}
		c.entries = append(c.entries, e)
		c.ends = append(c.ends, end)
		pos = end
	}
}

// parseChecked is what Reader.Next checks of one line, in its order,
// before the version: the line's length, then its syntax. A line that
// fails gets a reason; the *ParseError is set when it did not parse.
func parseChecked(p *Parser, line []byte) (meta.Entry, string, *ParseError) {
	if len(line) > MaxLineSize {
		return meta.Entry{}, tooLong, nil
	}
	e, perr := p.parse(line)
	if perr != nil {
		return e, fmt.Sprintf("column %d: %s", perr.Col, perr.Reason), perr
	}
	return e, "", nil
}

// tooLong is Reader's reason for a line past MaxLineSize.
var tooLong = fmt.Sprintf("line is longer than %d bytes", MaxLineSize)

// fill reads into c the unfinished line carried from the chunk before,
// then file data until the buffer is full and holds a whole line, the
// file ends, or a read fails. It grows the buffer past size only while
// one line fills it, and stops once that line is longer than MaxLineSize:
// Reader refuses it there too. It returns the bytes after the last whole
// line, which are c.buf's own.
func (r *ParallelReader) fill(c *chunk, carry []byte, size int) []byte {
	if cap(c.buf) < size {
		c.buf = make([]byte, 0, size)
	}
	buf := append(c.buf[:0], carry...)
	var eof bool
	var ioErr error
	for {
		if len(buf) == cap(buf) {
			if len(buf) > MaxLineSize || bytes.LastIndexByte(buf, '\n') >= 0 {
				break
			}
			// One unfinished line fills the buffer: read on. Doubling
			// keeps the searches for its end linear in its length.
			buf = slices.Grow(buf, max(len(buf), size))
		}
		k, err := r.src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err == io.EOF {
			eof = true
			break
		}
		if err != nil {
			ioErr = fmt.Errorf("read changelog %s: %w", r.name, err)
			break
		}
	}
	c.buf = buf
	c.n = bytes.LastIndexByte(buf, '\n') + 1
	rest := buf[c.n:]
	c.final, c.tail, c.torn, c.ioErr = true, "", false, nil
	switch {
	case len(rest) > MaxLineSize:
		c.tail = tooLong
	case ioErr != nil:
		c.ioErr = ioErr
	case eof && len(rest) > 0:
		c.tail, c.torn = fmt.Sprintf("torn: the data ends %d bytes into a line that has no newline", len(rest)), true
	case !eof:
		c.final = false
	}
	return rest
}
