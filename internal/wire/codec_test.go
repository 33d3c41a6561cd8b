package wire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestCodecRoundTrip(t *testing.T) {
	var e Enc
	e.U8(0xfe)
	e.U16(0xbeef)
	e.U32(0xdeadbeef)
	e.U64(math.MaxUint64 - 1)
	for _, v := range []uint64{0, 1, 127, 128, 300, 1 << 35, math.MaxUint64} {
		e.Uvarint(v)
	}
	e.Bool(true)
	e.Bool(false)
	e.Bytes([]byte{1, 2, 3})
	e.Bytes(nil)
	e.String("héllo\x00")
	e.Raw([]byte{7, 7})

	d := NewDec(e.Buf())
	got := []any{d.U8(), d.U16(), d.U32(), d.U64()}
	for range 7 {
		got = append(got, d.Uvarint())
	}
	var raw [2]byte
	got = append(got, d.Bool(), d.Bool(), d.Bytes(), d.Bytes(), d.String())
	d.Raw(raw[:])
	got = append(got, raw)
	want := []any{uint8(0xfe), uint16(0xbeef), uint32(0xdeadbeef), uint64(math.MaxUint64 - 1),
		uint64(0), uint64(1), uint64(127), uint64(128), uint64(300), uint64(1 << 35), uint64(math.MaxUint64),
		true, false, []byte{1, 2, 3}, []byte(nil), "héllo\x00", [2]byte{7, 7}}
	if err := d.End(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %v\nwant    %v", got, want)
	}
}

// TestDecRefuses lists input that an Enc never writes; each must fail
// with ErrMessage and a message naming the problem.
func TestDecRefuses(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		read func(d *Dec)
		want string
	}{
		{"short u16", []byte{1}, func(d *Dec) { d.U16() }, "u16 needs 2 bytes, 1 remain"},
		{"short u64", []byte{1, 2, 3}, func(d *Dec) { d.U64() }, "u64 needs 8 bytes"},
		{"varint past end", []byte{0x80}, func(d *Dec) { d.Uvarint() }, "runs past the end"},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), func(d *Dec) { d.Uvarint() }, "overflows"},
		{"varint not shortest", []byte{0x80, 0x00}, func(d *Dec) { d.Uvarint() }, "shortest form"},
		{"varint not shortest 2", []byte{0x81, 0x80, 0x00}, func(d *Dec) { d.Uvarint() }, "shortest form"},
		{"bool 2", []byte{2}, func(d *Dec) { d.Bool() }, "bool byte is 2"},
		{"bytes too long", []byte{5, 1, 2}, func(d *Dec) { d.Bytes() }, "length 5 exceeds the 2 bytes"},
		{"huge string", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, func(d *Dec) { _ = d.String() }, "exceeds the 0 bytes"},
		{"trailing", []byte{1, 2}, func(d *Dec) { d.U8() }, "1 trailing bytes"},
		{"raw short", []byte{1}, func(d *Dec) { var b [4]byte; d.Raw(b[:]) }, "fixed field needs 4 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewDec(c.in)
			c.read(d)
			err := d.End()
			if !errors.Is(err, ErrMessage) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want ErrMessage containing %q", err, c.want)
			}
		})
	}
}

// TestDecSticky checks that after an error every read gives zero and the
// first error is kept: a Decode method relies on it to check once.
func TestDecSticky(t *testing.T) {
	d := NewDec([]byte{0x80, 0x00, 1, 2, 3, 4, 5, 6, 7, 8})
	d.Uvarint()
	first := d.Err()
	if first == nil {
		t.Fatal("non-shortest varint accepted")
	}
	if v := d.U64(); v != 0 {
		t.Fatalf("read %d after an error", v)
	}
	if s := d.String(); s != "" {
		t.Fatalf("read %q after an error", s)
	}
	d.Fail("later")
	if d.End() != first {
		t.Fatalf("error changed from %v to %v", first, d.End())
	}
}

func TestUvarintLen(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 16383, 16384, 1<<56 - 1, 1 << 56, 1 << 63, math.MaxUint64} {
		var e Enc
		e.Uvarint(v)
		if uvarintLen(v) != len(e.Buf()) {
			t.Errorf("uvarintLen(%d) = %d, encoding has %d bytes", v, uvarintLen(v), len(e.Buf()))
		}
	}
}
