package metadump

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
)

func encode(tb testing.TB, s *meta.State, blockSize int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	h, err := Encode(&buf, s, Options{BlockSize: blockSize, Now: fixedClock})
	if err != nil {
		tb.Fatalf("encode: %v", err)
	}
	if h.Size != int64(buf.Len()) {
		tb.Fatalf("encode reports %d bytes, wrote %d", h.Size, buf.Len())
	}
	return buf.Bytes()
}

func decode(data []byte) (*meta.State, Header, error) {
	return Decode(bytes.NewReader(data), ReadOptions{})
}

type frame struct {
	off, length int // offset of the block head; payload length
	count       uint32
}

// frames walks a well-formed dump's blocks without checking anything, to
// find the block boundaries tests cut and flip at. The last frame is the
// trailer.
func frames(data []byte) []frame {
	var out []frame
	for off := headerSize; off+blockHead <= len(data); {
		f := frame{off: off, length: int(binary.LittleEndian.Uint32(data[off:])), count: binary.LittleEndian.Uint32(data[off+4:])}
		out = append(out, f)
		if f.length == 0 {
			break
		}
		off += blockHead + f.length + crcSize
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	spanned := false
	for seed := uint64(1); seed <= 6; seed++ {
		s := randomState(t, seed, 4000, seed%2 == 0)
		st := s.Stats()
		if st.Files < 200 || st.Dirs < 50 || st.Chunks < 100 || st.Sessions == 0 || st.Sustained == 0 {
			t.Fatalf("seed %d: the generator made too little to test: %+v", seed, st)
		}
		for _, bs := range []int{MinBlockSize, 1000, 4096, 0} {
			data := encode(t, s, bs)
			got, h, err := decode(data)
			if err != nil {
				t.Fatalf("seed %d block size %d: decode: %v", seed, bs, err)
			}
			if h.MetaID != s.MetaID() || h.Version != s.Version() || h.Term != s.Term() ||
				h.Format != FormatVersion || h.Written != uint64(fixedClock().Unix()) || h.Size != int64(len(data)) {
				t.Fatalf("seed %d: header %+v does not describe the state", seed, h)
			}
			if again := encode(t, got, bs); !bytes.Equal(again, data) {
				t.Fatalf("seed %d block size %d: re-encoding the decoded state gives other bytes (%d vs %d)", seed, bs, len(again), len(data))
			}
			if got.Stats() != st {
				t.Fatalf("seed %d: stats %+v after decode, %+v before", seed, got.Stats(), st)
			}
			vh, err := verify(bytes.NewReader(data))
			if err != nil || vh != h {
				t.Fatalf("verify: %+v, %v; decode said %+v", vh, err, h)
			}
			fs := frames(data)
			if uint64(len(fs)-1) != h.Blocks {
				t.Fatalf("%d frames, header says %d blocks", len(fs)-1, h.Blocks)
			}
			for _, f := range fs[:len(fs)-1] {
				if f.length > max(bs, MinBlockSize) && bs != 0 {
					t.Fatalf("block of %d bytes with block size %d", f.length, bs)
				}
				spanned = spanned || f.count == 0
			}
		}
	}
	if !spanned {
		t.Fatal("no record spanned blocks: the continuation path went untested")
	}
}

// A decoded state must not only dump alike but behave alike: the derived
// parts the Builder rebuilds (open counts, free queue, counters) show when
// the same operations continue on both.
func TestDecodedStateEvolvesAlike(t *testing.T) {
	g := newGen(t, 77)
	for range 4000 {
		g.step()
	}
	got, _, err := decode(encode(t, g.s, 0))
	if err != nil {
		t.Fatal(err)
	}
	g2 := *g
	g2.s = got
	g2.inodes, g2.dirs = append([]uint32(nil), g.inodes...), append([]uint32(nil), g.dirs...)
	g2.sessions, g2.locked = append([]uint64(nil), g.sessions...), append([]uint64(nil), g.locked...)
	g.rng, g2.rng = rand.New(rand.NewPCG(5, 6)), rand.New(rand.NewPCG(5, 6))
	g.applied, g2.applied = 0, 0
	for i := range 4000 {
		g.step()
		g2.step()
		if g.s.Version() != g2.s.Version() {
			t.Fatalf("step %d: original at version %d, decoded copy at %d", i, g.s.Version(), g2.s.Version())
		}
	}
	if g.applied < 1000 {
		t.Fatalf("only %d operations succeeded", g.applied)
	}
	if !bytes.Equal(encode(t, g.s, 0), encode(t, g2.s, 0)) {
		t.Fatal("original and decoded copy diverged under the same operations")
	}
}

// mustCorrupt checks that data is refused as corrupt (or too new), and by
// Verify too unless only meta.Builder can see what is wrong.
func mustCorrupt(t *testing.T, data []byte, what string) error {
	t.Helper()
	s, _, err := decode(data)
	if err == nil || s != nil {
		t.Fatalf("%s: decode accepted it", what)
	}
	var fe *FormatError
	if !errors.Is(err, ErrCorrupt) && !errors.As(err, &fe) {
		t.Fatalf("%s: error does not wrap ErrCorrupt: %v", what, err)
	}
	if _, verr := verify(bytes.NewReader(data)); verr == nil && !errors.Is(err, meta.ErrBadSnapshot) {
		t.Fatalf("%s: verify accepted it; decode said %v", what, err)
	}
	return err
}

// sampleFrames keeps the first and last blocks and the trailer, and n
// others at random, so damage tests cover every kind of boundary quickly.
func sampleFrames(fs []frame, rng *rand.Rand, n int) []frame {
	if len(fs) <= n+20 {
		return fs
	}
	out := append(append([]frame(nil), fs[:10]...), fs[len(fs)-10:]...)
	for range n {
		out = append(out, fs[rng.IntN(len(fs))])
	}
	return out
}

func TestTruncated(t *testing.T) {
	data := encode(t, randomState(t, 3, 3000, true), 1000)
	rng := rand.New(rand.NewPCG(1, 2))
	cuts := map[int]bool{0: true}
	for i := range headerSize + 1 {
		cuts[i] = true
	}
	for _, f := range sampleFrames(frames(data), rng, 80) {
		for d := -1; d <= blockHead+1; d++ {
			cuts[f.off+d] = true
		}
		cuts[f.off+blockHead+f.length] = true // CRC missing
	}
	for i := len(data) - trailerSize; i < len(data); i++ {
		cuts[i] = true
	}
	for range 400 {
		cuts[rng.IntN(len(data))] = true
	}
	for n := range cuts {
		if n < 0 || n >= len(data) {
			continue
		}
		err := mustCorrupt(t, data[:n], "cut at "+strconv.Itoa(n))
		if n >= headerSize && !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("cut at %d: %v does not say truncated", n, err)
		}
	}
	if len(cuts) < 300 {
		t.Fatalf("only %d cuts tried", len(cuts))
	}
}

