package chunkstore

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseHDDConfig(t *testing.T) {
	// The sample MooseFS ships, uncommented, plus what operators write.
	in := `# This file keeps definitions of mounting points
/mnt/hd1
*/mnt/hd2
/mnt/hd3 -5GiB
/mnt/hd4 1.5TiB
>/mnt/hd5
</mnt/hd6
~/mnt/hd7
   /mnt/hd8/   # trailing slash, blanks and a note

/mnt/my disk 9	100MB
*~/mnt/hd10 0
/mnt/hd11 -0
`
	got, err := ParseHDDConfig(strings.NewReader(in), "mfshdd.cfg")
	if err != nil {
		t.Fatal(err)
	}
	want := []DiskSpec{
		{Path: "/mnt/hd1", Line: 2},
		{Path: "/mnt/hd2", MarkedForRemoval: true, Line: 3},
		{Path: "/mnt/hd3", LeaveFree: 5 << 30, LeaveFreeSet: true, Line: 4},
		{Path: "/mnt/hd4", SizeLimit: 3 << 39, Line: 5},
		{Path: "/mnt/hd5", MoveIn: true, Line: 6},
		{Path: "/mnt/hd6", MoveOut: true, Line: 7},
		{Path: "/mnt/hd7", IgnoreSizeChange: true, Line: 8},
		{Path: "/mnt/hd8", Line: 9},
		{Path: "/mnt/my disk 9", SizeLimit: 100e6, Line: 11},
		{Path: "/mnt/hd10", MarkedForRemoval: true, IgnoreSizeChange: true, Line: 12},
		{Path: "/mnt/hd11", LeaveFreeSet: true, Line: 13},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
	// String gives lines that parse back to the same disks.
	var lines []string
	for _, d := range got {
		lines = append(lines, d.String())
	}
	again, err := ParseHDDConfig(strings.NewReader(strings.Join(lines, "\n")), "again")
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		again[i].Line = got[i].Line
	}
	if !reflect.DeepEqual(again, got) {
		t.Fatalf("String does not round-trip:\n%s", strings.Join(lines, "\n"))
	}
}

func TestParseHDDConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "cfg: no disk defined"},
		{"# only\n\n  # comments\n", "no disk defined"},
		{"/a\nmnt/hd1\n", "cfg:2: path \"mnt/hd1\" is not absolute"},
		{"/a\n/b\n/a/\n", "cfg:3: /a is already listed on line 1"},
		{"/a 5KB\n", "cfg:1: space limit: \"5KB\" has an unknown unit \"K\""},
		{"/a 5K\n", "write k (1000) or Ki (1024)"},
		{"/a 1.2.3G\n", "cfg:1: space limit: \"1.2.3G\" is not a size"},
		{"/a 5.\n", "is not a size"},
		{"/a -\n", "cfg:1: space limit: \"\" is not a size"},
		{"/a --5\n", "cfg:1: space limit: \"-5\" is not a size"},
		{"/a 99999999999EiB\n", "too large"},
		{"**/a\n", "flag '*' given twice"},
		{"<>/a\n", "both '<' (move out) and '>'"},
		{"* /a\n", "not absolute"},
		{"/a\x00b\n", "control character"},
		{strings.Repeat("x", 5000), "token too long"},
	} {
		_, err := ParseHDDConfig(strings.NewReader(tc.in), "cfg")
		if err == nil || !errors.Is(err, ErrHDDConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an ErrHDDConfig containing %q", tc.in, err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "100": 100, "100B": 100, "1k": 1000, "1kB": 1000, "256MiB": 256 << 20,
		"256Mi": 256 << 20, "1.5TiB": 3 << 39, ".5Gi": 1 << 29, "1.5": 2, "5G": 5e9,
		"2E": 2e18, "7Ei": 7 << 60, "0.0001Ki": 0, "9223372036854775807": 1<<63 - 1,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "B", "k", "1K", "1KB", "1ki", "1 G", "-1", "1e5", "1/2", "8Ei", "1.", "..5", "1GiBB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
