package changelog

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

// fileSpec is one changelog file a test lays out: number n holding the
// versions from..to of a history (none when to < from), then extra bytes,
// such as a torn line. damage, when set, is a version whose line gets one
// byte changed, so that its checksum fails.
type fileSpec struct {
	n        int
	from, to uint64
	extra    string
	damage   uint64
}

// writeLayout writes specs, oldest first, as files of prefix in dir and
// returns the entries they hold in that order, the model a test checks
// against.
func writeLayout(t *testing.T, dir, prefix string, h []meta.Entry, specs []fileSpec) []meta.Entry {
	t.Helper()
	var all []meta.Entry
	for _, s := range specs {
		var es []meta.Entry
		if s.to >= s.from {
			es = h[s.from-1 : s.to]
		}
		data := encodeAll(t, es)
		if s.damage != 0 {
			starts := lineStarts(data)
			data[starts[s.damage-s.from]+1] ^= 0x01
		}
		data = append(data, s.extra...)
		if err := os.WriteFile(filepath.Join(dir, FileName(prefix, s.n)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
	}
	return all
}

// upTo is the entries of es with versions up to v.
func upTo(es []meta.Entry, v uint64) []meta.Entry {
	var out []meta.Entry
	for _, e := range es {
		if e.Version <= v {
			out = append(out, e)
		}
	}
	return out
}

// dirState is every file in dir by name, with its bytes.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[de.Name()] = string(b)
	}
	return m
}

// fileNumbers is the numbers of prefix's files in dir, oldest first.
func fileNumbers(t *testing.T, dir, prefix string) []int {
	t.Helper()
	fs, err := List(dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	ns := []int{}
	for _, f := range fs {
		ns = append(ns, f.N)
	}
	return ns
}

// tailed is what reading a Tail to its end gave.
type tailed struct {
	es    []meta.Entry
	lines []string
	err   error // what ended it; nil for io.EOF
}

// readTail reads t until Next fails, checking that each line is its
// entry's and that a failure sticks.
func readTail(t *testing.T, tl *Tail) tailed {
	t.Helper()
	var got tailed
	for {
		line, e, err := tl.Next()
		if err != nil {
			if err != io.EOF {
				got.err = err
			}
			if _, _, again := tl.Next(); fmt.Sprint(again) != fmt.Sprint(err) {
				t.Fatalf("after %v, Next gave %v", err, again)
			}
			return got
		}
		if want := lineOf(t, &e); string(line) != want {
			t.Fatalf("line %q is not its entry's %q", line, want)
		}
		got.es = append(got.es, e)
		got.lines = append(got.lines, string(line))
	}
}

// tailFrom opens a Tail and reads it to its end.
func tailFrom(t *testing.T, dir, prefix string, from uint64) tailed {
	t.Helper()
	tl, err := OpenTail(dir, prefix, from)
	if err != nil {
		return tailed{err: err}
	}
	defer tl.Close()
	return readTail(t, tl)
}

// sameEntries fails unless got and want are the same entries.
func sameEntries(t *testing.T, what string, got, want []meta.Entry) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %d entries (%s), want %d (%s)", what, len(got), versions(got), len(want), versions(want))
	}
}

// versions sums up entries as "first-last".
func versions(es []meta.Entry) string {
	if len(es) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d-%d", es[0].Version, es[len(es)-1].Version)
}
