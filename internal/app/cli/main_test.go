package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tools against a real carpfs mount are tested with the whole local
// cluster in internal/app/local (TestUpDown). These are the parts that
// need no mount: arguments, names and errors outside carpfs.

func runMain(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mfscli"}, "want a command: goal"},
		{[]string{"mfscli", "goal"}, "want get or set"},
		{[]string{"mfscli", "goal", "get"}, "want at least one PATH"},
		{[]string{"mfscli", "goal", "set", "2"}, "want GOAL and at least one PATH"},
		{[]string{"mfscli", "goal", "set", "0", dir}, "copies must be 1 to 9"},
		{[]string{"mfscli", "goal", "set", "12", dir}, "want a copy count 1-9 or three digits xyz"},
		{[]string{"mfscli", "goal", "set", "900", dir}, "x+y+z+1 must be 1 to 9"},
		{[]string{"mfscli", "goal", "get", "-x", dir}, "-x"},
		{[]string{"/usr/bin/mfssetgoal", "3"}, "mfssetgoal: want GOAL and at least one PATH"},
		{[]string{"mfssetgoal", "x", dir}, "mfssetgoal: parse goal"},
		{[]string{"mfsgetgoal"}, "mfsgetgoal: want at least one PATH"},
	} {
		code, _, errs := runMain(tc.args...)
		if code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, errs, tc.want)
		}
	}
}

// TestNotCarpfs: a path outside carpfs is named with the reason, through
// every name of the tool, and the other paths are still done.
func TestNotCarpfs(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"mfscli", "goal", "get", f, dir},
		{"mfsgetgoal", "-r", dir},
		{"mfscli", "goal", "set", "3", f},
		{"mfssetgoal", "-r", "3", dir},
	} {
		code, _, errs := runMain(args...)
		if code != 1 || !strings.Contains(errs, "not on a carpfs mount") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	code, _, errs := runMain("mfsgetgoal", filepath.Join(dir, "missing"))
	if code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, errs)
	}
	// -r over a tree outside carpfs reports each inode it could not do.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runMain("mfssetgoal", "-r", "2", dir)
	if code != 1 || strings.Count(errs, "not on a carpfs mount") != 3 || !strings.Contains(out, "inodes with other errors:               3") {
		t.Errorf("-r: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
}

func TestSortedGoals(t *testing.T) {
	got := sortedGoals(map[string]int{"012": 1, "3": 1, "100": 1, "1": 1})
	if strings.Join(got, " ") != "1 3 012 100" {
		t.Fatalf("got %v", got)
	}
}