func TestFlippedBytes(t *testing.T) {
	data := encode(t, randomState(t, 4, 3000, true), 1000)
	pos := map[int]bool{}
	for i := range headerSize {
		pos[i] = true
	}
	rng := rand.New(rand.NewPCG(3, 4))
	fs := frames(data)
	for _, f := range sampleFrames(fs, rng, 40) {
		for i := range blockHead {
			pos[f.off+i] = true
		}
		for i := range crcSize {
			pos[f.off+blockHead+f.length+i] = true
		}
		if f.length > 0 {
			pos[f.off+blockHead] = true // first record's kind
			pos[f.off+blockHead+f.length-1] = true
		}
	}
	for i := len(data) - trailerSize; i < len(data); i++ {
		pos[i] = true
	}
	for range 500 {
		pos[rng.IntN(len(data))] = true
	}
	bad := make([]byte, len(data))
	for p := range pos {
		flips := []byte{0x01, byte(1 + rng.IntN(255))}
		if p < headerSize || p >= len(data)-trailerSize {
			flips = append(flips, 0x80, 0xff)
		}
		for _, x := range flips {
			copy(bad, data)
			bad[p] ^= x
			err := mustCorrupt(t, bad, "flip at "+strconv.Itoa(p))
			if p >= headerSize && p < len(data)-trailerSize && !strings.Contains(err.Error(), "offset") {
				t.Fatalf("flip at %d: error names no offset: %v", p, err)
			}
		}
	}
	// The message points at the damaged block.
	copy(bad, data)
	f := fs[2]
	bad[f.off+blockHead+f.length/2] ^= 0x10
	err := mustCorrupt(t, bad, "flip in block 3")
	if want := "offset " + strconv.Itoa(f.off) + " (block 3)"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

func TestNewerFormat(t *testing.T) {
	data := encode(t, meta.New(1, 1), 0)
	binary.LittleEndian.PutUint32(data[8:], 7)
	binary.LittleEndian.PutUint32(data[48:], crc32.Checksum(data[:48], castagnoli))
	_, _, err := decode(data)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Format != 7 || fe.Known != 1 {
		t.Fatalf("want a FormatError for format 7, got %v", err)
	}
	if want := "dump format 7 is newer than this build understands (1); upgrade carpfs"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	// Only the shared prefix is read: a newer header may be any size.
	if _, _, err := decode(data[:12]); !errors.As(err, &fe) {
		t.Fatalf("a bare newer prefix: %v", err)
	}
}

func TestRefusedHeaders(t *testing.T) {
	good := encode(t, meta.New(1, 1), 0)
	for name, mod := range map[string]func([]byte) []byte{
		"magic":         func(b []byte) []byte { copy(b, "MOOSEFS1"); return b },
		"format 0":      func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 0); return b },
		"flags":         func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 1); return b },
		"trailing byte": func(b []byte) []byte { return append(b, 0) },
		"second dump":   func(b []byte) []byte { return append(b, good...) },
		"empty":         func(b []byte) []byte { return b[:0] },
	} {
		b := mod(append([]byte(nil), good...))
		if name == "flags" || name == "format 0" { // a well-formed header that says so
			binary.LittleEndian.PutUint32(b[48:], crc32.Checksum(b[:48], castagnoli))
		}
		mustCorrupt(t, b, name)
	}
}

