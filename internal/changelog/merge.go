package changelog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/carpfs/carpfs/internal/meta"
)

// Source is one stream of entries in rising version order, such as a
// *FileReader or *ParallelReader over one changelog file. Next returns io.EOF at the end. An
// error matching ErrCorrupt ends the source and is kept as a warning; any
// other error ends the merge, since a failing disk should not pass
// silently for a short file.
type Source interface {
	Name() string
	Next() (meta.Entry, error)
}

// rawSource is a Source that can show the line it parsed the last entry
// from, which lets the merger compare duplicates without re-encoding them.
type rawSource interface {
	Raw() []byte
}

var (
	_ Source    = (*Reader)(nil)
	_ rawSource = (*Reader)(nil)
)

// ErrConflict matches a *ConflictError.
var ErrConflict = errors.New("conflicting changelog entries")

// ConflictError says two sources hold different entries for one version.
// Neither can be trusted over the other without knowing how they came to
// be, so the merge stops.
type ConflictError struct {
	Version      uint64
	A, B         string // source names
	LineA, LineB string // the two entries as changelog lines, without newline
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("changelog conflict at version %d: %s has %q, %s has %q", e.Version, e.A, e.LineA, e.B, e.LineB)
}

// Is makes every ConflictError match ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// GapError says no source holds versions From to To.
type GapError struct {
	From, To uint64
}

func (e *GapError) Error() string {
	what := fmt.Sprintf("versions %d-%d are", e.From, e.To)
	if e.From == e.To {
		what = fmt.Sprintf("version %d is", e.From)
	}
	return "changelog gap: " + what + " in no source; add changelog files from another metalogger or the master"
}

// MergeOptions choose the range a Merger yields.
type MergeOptions struct {
	// From is the first version wanted, usually the dump's version + 1;
	// lower entries are skipped. 0 starts at the lowest version found.
	From uint64
	// To, when not 0, is the last version wanted: the merge stops after
	// it, and sources that end before it give a GapError.
	To uint64
}

// Merger merges sources into one stream with every version exactly once.
// Sources may overlap, as a master's and its metaloggers' files do:
// identical entries for a version are yielded once and different ones are
// a *ConflictError. A version no source holds is a *GapError. A source
// that ends in a torn or corrupt line just ends there, its last good line
// being its last entry; the damage is kept in Warnings, and a gap it
// leaves is reported as a gap.
type Merger struct {
	opts     MergeOptions
	srcs     []Source
	prev     []prevVersion // last version each source gave, to check its order
	h        []head        // min-heap by version, then source index
	started  bool
	n        uint64 // entries yielded
	lastV    uint64
	lastT    uint64
	warnings []error
	err      error
	enc      Encoder
	bufA     []byte
	bufB     []byte
}

type prevVersion struct {
	v    uint64
	seen bool
}

type head struct {
	e   meta.Entry
	src int
}

// NewMerger merges srcs. Each source must be a distinct stream; the Merger
// reads them but does not close them.
func NewMerger(opts MergeOptions, srcs ...Source) *Merger {
	return &Merger{opts: opts, srcs: srcs, prev: make([]prevVersion, len(srcs))}
}

// Warnings lists the errors that ended sources early, in the order met.
func (m *Merger) Warnings() []error { return m.warnings }

// Last is the version and term of the last entry yielded; ok is false
// before the first. After an error it still names the last good entry:
// "reached version V term T".
func (m *Merger) Last() (version, term uint64, ok bool) {
	return m.lastV, m.lastT, m.n > 0
}

// Next returns the next version's entry, io.EOF when done, or an error
// that ends the merge: *GapError, *ConflictError, or a source's I/O error.
func (m *Merger) Next() (meta.Entry, error) {
	if m.err != nil {
		return meta.Entry{}, m.err
	}
	if !m.started {
		m.started = true
		for i := range m.srcs {
			m.pull(i)
		}
		if m.err != nil {
			return meta.Entry{}, m.err
		}
	}
	want := m.want()
	if m.opts.To != 0 && want > m.opts.To {
		return meta.Entry{}, io.EOF
	}
	if len(m.h) == 0 {
		// With From 0 and nothing found there is no wanted version to
		// name, only an empty merge.
		if m.opts.To != 0 && (m.n > 0 || m.opts.From > 0) {
			m.err = &GapError{From: want, To: m.opts.To}
			return meta.Entry{}, m.err
		}
		return meta.Entry{}, io.EOF
	}
	top := m.pop()
	v := top.e.Version
	if v != want {
		// Entries below want were skipped or already yielded, so v > want.
		m.err = &GapError{From: want, To: v - 1}
		return meta.Entry{}, m.err
	}
	for len(m.h) > 0 && m.h[0].e.Version == v {
		dup := m.pop()
		if err := m.compare(&top, &dup); err != nil {
			m.err = err
			return meta.Entry{}, err
		}
		m.pull(dup.src)
	}
	m.pull(top.src)
	if m.err != nil {
		return meta.Entry{}, m.err
	}
	m.n++
	m.lastV, m.lastT = v, top.e.Term
	return top.e, nil
}

