package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Host    string        `cfg:"MASTER_HOST"`
	Port    uint16        `cfg:"MASTER_PORT"`
	Space   int64         `cfg:"HDD_LEAVE_SPACE"`
	Timeout time.Duration `cfg:"TIMEOUT"`
	Async   bool          `cfg:"ASYNC"`
	Peers   []string      `cfg:"METALOGGERS"`
	Keep    string        // no tag: untouched
}

func TestBind(t *testing.T) {
	f, err := Parse(strings.NewReader(`
# comment line
MASTER_HOST = mfsmaster   # trailing comment
MASTER_PORT=9420
HDD_LEAVE_SPACE = 256Mi
TIMEOUT = 1.5
ASYNC = yes
METALOGGERS = a, b ,c,
`), "test.cfg")
	if err != nil {
		t.Fatal(err)
	}
	s := sample{Keep: "x"}
	if err := Bind(f, &s); err != nil {
		t.Fatal(err)
	}
	want := sample{Host: "mfsmaster", Port: 9420, Space: 256 << 20, Timeout: 1500 * time.Millisecond, Async: true, Peers: []string{"a", "b", "c"}, Keep: "x"}
	if s.Host != want.Host || s.Port != want.Port || s.Space != want.Space || s.Timeout != want.Timeout ||
		s.Async != want.Async || strings.Join(s.Peers, "|") != "a|b|c" || s.Keep != "x" {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"MASTER_HOST mfs", "test.cfg:1: want KEY = VALUE"},
		{"\nmaster_host = x", "test.cfg:2: bad key"},
		{"MASTER_HOST = a\nMASTER_HOST = b", "test.cfg:2: MASTER_HOST already set on line 1"},
		{"MASTR_HOST = a", "test.cfg:1: unknown setting MASTR_HOST"},
		{"MASTER_PORT = 70000", "test.cfg:1: MASTER_PORT"},
		{"MASTER_PORT = -1", "out of range"},
		{"HDD_LEAVE_SPACE = 9999999999T", "too large"},
		{"HDD_LEAVE_SPACE = 5K", "write k (1000) or Ki (1024)"},
		{"TIMEOUT = soon", "not a duration"},
		{"ASYNC = maybe", "not a boolean"},
		{strings.Repeat("A", maxLine+1), "too long"},
	} {
		f, err := Parse(strings.NewReader(c.text), "test.cfg")
		if err == nil {
			err = Bind(f, &sample{})
		}
		if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an ErrSyntax containing %q", c.text, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("A = 1\n# c\nB=x # y\n"))
	f.Add([]byte("MASTER_PORT = 9420\nTIMEOUT = 2m\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(strings.NewReader(string(data)), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error without ErrSyntax: %v", err)
			}
			return
		}
		var s sample
		if err := Bind(file, &s); err != nil && !errors.Is(err, ErrSyntax) {
			t.Fatalf("bind error without ErrSyntax: %v", err)
		}
		for _, st := range file.Settings {
			if !validKey(st.Key) || strings.ContainsAny(st.Value, "#\n") {
				t.Fatalf("accepted bad setting %+v", st)
			}
		}
	})
}

// Sizes read the same in every file: MooseFS's k/M/G are powers of 1000.
func TestSizeUnits(t *testing.T) {
	for in, want := range map[string]int64{"256M": 256e6, "256Mi": 256 << 20, "1.5G": 1.5e9, "2GiB": 2 << 30, "100": 100} {
		f, _ := Parse(strings.NewReader("HDD_LEAVE_SPACE = "+in), "t")
		var s sample
		if err := Bind(f, &s); err != nil || s.Space != want {
			t.Errorf("%s: got %d %v, want %d", in, s.Space, err, want)
		}
	}
}
