package metarestore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/metagen"
)

func mr(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = Main(context.Background(), append([]string{"mfsmetarestore"}, args...), &o, &e)
	return code, o.String(), e.String()
}

// fixture writes an empty dump and a changelog of n entries (versions
// 1..n) into dir; with gap set, versions 1200-1299 go missing.
func fixture(t *testing.T, dir string, n int, gap bool) {
	s := meta.New(7, 1)
	if _, err := metadump.Write(dir, "metadata.mfs", s, metadump.Options{}); err != nil {
		t.Fatal(err)
	}
	w := metagen.New(s, 3)
	cl, err := changelog.Open(dir, changelog.PrefixMaster, changelog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		e := w.Next()
		if e.Version == 1200 || e.Version == 1300 {
			if err := cl.Rotate(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.Append(&e); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if gap { // the file holding 1200-1299
		if err := os.Remove(filepath.Join(dir, changelog.FileName(changelog.PrefixMaster, 1))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRestoreAuto(t *testing.T) {
	dir := t.TempDir()
	fixture(t, dir, 3000, false)
	code, out, errOut := mr(t, "-a", "-d", dir, "--dry-run")
	if code != ExitOK || !strings.Contains(out, "would reach version 3000 term 1") {
		t.Fatalf("dry run: exit %d, %q %q", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "metadata.mfs.back.1")); err == nil {
		t.Fatal("dry run wrote a dump")
	}
	code, out, errOut = mr(t, "-a", "-d", dir)
	if code != ExitOK || !strings.Contains(out, "restored version 3000 term 1") {
		t.Fatalf("exit %d, %q %q", code, out, errOut)
	}
	h, err := metadump.ReadHeader(filepath.Join(dir, "metadata.mfs"))
	if err != nil || h.Version != 3000 {
		t.Fatalf("written dump: %+v %v", h, err)
	}
	// Run again: the new dump is already at the end; nothing to apply.
	if code, out, _ = mr(t, "-a", "-d", dir, "-q"); code != ExitOK || !strings.Contains(out, "+ 0 changelog entries") {
		t.Fatalf("second run: exit %d, %q", code, out)
	}
}

func TestRestoreExplicit(t *testing.T) {
	dir := t.TempDir()
	fixture(t, dir, 1500, false)
	out := filepath.Join(t.TempDir(), "restored.mfs")
	code, stdout, stderr := mr(t, "-m", filepath.Join(dir, "metadata.mfs"), "-o", out, filepath.Join(dir, "changelog.2.mfs"), filepath.Join(dir, "changelog.1.mfs"), filepath.Join(dir, "changelog.0.mfs"))
	if code != ExitOK {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	if h, err := metadump.Verify(out); err != nil || h.Version != 1500 {
		t.Fatalf("output: %+v %v", h, err)
	}
}

func TestRestoreRefusals(t *testing.T) {
	dir := t.TempDir()
	fixture(t, dir, 2000, true)
	before, _ := os.ReadFile(filepath.Join(dir, "metadata.mfs"))
	code, _, stderr := mr(t, "-a", "-d", dir)
	if code != ExitGap || !strings.Contains(stderr, "versions 1200-1299") || !strings.Contains(stderr, "another metalogger") {
		t.Fatalf("gap: exit %d, %q", code, stderr)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "metadata.mfs"))
	if !bytes.Equal(before, after) || !strings.Contains(stderr, "nothing was written") {
		t.Fatal("a refused restore changed the dump")
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{}, ExitUsage},
		{[]string{"-a", "-m", "x"}, ExitUsage},
		{[]string{"-m", "x"}, ExitUsage},
		{[]string{"--bogus"}, ExitUsage},
		{[]string{"-a", "-d", t.TempDir()}, ExitMissing},
		{[]string{"-m", filepath.Join(dir, "nope.mfs"), "-o", filepath.Join(dir, "o.mfs")}, ExitMissing},
		{[]string{"-m", filepath.Join(dir, "changelog.0.mfs"), "-n"}, ExitRefused}, // not a dump
	} {
		if code, _, stderr := mr(t, c.args...); code != c.code {
			t.Errorf("%q: exit %d, want %d (%s)", c.args, code, c.code, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "o.mfs")); err == nil {
		t.Error("a failed restore wrote its output")
	}
}

func TestHelpListsExitCodes(t *testing.T) {
	code, out, _ := mr(t, "-h")
	if code != ExitOK || !strings.Contains(out, "EXIT CODES") || !strings.Contains(out, "3  changelog gap") {
		t.Fatalf("help: exit %d\n%s", code, out)
	}
}
