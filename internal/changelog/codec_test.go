package changelog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

// TestGolden pins the format: these bytes are what operators grep and what
// older files hold, so a change here is a format change (see UPGRADE.md).
func TestGolden(t *testing.T) {
	cases := []struct {
		e    meta.Entry
		want string
	}{
		{
			meta.Entry{Version: 1042, Term: 3, Time: 1700000000, Result: meta.Result{N: 1, Val: [2]uint64{17}},
				Op: &meta.Create{Parent: 1, Name: "notes today.txt", Type: meta.TypeFile, Mode: 0o644, UID: 1000, GID: 1000}},
			withCRC("1042|3|1700000000|CREATE(1,notes%20today.txt,f,420,1000,1000,0)|17"),
		},
		{
			meta.Entry{Version: 0, Term: 0, Time: 0, Op: &meta.Session{}},
			withCRC("0|0|0|SESSION()|"),
		},
		{
			meta.Entry{Version: 18446744073709551615, Term: 7, Time: 4294967295, Result: meta.Result{N: 2, Val: [2]uint64{5, 3}},
				Op: &meta.Write{Inode: 4294967295, Index: 0}},
			withCRC("18446744073709551615|7|4294967295|WRITE(4294967295,0)|5,3"),
		},
		{
			meta.Entry{Version: 9, Term: 1, Time: 5,
				Op: &meta.Rename{SrcParent: 1, SrcName: "a,b(c)|d%e", DstParent: 2, DstName: "\n\x00\xff~!"}},
			withCRC("9|1|5|RENAME(1,a%2Cb%28c%29%7Cd%25e,2,%0A%00%FF~!)|"),
		},
	}
	for _, c := range cases {
		got := lineOf(t, &c.e)
		if got != c.want {
			t.Errorf("encode %s:\n got %q\nwant %q", c.e.Op.OpName(), got, c.want)
			continue
		}
		e, err := ParseLine([]byte(c.want))
		if err != nil {
			t.Errorf("parse %q: %v", c.want, err)
			continue
		}
		if !reflect.DeepEqual(e, c.e) {
			t.Errorf("parse %q:\n got %+v\nwant %+v", c.want, e, c.e)
		}
	}
	// The literal checksum of the first case, so the checksum itself is
	// pinned and not only computed the same way twice.
	if got := cases[0].want[len(cases[0].want)-9 : len(cases[0].want)-1]; got != "9a0330ab" {
		t.Errorf("checksum of the first golden line is %s, want 9a0330ab", got)
	}
}

// TestRoundTripEveryOp encodes and parses random instances of every op
// meta knows, with hostile strings.
func TestRoundTripEveryOp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var p Parser
	var enc Encoder
	names := meta.OpNames()
	if len(names) == 0 {
		t.Fatal("meta knows no ops")
	}
	for _, name := range names {
		for range 200 {
			e := meta.Entry{
				Version: randArgs{rng}.Uint(), Term: randArgs{rng}.Uint(), Time: rng.Uint32(),
				Op: randomOp(t, rng, name), Result: randomResult(rng),
			}
			line, err := enc.AppendEntry(nil, &e)
			if err != nil {
				t.Fatalf("encode %+v: %v", e, err)
			}
			if bytes.IndexByte(line, '\n') != len(line)-1 {
				t.Fatalf("line has a newline before its end: %q", line)
			}
			for _, c := range line[:len(line)-1] {
				if c < 0x21 || c > 0x7e {
					t.Fatalf("line has byte %#x outside printable ASCII: %q", c, line)
				}
			}
			got, err := p.ParseLine(line)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip of %q:\n got %+v %+v\nwant %+v %+v", line, got, got.Op, e, e.Op)
			}
		}
	}
}