// rawDump frames hand-made payloads with correct checksums, to reach the
// checks that lie behind them.
type rawBlock struct {
	count   uint32
	payload []byte
}

func rawDump(h Header, blocks []rawBlock, records uint64) []byte {
	b := appendHeader(nil, &h)
	crc := binary.LittleEndian.Uint32(b[48:])
	for _, blk := range blocks {
		start := len(b)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(blk.payload)))
		b = binary.LittleEndian.AppendUint32(b, blk.count)
		b = append(b, blk.payload...)
		crc = crc32.Update(crc, castagnoli, b[start:])
		b = binary.LittleEndian.AppendUint32(b, crc)
	}
	start := len(b)
	b = append(b, make([]byte, blockHead)...)
	b = append(b, trailerMagic...)
	b = binary.LittleEndian.AppendUint64(b, records)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(blocks)))
	return binary.LittleEndian.AppendUint32(b, crc32.Update(crc, castagnoli, b[start:]))
}

func rec(kind meta.RecordKind, body ...byte) []byte {
	return append(binary.AppendUvarint([]byte{byte(kind)}, uint64(len(body))), body...)
}

func TestFraming(t *testing.T) {
	h := Header{Format: 1, MetaID: 1}
	counters := rec(meta.RecCounters, 2, 1, 1)
	root := rec(meta.RecNode, 1, byte(meta.TypeDir), 0x80, 0x03, 0, 0, 0, 0, 0, 2, 1, 2, 0)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	if _, _, err := decode(rawDump(h, []rawBlock{{2, cat(counters, root)}}, 2)); err != nil {
		t.Fatalf("the smallest file system: %v", err)
	}
	// The same records, the root split over three blocks.
	if _, _, err := decode(rawDump(h, []rawBlock{{2, cat(counters, root[:5])}, {0, root[5:9]}, {0, root[9:]}}, 2)); err != nil {
		t.Fatalf("a record over three blocks: %v", err)
	}
	for _, c := range []struct {
		name   string
		blocks []rawBlock
		recs   uint64
		want   string
	}{
		{"count too high", []rawBlock{{3, cat(counters, root)}}, 3, "block ends after 2 of its 3 records"},
		{"count too low", []rawBlock{{1, cat(counters, root)}}, 1, "bytes after the last of 1 records"},
		{"overrun", []rawBlock{{2, []byte{1, 50, 2, 1, 1}}}, 2, "record 1 of 2 overruns its block"},
		{"records inside a record", []rawBlock{{2, cat(counters, root[:5])}, {1, root[5:9]}, {0, root[9:]}}, 2, "block holds 1 records but is the middle"},
		{"cut off", []rawBlock{{2, cat(counters, root[:5])}}, 2, "record cut off by the trailer"},
		{"kind 0", []rawBlock{{2, cat(counters, rec(0, 1))}}, 2, "record kind 0"},
		{"bad varint", []rawBlock{{1, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}}, 1, "bad record length"},
		{"trailer count", []rawBlock{{2, cat(counters, root)}}, 3, "trailer counts 3 records in 1 blocks, the file holds 2 in 1"},
		{"huge record", []rawBlock{{1, cat([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, root)}}, 1, "record cut off"},
	} {
		err := mustCorrupt(t, rawDump(h, c.blocks, c.recs), c.name)
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v does not say %q", c.name, err, c.want)
		}
	}
	// Checksummed but meaningless to meta: refused by the Builder, and
	// the error says so through both sentinels.
	err := mustCorrupt(t, rawDump(h, []rawBlock{{2, cat(counters, rec(meta.RecEdge, 1, 1, 1, 'x'))}}, 2), "builder")
	if !errors.Is(err, meta.ErrBadSnapshot) {
		t.Fatalf("builder refusal lost meta.ErrBadSnapshot: %v", err)
	}
	err = mustCorrupt(t, rawDump(h, []rawBlock{{1, counters}}, 1), "no root")
	if !errors.Is(err, meta.ErrBadSnapshot) {
		t.Fatalf("Finish refusal lost meta.ErrBadSnapshot: %v", err)
	}
}

