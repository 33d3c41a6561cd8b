package metadump

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
)

// gen drives a state through random operations, the way a busy master
// would: every kind of inode, odd names, hard links, renames across
// directories, xattrs up to the largest value, chunks written, unlocked,
// lengthened and truncated, sessions holding unlinked files open, and
// inode numbers freed and reused. Operations that fail (a name taken, a
// directory not empty) are simply not applied, as the master would not
// log them.
type gen struct {
	tb       testing.TB
	rng      *rand.Rand
	s        *meta.State
	now      uint32
	term     uint64
	big      bool     // allow 64 KiB xattr values and long symlink targets
	inodes   []uint32 // every inode ever handed out; some are dead
	dirs     []uint32
	sessions []uint64
	locked   []uint64 // chunks under a write session
	applied  int
	last     meta.Op // the last operation applied, for failure messages
}

func newGen(tb testing.TB, seed uint64) *gen {
	const t0 = 1_700_000_000
	return &gen{
		tb: tb, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		s: meta.New(seed|1, t0), now: t0, term: 1, dirs: []uint32{meta.RootInode},
	}
}

func (g *gen) apply(op meta.Op) (meta.Result, bool) {
	g.tb.Helper()
	r, err := g.s.Apply(&meta.Entry{Version: g.s.Version() + 1, Term: g.term, Time: g.now, Op: op})
	if err != nil {
		g.tb.Fatalf("apply %s: %v", op.OpName(), err)
	}
	if r.Ok() {
		g.applied++
		g.last = op
	}
	return r, r.Ok()
}

// name makes a name of any byte but '/' and NUL, sometimes the longest.
func (g *gen) name() string {
	n := 1 + g.rng.IntN(12)
	if g.rng.IntN(50) == 0 {
		n = meta.MaxNameLen
	}
	b := make([]byte, n)
	for i := range b {
		for b[i] == 0 || b[i] == '/' {
			b[i] = byte(g.rng.IntN(256))
		}
	}
	return string(b)
}

func (g *gen) bytes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.rng.IntN(256))
	}
	return string(b)
}

func (g *gen) dir() uint32 { return g.dirs[g.rng.IntN(len(g.dirs))] }

func (g *gen) inode() uint32 {
	if len(g.inodes) == 0 {
		return meta.RootInode
	}
	return g.inodes[g.rng.IntN(len(g.inodes))]
}

// entry picks a name in a random directory, trying a few as many are
// empty, or returns "" for the name.
func (g *gen) entry() (uint32, string, meta.DirEntry) {
	d := g.dir()
	for range 5 {
		if ents, e := g.s.ReadDir(d); e == 0 && len(ents) > 0 {
			de := ents[g.rng.IntN(len(ents))]
			return d, de.Name, de
		}
		d = g.dir()
	}
	return d, "", meta.DirEntry{}
}

func (g *gen) created(r meta.Result, ok bool, dir bool) {
	if !ok {
		return
	}
	ino := uint32(r.Val[0])
	g.inodes = append(g.inodes, ino)
	if dir {
		g.dirs = append(g.dirs, ino)
	}
}

func (g *gen) session() uint64 {
	if len(g.sessions) == 0 || g.rng.IntN(20) == 0 {
		r, _ := g.apply(&meta.Session{Info: "client " + strconv.Itoa(g.rng.IntN(100)) + g.bytes(3)})
		g.sessions = append(g.sessions, r.Val[0])
	}
	return g.sessions[g.rng.IntN(len(g.sessions))]
}