// TestEscapeEveryByte checks each byte's written form against the rule in
// the package doc, and that a string of all 256 bytes survives.
func TestEscapeEveryByte(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for c := range 256 {
		want := string(rune(c))
		if c < 0x21 || c > 0x7e || strings.ContainsRune("%,()|", rune(c)) {
			want = fmt.Sprintf("%%%02X", c)
		}
		e := meta.Entry{Version: 1, Op: &meta.Session{Info: string([]byte{byte(c)})}}
		if got := lineOf(t, &e); got != withCRC("1|0|0|SESSION("+want+")|") {
			t.Errorf("byte %#x: got %q, want SESSION(%s)", c, got, want)
		}
	}
	e := meta.Entry{Version: 1, Op: &meta.Symlink{Parent: 1, Name: string(all), Target: string(all) + string(all)}}
	got, err := ParseLine([]byte(lineOf(t, &e)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("all bytes did not survive: %+v", got.Op)
	}
}

func TestEncodeRefuses(t *testing.T) {
	cases := map[string]meta.Entry{
		"failed result":    {Version: 1, Op: &meta.Unlink{Parent: 1, Name: "x"}, Result: meta.Result{Err: syscall.ENOENT}},
		"no op":            {Version: 1},
		"three values":     {Version: 1, Op: &meta.Unlock{Chunk: 1}, Result: meta.Result{N: 3}},
		"unused value set": {Version: 1, Op: &meta.Unlock{Chunk: 1}, Result: meta.Result{N: 1, Val: [2]uint64{1, 2}}},
		"too long":         {Version: 1, Op: &meta.SetXattr{Inode: 1, Name: "user.x", Value: strings.Repeat("\xff", MaxLineSize/3+1)}},
	}
	for name, e := range cases {
		dst := []byte("keep")
		got, err := AppendEntry(dst, &e)
		if err == nil {
			t.Errorf("%s: encoded %q", name, got)
			continue
		}
		if string(got) != "keep" {
			t.Errorf("%s: dst changed to %q on error", name, got)
		}
	}
	e := cases["failed result"]
	if _, err := AppendEntry(nil, &e); !strings.Contains(err.Error(), "ENOENT") {
		t.Errorf("error does not name the errno: %v", err)
	}
}

// TestParseRefuses lists lines that are almost right. Each has a correct
// checksum unless the checksum is the point, so the rule under test is what
// refuses it, and each says which column and reason the error must name.
func TestParseRefuses(t *testing.T) {
	cases := []struct {
		line   string
		col    int
		reason string
	}{
		{"", 1, "no newline"},
		{"\n", 1, "empty version"},
		{strings.TrimSuffix(withCRC("1|0|0|UNLOCK(5)|"), "\n"), 26, "no newline"},
		{withCRC("01|0|0|UNLOCK(5)|"), 1, "leading zero in version"},
		{withCRC("1|00|0|UNLOCK(5)|"), 3, "leading zero in term"},
		{withCRC("1|0|+0|UNLOCK(5)|"), 5, "not a digit"},
		{withCRC("1|0|0|UNLOCK(05)|"), 14, "leading zero in argument"},
		{withCRC("1|0|0|UNLOCK(-5)|"), 14, "not a digit"},
		{withCRC("1|0|0|UNLOCK(5)|07"), 17, "leading zero in result"},
		{withCRC("18446744073709551616|0|0|UNLOCK(5)|"), 1, "version overflows"},
		{withCRC("1|0|4294967296|UNLOCK(5)|"), 5, "time overflows"},
		{withCRC("1|0|0|UNLOCK(18446744073709551616)|"), 14, "argument overflows"},
		{withCRC("1|0|0|UNLOCK(5,6)|"), 16, "more arguments"},
		{withCRC("1|0|0|UNLOCK(5,)|"), 16, "more arguments"},
		{withCRC("1|0|0|UNLOCK()|"), 14, "empty argument"},
		{withCRC("1|0|0|OPEN(5)|"), 13, "missing argument"},
		{withCRC("1|0|0|SETGOAL(1,256)|"), 15, "out of range"},
		{withCRC("1|0|0|CREATE(1,x,q,420,0,0,0)|"), 14, "bad node type"},
		{withCRC("1|0|0|SESSION(a%2cb)|"), 16, "uppercase hex"},
		{withCRC("1|0|0|SESSION(%41)|"), 15, "written as itself"},
		{withCRC("1|0|0|SESSION(ab%4)|"), 17, "two hex digits"},
		{withCRC("1|0|0|SESSION(a b)|"), 16, "must be written as %20"},
		{withCRC("1|0|0|SESSION(a(b)|"), 16, "must be written as %28"},
		{withCRC("1|0|0|SESSION(a|b)|"), 16, "must be written as %7C"},
		{withCRC("1|0|0|SESSION(a)b)|"), 17, "want '|' after ')'"},
		{withCRC("1|0|0|NOSUCHOP(5)|"), 7, "unknown operation"},
		{withCRC("1|0|0|unlock(5)|"), 7, "operation name"},
		{withCRC("1|0|0|(5)|"), 7, "empty operation name"},
		{withCRC("1|0|0|UNLOCK(5)|1,2,3"), 21, "more than 2 values"},
		{withCRC("1|0|0|UNLOCK(5)|1,"), 19, "empty result value"},
		{withCRC("1|0|0|UNLOCK(5)|,1"), 17, "empty result"},
		{"1|0|0|UNLOCK(5)||00000000\n", 18, "checksum mismatch"},
		{strings.ToUpper(withCRC("1|0|0|UNLOCK(5)|")), 20, "lowercase hex"},
		{withCRC("1|0|0|UNLOCK(5)|") + "x", 28, "no newline"},
		{strings.TrimSuffix(withCRC("1|0|0|UNLOCK(5)|"), "\n") + "x\n", 18, "8 lowercase hex"},
		{strings.TrimSuffix(withCRC("1|0|0|UNLOCK(5)|"), "\n") + "\r\n", 18, "8 lowercase hex"},
		{withCRC("1|0|0|UNLOCK(5)|") + "\n", 18, "8 lowercase hex"},
		{withCRC("1|0|0|SESSION(a\nb)|"), 16, "must be written as %0A"},
		{"1\n|0|0|UNLOCK(5)|\n", 2, "not a digit"},
		{withCRC("1|0|0|UNLOCK(5)"), 19, "not a digit"},
		{"1|0|0|UNLOCK(5)|7\n", 18, "no '|' after result"},
		{withCRC("1|0|0|UNLOCK(5"), 24, "no ')'"},
		{withCRC("1|0"), 7, "not a digit"},
		{"1|0\n", 4, "no '|' after term"},
	}
	for _, c := range cases {
		e, err := ParseLine([]byte(c.line))
		if err == nil {
			t.Errorf("%q: accepted as %+v", c.line, e)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: error %v is not a *ParseError matching ErrCorrupt", c.line, err)
			continue
		}
		if pe.Col != c.col || !strings.Contains(pe.Reason, c.reason) {
			t.Errorf("%q: got column %d %q, want column %d %q", c.line, pe.Col, pe.Reason, c.col, c.reason)
		}
	}
	_, err := ParseLine([]byte(withCRC("1|0|0|NOSUCHOP(5)|")))
	if !errors.Is(err, meta.ErrUnknownOp) {
		t.Errorf("unknown op error %v does not match meta.ErrUnknownOp", err)
	}
}

// TestFlippedBytes changes every byte of some lines to every other value:
// CRC-32C catches any change within 32 bits, so each must be refused. The
// parser is the last guard before Apply; a damaged line accepted as some
// other entry would silently fork the namespace.
func TestFlippedBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var p Parser
	for _, e := range seqEntries(t, rng, 100, 20) {
		line := []byte(lineOf(t, &e))
		for i := range line {
			orig := line[i]
			for d := 1; d < 256; d++ {
				line[i] = orig ^ byte(d)
				if got, err := p.ParseLine(line); err == nil {
					t.Fatalf("byte %d of %q changed to %#x: accepted as %+v", i, lineOf(t, &e), line[i], got)
				}
			}
			line[i] = orig
		}
		if _, err := p.ParseLine(line); err != nil {
			t.Fatalf("restored line refused: %v", err)
		}
	}
}

