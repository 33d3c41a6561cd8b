package fileio

import (
	"sort"
	"sync"
)

// piece is a run of bytes to write at off of a chunk.
type piece struct {
	off  uint32
	data []byte
}

func (p *piece) end() uint32 { return p.off + uint32(len(p.data)) }

// pieces is a chunk's buffered data: sorted by offset, never
// overlapping. Newer data overwrites older data in place, so the list
// always holds what the chunk must finally contain where it has data.
type pieces []*piece

// write adds data at off as the newest data: it overwrites what the list
// holds there, extends a piece that ends where the new data starts (up
// to limit bytes a piece), and makes new pieces of at most limit bytes for
// the rest. stream says the write continues the writer's previous one:
// a new piece of at least a quarter of limit then starts in a whole
// piece's buffer, which the writer is about to fill. It returns how many
// bytes the list grew by.
func (ps *pieces) write(off uint32, data []byte, limit int, stream bool) int {
	end := off + uint32(len(data))
	for _, p := range *ps {
		lo, hi := max(off, p.off), min(end, p.end())
		if lo < hi {
			copy(p.data[lo-p.off:hi-p.off], data[lo-off:hi-off])
		}
	}
	return ps.fill(off, data, limit, stream)
}

// writeOlder adds data at off as older than everything the list holds:
// only the gaps between pieces take it. It is how a write that failed
// goes back into the buffer without undoing newer writes. It returns how
// many bytes the list grew by.
func (ps *pieces) writeOlder(off uint32, data []byte, limit int) int {
	return ps.fill(off, data, limit, false)
}

// fill stores the parts of data at off that no piece covers.
func (ps *pieces) fill(off uint32, data []byte, limit int, stream bool) int {
	grown := 0
	for _, g := range ps.gaps(off, off+uint32(len(data))) {
		grown += ps.fillGap(g[0], data[g[0]-off:g[1]-off], limit, stream)
	}
	return grown
}

// fillGap stores data at off, where no piece has data.
func (ps *pieces) fillGap(off uint32, data []byte, limit int, stream bool) int {
	n := len(data)
	i := sort.Search(len(*ps), func(i int) bool { return (*ps)[i].off >= off })
	if i > 0 {
		if p := (*ps)[i-1]; p.end() == off && len(p.data) < limit {
			k := min(len(data), limit-len(p.data))
			p.data = appendGrow(p.data, data[:k], limit)
			off, data = off+uint32(k), data[k:]
		}
	}
	var fresh []*piece
	for len(data) > 0 {
		k := min(len(data), limit)
		var buf []byte
		if k == limit || stream && k >= limit/4 {
			buf = newPieceBuf(limit)
		} else {
			buf = make([]byte, 0, k)
		}
		fresh = append(fresh, &piece{off: off, data: append(buf, data[:k]...)})
		off, data = off+uint32(k), data[k:]
	}
	if len(fresh) > 0 {
		*ps = append((*ps)[:i], append(fresh, (*ps)[i:]...)...)
	}
	return n
}

// gaps returns the ranges of [lo, hi) that no piece covers.
func (ps pieces) gaps(lo, hi uint32) [][2]uint32 {
	var out [][2]uint32
	i := sort.Search(len(ps), func(i int) bool { return ps[i].end() > lo })
	for ; i < len(ps) && lo < hi; i++ {
		p := ps[i]
		if p.off >= hi {
			break
		}
		if p.off > lo {
			out = append(out, [2]uint32{lo, p.off})
		}
		lo = max(lo, p.end())
	}
	if lo < hi {
		out = append(out, [2]uint32{lo, hi})
	}
	return out
}

// overlaps reports whether any piece overlaps [lo, hi).
func (ps pieces) overlaps(lo, hi uint32) bool {
	for _, p := range ps {
		if p.off < hi && lo < p.end() {
			return true
		}
	}
	return false
}

// remove takes p out of the list.
func (ps *pieces) remove(p *piece) {
	for i, q := range *ps {
		if q == p {
			*ps = append((*ps)[:i], (*ps)[i+1:]...)
			return
		}
	}
}

// bytes is the data the list holds.
func (ps pieces) bytes() int {
	n := 0
	for _, p := range ps {
		n += len(p.data)
	}
	return n
}

// appendGrow appends add to b, growing its capacity by doubling up to
// limit: a piece filled by sequential writes is copied a few times, not
// once per write. A piece that reaches a quarter of limit is being
// filled by a stream of writes and moves to a whole piece's buffer at
// once.
func appendGrow(b, add []byte, limit int) []byte {
	if need := len(b) + len(add); need > cap(b) {
		var nb []byte
		if c := max(min(2*cap(b), limit), need); c == limit || need >= limit/4 {
			nb = newPieceBuf(limit)
		} else {
			nb = make([]byte, 0, c)
		}
		b = append(nb, b...)
	}
	return append(b, add...)
}

// pieceBufs recycles whole-piece buffers (capacity = the piece size):
// a sequential writer fills one per piece, and allocating them afresh
// (the kernel clearing new pages, Go clearing new spans) cost the mount
// more than copying the data in. Only buffers at least a quarter full
// get one, so a buffer holds at most four times its data.
var pieceBufs sync.Pool // of *[]byte

// newPieceBuf returns an empty buffer of capacity limit.
func newPieceBuf(limit int) []byte {
	if b, ok := pieceBufs.Get().(*[]byte); ok && cap(*b) == limit {
		return (*b)[:0]
	}
	return make([]byte, 0, limit)
}

// recycle gives p's buffer back for reuse if it is a whole piece's;
// nothing may use p's data afterwards.
func (p *piece) recycle(limit int) {
	if cap(p.data) == limit {
		b := p.data[:0]
		pieceBufs.Put(&b)
	}
	p.data = nil
}
