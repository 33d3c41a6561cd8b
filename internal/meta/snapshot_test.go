package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
)

// recordBytes flattens a state's records into one byte string.
func recordBytes(t testing.TB, s *State) []byte {
	var out []byte
	err := s.Records(func(k RecordKind, rec []byte) error {
		out = append(out, byte(k))
		out = binary.AppendUvarint(out, uint64(len(rec)))
		out = append(out, rec...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type rec struct {
	kind RecordKind
	b    []byte
}

func records(t testing.TB, s *State) []rec {
	var out []rec
	if err := s.Records(func(k RecordKind, b []byte) error {
		out = append(out, rec{k, bytes.Clone(b)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func rebuild(s *State, recs []rec) (*State, error) {
	b := NewBuilder(s.MetaID(), s.Version(), s.Term())
	for _, r := range recs {
		if err := b.Add(r.kind, r.b); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// replayed returns the state a fresh file system reaches after log.
func replayed(t testing.TB, log []Entry) *State {
	s := New(42, 1_700_000_000)
	for i := range log {
		if err := s.Replay(&log[i]); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestSnapshotPlusReplay: a snapshot at v0 plus the entries up to v1 gives
// the live state at v1, record for record.
func TestSnapshotPlusReplay(t *testing.T) {
	for _, seed := range []uint64{11, 12, 13} {
		live, log, _ := runModel(t, seed, 30000, 30000)
		cut := len(log) / 3
		s0 := replayed(t, log[:cut])
		b, err := rebuild(s0, records(t, s0))
		if err != nil {
			t.Fatalf("seed %d: rebuild at v0: %v", seed, err)
		}
		if !bytes.Equal(recordBytes(t, b), recordBytes(t, s0)) {
			t.Fatalf("seed %d: rebuilt state differs from the one dumped", seed)
		}
		for i := cut; i < len(log); i++ {
			if err := b.Replay(&log[i]); err != nil {
				t.Fatalf("seed %d: replay: %v", seed, err)
			}
		}
		if b.Version() != live.Version() || b.Term() != live.Term() {
			t.Fatalf("seed %d: replay reached %d/%d, live is at %d/%d", seed, b.Version(), b.Term(), live.Version(), live.Term())
		}
		if !bytes.Equal(recordBytes(t, b), recordBytes(t, live)) {
			t.Fatalf("seed %d: snapshot+replay differs from the live state", seed)
		}
	}
}

func TestReplayRefusesMismatch(t *testing.T) {
	_, log, _ := runModel(t, 21, 2000, 2000)
	s := New(42, 1_700_000_000)
	for i := range log[:100] {
		if err := s.Replay(&log[i]); err != nil {
			t.Fatal(err)
		}
	}
	e := log[100]
	e.Result.Val[0] += 1000
	e.Result.N = 1
	if err := s.Replay(&e); !errors.Is(err, ErrResultMismatch) {
		t.Fatalf("changed result: got %v", err)
	}
	s = replayed(t, log[:100])
	gap := log[101]
	if _, err := s.Apply(&gap); !errors.Is(err, ErrVersion) {
		t.Fatalf("gap: got %v", err)
	}
	old := log[100]
	old.Term = 0
	if _, err := s.Apply(&old); !errors.Is(err, ErrTerm) {
		t.Fatalf("older term: got %v", err)
	}
}

// TestBuilderRefusesInconsistent damages single records of a good snapshot
// and expects every damage to be refused.
func TestBuilderRefusesInconsistent(t *testing.T) {
	s := New(7, 100)
	mk := func(op Op) uint32 {
		r, err := s.Apply(&Entry{Version: s.Version() + 1, Term: 1, Time: 200, Op: op})
		if err != nil || !r.Ok() {
			t.Fatalf("%s: %v %v", op.OpName(), r, err)
		}
		return uint32(r.Val[0])
	}
	d := mk(&Create{Parent: 1, Name: "d", Type: TypeDir, Mode: 0o755})
	e := mk(&Create{Parent: d, Name: "e", Type: TypeDir, Mode: 0o755})
	f := mk(&Create{Parent: e, Name: "f", Type: TypeFile, Mode: 0o644})
	mk(&Link{Inode: f, Parent: 1, Name: "g"})
	mk(&Write{Inode: f, Index: 1})
	mk(&Symlink{Parent: 1, Name: "l", Target: "f"})
	mk(&SetXattr{Inode: f, Name: "user.x", Value: "1"})
	good := records(t, s)
	if _, err := rebuild(s, good); err != nil {
		t.Fatalf("good snapshot refused: %v", err)
	}
	find := func(kind RecordKind, match func(*recReader) bool) int {
		for i, r := range good {
			if r.kind == kind && match(&recReader{b: r.b}) {
				return i
			}
		}
		t.Fatalf("no %v record found", kind)
		return -1
	}
	nodeRec := func(ino uint32) int {
		return find(RecNode, func(r *recReader) bool { return uint32(r.uv(u32max, "")) == ino })
	}
	edgeRec := func(name string) int {
		return find(RecEdge, func(r *recReader) bool {
			r.uv(u32max, "")
			r.uv(u32max, "")
			return r.str(255, "") == name
		})
	}
	mod := func(ino uint32, change func(*node)) []byte {
		n := *s.nodes.at(ino)
		change(&n)
		return appendNode(nil, ino, &n)
	}
	edge := func(parent, child uint32, name string) []byte {
		b := binary.AppendUvarint(nil, uint64(parent))
		b = binary.AppendUvarint(b, uint64(child))
		return appendString(b, name)
	}
	cases := []struct {
		name string
		at   int
		rec  []byte // nil: drop the record
	}{
		{"file nlink too high", nodeRec(f), mod(f, func(n *node) { n.nlink = 3 })},
		{"dir nlink wrong", nodeRec(d), mod(d, func(n *node) { n.nlink = 2 })},
		{"dir with wrong parent", nodeRec(e), mod(e, func(n *node) { n.parent = 1 })},
		{"bad goal", nodeRec(f), mod(f, func(n *node) { n.goal = 0 })},
		{"bad type", nodeRec(f), mod(f, func(n *node) { n.typ = 99 })},
		{"directory unnamed", edgeRec("d"), nil},
		{"edge to missing inode", edgeRec("g"), edge(1, 999, "g")},
		{"edge with slash", edgeRec("g"), edge(1, f, "g/h")},
		{"cycle", edgeRec("d"), edge(e, d, "d")},
		{"symlink without target", find(RecSymlink, func(*recReader) bool { return true }), nil},
		{"trailing bytes", nodeRec(f), append(mod(f, func(*node) {}), 0)},
		{"truncated node", nodeRec(f), mod(f, func(*node) {})[:5]},
	}
	for _, c := range cases {
		recs := append([]rec(nil), good...)
		if c.rec == nil {
			recs = append(recs[:c.at], recs[c.at+1:]...)
		} else {
			recs[c.at] = rec{recs[c.at].kind, c.rec}
		}
		if _, err := rebuild(s, recs); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: got %v, want ErrBadSnapshot", c.name, err)
		}
	}
	// Counters must come first.
	if _, err := rebuild(s, good[1:]); err == nil || !strings.Contains(err.Error(), "before the counters") {
		t.Errorf("missing counters: got %v", err)
	}
}

func TestSortEdges(t *testing.T) {
	for _, n := range []int{0, 10, 5000, 70000} {
		var edges []edge
		for i := range n {
			child := uint32((i * 7919) % (n/3 + 1)) // repeats: hard links
			if i%5 == 0 {
				child += 1 << 24
			}
			edges = append(edges, edge{child, string(rune('a' + i%26))})
		}
		want := append([]edge(nil), edges...)
		slices.SortFunc(want, compareEdges)
		got, _ := sortEdges(edges, nil)
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: radix order differs from compareEdges", n)
		}
	}
}