// step applies one random operation, which may fail.
func (g *gen) step() {
	rng := g.rng
	g.now += uint32(rng.IntN(3))
	if rng.IntN(300) == 0 {
		g.now += meta.InodeReuseDelay // freed inodes become reusable
	}
	if rng.IntN(500) == 0 {
		g.term++
	}
	switch k := rng.IntN(100); {
	case k < 22:
		r, ok := g.apply(&meta.Create{Parent: g.dir(), Name: g.name(), Type: meta.TypeFile,
			Mode: uint16(rng.IntN(0o10000)), UID: rng.Uint32N(70000), GID: rng.Uint32N(70000)})
		g.created(r, ok, false)
	case k < 30:
		r, ok := g.apply(&meta.Create{Parent: g.dir(), Name: g.name(), Type: meta.TypeDir, Mode: 0o755})
		g.created(r, ok, true)
	case k < 33:
		types := []meta.Type{meta.TypeFifo, meta.TypeSocket, meta.TypeChar, meta.TypeBlock}
		r, ok := g.apply(&meta.Create{Parent: g.dir(), Name: g.name(), Type: types[rng.IntN(4)],
			Mode: 0o600, Rdev: rng.Uint32()})
		g.created(r, ok, false)
	case k < 37:
		n := 1 + rng.IntN(60)
		if g.big && rng.IntN(30) == 0 {
			n = meta.MaxLinkLen
		}
		r, ok := g.apply(&meta.Symlink{Parent: g.dir(), Name: g.name(), Target: g.bytes(n), UID: 1, GID: 2})
		g.created(r, ok, false)
	case k < 41:
		g.apply(&meta.Link{Inode: g.inode(), Parent: g.dir(), Name: g.name()})
	case k < 47:
		d, name, _ := g.entry()
		g.apply(&meta.Unlink{Parent: d, Name: name})
	case k < 49:
		d, name, _ := g.entry()
		g.apply(&meta.Rmdir{Parent: d, Name: name})
	case k < 54:
		d, name, _ := g.entry()
		dst := g.name()
		if rng.IntN(3) == 0 { // onto an existing name
			_, dst, _ = g.entry()
		}
		g.apply(&meta.Rename{SrcParent: d, SrcName: name, DstParent: g.dir(), DstName: dst})
	case k < 57:
		g.apply(&meta.SetAttr{Inode: g.inode(), Mask: uint8(rng.IntN(32)), Mode: uint16(rng.IntN(0o10000)),
			UID: rng.Uint32(), GID: rng.Uint32(), Atime: rng.Uint32(), Mtime: rng.Uint32()})
	case k < 59:
		g.apply(&meta.SetGoal{Inode: g.inode(), Goal: uint8(1 + rng.IntN(meta.MaxGoal))})
	case k < 65:
		n := rng.IntN(40)
		if g.big && rng.IntN(40) == 0 {
			n = meta.MaxXattrVal
		}
		g.apply(&meta.SetXattr{Inode: g.inode(), Name: "x" + g.bytes(rng.IntN(2)), Value: g.bytes(n)})
	case k < 67:
		ino := g.inode()
		if names, e := g.s.ListXattr(ino); e == 0 && len(names) > 0 {
			g.apply(&meta.RemoveXattr{Inode: ino, Name: names[rng.IntN(len(names))]})
		}
	case k < 77:
		idx := uint32(rng.IntN(4))
		if rng.IntN(10) == 0 {
			idx = uint32(rng.IntN(3000)) // a sparse file with a long chunk list
		}
		if r, ok := g.apply(&meta.Write{Inode: g.inode(), Index: idx}); ok {
			g.locked = append(g.locked, r.Val[0])
		}
	case k < 82:
		if len(g.locked) > 0 {
			i := rng.IntN(len(g.locked))
			g.apply(&meta.Unlock{Chunk: g.locked[i]})
			g.locked = append(g.locked[:i], g.locked[i+1:]...)
		}
	case k < 85:
		g.apply(&meta.Length{Inode: g.inode(), Size: rng.Uint64N(5 * meta.ChunkSize)})
	case k < 88:
		g.apply(&meta.Truncate{Inode: g.inode(), Size: rng.Uint64N(3 * meta.ChunkSize)})
	case k < 90:
		g.apply(&meta.Open{Session: g.session(), Inode: g.inode()})
	case k < 95: // open, then unlink: the file lives on, nameless
		d, name, de := g.entry()
		if name != "" && de.Type != meta.TypeDir {
			if _, ok := g.apply(&meta.Open{Session: g.session(), Inode: de.Inode}); ok {
				g.apply(&meta.Unlink{Parent: d, Name: name})
			}
		}
	case k < 97:
		ss := g.session()
		if opens, e := g.s.SessionOpens(ss); e == 0 && len(opens) > 0 {
			inos := slices.Sorted(maps.Keys(opens)) // map order would make runs differ
			g.apply(&meta.Release{Session: ss, Inode: inos[rng.IntN(len(inos))]})
		}
	case k < 98:
		if len(g.sessions) > 1 {
			i := rng.IntN(len(g.sessions))
			g.apply(&meta.SessionClose{ID: g.sessions[i]})
			g.sessions = append(g.sessions[:i], g.sessions[i+1:]...)
		}
	default:
		g.apply(&meta.Session{Info: g.bytes(rng.IntN(20))})
	}
}

// randomState is a state after n random operations.
func randomState(tb testing.TB, seed uint64, n int, big bool) *meta.State {
	g := newGen(tb, seed)
	g.big = big
	for range n {
		g.step()
	}
	return g.s
}

// bigState is a tidy file system of n files, 100 to a directory, each with
// one written chunk and some with an xattr: the shape of a real namespace,
// for benchmarks.
func bigState(tb testing.TB, n int) *meta.State {
	g := newGen(tb, 42)
	var dir uint32
	for i := range n {
		if i%100 == 0 {
			r, _ := g.apply(&meta.Create{Parent: meta.RootInode, Name: "d" + strconv.Itoa(i/100), Type: meta.TypeDir, Mode: 0o755})
			dir = uint32(r.Val[0])
		}
		r, ok := g.apply(&meta.Create{Parent: dir, Name: "file-" + strconv.Itoa(i) + ".dat", Type: meta.TypeFile, Mode: 0o644, UID: 1000, GID: 1000})
		if !ok {
			tb.Fatalf("create %d: %v", i, r)
		}
		ino := uint32(r.Val[0])
		w, _ := g.apply(&meta.Write{Inode: ino, Index: 0})
		g.apply(&meta.Unlock{Chunk: w.Val[0]})
		g.apply(&meta.Length{Inode: ino, Size: uint64(i) * 4096 % meta.ChunkSize})
		if i%10 == 0 {
			g.apply(&meta.SetXattr{Inode: ino, Name: "user.tag", Value: "v" + strconv.Itoa(i)})
		}
		g.now += uint32(i & 1)
	}
	return g.s
}

// fixedClock makes dumps reproducible.
func fixedClock() time.Time { return time.Unix(1_700_000_123, 0) }
