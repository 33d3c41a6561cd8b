package chunkstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seeds in testdata/fuzz")

// hddSeeds are the checked-in seeds of FuzzParseHDDConfig.
var hddSeeds = map[string]string{
	"moosefs-sample": "# comment\n/mnt/hd1\n*/mnt/hd2\n/mnt/hd3 -5GiB\n/mnt/hd4 1.5TiB\n>/mnt/hd5\n</mnt/hd6\n~/mnt/hd7\n",
	"blanks":         "  /mnt/a b c  \t 0  # note\r\n\n/mnt/d\t-1k\n",
	"bad-unit":       "/mnt/a 5KB\n",
	"duplicate":      "/a\n/a/\n",
	"flags":          "*~<\\/x\n*<>/y\n",
	// A blank left at the end of the path once the slash is cleaned away.
	"blank-before-slash": "/0 / 0",
}

// FuzzParseHDDConfig: never a panic; what parses has clean absolute
// paths, no duplicates, and formats back (DiskSpec.String) to the same.
func FuzzParseHDDConfig(f *testing.F) {
	for _, s := range hddSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		disks, err := ParseHDDConfig(bytes.NewReader(in), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrHDDConfig) || disks != nil {
				t.Fatalf("refused with disks or an unexpected error: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		var lines []string
		for _, d := range disks {
			if filepath.Clean(d.Path) != d.Path || !filepath.IsAbs(d.Path) || seen[d.Path] {
				t.Fatalf("bad or repeated path %q", d.Path)
			}
			if d.SizeLimit < 0 || d.LeaveFree < 0 || d.MoveIn && d.MoveOut {
				t.Fatalf("impossible disk %+v", d)
			}
			seen[d.Path] = true
			lines = append(lines, d.String())
		}
		again, err := ParseHDDConfig(strings.NewReader(strings.Join(lines, "\n")), "again")
		if err != nil {
			t.Fatalf("formatted config does not parse: %v\n%s", err, strings.Join(lines, "\n"))
		}
		for i := range again {
			again[i].Line = disks[i].Line
		}
		if !reflect.DeepEqual(again, disks) {
			t.Fatalf("round trip changed the disks:\n%+v\n%+v", disks, again)
		}
	})
}

// headerSeeds are the checked-in seeds of FuzzChunkHeader.
func headerSeeds() map[string][]byte {
	enc := func(h *header) []byte {
		b := make([]byte, HeaderSize)
		h.encode(b)
		return b
	}
	empty := enc(newHeader(1, 1))
	h := newHeader(0xfedcba9876543210, 0xffffffff)
	h.length = 3*BlockSize + 5
	for i := 0; i < 4; i++ {
		h.crc[i] = uint32(0x01020304 * (i + 1))
	}
	partial := enc(h)
	h = newHeader(42, 7)
	h.length = ChunkSize
	for i := range h.crc {
		h.crc[i] = uint32(i)
	}
	full := enc(h)
	flipped := bytes.Clone(partial)
	flipped[offBlockCRCs+5] ^= 1
	tooLong := bytes.Clone(empty)
	binary.LittleEndian.PutUint32(tooLong[offLength:], ChunkSize+1)
	binary.LittleEndian.PutUint32(tooLong[offHeaderCRC:], headerCRC(tooLong))
	moose := bytes.Clone(empty)
	copy(moose, mooseMagic[:])
	return map[string][]byte{
		"empty": empty, "partial": partial, "full": full, "flipped": flipped,
		"too-long": tooLong, "moosefs": moose, "short": empty[:100],
	}
}

// FuzzChunkHeader: the decoder never panics, and a header it accepts
// encodes back to exactly its bytes. Each input is also tried with its
// header CRC fixed, so the fuzzer gets past the CRC to the field checks.
func FuzzChunkHeader(f *testing.F) {
	for _, b := range headerSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkHeader(t, in)
		if len(in) == HeaderSize {
			fixed := bytes.Clone(in)
			binary.LittleEndian.PutUint32(fixed[offHeaderCRC:], headerCRC(fixed))
			checkHeader(t, fixed)
		}
	})
}

func checkHeader(t *testing.T, in []byte) {
	h, err := decodeHeader(in)
	if err != nil {
		if h != nil || !errors.Is(err, ErrBadHeader) {
			t.Fatalf("refused with a header or an unexpected error: %v", err)
		}
		return
	}
	out := make([]byte, HeaderSize)
	h.encode(out)
	if !bytes.Equal(out, in) {
		t.Fatal("accepted header re-encodes differently")
	}
}

// TestFuzzCorpus keeps testdata/fuzz in step with the seeds above; run
// with -update-corpus after changing them.
func TestFuzzCorpus(t *testing.T) {
	corpus := map[string]map[string][]byte{"FuzzChunkHeader": headerSeeds(), "FuzzParseHDDConfig": {}}
	for name, s := range hddSeeds {
		corpus["FuzzParseHDDConfig"][name] = []byte(s)
	}
	for fuzzer, seeds := range corpus {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		for name, b := range seeds {
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			path := filepath.Join(dir, name)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s is missing or out of date; run go test -run TestFuzzCorpus -update-corpus", path)
			}
		}
	}
}

func TestHeaderDecodeRefuses(t *testing.T) {
	seeds := headerSeeds()
	for name, want := range map[string]string{
		"flipped": "header CRC", "too-long": "exceeds", "moosefs": "a MooseFS chunk file", "short": "100 bytes",
	} {
		_, err := decodeHeader(seeds[name])
		if !errors.Is(err, ErrBadHeader) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an ErrBadHeader containing %q", name, err, want)
		}
	}
	// Field checks behind a valid CRC.
	for name, mut := range map[string]func(b []byte){
		"magic":   func(b []byte) { b[0] = 'X' },
		"format":  func(b []byte) { b[offFormat] = 2 },
		"flags":   func(b []byte) { b[offFlags] = 1 },
		"padding": func(b []byte) { b[HeaderSize-1] = 1 },
		"pad36":   func(b []byte) { b[40] = 1 },
		"crc-past-length": func(b []byte) {
			binary.LittleEndian.PutUint32(b[offBlockCRCs+4*10:], 1)
		},
	} {
		b := bytes.Clone(seeds["partial"])
		mut(b)
		binary.LittleEndian.PutUint32(b[offHeaderCRC:], headerCRC(b))
		if _, err := decodeHeader(b); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%s: decoded, want ErrBadHeader", name)
		}
	}
	for _, name := range []string{"empty", "partial", "full"} {
		if _, err := decodeHeader(seeds[name]); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