func BenchmarkParseLine(b *testing.B) {
	lines := [][]byte{
		[]byte(lineOf(b, &meta.Entry{Version: 123456789, Term: 3, Time: 1700000000, Result: meta.Result{N: 1, Val: [2]uint64{4711}},
			Op: &meta.Create{Parent: 1234, Name: "report-2024-03.pdf", Type: meta.TypeFile, Mode: 0o644, UID: 1000, GID: 1000}})),
		[]byte(lineOf(b, &meta.Entry{Version: 123456790, Term: 3, Time: 1700000000, Result: meta.Result{N: 2, Val: [2]uint64{99812, 1}},
			Op: &meta.Write{Inode: 4711, Index: 0}})),
		[]byte(lineOf(b, &meta.Entry{Version: 123456791, Term: 3, Time: 1700000001,
			Op: &meta.Length{Inode: 4711, Size: 1048576}})),
		[]byte(lineOf(b, &meta.Entry{Version: 123456792, Term: 3, Time: 1700000001,
			Op: &meta.Unlock{Chunk: 99812}})),
	}
	for _, l := range lines {
		b.Run(strings.SplitN(string(l), "(", 2)[0][23:], func(b *testing.B) {
			var p Parser
			b.ReportAllocs()
			b.SetBytes(int64(len(l)))
			for b.Loop() {
				if _, err := p.ParseLine(l); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendEntry(b *testing.B) {
	e := meta.Entry{Version: 123456789, Term: 3, Time: 1700000000, Result: meta.Result{N: 1, Val: [2]uint64{4711}},
		Op: &meta.Create{Parent: 1234, Name: "report-2024-03.pdf", Type: meta.TypeFile, Mode: 0o644, UID: 1000, GID: 1000}}
	var enc Encoder
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = enc.AppendEntry(buf[:0], &e); err != nil {
			b.Fatal(err)
		}
	}
}