// Blocks sound on their own but out of place fail the running checksum.
func TestSplicedBlocks(t *testing.T) {
	s := randomState(t, 5, 2000, false)
	a := encode(t, s, 512)
	fs := frames(a)
	blk := func(data []byte, f frame) []byte { return data[f.off : f.off+blockHead+f.length+crcSize] }
	swapped := append([]byte(nil), a[:fs[1].off]...)
	swapped = append(swapped, blk(a, fs[2])...)
	swapped = append(swapped, blk(a, fs[1])...)
	swapped = append(swapped, a[fs[3].off:]...)
	mustCorrupt(t, swapped, "swapped blocks")

	dup := append([]byte(nil), a[:fs[2].off]...)
	dup = append(dup, blk(a, fs[1])...)
	dup = append(dup, a[fs[2].off:]...)
	mustCorrupt(t, dup, "duplicated block")

	dropped := append(append([]byte(nil), a[:fs[1].off]...), a[fs[2].off:]...)
	mustCorrupt(t, dropped, "dropped block")

	// The same state dumped a second later: same blocks, other header.
	var other bytes.Buffer
	if _, err := Encode(&other, s, Options{BlockSize: 512, Now: func() time.Time { return fixedClock().Add(time.Second) }}); err != nil {
		t.Fatal(err)
	}
	mixed := append(append([]byte(nil), other.Bytes()[:headerSize]...), a[headerSize:]...)
	mustCorrupt(t, mixed, "header of another dump")
}

func TestAbsurdLengths(t *testing.T) {
	good := encode(t, meta.New(1, 1), 0)
	for _, length := range []uint32{MaxBlockSize + 1, 1<<32 - 1} {
		b := append([]byte(nil), good[:headerSize]...)
		b = binary.LittleEndian.AppendUint32(b, length)
		b = binary.LittleEndian.AppendUint32(b, 1)
		b = append(b, good[headerSize+blockHead:]...)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := mustCorrupt(t, b, "length "+strconv.Itoa(int(length)))
		runtime.ReadMemStats(&after)
		if !strings.Contains(err.Error(), "exceeds the maximum") {
			t.Fatalf("length %d: %v", length, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Fatalf("length %d: decoding allocated %d bytes", length, n)
		}
	}
}

type failWriter struct {
	left int
	err  error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, w.err
	}
	w.left -= len(p)
	return len(p), nil
}

func TestEncodeWriteError(t *testing.T) {
	s := randomState(t, 6, 1000, false)
	size := len(encode(t, s, 256))
	injected := errors.New("disk on fire")
	for _, at := range []int{0, 10, headerSize, 300, size / 2, size - 1} {
		_, err := Encode(&failWriter{left: at, err: injected}, s, Options{BlockSize: 256})
		if !errors.Is(err, injected) {
			t.Fatalf("failing after %d bytes: %v", at, err)
		}
	}
}

func TestProgress(t *testing.T) {
	s := randomState(t, 8, 2000, false)
	var seen []uint64
	var buf bytes.Buffer
	h, err := Encode(&buf, s, Options{BlockSize: 512, Progress: func(n uint64) { seen = append(seen, n) }})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(seen)) != h.Blocks || seen[len(seen)-1] != h.Records {
		t.Fatalf("encode progress %v for %d blocks, %d records", seen, h.Blocks, h.Records)
	}
	var read []uint64
	if _, _, err := Decode(&buf, ReadOptions{Progress: func(n uint64) { read = append(read, n) }}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(read, seen) {
		t.Fatalf("decode progress %v, encode progress %v", read, seen)
	}
}
