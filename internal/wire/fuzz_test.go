package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// fuzzMaxFrame keeps fuzzed frames small, so the fuzzer spends its time
// on structure rather than on allocating 16 MiB buffers.
const fuzzMaxFrame = 1 << 16

// FuzzReadFrame feeds arbitrary bytes to a FrameReader. Whatever it
// delivers must be exactly the frames at the start of the input (each
// re-encodes to the bytes it was read from), with no reserved flag and
// no type the reader refuses; it must stop with io.EOF
// only at the very end of the input and otherwise with an ErrFrame that
// names the offset where the bad frame starts, and it must deliver
// nothing after an error. Random bytes rarely carry a valid CRC, so each
// input is also tried with its CRCs recomputed, which lets the fuzzer
// reach the flag and type checks. Seeds: testdata/fuzz/FuzzReadFrame.
func FuzzReadFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkStream(t, data, nil)
		if fixed := fixCRCs(data); fixed != nil {
			checkStream(t, fixed, func(ty Type) bool { return Allowed(ty, RoleChunkserver, RoleMaster, 1) })
		}
	})
}

func checkStream(t *testing.T, data []byte, accept func(Type) bool) {
	r := NewFrameReader(bytes.NewReader(data), fuzzMaxFrame)
	r.SetAccept(accept)
	off := 0
	for {
		f, err := r.ReadFrame()
		if err == io.EOF {
			if off != len(data) {
				t.Fatalf("io.EOF at %d of %d bytes", off, len(data))
			}
			break
		}
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) || !errors.Is(err, ErrFrame) || fe.Offset != int64(off) {
				t.Fatalf("error %v at offset %d: not an ErrFrame naming it", err, off)
			}
			if _, again := r.ReadFrame(); again != err {
				t.Fatalf("read after %v gave %v", err, again)
			}
			break
		}
		enc := AppendFrame(nil, f)
		if !bytes.HasPrefix(data[off:], enc) {
			t.Fatalf("frame at %d re-encodes as % x, input has % x", off, enc, data[off:min(len(data), off+len(enc))])
		}
		if f.Flags&^knownFlags != 0 {
			t.Fatalf("delivered a frame with reserved flags %#x", f.Flags)
		}
		if accept != nil && !accept(f.Type) {
			t.Fatalf("delivered %s, which the reader does not accept", f.Type)
		}
		off += len(enc)
		if r.Offset() != int64(off) {
			t.Fatalf("reader at offset %d, want %d", r.Offset(), off)
		}
	}
}

// fixCRCs returns data with the CRC of every complete frame recomputed,
// walking frames by their length fields, or nil when the first length is
// already unusable.
func fixCRCs(data []byte) []byte {
	out := bytes.Clone(data)
	off, fixed := 0, 0
	for off+lenSize <= len(out) {
		length := int(binary.LittleEndian.Uint32(out[off:]))
		end := off + lenSize + length
		if length < minLength || lenSize+length > fuzzMaxFrame || end > len(out) {
			break
		}
		binary.LittleEndian.PutUint32(out[end-crcSize:], crc32.Checksum(out[off:end-crcSize], castagnoli))
		off = end
		fixed++
	}
	if fixed == 0 {
		return nil
	}
	return out
}

// FuzzDecodeMessage decodes arbitrary bytes as every registered message
// type. Decoding must never panic; it fails only with ErrMessage; and a
// payload that decodes must re-encode to exactly itself and decode again
// to an equal value: the codec is canonical, so no two payloads mean one
// message. Seeds: testdata/fuzz/FuzzDecodeMessage, one per sample.
func FuzzDecodeMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mi := range Messages() {
			m := mi.New()
			if err := Unmarshal(data, m); err != nil {
				if !errors.Is(err, ErrMessage) {
					t.Fatalf("%s: error %v is not ErrMessage", mi.Name, err)
				}
				continue
			}
			again := Marshal(m)
			if !bytes.Equal(again, data) {
				t.Fatalf("%s: % x decodes to %+v, which encodes as % x", mi.Name, data, m, again)
			}
			m2 := mi.New()
			if err := Unmarshal(again, m2); err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("%s: re-decoding gives %+v, %v; want %+v", mi.Name, m2, err, m)
			}
		}
	})
}

// seeds are the checked-in seed corpora, by fuzz target and file name.
// They are generated, so that a new message type gets its seed: run
// go test -run TestFuzzSeeds -rewrite after adding one.
func seeds() map[string]map[string][]byte {
	dec := map[string][]byte{
		"empty":         {},
		"long_varint":   {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"nonshortest":   {0x80, 0x00},
		"huge_string":   {0xff, 0xff, 0xff, 0xff, 0x0f, 'a'},
		"bad_mac_len_1": {0x01, 0xaa},
	}
	var stream []byte
	for _, m := range samples() {
		p := Marshal(m)
		dec["msg_"+m.Type().String()] = p
		stream = AppendFrame(stream, Frame{Type: m.Type(), ID: uint64(m.Type()), Payload: p})
	}
	one := AppendFrame(nil, Frame{Type: TypePing, Flags: FlagReply, ID: 7, Payload: Marshal(&Ping{Data: []byte("hi")})})
	flipped := bytes.Clone(one)
	flipped[len(flipped)-6] ^= 0x40
	reserved := AppendFrame(nil, Frame{Type: TypePong, Payload: []byte{0}})
	reserved[6] = 0x80 // a reserved flag with the CRC fixed by the fuzz target
	frames := map[string][]byte{
		"empty":     {},
		"stream":    stream,
		"one":       one,
		"truncated": one[:len(one)-1],
		"flipped":   flipped,
		"reserved":  reserved,
		"too_long":  binary.LittleEndian.AppendUint32(nil, fuzzMaxFrame),
		"too_short": append(binary.LittleEndian.AppendUint32(nil, minLength-1), make([]byte, 16)...),
		"moosefs":   {0, 0, 1, 0x90, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8},
	}
	return map[string]map[string][]byte{"FuzzReadFrame": frames, "FuzzDecodeMessage": dec}
}

func corpusFile(b []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
}

// TestFuzzSeeds checks that every generated seed is checked in as
// generated (with -rewrite it writes them). Files the fuzzer adds after
// a failure are left alone.
func TestFuzzSeeds(t *testing.T) {
	for target, files := range seeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		if *rewrite {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, b := range files {
			path := filepath.Join(dir, name)
			want := corpusFile(b)
			if *rewrite {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (%v): run go test ./internal/wire -run TestFuzzSeeds -args -rewrite", path, err)
			}
		}
	}
}
