package metadump

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode seeds")

// heapAllocs is the bytes allocated so far; runtime/metrics reads it
// without stopping the world, so the fuzzers can afford it on every input.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// checkDecode is the property both fuzzers hold a dump to: refused only as
// corrupt or too new, never with a panic or a giant allocation; and a dump
// that loads gives a state that dumps to the same bytes every time, with
// as many records as were read (a record the Builder accepted but the
// state cannot dump again would be data silently dropped).
func checkDecode(t *testing.T, data []byte) {
	before := heapAllocs()
	s, h, err := decode(data)
	if n := heapAllocs() - before; n > 3*MaxBlockSize+64*uint64(len(data)) {
		t.Fatalf("decoding %d bytes allocated %d", len(data), n)
	}
	if err != nil {
		var fe *FormatError
		if s != nil || !errors.Is(err, ErrCorrupt) && !errors.As(err, &fe) {
			t.Fatalf("refused with a state or an unexpected error: %v", err)
		}
		return
	}
	if h.Size != int64(len(data)) {
		t.Fatalf("decode says the dump has %d bytes, it has %d", h.Size, len(data))
	}
	opts := Options{Now: h.WrittenAt}
	var a, b bytes.Buffer
	ha, err := Encode(&a, s, opts)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	if ha.Records != h.Records {
		t.Fatalf("decoded %d records, the state dumps %d", h.Records, ha.Records)
	}
	s2, _, err := decode(a.Bytes())
	if err != nil {
		t.Fatalf("decode of a re-encoded dump: %v", err)
	}
	if _, err := Encode(&b, s2, opts); err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("re-encoding is not stable")
	}
}

// FuzzDecode feeds arbitrary bytes to Decode. Its seeds in testdata are
// small valid dumps and damaged ones; TestFuzzCorpus keeps them honest.
func FuzzDecode(f *testing.F) {
	f.Fuzz(checkDecode)
}

// FuzzRecords frames arbitrary record payloads with correct checksums, so
// the fuzzer reaches meta.Builder instead of stopping at the first CRC.
// The input is the records (kind, uvarint length, bytes) of one block.
func FuzzRecords(f *testing.F) {
	for seed := range uint64(4) {
		data := encode(f, randomState(f, seed, 30, false), MaxBlockSize)
		fs := frames(data)
		f.Add(data[fs[0].off+blockHead : fs[0].off+blockHead+fs[0].length])
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		count, ok := countRecords(payload)
		if !ok || len(payload) == 0 || len(payload) > MaxBlockSize {
			return
		}
		checkDecode(t, rawDump(Header{Format: 1, MetaID: 7, Version: 3, Term: 2},
			[]rawBlock{{count, payload}}, uint64(count)))
	})
}

// countRecords walks a payload's framing; ok is false unless it is exact.
func countRecords(p []byte) (uint32, bool) {
	var n uint32
	for len(p) > 0 {
		if len(p) < 2 || p[0] == 0 {
			return 0, false
		}
		l, k := binary.Uvarint(p[1:])
		if k <= 0 || l > uint64(len(p)-1-k) {
			return 0, false
		}
		p = p[1+k+int(l):]
		n++
	}
	return n, true
}

// corpusSeeds are the FuzzDecode seeds: valid dumps named valid-*, and
// damaged ones named bad-*.
func corpusSeeds(t *testing.T) map[string][]byte {
	tiny := encode(t, meta.New(1, 1), 0)
	small := encode(t, randomState(t, 21, 40, false), MinBlockSize)
	g := newGen(t, 22)
	for range 12 {
		g.step()
	}
	g.apply(&meta.SetXattr{Inode: meta.RootInode, Name: "user.long", Value: strings.Repeat("x", 200)})
	spanning := encode(t, g.s, MinBlockSize)
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	return map[string][]byte{
		"valid-tiny":          tiny,
		"valid-small":         small,
		"valid-spanning":      spanning,
		"bad-truncated":       small[:len(small)-7],
		"bad-no-trailer":      small[:len(small)-trailerSize],
		"bad-flipped":         mod(small, func(b []byte) []byte { b[len(b)/2] ^= 4; return b }),
		"bad-trailing":        append(append([]byte(nil), tiny...), 0),
		"bad-magic":           mod(tiny, func(b []byte) []byte { b[0] = 'X'; return b }),
		"bad-newer":           mod(tiny, func(b []byte) []byte { b[8] = 9; return b }),
		"bad-huge-block":      mod(tiny, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[headerSize:], 1<<31); return b }),
		"bad-header-only":     tiny[:headerSize],
		"bad-spanning-cut":    spanning[:len(spanning)/2],
		"bad-block-count-off": mod(small, func(b []byte) []byte { b[headerSize+4]++; return b }),
	}
}

// TestFuzzCorpus checks that the checked-in seeds are what their names
// say, so a format change cannot quietly turn every valid seed into noise.
// With -update-corpus it writes them.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	seeds := corpusSeeds(t)
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name := range seeds {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("seed missing (run with -update-corpus): %v", err)
		}
		lines := strings.Split(string(raw), "\n")
		if lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a Go fuzz corpus file", name)
		}
		q, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, _, err = decode([]byte(q))
		if valid := strings.HasPrefix(name, "valid-"); valid != (err == nil) {
			t.Fatalf("%s: decode says %v", name, err)
		}
	}
}

// The seeds are reproducible: same state, same clock, same bytes.
func TestEncodeDeterministic(t *testing.T) {
	a := encode(t, randomState(t, 5, 1000, false), 0)
	b := encode(t, randomState(t, 5, 1000, false), 0)
	if !bytes.Equal(a, b) {
		t.Fatal("two encodings of equal states differ")
	}
	var c bytes.Buffer
	if _, err := Encode(&c, randomState(t, 5, 1000, false), Options{Now: func() time.Time { return fixedClock().Add(time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, c.Bytes()) {
		t.Fatal("the write time is not in the dump")
	}
}
