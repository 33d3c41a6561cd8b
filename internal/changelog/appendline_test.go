package changelog

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/meta"
)

func TestAppendLine(t *testing.T) {
	h := history(t, 10) // term 3
	next := lineOf(t, &h[5])
	withTerm := func(e meta.Entry, term uint64) string {
		e.Term = term
		return lineOf(t, &e)
	}
	long := strings.Repeat("x", MaxLineSize) + "\n"
	cases := []struct {
		name    string
		line    string
		wantErr error  // nil: accepted
		inErr   string // the error says this
	}{
		{"next", next, nil, ""},
		{"next in a higher term", withTerm(h[5], 4), nil, ""},
		{"again", lineOf(t, &h[4]), ErrSequence, "entry 5"},
		{"skips one", lineOf(t, &h[6]), ErrSequence, "entry 7: entry out of sequence: the last version is 5"},
		{"lower term", withTerm(h[5], 2), ErrSequence, "term 2 is below the last term 3"},
		{"no newline", strings.TrimSuffix(next, "\n"), ErrCorrupt, "after version 5: parse changelog line: column"},
		{"CRLF", strings.TrimSuffix(next, "\n") + "\r\n", ErrCorrupt, "column"},
		{"bad checksum", strings.Replace(next, "6|3|", "6|4|", 1), ErrCorrupt, "checksum mismatch"},
		{"two lines", next + lineOf(t, &h[6]), ErrCorrupt, `"6|3|`},
		{"leading zero", withCRC("06|3|0|UNLOCK(5)|"), ErrCorrupt, "leading zero"},
		{"empty", "", ErrCorrupt, "(0 bytes)"},
		{"too long", long, ErrCorrupt, "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			w := openW(t, dir, Options{})
			defer w.Close()
			appendAll(t, w, h[:5])
			line := []byte(c.line)
			e, err := w.AppendLine(line)
			if c.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				want, perr := ParseLine([]byte(c.line))
				if perr != nil {
					t.Fatal(perr)
				}
				sameEntry(t, &e, &want)
			} else if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.inErr) {
				t.Fatalf("error %v; want %v saying %q", err, c.wantErr, c.inErr)
			}
			// The caller's buffer is not kept.
			for i := range line {
				line[i] = 'z'
			}
			if err := w.Sync(); err != nil {
				t.Fatal(err)
			}
			want := string(encodeAll(t, h[:5]))
			if c.wantErr == nil {
				want += c.line
			}
			if data, err := os.ReadFile(w.Path()); err != nil || string(data) != want {
				t.Fatalf("file holds %q, %v; want %q", data, err, want)
			}
			// A refused line leaves the Writer usable.
			if c.wantErr != nil {
				if _, err := w.AppendLine([]byte(next)); err != nil {
					t.Fatalf("after a refused line: %v", err)
				}
			}
		})
	}
}

// TestAppendLineSameAsAppend: lines appended as lines and entries appended
// as entries give the same file, rotations by size included.
func TestAppendLineSameAsAppend(t *testing.T) {
	h := history(t, 300)
	files := map[string][]byte{}
	for _, how := range []string{"Append", "AppendLine", "both"} {
		dir := t.TempDir()
		w := openW(t, dir, Options{MaxSize: 3000})
		for i := range h {
			var err error
			if how == "Append" || how == "both" && i%2 == 0 {
				err = w.Append(&h[i])
			} else {
				_, err = w.AppendLine([]byte(lineOf(t, &h[i])))
			}
			if err != nil {
				t.Fatal(err)
			}
			if i%7 == 0 {
				if err := w.Sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		fs, err := List(dir, PrefixMaster)
		if err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, f := range fs {
			b, err := os.ReadFile(f.Path)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, b...)
			all = append(all, '#') // file boundary
		}
		files[how] = all
	}
	if !bytes.Equal(files["Append"], files["AppendLine"]) || !bytes.Equal(files["Append"], files["both"]) {
		t.Fatal("AppendLine wrote other files than Append")
	}
}

func TestAppendLineUnknownSequence(t *testing.T) {
	// A new log takes whatever version comes first, as Append does.
	w := openW(t, t.TempDir(), Options{})
	defer w.Close()
	e := meta.Entry{Version: 1000, Term: 7, Op: &meta.Unlock{Chunk: 9}}
	if _, err := w.AppendLine([]byte(lineOf(t, &e))); err != nil {
		t.Fatal(err)
	}
	if w.LastVersion() != 1000 {
		t.Fatalf("last version %d", w.LastVersion())
	}
}

func TestAppendLineClosed(t *testing.T) {
	w := openW(t, t.TempDir(), Options{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	e := meta.Entry{Version: 1, Op: &meta.Unlock{Chunk: 9}}
	if _, err := w.AppendLine([]byte(lineOf(t, &e))); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendLine after Close: %v", err)
	}
}