// want is the version the next entry must have.
func (m *Merger) want() uint64 {
	switch {
	case m.n > 0:
		return m.lastV + 1
	case m.opts.From > 0:
		return m.opts.From
	case len(m.h) > 0:
		return m.h[0].e.Version
	}
	return 0
}

// pull pushes source i's next wanted entry, if it has one.
func (m *Merger) pull(i int) {
	src := m.srcs[i]
	for {
		e, err := src.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				m.warnings = append(m.warnings, err)
			} else {
				m.err = fmt.Errorf("merge changelogs: %s: %w", src.Name(), err)
			}
			return
		}
		p := &m.prev[i]
		if p.seen && e.Version <= p.v {
			m.err = fmt.Errorf("merge changelogs: %s: version %d after %d: source is not in order", src.Name(), e.Version, p.v)
			return
		}
		p.v, p.seen = e.Version, true
		if e.Version < m.opts.From {
			continue
		}
		m.push(head{e: e, src: i})
		return
	}
}

// compare refuses two different entries for one version. Lines are
// canonical, so equal lines mean equal entries and vice versa.
func (m *Merger) compare(a, b *head) error {
	la, err := m.line(a, &m.bufA)
	if err != nil {
		return err
	}
	lb, err := m.line(b, &m.bufB)
	if err != nil {
		return err
	}
	if bytes.Equal(la, lb) {
		return nil
	}
	return &ConflictError{
		Version: a.e.Version,
		A:       m.srcs[a.src].Name(), B: m.srcs[b.src].Name(),
		LineA: string(bytes.TrimSuffix(la, []byte("\n"))), LineB: string(bytes.TrimSuffix(lb, []byte("\n"))),
	}
}

// line is h's entry as a changelog line: the source's own bytes when it
// still holds them, else freshly encoded into buf.
func (m *Merger) line(h *head, buf *[]byte) ([]byte, error) {
	if rs, ok := m.srcs[h.src].(rawSource); ok {
		return rs.Raw(), nil
	}
	b, err := m.enc.AppendEntry((*buf)[:0], &h.e)
	if err != nil {
		return nil, fmt.Errorf("merge changelogs: %s: %w", m.srcs[h.src].Name(), err)
	}
	*buf = b
	return b, nil
}

// The heap is written out rather than using container/heap, whose
// interface boxes every pushed entry: one allocation per entry adds up at
// a million entries a second.

func (m *Merger) less(i, j int) bool {
	a, b := &m.h[i], &m.h[j]
	if a.e.Version != b.e.Version {
		return a.e.Version < b.e.Version
	}
	return a.src < b.src
}

func (m *Merger) push(x head) {
	m.h = append(m.h, x)
	for i := len(m.h) - 1; i > 0; {
		p := (i - 1) / 2
		if !m.less(i, p) {
			break
		}
		m.h[i], m.h[p] = m.h[p], m.h[i]
		i = p
	}
}

func (m *Merger) pop() head {
	top := m.h[0]
	last := len(m.h) - 1
	m.h[0] = m.h[last]
	m.h[last] = head{} // drop the reference to the op
	m.h = m.h[:last]
	for i := 0; ; {
		l, r, min := 2*i+1, 2*i+2, i
		if l < len(m.h) && m.less(l, min) {
			min = l
		}
		if r < len(m.h) && m.less(r, min) {
			min = r
		}
		if min == i {
			break
		}
		m.h[i], m.h[min] = m.h[min], m.h[i]
		i = min
	}
	return top
}

// OpenSources opens each path as a Source for NewMerger. The returned
// function closes them all, which also stops their goroutines: each is a
// ParallelReader with a parsing goroutine per CPU, so that parsing is not
// what bounds a restore.
func OpenSources(paths ...string) ([]Source, func() error, error) {
	return OpenSourcesFrom(0, paths...)
}

// OpenSourcesFrom is OpenSources leaving out files whose last line is a
// valid entry below from: a restore starts from a recent dump, and most
// kept files end before it, so reading only their tails saves parsing
// them whole. A file whose last line does not parse is kept, for its
// Reader to report.
func OpenSourcesFrom(from uint64, paths ...string) ([]Source, func() error, error) {
	var prs []*ParallelReader
	closeAll := func() error {
		var errs []error
		for _, pr := range prs {
			errs = append(errs, pr.Close())
		}
		return errors.Join(errs...)
	}
	workers := runtime.GOMAXPROCS(0)
	srcs := make([]Source, 0, len(paths))
	for _, p := range paths {
		if from > 0 {
			if e, err := lastEntry(p); err == nil && e != nil && e.Version < from {
				continue
			}
		}
		pr, err := OpenFileParallel(p, workers)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		prs = append(prs, pr)
		srcs = append(srcs, pr)
	}
	return srcs, closeAll, nil
}
