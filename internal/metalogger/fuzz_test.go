package metalogger

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadState: any bytes in the state file are either refused with an
// error or give a state that saves and loads back the same.
func FuzzLoadState(f *testing.F) {
	f.Add(State{ID: "ml1-0a1b2c3d", MetaID: 0x5bb3cc92927e412f, Term: 4, Holder: "m1/1700000000", Committed: 1041}.encode())
	f.Add(State{ID: "x"}.encode())
	f.Add([]byte(`{"format":1,"id":"a"} 00000000` + "\n"))
	f.Add([]byte("garbage\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, saved, err := LoadState(dir, "n")
		if err != nil {
			return
		}
		if !saved {
			t.Fatal("an existing file loaded as a new state")
		}
		if err := SaveState(dir, s); err != nil {
			t.Fatal(err)
		}
		s2, _, err := LoadState(dir, "n")
		if err != nil || s2 != s {
			t.Fatalf("saved %+v, loaded %+v, %v", s, s2, err)
		}
	})
}

// FuzzAdminRequest: any line on the admin socket is a valid request or a
// clear error, never a fence without a term.
func FuzzAdminRequest(f *testing.F) {
	f.Add([]byte(`{"op":"status"}` + "\n"))
	f.Add([]byte(`{"op":"fence","term":7,"holder":"m2"}` + "\n"))
	f.Add([]byte(`{"op":"fence"}`))
	f.Add([]byte(`{"op":"status","extra":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := decodeAdminRequest(line)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if req.Op == "fence" && req.Term == 0 {
			t.Fatal("fence without a term accepted")
		}
	})
}
