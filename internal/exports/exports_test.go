package exports

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const sample = `# carpfs exports
10.0.0.0/24        /          rw,alldirs,maproot=0
10.0.1.0/255.255.255.0 /ro    ro
10.0.2.5-10.0.2.9  /home      rw,alldirs,mapall=1000:100,password=secret
192.168.1.7        /          rw,mingoal=2,maxgoal=3,dynamicip   # one host
fd00::/64          /v6        rw
*                  /pub       ro,maproot=65534:65534
`

func mustParse(t *testing.T, s string) *Table {
	t.Helper()
	tab, err := Parse(strings.NewReader(s), "mfsexports.cfg")
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestMatch(t *testing.T) {
	tab := mustParse(t, sample)
	cases := []struct {
		addr, dir string
		line      int // 0: refused
	}{
		{"10.0.0.1", "/", 2},
		{"10.0.0.255", "/a/b", 2},          // alldirs
		{"10.0.1.3", "/ro", 3},             // netmask form
		{"10.0.1.3", "/ro/sub", 0},         // no alldirs on line 3
		{"10.0.1.3", "/pub", 7},            // falls through to *
		{"10.0.2.5", "/home/alice", 4},     // range, inclusive start
		{"10.0.2.9", "/home", 4},           // inclusive end
		{"10.0.2.10", "/home", 0},          // outside the range
		{"10.0.2.7", "/homework", 0},       // a prefix of the name is not a parent
		{"192.168.1.7", "/x", 0},           // no alldirs
		{"192.168.1.7", "/", 5},            //
		{"::ffff:10.0.0.9", "/", 2},        // IPv4-mapped
		{"fd00::1", "/v6", 6},              //
		{"fd01::1", "/v6", 0},              //
		{"172.16.0.1", "/pub", 7},          //
		{"172.16.0.1", "/pub/../pub/", 7},  // cleaned
		{"172.16.0.1", "/", 0},             //
		{"10.0.0.1", "/a/../../etc", 2},    // cleaned to /etc, under /
		{"10.0.1.1", "/ro/../ro//./", 3},   //
		{"10.0.2.6", "/home/../home/b", 4}, //
	}
	for _, c := range cases {
		e, ok := tab.Match(netip.MustParseAddr(c.addr), c.dir)
		got := 0
		if ok {
			got = e.Line
		}
		if got != c.line {
			t.Errorf("%s %s: line %d, want %d", c.addr, c.dir, got, c.line)
		}
	}
}

func TestOptions(t *testing.T) {
	tab := mustParse(t, sample)
	e := tab.Exports
	if e[0].ReadOnly || !e[0].AllDirs || *e[0].MapRoot != (Cred{0, 0}) || e[0].MapAll != nil {
		t.Errorf("line 2: %+v", e[0])
	}
	if !e[1].ReadOnly || *e[1].MapRoot != (Cred{999, 999}) {
		t.Errorf("line 3 should be ro with MooseFS's default maproot 999:999: %+v", e[1])
	}
	if e[2].Password != "secret" || *e[2].MapAll != (Cred{1000, 100}) {
		t.Errorf("line 4: %+v", e[2])
	}
	if e[3].MinGoal != 2 || e[3].MaxGoal != 3 || !e[3].DynamicIP || e[3].GoalAllowed(1) || !e[3].GoalAllowed(3) {
		t.Errorf("line 5: %+v", e[3])
	}
	// maproot maps only uid 0, mapall only the others.
	if u, g := e[2].Map(0, 0); u != 999 || g != 999 {
		t.Errorf("maproot default: %d:%d", u, g)
	}
	if u, g := e[2].Map(5, 6); u != 1000 || g != 100 {
		t.Errorf("mapall: %d:%d", u, g)
	}
	if u, g := e[0].Map(5, 6); u != 5 || g != 6 {
		t.Errorf("no mapall: %d:%d", u, g)
	}
}

func TestDefault(t *testing.T) {
	tab := Default()
	e, ok := tab.Match(netip.MustParseAddr("203.0.113.9"), "/any/dir")
	if !ok || e.ReadOnly || e.MapRoot == nil || *e.MapRoot != (Cred{0, 0}) {
		t.Fatalf("default export: %+v, %v", e, ok)
	}
	if tab2, err := Load(t.TempDir() + "/missing.cfg"); err != nil || len(tab2.Exports) != 1 {
		t.Fatalf("missing file: %v, %v", tab2, err)
	}
}

func TestErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"* /\n* / bogus", ":2: unknown option \"bogus\""},
		{"*", ":1: want ADDRESS DIRECTORY"},
		{"* / rw extra", ":1: want ADDRESS DIRECTORY"},
		{"* .", "not supported"},
		{"* home", "absolute path"},
		{"10.0.0.300 /", "not an address"},
		{"10.0.0.0/33 /", "bad prefix length"},
		{"10.0.0.0/255.0.255.0 /", "not contiguous"},
		{"10.0.0.9-10.0.0.1 /", "range is empty"},
		{"10.0.0.1-fd00::1 /", "range is empty"},
		{"* / rw,,ro", "empty option"},
		{"* / rw=1", "takes no value"},
		{"* / maproot", "needs a value"},
		{"* / maproot=0:", "group"},
		{"* / mapall=no-such-user-carpfs", "user \"no-such-user-carpfs\""},
		{"* / mingoal=0", "1 to 9"},
		{"* / mingoal=5,maxgoal=2", "above maxgoal"},
		{"* / md5pass=abc", "md5pass is not supported"},
		{"* / minversion=3.x", "minversion"},
		{"* / mintrashtime=1H1D", "trash time"},
		{"* / password=", "needs a value"},
	} {
		_, err := Parse(strings.NewReader(c.text), "x.cfg")
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "x.cfg:") {
			t.Errorf("%q: error %v, want ErrSyntax naming x.cfg and %q", c.text, err, c.want)
		}
	}
}

func TestTrashTime(t *testing.T) {
	for s, want := range map[string]uint64{"86400": 86400, "1W": 604800, "1d2h": 93600, "3M4S": 184} {
		if got, err := parseTrashTime(s); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", s, got, err, want)
		}
	}
}

// FuzzParse feeds arbitrary text to the parser. It must not panic; it
// fails only with ErrSyntax; and a table it accepts parses again, line by
// line from each export's Text, to the same exports.
func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add(DefaultLine)
	f.Add("* / ro,maproot=0:0,mapall=1:1,mintrashtime=1W2D,maxtrashtime=99999,minversion=3.0.1,admin,ignoregid\n")
	f.Add("::1-::ff /a/../b rw\n10.1.1.1/255.255.0.0 / alldirs")
	f.Add("\x00 / rw\n* /\xff ro")
	f.Fuzz(func(t *testing.T, text string) {
		tab, err := Parse(strings.NewReader(text), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v is not ErrSyntax", err)
			}
			return
		}
		for _, e := range tab.Exports {
			again, err := Parse(strings.NewReader(e.Text), "again")
			if err != nil || len(again.Exports) != 1 {
				t.Fatalf("line %q reparses as %v, %v", e.Text, again, err)
			}
			a := again.Exports[0]
			a.Line = e.Line
			if !reflect.DeepEqual(a, e) {
				t.Fatalf("line %q reparses as %+v, want %+v", e.Text, a, e)
			}
			if !strings.HasPrefix(e.Path, "/") {
				t.Fatalf("path %q is not absolute", e.Path)
			}
		}
	})
}
