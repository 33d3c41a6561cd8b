package restore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/metagen"
)

const metaid = 0xc0ffee

var fixedNow = func() time.Time { return time.Unix(1_800_000_000, 0) }

// history is a random workload's entries and the live state after each
// checkpoint version, as dump bytes.
type history struct {
	entries []meta.Entry // entries[i] has version i+1
	live    *meta.State
}

func makeHistory(t testing.TB, seed uint64, n int) *history {
	s := meta.New(metaid, 1_700_000_000)
	w := metagen.New(s, seed)
	h := &history{live: s}
	for range n {
		if len(h.entries) == n/2 {
			w.Term = 2 // a failover happened half way
		}
		h.entries = append(h.entries, w.Next())
	}
	return h
}

// stateAt replays the first v entries onto a fresh file system.
func (h *history) stateAt(t testing.TB, v uint64) *meta.State {
	s := meta.New(metaid, 1_700_000_000)
	for i := range h.entries[:v] {
		if err := s.Replay(&h.entries[i]); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func dumpBytes(t testing.TB, s *meta.State) []byte {
	var b bytes.Buffer
	if _, err := metadump.Encode(&b, s, metadump.Options{Now: fixedNow}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeDump(t testing.TB, dir, name string, s *meta.State) {
	if _, err := metadump.Write(dir, name, s, metadump.Options{Now: fixedNow, Keep: -1}); err != nil {
		t.Fatal(err)
	}
}

// writeChangelog writes entries [from, to] (versions) with prefix into dir,
// rotating every rotate entries so several files result.
func (h *history) writeChangelog(t testing.TB, dir, prefix string, from, to uint64, rotate int) {
	w, err := changelog.Open(dir, prefix, changelog.Options{Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for v := from; v <= to; v++ {
		if err := w.Append(&h.entries[v-1]); err != nil {
			t.Fatal(err)
		}
		if rotate > 0 && int(v-from+1)%rotate == 0 {
			if err := w.Rotate(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDumpPlusChangelog: a dump at v0 and the changelog files up to v1,
// restored, re-dump to exactly the bytes of the live state at v1.
func TestDumpPlusChangelog(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		h := makeHistory(t, seed, 20000)
		dir := t.TempDir()
		v0 := uint64(7000 + 1000*seed)
		writeDump(t, dir, "metadata.mfs", h.stateAt(t, v0))
		h.writeChangelog(t, dir, changelog.PrefixMaster, 1, uint64(len(h.entries)), 3000)
		files, err := changelog.List(dir, changelog.PrefixMaster)
		if err != nil || len(files) < 5 {
			t.Fatalf("expected several rotated changelogs, got %d (%v)", len(files), err)
		}
		paths := make([]string, len(files))
		for i, f := range files {
			paths[i] = f.Path
		}
		res, err := Run(context.Background(), filepath.Join(dir, "metadata.mfs"), paths, Options{})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if res.Applied != uint64(len(h.entries))-v0 {
			t.Fatalf("seed %d: applied %d entries, want %d", seed, res.Applied, uint64(len(h.entries))-v0)
		}
		if !bytes.Equal(dumpBytes(t, res.State), dumpBytes(t, h.live)) {
			t.Fatalf("seed %d: restored state differs from the live one", seed)
		}
	}
}

// TestAutoStaleAndNewerDumps: a master's stale dump, a metalogger's newer
// dump and overlapping changelogs from both reach the newest version.
func TestAutoStaleAndNewerDumps(t *testing.T) {
	h := makeHistory(t, 9, 12000)
	dir := t.TempDir()
	writeDump(t, dir, "metadata.mfs", h.stateAt(t, 1000))    // stale
	writeDump(t, dir, "metadata_ml.mfs", h.stateAt(t, 6000)) // newer, from a metalogger
	h.writeChangelog(t, dir, changelog.PrefixMaster, 1, 8000, 1500)
	h.writeChangelog(t, dir, changelog.PrefixMetalogger, 5000, 12000, 2000)
	res, err := Auto(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.DumpPath) != "metadata_ml.mfs" || res.Version() != 12000 || res.Applied != 6000 {
		t.Fatalf("restored from %s to %d with %d entries; want metadata_ml.mfs to 12000 with 6000", res.DumpPath, res.Version(), res.Applied)
	}
	if res.Term() != 2 {
		t.Fatalf("term %d, want 2", res.Term())
	}
	if !bytes.Equal(dumpBytes(t, res.State), dumpBytes(t, h.live)) {
		t.Fatal("restored state differs from the live one")
	}

	// The newest dump damaged: the stale one and the changelogs still
	// reach the end, with a warning.
	p := filepath.Join(dir, "metadata_ml.mfs")
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = Auto(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.DumpPath) != "metadata.mfs" || res.Version() != 12000 || len(res.Warnings) == 0 {
		t.Fatalf("after damage: from %s to %d, warnings %v", res.DumpPath, res.Version(), res.Warnings)
	}
}

func TestAutoRefusals(t *testing.T) {
	h := makeHistory(t, 5, 5000)
	ctx := context.Background()

	t.Run("gap", func(t *testing.T) {
		dir := t.TempDir()
		writeDump(t, dir, "metadata.mfs", h.stateAt(t, 100))
		h.writeChangelog(t, dir, changelog.PrefixMaster, 1, 2000, 0)
		h.writeChangelog(t, dir, changelog.PrefixMetalogger, 2301, 5000, 0)
		_, err := Auto(ctx, dir, Options{})
		var gap *changelog.GapError
		if !errors.As(err, &gap) || gap.From != 2001 || gap.To != 2300 {
			t.Fatalf("got %v, want a gap 2001-2300", err)
		}
	})
	t.Run("other metaid", func(t *testing.T) {
		dir := t.TempDir()
		writeDump(t, dir, "metadata.mfs", h.stateAt(t, 100))
		writeDump(t, dir, "metadata_ml.mfs", meta.New(metaid+1, 1))
		if _, err := Auto(ctx, dir, Options{}); !errors.Is(err, ErrMetaID) {
			t.Fatalf("got %v, want ErrMetaID", err)
		}
	})
	t.Run("no dump", func(t *testing.T) {
		dir := t.TempDir()
		h.writeChangelog(t, dir, changelog.PrefixMaster, 1, 10, 0)
		if _, err := Auto(ctx, dir, Options{}); !errors.Is(err, ErrNoDump) {
			t.Fatalf("got %v, want ErrNoDump", err)
		}
	})
	t.Run("conflict", func(t *testing.T) {
		dir := t.TempDir()
		writeDump(t, dir, "metadata.mfs", h.stateAt(t, 0))
		h.writeChangelog(t, dir, changelog.PrefixMaster, 1, 3000, 0)
		other := &history{entries: append([]meta.Entry(nil), h.entries...)}
		e := &other.entries[2499]
		e.Time++ // same version, different entry
		other.writeChangelog(t, dir, changelog.PrefixMetalogger, 2000, 3000, 0)
		if _, err := Auto(ctx, dir, Options{}); !errors.Is(err, changelog.ErrConflict) {
			t.Fatalf("got %v, want a conflict", err)
		}
	})
	t.Run("result differs", func(t *testing.T) {
		dir := t.TempDir()
		writeDump(t, dir, "metadata.mfs", h.stateAt(t, 0))
		bad := &history{entries: append([]meta.Entry(nil), h.entries...)}
		for i := range bad.entries {
			if _, ok := bad.entries[i].Op.(*meta.Create); ok && i > 1000 {
				bad.entries[i].Result.Val[0] += 7 // an inode the replay will not give
				break
			}
		}
		bad.writeChangelog(t, dir, changelog.PrefixMaster, 1, 3000, 0)
		if _, err := Auto(ctx, dir, Options{}); !errors.Is(err, meta.ErrResultMismatch) {
			t.Fatalf("got %v, want a result mismatch", err)
		}
	})
	t.Run("damage mid-file", func(t *testing.T) {
		dir := t.TempDir()
		writeDump(t, dir, "metadata.mfs", h.stateAt(t, 0))
		h.writeChangelog(t, dir, changelog.PrefixMaster, 1, 3000, 0)
		p := filepath.Join(dir, changelog.FileName(changelog.PrefixMaster, 0))
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Auto(ctx, dir, Options{}); !errors.Is(err, changelog.ErrCorrupt) {
			t.Fatalf("got %v, want a refusal naming the corrupt file", err)
		}
		// Another copy of the damaged range makes it whole again.
		h.writeChangelog(t, dir, changelog.PrefixMetalogger, 1000, 3000, 0)
		res, err := Auto(ctx, dir, Options{})
		if err != nil || res.Version() != 3000 || len(res.Warnings) == 0 {
			t.Fatalf("with a second copy: %v, warnings %v", err, res)
		}
	})
	t.Run("torn tail covered elsewhere", func(t *testing.T) {
		dir := t.TempDir()
		writeDump(t, dir, "metadata.mfs", h.stateAt(t, 0))
		h.writeChangelog(t, dir, changelog.PrefixMaster, 1, 3000, 0)
		h.writeChangelog(t, dir, changelog.PrefixMetalogger, 2500, 5000, 0)
		p := filepath.Join(dir, changelog.FileName(changelog.PrefixMaster, 0))
		b, _ := os.ReadFile(p)
		if err := os.WriteFile(p, b[:len(b)-20], 0o644); err != nil { // cut the last line
			t.Fatal(err)
		}
		res, err := Auto(ctx, dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Version() != 5000 || len(res.Warnings) == 0 {
			t.Fatalf("reached %d with warnings %v; want 5000 and a warning about the torn file", res.Version(), res.Warnings)
		}
	})
}
