package changelog

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"reflect"
	"testing"
)

// FuzzParseLine checks the codec's one promise: a line the parser accepts
// re-encodes to exactly the same bytes (so no two lines mean one entry and
// no damage can pass as another entry), and no input panics. Random bytes
// rarely carry a valid checksum, so each input is also tried with its
// checksum recomputed, which lets the fuzzer reach the argument and escape
// parsing. The seed corpus is in testdata/fuzz/FuzzParseLine.
func FuzzParseLine(f *testing.F) {
	f.Fuzz(func(t *testing.T, line []byte) {
		checkCanonical(t, line)
		if fixed := fixCRC(line); fixed != nil {
			checkCanonical(t, fixed)
		}
	})
}

func checkCanonical(t *testing.T, line []byte) {
	e, err := ParseLine(line)
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Col < 1 || pe.Col > len(line)+1 {
			t.Fatalf("%q: error %v is not a *ParseError with a column in the line", line, err)
		}
		return
	}
	again, err := AppendEntry(nil, &e)
	if err != nil {
		t.Fatalf("%q: accepted, but its entry does not encode: %v", line, err)
	}
	if !bytes.Equal(again, line) {
		t.Fatalf("accepted %q, which re-encodes as %q", line, again)
	}
}

// fixCRC replaces what follows the last '|' with the right checksum and a
// newline, or returns nil if there is no '|'.
func fixCRC(line []byte) []byte {
	i := bytes.LastIndexByte(line, '|')
	if i < 0 {
		return nil
	}
	sum := crc32.Checksum(line[:i], crc32.MakeTable(crc32.Castagnoli))
	return fmt.Appendf(bytes.Clone(line[:i+1]), "%08x\n", sum)
}

// FuzzReader feeds arbitrary bytes to a Reader: whatever it yields must be
// exactly the lines at the start of the input, each re-encoding to itself,
// and it must stop with io.EOF only at the very end of the input.
func FuzzReader(f *testing.F) {
	f.Add([]byte(withCRC("1|0|0|UNLOCK(5)|") + withCRC("2|0|0|UNLOCK(6)|")))
	f.Add([]byte(withCRC("1|0|0|UNLOCK(5)|") + withCRC("3|0|0|UNLOCK(6)|")))
	f.Add([]byte(withCRC("1|0|0|UNLOCK(5)|") + "2|0|0|UNL"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), "fuzz")
		var off int
		for {
			e, err := r.Next()
			if err == io.EOF {
				if off != len(data) {
					t.Fatalf("clean end at %d of %d bytes", off, len(data))
				}
				return
			}
			if err != nil {
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.Offset != int64(off) || ce.Line != r.Lines()+1 {
					t.Fatalf("error %v at offset %d, line %d", err, off, r.Lines()+1)
				}
				return
			}
			line, err := AppendEntry(nil, &e)
			if err != nil || !bytes.HasPrefix(data[off:], line) || !bytes.Equal(line, r.Raw()) {
				t.Fatalf("yielded an entry that is not the next line: %q, %v", line, err)
			}
			off += len(line)
			if r.Offset() != int64(off) {
				t.Fatalf("Offset %d, want %d", r.Offset(), off)
			}
		}
	})
}

// FuzzParallelReader checks that a ParallelReader agrees with a Reader on
// arbitrary bytes, entry for entry and error for error, with chunk sizes
// chosen by the fuzzer so that chunk boundaries fall anywhere.
func FuzzParallelReader(f *testing.F) {
	good := withCRC("1|0|0|UNLOCK(5)|") + withCRC("2|0|0|UNLOCK(6)|")
	f.Add([]byte(good), uint8(1), uint8(1), uint8(0), uint8(1))
	f.Add([]byte(good+"3|0|0|UNL"), uint8(5), uint8(20), uint8(1), uint8(2))
	f.Add([]byte(good+withCRC("4|0|0|UNLOCK(6)|")+good), uint8(30), uint8(3), uint8(0), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, first, size, start, workers uint8) {
		want, wantErr, _ := drain(NewReader(bytes.NewReader(data), "f"))
		r := newTestParallel(bytes.NewReader(data), int(workers%4), int(first)+1, int(size)+1, int(start%32))
		defer r.Close()
		got, err, again := drain(r)
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(err, wantErr) || again != err {
			t.Fatalf("got %d entries, %v; want %d, %v", len(got), err, len(want), wantErr)
		}
	})
}
