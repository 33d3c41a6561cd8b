// Package locks is the master's table of advisory file locks: POSIX
// byte-range locks (fcntl F_SETLK, F_GETLK) and whole-file flock locks,
// held for the mounts' sessions.
//
// Locks live in the master's memory only, never in the changelog, as in
// MooseFS: they are advisory, and a lock held across a master failover
// would have to survive the session's connection too. A session's locks
// go when the session ends or expires (DropSession).
//
// An owner is a session and the lock owner number the mount gives, so
// two mounts never share an owner by accident. POSIX locks follow
// fcntl(2): an owner holds at most one lock on each byte; taking a lock
// over bytes it already holds replaces their type (splitting the old
// range), and adjacent ranges of one type merge. Read locks of different
// owners may overlap; a write lock overlaps nothing of another owner.
// flock(2) locks cover the whole file, shared or exclusive, and do not
// interact with POSIX locks, as on Linux.
//
// The table does no waiting: a conflicting request fails at once and the
// mount retries for callers that asked to wait (F_SETLKW, LOCK_EX without
// LOCK_NB).
package locks

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
)

// Type is a lock's type: the wire's LockRead, LockWrite, LockUnlock.
type Type uint8

const (
	Read   Type = 1 // F_RDLCK, LOCK_SH
	Write  Type = 2 // F_WRLCK, LOCK_EX
	Unlock Type = 3 // F_UNLCK, LOCK_UN
)

func (t Type) String() string {
	switch t {
	case Read:
		return "read"
	case Write:
		return "write"
	case Unlock:
		return "unlock"
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// ToEnd is the End of a range that runs to the end of the file,
// whatever its length.
const ToEnd = math.MaxUint64

// Owner holds locks: a session and a lock owner number within it.
type Owner struct {
	Session uint64
	ID      uint64
}

// Lock is a POSIX lock on bytes Start to End, inclusive.
type Lock struct {
	Owner      Owner
	Type       Type // Read or Write
	Start, End uint64
	PID        uint32 // the holder's process, for F_GETLK
}

func (l Lock) overlaps(start, end uint64) bool { return l.Start <= end && start <= l.End }

// conflicts reports whether l keeps owner o from taking a lock of type t
// on its bytes.
func (l Lock) conflicts(o Owner, t Type) bool {
	return l.Owner != o && (t == Write || l.Type == Write)
}

// Table holds every lock of the file system. It is safe for concurrent
// use.
type Table struct {
	mu    sync.Mutex
	posix map[uint32][]Lock            // by inode, sorted by Start then owner
	flock map[uint32]map[Owner]Type    // by inode
	held  map[uint64]map[uint32]uint32 // session -> inode -> locks held there
}

// New returns an empty table.
func New() *Table {
	return &Table{posix: map[uint32][]Lock{}, flock: map[uint32]map[Owner]Type{}, held: map[uint64]map[uint32]uint32{}}
}

// ErrRange is returned for a range whose End is before its Start.
var ErrRange = errors.New("lock range ends before it starts")

// ErrType is returned for a lock type the request cannot carry.
var ErrType = errors.New("bad lock type")

func check(l Lock, unlockOK bool) error {
	switch {
	case l.Start > l.End:
		return fmt.Errorf("locks: bytes %d-%d: %w", l.Start, l.End, ErrRange)
	case l.Type == Read, l.Type == Write, l.Type == Unlock && unlockOK:
		return nil
	}
	return fmt.Errorf("locks: %s: %w", l.Type, ErrType)
}

// SetPosix takes, changes or (Type Unlock) drops l.Owner's POSIX lock
// on bytes l.Start to l.End of inode ino. If another owner holds a
// conflicting lock nothing changes, and SetPosix returns that lock and
// false.
func (t *Table) SetPosix(ino uint32, l Lock) (Lock, bool, error) {
	if err := check(l, true); err != nil {
		return Lock{}, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.posix[ino]
	if l.Type != Unlock {
		if c, ok := conflict(list, l); ok {
			return c, false, nil
		}
	}
	out := make([]Lock, 0, len(list)+2)
	before := 0
	for _, x := range list {
		if x.Owner != l.Owner {
			out = append(out, x)
			continue
		}
		before++
		if !x.overlaps(l.Start, l.End) {
			out = append(out, x)
			continue
		}
		// Keep what lies outside the new range; x.Start < l.Start
		// implies l.Start > 0, and x.End > l.End that l.End < ToEnd.
		if x.Start < l.Start {
			left := x
			left.End = l.Start - 1
			out = append(out, left)
		}
		if x.End > l.End {
			right := x
			right.Start = l.End + 1
			out = append(out, right)
		}
	}
	if l.Type != Unlock {
		out = mergeInto(out, l)
	}
	slices.SortFunc(out, func(a, b Lock) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.Owner.Session, b.Owner.Session), cmp.Compare(a.Owner.ID, b.Owner.ID))
	})
	after := 0
	for _, x := range out {
		if x.Owner == l.Owner {
			after++
		}
	}
	if len(out) == 0 {
		delete(t.posix, ino)
	} else {
		t.posix[ino] = out
	}
	t.count(l.Owner.Session, ino, after-before)
	return Lock{}, true, nil
}

