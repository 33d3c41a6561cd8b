package changelog

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

// randArgs is a meta.ArgReader of random values, to build every kind of op
// through meta.DecodeOp without knowing its fields. Numbers come in random
// widths and strings are random bytes or type letters, so some draws fail
// meta's range checks; randomOp retries until one fits.
type randArgs struct{ rng *rand.Rand }

func (r randArgs) Uint() uint64 {
	switch r.rng.IntN(5) {
	case 0:
		return 0
	case 1:
		return r.rng.Uint64() & 0xff
	case 2:
		return r.rng.Uint64() & 0xffff
	case 3:
		return r.rng.Uint64() & 0xffffffff
	default:
		return r.rng.Uint64()
	}
}

func (r randArgs) String() string {
	if r.rng.IntN(4) == 0 {
		return string("fdlpscb"[r.rng.IntN(7)])
	}
	return randString(r.rng)
}

func (randArgs) Err() error { return nil }

// randString is a random byte string that is often hostile: separators,
// escapes, newlines, NUL, high bytes, UTF-8.
func randString(rng *rand.Rand) string {
	const nasty = "%,()|\n\r\x00\xff \t%41%2c"
	n := rng.IntN(24)
	if rng.IntN(10) == 0 {
		n = 0
	}
	b := make([]byte, 0, n)
	for len(b) < n {
		switch rng.IntN(4) {
		case 0:
			b = append(b, nasty[rng.IntN(len(nasty))])
		case 1:
			b = append(b, byte(rng.IntN(256)))
		case 2:
			b = append(b, "żółw🐢"...)
		default:
			b = append(b, byte('a'+rng.IntN(26)))
		}
	}
	return string(b)
}

// randomOp builds a random op called name.
func randomOp(t testing.TB, rng *rand.Rand, name string) meta.Op {
	t.Helper()
	var last error
	for range 10000 {
		op, err := meta.DecodeOp(name, randArgs{rng})
		if err == nil {
			return op
		}
		last = err
	}
	t.Fatalf("could not build a random %s: %v", name, last)
	return nil
}

func randomResult(rng *rand.Rand) meta.Result {
	switch rng.IntN(3) {
	case 0:
		return meta.Result{}
	case 1:
		return meta.Result{N: 1, Val: [2]uint64{randArgs{rng}.Uint()}}
	default:
		return meta.Result{N: 2, Val: [2]uint64{randArgs{rng}.Uint(), randArgs{rng}.Uint()}}
	}
}

// seqEntries makes n entries from version first on, with ops of every kind.
func seqEntries(t testing.TB, rng *rand.Rand, first uint64, n int) []meta.Entry {
	t.Helper()
	names := meta.OpNames()
	es := make([]meta.Entry, n)
	for i := range es {
		es[i] = meta.Entry{
			Version: first + uint64(i),
			Term:    3,
			Time:    1700000000 + uint32(i),
			Op:      randomOp(t, rng, names[rng.IntN(len(names))]),
			Result:  randomResult(rng),
		}
	}
	return es
}

// encodeAll is the text of es, one line each.
func encodeAll(t testing.TB, es []meta.Entry) []byte {
	t.Helper()
	var enc Encoder
	var b []byte
	for i := range es {
		var err error
		if b, err = enc.AppendEntry(b, &es[i]); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// lineOf is the encoded line of e.
func lineOf(t testing.TB, e *meta.Entry) string {
	t.Helper()
	b, err := AppendEntry(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withCRC completes a line body ("V|T|TIME|OP(...)|RESULT") with a correct
// checksum and newline, computed here independently of the encoder, so
// tests can build lines that only break one rule.
func withCRC(body string) string {
	return fmt.Sprintf("%s|%08x\n", body, crc32.Checksum([]byte(body), crc32.MakeTable(crc32.Castagnoli)))
}

// sameEntry fails unless a and b encode to the same line and have the same
// fields; the encoding catches op arguments, the fields the rest.
func sameEntry(t testing.TB, a, b *meta.Entry) {
	t.Helper()
	if a.Version != b.Version || a.Term != b.Term || a.Time != b.Time || a.Result != b.Result {
		t.Fatalf("entries differ:\n %+v\n %+v", *a, *b)
	}
	if a.Op.OpName() != b.Op.OpName() {
		t.Fatalf("ops differ: %s vs %s", a.Op.OpName(), b.Op.OpName())
	}
	la, lb := lineOf(t, a), lineOf(t, b)
	if la != lb {
		t.Fatalf("entries encode differently:\n %q\n %q", la, lb)
	}
}

// lineStarts is the offset of each line in b, plus len(b).
func lineStarts(b []byte) []int {
	offs := []int{0}
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
		offs = append(offs, i)
	}
	return offs
}

// collect reads a stream of entries (a Reader, ParallelReader or Merger) to
// its end, returning what it yielded and the error that ended it, nil
// for a clean io.EOF.
func collect(src interface{ Next() (meta.Entry, error) }) ([]meta.Entry, error) {
	var es []meta.Entry
	for {
		e, err := src.Next()
		if err == io.EOF {
			return es, nil
		}
		if err != nil {
			return es, err
		}
		es = append(es, e)
	}
}
