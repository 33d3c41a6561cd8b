// Package metagen drives a meta.State with random, mostly successful
// operations, the way a busy master would: files created, written, linked,
// renamed and removed, sessions opening and closing. Tests and benchmarks
// use it to make realistic changelogs and dumps; its randomness is seeded,
// so a workload can be replayed exactly.
package metagen

import (
	"math/rand/v2"
	"strconv"

	"github.com/carpfs/carpfs/internal/meta"
)

// Workload makes entries against one state.
type Workload struct {
	r    *rand.Rand
	s    *meta.State
	Term uint64
	Now  uint32

	dirs  []uint32
	files []uint32 // may hold stale inodes; operations on them just fail
	sess  []uint64
	open  []opened

	pending []uint64     // chunks a Write locked, to unlock later
	queued  []meta.Entry // applied already, to hand out next
}

type opened struct {
	sess uint64
	ino  uint32
}

// New starts a workload on s (usually meta.New) with the given seed.
func New(s *meta.State, seed uint64) *Workload {
	return &Workload{
		r: rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1)), s: s, Term: 1,
		Now: 1_700_000_000, dirs: []uint32{meta.RootInode},
	}
}

// names with bytes a changelog must escape.
var odd = []string{"", " ", "\n", "%", ",", "(x)", "|", "\xff", "é", "\t\x00"[:1]}

func (w *Workload) name() string {
	n := "n" + strconv.Itoa(w.r.IntN(1000))
	if w.r.IntN(4) == 0 {
		n += odd[w.r.IntN(len(odd))]
	}
	return n
}

func (w *Workload) dir() uint32  { return w.dirs[w.r.IntN(len(w.dirs))] }
func (w *Workload) file() uint32 { return w.files[w.r.IntN(len(w.files))] }

func (w *Workload) existing(d uint32) string {
	list, e := w.s.ReadDir(d)
	if e != 0 || len(list) == 0 {
		return w.name()
	}
	return list[w.r.IntN(len(list))].Name
}

func (w *Workload) op() meta.Op {
	r := w.r
	if len(w.files) == 0 {
		return &meta.Create{Parent: w.dir(), Name: w.name(), Type: meta.TypeFile, Mode: 0o644}
	}
	switch k := r.IntN(100); {
	case k < 25:
		return &meta.Create{Parent: w.dir(), Name: w.name(), Type: meta.TypeFile, Mode: 0o644, UID: 1000, GID: 1000}
	case k < 30:
		return &meta.Create{Parent: w.dir(), Name: w.name(), Type: meta.TypeDir, Mode: 0o755}
	case k < 32:
		return &meta.Symlink{Parent: w.dir(), Name: w.name(), Target: "../t" + w.name()}
	case k < 35:
		return &meta.Link{Inode: w.file(), Parent: w.dir(), Name: w.name()}
	case k < 43:
		d := w.dir()
		return &meta.Unlink{Parent: d, Name: w.existing(d)}
	case k < 45:
		d := w.dir()
		return &meta.Rmdir{Parent: d, Name: w.existing(d)}
	case k < 53:
		sd := w.dir()
		return &meta.Rename{SrcParent: sd, SrcName: w.existing(sd), DstParent: w.dir(), DstName: w.name()}
	case k < 56:
		return &meta.SetAttr{Inode: w.file(), Mask: meta.SetMode | meta.SetMtime, Mode: uint16(r.IntN(0o1000)), Mtime: w.Now - 5}
	case k < 58:
		return &meta.SetXattr{Inode: w.file(), Name: "user." + w.name(), Value: w.name()}
	case k < 60:
		return &meta.Truncate{Inode: w.file(), Size: uint64(r.IntN(3 * meta.ChunkSize))}
	case k < 62:
		return &meta.Session{Info: "127.0.0.1:/mnt/" + w.name()}
	case k < 63 && len(w.sess) > 0:
		i := r.IntN(len(w.sess))
		id := w.sess[i]
		w.sess = append(w.sess[:i], w.sess[i+1:]...)
		return &meta.SessionClose{ID: id}
	case k < 70 && len(w.sess) > 0:
		return &meta.Open{Session: w.sess[r.IntN(len(w.sess))], Inode: w.file()}
	case k < 75 && len(w.open) > 0:
		i := r.IntN(len(w.open))
		o := w.open[i]
		w.open = append(w.open[:i], w.open[i+1:]...)
		return &meta.Release{Session: o.sess, Inode: o.ino}
	case k < 88:
		return &meta.Write{Inode: w.file(), Index: uint32(r.IntN(3))}
	case k < 95:
		return &meta.Length{Inode: w.file(), Size: uint64(r.IntN(3 * meta.ChunkSize))}
	default:
		return &meta.SetGoal{Inode: w.dir(), Goal: uint8(1 + r.IntN(3))}
	}
}

// Next applies operations until one succeeds and returns its entry, ready
// to be logged. Chunks a Write locks are unlocked by a later entry.
func (w *Workload) Next() meta.Entry {
	if len(w.queued) > 0 {
		e := w.queued[0]
		w.queued = w.queued[1:]
		return e
	}
	for {
		w.Now += uint32(w.r.IntN(2))
		op := w.op()
		e := meta.Entry{Version: w.s.Version() + 1, Term: w.Term, Time: w.Now, Op: op}
		res, err := w.s.Apply(&e)
		if err != nil {
			panic("metagen: " + err.Error()) // a bug in the workload itself
		}
		if !res.Ok() {
			continue
		}
		e.Result = res
		w.note(op, res)
		return e
	}
}

// note remembers what op made, and now and then ends a write session.
func (w *Workload) note(op meta.Op, res meta.Result) {
	switch o := op.(type) {
	case *meta.Create:
		if o.Type == meta.TypeDir {
			w.dirs = append(w.dirs, uint32(res.Val[0]))
		} else {
			w.files = append(w.files, uint32(res.Val[0]))
		}
	case *meta.Session:
		w.sess = append(w.sess, res.Val[0])
	case *meta.Open:
		w.open = append(w.open, opened{o.Session, o.Inode})
	case *meta.Write:
		w.pending = append(w.pending, res.Val[0])
	}
	if len(w.pending) > 0 && w.r.IntN(2) == 0 {
		id := w.pending[0]
		w.pending = w.pending[1:]
		e := meta.Entry{Version: w.s.Version() + 1, Term: w.Term, Time: w.Now, Op: &meta.Unlock{Chunk: id}}
		if res, err := w.s.Apply(&e); err == nil && res.Ok() {
			e.Result = res
			w.queued = append(w.queued, e)
		}
	}
}