// mergeInto adds l to list, which holds none of l's owner's bytes in
// l's range, absorbing the owner's adjacent locks of the same type.
func mergeInto(list []Lock, l Lock) []Lock {
	out := list[:0]
	for _, x := range list {
		if x.Owner == l.Owner && x.Type == l.Type {
			if x.End < ToEnd && x.End+1 == l.Start {
				l.Start = x.Start
				continue
			}
			if l.End < ToEnd && l.End+1 == x.Start {
				l.End = x.End
				continue
			}
		}
		out = append(out, x)
	}
	return append(out, l)
}

// conflict returns the first lock of list, by start, that keeps l from
// being taken.
func conflict(list []Lock, l Lock) (Lock, bool) {
	for _, x := range list {
		if x.overlaps(l.Start, l.End) && x.conflicts(l.Owner, l.Type) {
			return x, true
		}
	}
	return Lock{}, false
}

// TestPosix returns the lock that would keep l from being taken
// (F_GETLK), and false when none would.
func (t *Table) TestPosix(ino uint32, l Lock) (Lock, bool, error) {
	if err := check(l, false); err != nil {
		return Lock{}, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := conflict(t.posix[ino], l)
	return c, ok, nil
}

// SetFlock takes, changes or (Unlock) drops o's flock lock on inode ino.
// It returns false, changing nothing, if another owner's lock conflicts:
// any lock for Write, a Write lock for Read.
func (t *Table) SetFlock(ino uint32, o Owner, typ Type) (bool, error) {
	if typ != Read && typ != Write && typ != Unlock {
		return false, fmt.Errorf("locks: flock %s: %w", typ, ErrType)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.flock[ino]
	_, had := m[o]
	if typ == Unlock {
		if had {
			delete(m, o)
			if len(m) == 0 {
				delete(t.flock, ino)
			}
			t.count(o.Session, ino, -1)
		}
		return true, nil
	}
	for other, ot := range m {
		if other != o && (typ == Write || ot == Write) {
			return false, nil
		}
	}
	if m == nil {
		m = map[Owner]Type{}
		t.flock[ino] = m
	}
	m[o] = typ
	if !had {
		t.count(o.Session, ino, 1)
	}
	return true, nil
}

// count records that session's lock count on ino changed by d.
func (t *Table) count(session uint64, ino uint32, d int) {
	if d == 0 {
		return
	}
	m := t.held[session]
	if m == nil {
		m = map[uint32]uint32{}
		t.held[session] = m
	}
	n := int(m[ino]) + d
	if n <= 0 {
		delete(m, ino)
		if len(m) == 0 {
			delete(t.held, session)
		}
		return
	}
	m[ino] = uint32(n)
}

// DropSession releases every lock of a session and returns how many it
// held.
func (t *Table) DropSession(session uint64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for ino := range t.held[session] {
		list := t.posix[ino]
		kept := list[:0]
		for _, x := range list {
			if x.Owner.Session == session {
				n++
				continue
			}
			kept = append(kept, x)
		}
		if len(kept) == 0 {
			delete(t.posix, ino)
		} else {
			t.posix[ino] = kept
		}
		if m := t.flock[ino]; m != nil {
			for o := range m {
				if o.Session == session {
					delete(m, o)
					n++
				}
			}
			if len(m) == 0 {
				delete(t.flock, ino)
			}
		}
	}
	delete(t.held, session)
	return n
}

// Posix lists the POSIX locks on ino, by start.
func (t *Table) Posix(ino uint32) []Lock {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.posix[ino])
}

// Flock returns the flock locks on ino by owner.
func (t *Table) Flock(ino uint32) map[Owner]Type {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[Owner]Type, len(t.flock[ino]))
	for o, typ := range t.flock[ino] {
		out[o] = typ
	}
	return out
}
