package locks

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

var (
	a1 = Owner{Session: 1, ID: 1}
	a2 = Owner{Session: 1, ID: 2} // same session, another owner
	b1 = Owner{Session: 2, ID: 1}
)

func set(t *testing.T, tab *Table, ino uint32, o Owner, typ Type, start, end uint64) bool {
	t.Helper()
	_, ok, err := tab.SetPosix(ino, Lock{Owner: o, Type: typ, Start: start, End: end, PID: uint32(o.Session*100 + o.ID)})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func want(t *testing.T, tab *Table, ino uint32, exp ...Lock) {
	t.Helper()
	got := tab.Posix(ino)
	for i := range got {
		got[i].PID = 0
	}
	if !slices.Equal(got, exp) {
		t.Fatalf("locks on %d:\n got %+v\nwant %+v", ino, got, exp)
	}
}

func TestPosixSplitMerge(t *testing.T) {
	tab := New()
	if !set(t, tab, 7, a1, Read, 0, 99) {
		t.Fatal("first lock refused")
	}
	// A write lock in the middle of one's own read lock splits it.
	if !set(t, tab, 7, a1, Write, 40, 59) {
		t.Fatal("upgrade of own bytes refused")
	}
	want(t, tab, 7,
		Lock{Owner: a1, Type: Read, Start: 0, End: 39},
		Lock{Owner: a1, Type: Write, Start: 40, End: 59},
		Lock{Owner: a1, Type: Read, Start: 60, End: 99})
	// Back to read: the three merge into one.
	set(t, tab, 7, a1, Read, 40, 59)
	want(t, tab, 7, Lock{Owner: a1, Type: Read, Start: 0, End: 99})
	// Adjacent ranges of one type merge; of another type they do not.
	set(t, tab, 7, a1, Read, 100, 149)
	set(t, tab, 7, a1, Write, 150, ToEnd)
	want(t, tab, 7,
		Lock{Owner: a1, Type: Read, Start: 0, End: 149},
		Lock{Owner: a1, Type: Write, Start: 150, End: ToEnd})
	// Unlocking a hole in the middle splits; unlocking past the end of
	// a range trims it.
	set(t, tab, 7, a1, Unlock, 10, 19)
	set(t, tab, 7, a1, Unlock, 140, 200)
	want(t, tab, 7,
		Lock{Owner: a1, Type: Read, Start: 0, End: 9},
		Lock{Owner: a1, Type: Read, Start: 20, End: 139},
		Lock{Owner: a1, Type: Write, Start: 201, End: ToEnd})
	// Unlocking everything leaves nothing, and unlocking nothing is fine.
	set(t, tab, 7, a1, Unlock, 0, ToEnd)
	set(t, tab, 7, a1, Unlock, 0, ToEnd)
	want(t, tab, 7)
	if len(tab.posix) != 0 || len(tab.held) != 0 {
		t.Fatalf("empty table keeps state: %v %v", tab.posix, tab.held)
	}
}

func TestPosixConflicts(t *testing.T) {
	tab := New()
	set(t, tab, 1, a1, Read, 0, 99)
	// Readers share, across sessions and within one.
	if !set(t, tab, 1, b1, Read, 50, 149) || !set(t, tab, 1, a2, Read, 0, 9) {
		t.Fatal("shared read refused")
	}
	// A writer over anyone else's bytes is refused, and told whose.
	c, ok, _ := tab.SetPosix(1, Lock{Owner: a2, Type: Write, Start: 120, End: 130})
	if ok || c.Owner != b1 || c.Type != Read || c.Start != 50 || c.End != 149 || c.PID != 201 {
		t.Fatalf("write over b1's read: ok %v conflict %+v", ok, c)
	}
	// Another owner of the same session conflicts as well: owners, not
	// sessions, hold locks.
	if set(t, tab, 1, a2, Write, 0, 0) {
		t.Fatal("a2 wrote over a1's read lock")
	}
	// Past everyone's bytes a writer is fine.
	if !set(t, tab, 1, a2, Write, 150, ToEnd) {
		t.Fatal("write after the read locks refused")
	}
	// A refused request changes nothing.
	before := tab.Posix(1)
	if set(t, tab, 1, b1, Read, 140, 160) {
		t.Fatal("read over a write lock granted")
	}
	if !slices.Equal(before, tab.Posix(1)) {
		t.Fatal("a refused lock changed the table")
	}
	// TestPosix answers the conflicting lock, or none.
	c, found, err := tab.TestPosix(1, Lock{Owner: b1, Type: Read, Start: 0, End: ToEnd})
	if err != nil || !found || c.Owner != a2 || c.Start != 150 {
		t.Fatalf("getlk read: %+v %v %v", c, found, err)
	}
	if _, found, _ := tab.TestPosix(1, Lock{Owner: a2, Type: Write, Start: 150, End: 200}); found {
		t.Fatal("an owner conflicts with itself")
	}
	if _, _, err := tab.TestPosix(1, Lock{Owner: a1, Type: Unlock, Start: 0, End: 1}); !errors.Is(err, ErrType) {
		t.Fatalf("getlk unlock: %v", err)
	}
	// Locks on other inodes do not conflict.
	if !set(t, tab, 2, b1, Write, 0, ToEnd) {
		t.Fatal("lock on another inode refused")
	}
}

func TestPosixBadInput(t *testing.T) {
	tab := New()
	if _, _, err := tab.SetPosix(1, Lock{Owner: a1, Type: Read, Start: 10, End: 9}); !errors.Is(err, ErrRange) {
		t.Fatalf("end before start: %v", err)
	}
	if _, _, err := tab.SetPosix(1, Lock{Owner: a1, Type: 0, Start: 0, End: 9}); !errors.Is(err, ErrType) {
		t.Fatalf("type 0: %v", err)
	}
	if _, err := tab.SetFlock(1, a1, 4); !errors.Is(err, ErrType) {
		t.Fatalf("flock type 4: %v", err)
	}
	// The extremes of the range do not overflow.
	if !set(t, tab, 1, a1, Write, ToEnd, ToEnd) || !set(t, tab, 1, a1, Write, 0, 0) || !set(t, tab, 1, a1, Write, 1, ToEnd-1) {
		t.Fatal("extreme ranges refused")
	}
	want(t, tab, 1, Lock{Owner: a1, Type: Write, Start: 0, End: ToEnd})
}

func TestFlock(t *testing.T) {
	tab := New()
	ok := func(o Owner, typ Type) bool {
		t.Helper()
		r, err := tab.SetFlock(3, o, typ)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if !ok(a1, Read) || !ok(b1, Read) {
		t.Fatal("shared flock refused")
	}
	if ok(a2, Write) || ok(a1, Write) {
		t.Fatal("exclusive flock granted over a shared one of another owner")
	}
	if !ok(b1, Unlock) || !ok(a1, Write) {
		t.Fatal("upgrade after the other reader left refused")
	}
	if ok(b1, Read) {
		t.Fatal("shared flock granted over an exclusive one")
	}
	// flock and POSIX locks do not interact.
	if !set(t, tab, 3, b1, Write, 0, ToEnd) {
		t.Fatal("POSIX lock refused because of a flock")
	}
	if got := tab.Flock(3); len(got) != 1 || got[a1] != Write {
		t.Fatalf("flocks %v", got)
	}
	if !ok(a1, Unlock) || !ok(a1, Unlock) || len(tab.Flock(3)) != 0 {
		t.Fatal("unlock")
	}
}

func TestDropSession(t *testing.T) {
	tab := New()
	set(t, tab, 1, a1, Read, 0, 9)
	set(t, tab, 1, a2, Read, 20, 29)
	set(t, tab, 1, b1, Read, 0, 29)
	set(t, tab, 2, a1, Write, 0, ToEnd)
	if _, err := tab.SetFlock(3, a1, Write); err != nil {
		t.Fatal(err)
	}
	if n := tab.DropSession(1); n != 4 {
		t.Fatalf("dropped %d locks, want 4", n)
	}
	want(t, tab, 1, Lock{Owner: b1, Type: Read, Start: 0, End: 29})
	want(t, tab, 2)
	if len(tab.Flock(3)) != 0 {
		t.Fatal("flock survived its session")
	}
	// What session 1 held is free for others now.
	if !set(t, tab, 2, b1, Write, 0, ToEnd) {
		t.Fatal("lock refused after the holder's session ended")
	}
	if n := tab.DropSession(1); n != 0 {
		t.Fatalf("second drop found %d", n)
	}
}

// modelSpan is the bytes TestPosixModel's model has.
const modelSpan = 24

// TestPosixModel checks random operations against a byte-by-byte model.
// Bytes 0 to span-2 stand for themselves and byte span-1 for everything
// from there to the end of the file, so ranges end before span-1 or at
// ToEnd.
func TestPosixModel(t *testing.T) {
	const span = modelSpan
	owners := []Owner{a1, a2, b1, {Session: 3, ID: 9}}
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		tab := New()
		model := map[Owner]*[span]Type{}
		for _, o := range owners {
			model[o] = new([span]Type)
		}
		for step := 0; step < 60; step++ {
			o := owners[rnd.IntN(len(owners))]
			typ := Type(1 + rnd.IntN(3))
			start := uint64(rnd.IntN(span - 1))
			end, last := uint64(ToEnd), span-1
			if rnd.IntN(4) > 0 {
				end = start + uint64(rnd.IntN(span-1-int(start)))
				last = int(end)
			}
			conflictAt := -1
			for b := int(start); b <= last && conflictAt < 0 && typ != Unlock; b++ {
				for _, p := range owners {
					if p != o && model[p][b] != 0 && (typ == Write || model[p][b] == Write) {
						conflictAt = b
					}
				}
			}
			c, ok, err := tab.SetPosix(5, Lock{Owner: o, Type: typ, Start: start, End: end})
			if err != nil {
				t.Fatal(err)
			}
			if ok != (conflictAt < 0) {
				t.Fatalf("round %d step %d: %v %s %d-%d: granted %v, model says conflict at %d", round, step, o, typ, start, end, ok, conflictAt)
			}
			if !ok {
				if c.Owner == o || !c.overlaps(start, end) || !(typ == Write || c.Type == Write) {
					t.Fatalf("round %d step %d: reported conflict %+v is none", round, step, c)
				}
				continue
			}
			for b := int(start); b <= last; b++ {
				model[o][b] = typ % Unlock // Unlock clears
			}
			checkTable(t, tab, model)
		}
	}
}

// checkTable compares the table's locks on inode 5 with the model and
// checks that each owner's ranges are disjoint and maximal.
func checkTable(t *testing.T, tab *Table, model map[Owner]*[modelSpan]Type) {
	const span = modelSpan
	t.Helper()
	got := map[Owner]*[modelSpan]Type{}
	list := tab.Posix(5)
	for i, l := range list {
		if i > 0 && list[i-1].Start > l.Start {
			t.Fatalf("locks out of order: %+v", list)
		}
		m := got[l.Owner]
		if m == nil {
			m = new([modelSpan]Type)
			got[l.Owner] = m
		}
		last := l.End
		if last == ToEnd {
			last = uint64(span - 1)
		}
		for b := l.Start; b <= last; b++ {
			if m[b] != 0 {
				t.Fatalf("owner %v holds byte %d twice: %+v", l.Owner, b, list)
			}
			m[b] = l.Type
		}
		for _, k := range list[:i] {
			if k.Owner == l.Owner && k.Type == l.Type && (k.End < ToEnd && k.End+1 == l.Start || l.End < ToEnd && l.End+1 == k.Start) {
				t.Fatalf("adjacent ranges of one owner and type not merged: %+v", list)
			}
		}
	}
	for o, want := range model {
		have := got[o]
		if have == nil {
			have = new([modelSpan]Type)
		}
		for b := 0; b < span; b++ {
			if have[b] != want[b] {
				t.Fatalf("owner %v byte %d: table %v, model %v\n%+v", o, b, have[b], want[b], list)
			}
		}
	}
}
