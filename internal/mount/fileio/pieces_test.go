package fileio

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestPiecesModel checks the piece list against a plain byte array:
// random newer and older writes, with the invariants after each.
func TestPiecesModel(t *testing.T) {
	const span, limit = 4096, 300
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		var ps pieces
		model := make([]byte, span)
		have := make([]bool, span)
		for step := range 60 {
			off := r.IntN(span - 1)
			n := 1 + r.IntN(min(span-off, 700))
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(r.IntN(250) + 1)
			}
			older := r.IntN(4) == 0
			before := ps.bytes()
			var grown int
			if older {
				grown = ps.writeOlder(uint32(off), data, limit)
			} else {
				grown = ps.write(uint32(off), data, limit, r.IntN(2) == 0)
			}
			for i, b := range data {
				if !older || !have[off+i] {
					model[off+i] = b
				}
				have[off+i] = true
			}
			if ps.bytes() != before+grown {
				t.Fatalf("seed %d step %d: grew %d, reported %d", seed, step, ps.bytes()-before, grown)
			}
			got := make([]byte, span)
			gotHave := make([]bool, span)
			for i, p := range ps {
				if len(p.data) == 0 || len(p.data) > limit {
					t.Fatalf("seed %d step %d: piece of %d bytes", seed, step, len(p.data))
				}
				if i > 0 && ps[i-1].end() > p.off {
					t.Fatalf("seed %d step %d: pieces overlap or unsorted: [%d,%d) then [%d,%d)", seed, step, ps[i-1].off, ps[i-1].end(), p.off, p.end())
				}
				copy(got[p.off:], p.data)
				for j := p.off; j < p.end(); j++ {
					gotHave[j] = true
				}
			}
			for i := range have {
				if have[i] != gotHave[i] {
					t.Fatalf("seed %d step %d: byte %d covered %v, want %v", seed, step, i, gotHave[i], have[i])
				}
			}
			if !bytes.Equal(got, model) {
				t.Fatalf("seed %d step %d (older %v, %d at %d): contents differ", seed, step, older, n, off)
			}
		}
	}
}

// TestPiecesCoalesce: sequential writes fill pieces to the limit, so a
// stream of small writes goes out in few large requests.
func TestPiecesCoalesce(t *testing.T) {
	var ps pieces
	for off := 0; off < 10*1000; off += 100 {
		ps.write(uint32(off), make([]byte, 100), 4000, off > 0)
	}
	if len(ps) != 3 || len(ps[0].data) != 4000 || len(ps[2].data) != 2000 {
		t.Fatalf("10000 sequential bytes in %d pieces", len(ps))
	}
	if ps.gaps(0, 10000) != nil || len(ps.gaps(5000, 10100)) != 1 {
		t.Fatalf("gaps %v %v", ps.gaps(0, 10000), ps.gaps(5000, 10100))
	}
}

// TestPiecesStreamBuffers: a stream of large writes fills whole-piece
// buffers, which are reused once recycled; a small or lone write gets a
// buffer of its size.
func TestPiecesStreamBuffers(t *testing.T) {
	const limit, w = 4096, 1024
	var ps pieces
	ps.write(0, make([]byte, 100), limit, false)
	ps.write(200, make([]byte, w), limit, false) // not a stream: its own size
	if cap(ps[0].data) != 100 || cap(ps[1].data) != w {
		t.Fatalf("lone writes got buffers of %d and %d bytes", cap(ps[0].data), cap(ps[1].data))
	}
	ps = nil
	for off := 0; off < 3*limit; off += w {
		ps.write(uint32(off), bytes.Repeat([]byte{byte(off / w)}, w), limit, off > 0)
	}
	if len(ps) != 3 {
		t.Fatalf("%d pieces, want 3", len(ps))
	}
	for i, p := range ps {
		if cap(p.data) != limit || len(p.data) != limit {
			t.Fatalf("piece %d: %d bytes in a buffer of %d, want a whole piece", i, len(p.data), cap(p.data))
		}
		for j, b := range p.data {
			if want := byte((i*limit + j) / w); b != want {
				t.Fatalf("piece %d byte %d is %d, want %d", i, j, b, want)
			}
		}
	}
	ps[1].recycle(limit)
	if ps[1].data != nil {
		t.Fatal("a recycled piece keeps its data")
	}
	// The pool may drop what it holds (a GC), so reuse is not guaranteed,
	// but a reused buffer must come back empty and whole.
	b := newPieceBuf(limit)
	if len(b) != 0 || cap(b) != limit {
		t.Fatalf("newPieceBuf: len %d cap %d", len(b), cap(b))
	}
}
