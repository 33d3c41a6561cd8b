package fetch

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/metagen"
	"github.com/carpfs/carpfs/internal/metalogger"
)

const metaid = 0xfe7c4

func fixedNow() time.Time { return time.Unix(1_800_000_000, 0) }

// history is a random workload's entries: entries[i] has version i+1,
// term 1 for the first half and 2 after (a failover half way).
type history struct{ entries []meta.Entry }

func newHistory(t testing.TB, n int) *history {
	w := metagen.New(meta.New(metaid, 1_700_000_000), 7)
	h := &history{}
	for range n {
		if len(h.entries) == n/2 {
			w.Term = 2
		}
		h.entries = append(h.entries, w.Next())
	}
	return h
}

// state replays the first v entries onto a new file system.
func (h *history) state(t testing.TB, v uint64) *meta.State {
	s := meta.New(metaid, 1_700_000_000)
	for i := range h.entries[:v] {
		if err := s.Replay(&h.entries[i]); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// layout is what a test metalogger's data directory holds.
type layout struct {
	dump     uint64 // version of metadata_ml.mfs; 0: no dump
	from, to uint64 // versions in changelog_ml files
	rotate   int    // entries per file; 0: one file
	holes    bool   // renumber the files so that N has holes
}

// writeML writes a metalogger's data directory: its state file (term 2
// held by "old"), dump and changelog files.
func (h *history) writeML(t testing.TB, dir string, l layout) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := metalogger.SaveState(dir, metalogger.State{ID: "ml1-0001", MetaID: metaid, Term: 2, Holder: "old", Committed: l.to}); err != nil {
		t.Fatal(err)
	}
	if l.dump > 0 {
		writeDump(t, dir, metalogger.DumpName, h.state(t, l.dump))
	}
	w, err := changelog.Open(dir, changelog.PrefixMetalogger, changelog.Options{Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for v := l.from; v <= l.to; v++ {
		if err := w.Append(&h.entries[v-1]); err != nil {
			t.Fatal(err)
		}
		if l.rotate > 0 && int(v-l.from+1)%l.rotate == 0 && v < l.to {
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
	if l.holes { // as a crash in the middle of a rotation leaves them
		files, err := changelog.List(dir, changelog.PrefixMetalogger)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files { // oldest, highest N, first
			if f.N >= 2 {
				if err := os.Rename(f.Path, filepath.Join(dir, changelog.FileName(changelog.PrefixMetalogger, f.N+3))); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

func writeDump(t testing.TB, dir, name string, s *meta.State) {
	t.Helper()
	if _, err := metadump.Write(dir, name, s, metadump.Options{Now: fixedNow, Keep: -1}); err != nil {
		t.Fatal(err)
	}
}

func dumpBytes(t testing.TB, s *meta.State) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := metadump.Encode(&b, s, metadump.Options{Now: fixedNow}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// remoteFile describes a changelog file of a test metalogger.
type remoteFile struct {
	name        string
	first, last uint64
	size        int64
}

// listML reads back what writeML wrote, oldest first.
func listML(t testing.TB, dir string) []remoteFile {
	t.Helper()
	files, err := changelog.List(dir, changelog.PrefixMetalogger)
	if err != nil {
		t.Fatal(err)
	}
	var out []remoteFile
	for _, f := range files {
		es, err := changelog.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 {
			out = append(out, remoteFile{filepath.Base(f.Path), es[0].Version, es[len(es)-1].Version, fi.Size()})
		}
	}
	return out
}
