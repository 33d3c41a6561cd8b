package meta

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// The model is a deliberately naive file system: objects hold pointers to
// their entries, link counts are recomputed by walking the whole tree, and
// nothing is indexed. meta.State must agree with it on every result, errors
// included, and on the whole tree.

type mobj struct {
	id                  int
	typ                 Type
	mode                uint16
	uid, gid            uint32
	atime, mtime, ctime uint32
	size                uint64
	rdev                uint32
	goal                uint8
	target              string
	xattrs              map[string]string
	entries             map[string]*mobj // directories
	parent              *mobj            // directories
	chunks              []*mchunk        // files; nil entry = hole
	opens               int
	dead                bool
}

type mchunk struct {
	id      uint64
	version uint32
	locked  bool
}

type model struct {
	root      *mobj
	objs      []*mobj // every object ever made, dead ones too
	nextChunk uint64
	nextSess  uint64
	sessions  map[uint64]map[*mobj]int
}

func newModel(t uint32) *model {
	r := &mobj{typ: TypeDir, mode: 0o755, goal: DefaultGoal, atime: t, mtime: t, ctime: t, entries: map[string]*mobj{}}
	r.parent = r
	return &model{root: r, objs: []*mobj{r}, nextChunk: 1, nextSess: 1, sessions: map[uint64]map[*mobj]int{}}
}

// links counts the names of o by walking the whole tree.
func (m *model) links(o *mobj) int {
	n := 0
	var walk func(d *mobj)
	walk = func(d *mobj) {
		for _, c := range d.entries {
			if c == o {
				n++
			}
			if c.typ == TypeDir {
				walk(c)
			}
		}
	}
	walk(m.root)
	return n
}

func (m *model) nlink(o *mobj) uint32 {
	if o.typ != TypeDir {
		return uint32(m.links(o))
	}
	n := uint32(2)
	for _, c := range o.entries {
		if c.typ == TypeDir {
			n++
		}
	}
	return n
}

func (m *model) live(o *mobj) bool { return o != nil && !o.dead }

func (m *model) dirOf(o *mobj) syscall.Errno {
	if !m.live(o) {
		return syscall.ENOENT
	}
	if o.typ != TypeDir {
		return syscall.ENOTDIR
	}
	return 0
}

func validName(n string) syscall.Errno {
	if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00") {
		return syscall.EINVAL
	}
	if len(n) > 255 {
		return syscall.ENAMETOOLONG
	}
	return 0
}

// maybeFree kills an object nothing names or holds any more.
func (m *model) maybeFree(o *mobj) {
	if o.typ != TypeDir && m.links(o) == 0 && o.opens == 0 {
		o.dead = true
	}
}

func (m *model) create(p *mobj, name string, o *mobj, t uint32) syscall.Errno {
	o.atime, o.mtime, o.ctime = t, t, t
	o.goal = p.goal
	if o.typ == TypeDir {
		o.entries = map[string]*mobj{}
		o.parent = p
	}
	o.id = len(m.objs)
	m.objs = append(m.objs, o)
	p.entries[name] = o
	p.mtime, p.ctime = t, t
	return 0
}

// step runs one operation on the model. obj maps operation inodes back to
// model objects.
func (m *model) step(op Op, t uint32, obj func(uint32) *mobj) (Result, *mobj) {
	switch o := op.(type) {
	case *Create:
		p := obj(o.Parent)
		if e := m.dirOf(p); e != 0 {
			return fail(e), nil
		}
		if e := validName(o.Name); e != 0 {
			return fail(e), nil
		}
		if o.Type == TypeNone || o.Type == TypeSymlink || o.Type > TypeBlock || o.Mode > 0o7777 {
			return fail(syscall.EINVAL), nil
		}
		if p.entries[o.Name] != nil {
			return fail(syscall.EEXIST), nil
		}
		n := &mobj{typ: o.Type, mode: o.Mode, uid: o.UID, gid: o.GID}
		if o.Type == TypeChar || o.Type == TypeBlock {
			n.rdev = o.Rdev
		}
		m.create(p, o.Name, n, t)
		return ok1(0), n
	case *Symlink:
		p := obj(o.Parent)
		if e := m.dirOf(p); e != 0 {
			return fail(e), nil
		}
		if e := validName(o.Name); e != 0 {
			return fail(e), nil
		}
		if o.Target == "" {
			return fail(syscall.ENOENT), nil
		}
		if len(o.Target) > MaxLinkLen {
			return fail(syscall.ENAMETOOLONG), nil
		}
		if p.entries[o.Name] != nil {
			return fail(syscall.EEXIST), nil
		}
		n := &mobj{typ: TypeSymlink, mode: 0o777, uid: o.UID, gid: o.GID, target: o.Target, size: uint64(len(o.Target))}
		m.create(p, o.Name, n, t)
		return ok1(0), n
	case *Link:
		n, p := obj(o.Inode), obj(o.Parent)
		if !m.live(n) || (n.typ != TypeDir && m.links(n) == 0) {
			return fail(syscall.ENOENT), nil
		}
		if e := m.dirOf(p); e != 0 {
			return fail(e), nil
		}
		if n.typ == TypeDir {
			return fail(syscall.EPERM), nil
		}
		if e := validName(o.Name); e != 0 {
			return fail(e), nil
		}
		if p.entries[o.Name] != nil {
			return fail(syscall.EEXIST), nil
		}
		p.entries[o.Name] = n
		n.ctime = t
		p.mtime, p.ctime = t, t
		return ok0(), nil
	case *Unlink:
		p := obj(o.Parent)
		if e := m.dirOf(p); e != 0 {
			return fail(e), nil
		}
		if e := validName(o.Name); e != 0 {
			return fail(e), nil
		}
		c := p.entries[o.Name]
		if c == nil {
			return fail(syscall.ENOENT), nil
		}
		if c.typ == TypeDir {
			return fail(syscall.EISDIR), nil
		}
		delete(p.entries, o.Name)
		p.mtime, p.ctime = t, t
		c.ctime = t
		m.maybeFree(c)
		return ok0(), nil
	case *Rmdir:
		p := obj(o.Parent)
		if e := m.dirOf(p); e != 0 {
			return fail(e), nil
		}
		if e := validName(o.Name); e != 0 {
			return fail(e), nil
		}
		c := p.entries[o.Name]
		if c == nil {
			return fail(syscall.ENOENT), nil
		}
		if c.typ != TypeDir {
			return fail(syscall.ENOTDIR), nil
		}
		if len(c.entries) > 0 {
			return fail(syscall.ENOTEMPTY), nil
		}
		delete(p.entries, o.Name)
		p.mtime, p.ctime = t, t
		c.dead = true
		return ok0(), nil
	case *Rename:
		sp, dp := obj(o.SrcParent), obj(o.DstParent)
		if e := m.dirOf(sp); e != 0 {
			return fail(e), nil
		}
		if e := m.dirOf(dp); e != 0 {
			return fail(e), nil
		}
		if e := validName(o.SrcName); e != 0 {
			return fail(e), nil
		}
		if e := validName(o.DstName); e != 0 {
			return fail(e), nil
		}
		src := sp.entries[o.SrcName]
		if src == nil {
			return fail(syscall.ENOENT), nil
		}
		if src.typ == TypeDir {
			for d := dp; ; d = d.parent {
				if d == src {
					return fail(syscall.EINVAL), nil
				}
				if d == m.root {
					break
				}
			}
		}
		dst := dp.entries[o.DstName]
		if dst == src {
			return ok0(), nil
		}
		if dst != nil {
			switch {
			case src.typ == TypeDir && dst.typ != TypeDir:
				return fail(syscall.ENOTDIR), nil
			case src.typ != TypeDir && dst.typ == TypeDir:
				return fail(syscall.EISDIR), nil
			case dst.typ == TypeDir && len(dst.entries) > 0:
				return fail(syscall.ENOTEMPTY), nil
			}
		}
		delete(sp.entries, o.SrcName)
		dp.entries[o.DstName] = src
		if dst != nil {
			dst.ctime = t
			if dst.typ == TypeDir {
				dst.dead = true
			} else {
				m.maybeFree(dst)
			}
		}
		if src.typ == TypeDir {
			src.parent = dp
		}
		src.ctime = t
		sp.mtime, sp.ctime, dp.mtime, dp.ctime = t, t, t, t
		return ok0(), nil
	case *SetAttr:
		n := obj(o.Inode)
		if !m.live(n) {
			return fail(syscall.ENOENT), nil
		}
		if o.Mask&^uint8(setAll) != 0 || o.Mode > 0o7777 {
			return fail(syscall.EINVAL), nil
		}
		if o.Mask&SetMode != 0 {
			n.mode = o.Mode
		}
		if o.Mask&SetUID != 0 {
			n.uid = o.UID
		}
		if o.Mask&SetGID != 0 {
			n.gid = o.GID
		}
		if o.Mask&SetAtime != 0 {
			n.atime = o.Atime
		}
		if o.Mask&SetMtime != 0 {
			n.mtime = o.Mtime
		}
		n.ctime = t
		return ok0(), nil
	case *Truncate:
		n := obj(o.Inode)
		switch {
		case !m.live(n):
			return fail(syscall.ENOENT), nil
		case n.typ == TypeDir:
			return fail(syscall.EISDIR), nil
		case n.typ != TypeFile:
			return fail(syscall.EINVAL), nil
		case o.Size > MaxFileSize:
			return fail(syscall.EFBIG), nil
		}
		// Chunks wholly past the new end go; the one the new end cuts
		// through gets a new version. Both refuse while locked.
		var gone []int
		cut := -1
		for i, c := range n.chunks {
			if c == nil {
				continue
			}
			start := uint64(i) * ChunkSize
			if start >= o.Size {
				gone = append(gone, i)
			} else if o.Size < n.size && o.Size < start+ChunkSize {
				cut = i
			}
		}
		for _, i := range gone {
			if n.chunks[i].locked {
				return fail(syscall.EBUSY), nil
			}
		}
		if cut >= 0 && n.chunks[cut].locked {
			return fail(syscall.EBUSY), nil
		}
		if cut >= 0 {
			n.chunks[cut].version++
		}
		for _, i := range gone {
			n.chunks[i] = nil
		}
		for len(n.chunks) > 0 && n.chunks[len(n.chunks)-1] == nil {
			n.chunks = n.chunks[:len(n.chunks)-1]
		}
		n.size = o.Size
		n.mtime, n.ctime = t, t
		return ok0(), nil
	case *SetXattr:
		n := obj(o.Inode)
		switch {
		case !m.live(n):
			return fail(syscall.ENOENT), nil
		case o.Name == "" || o.Flags == 3 || o.Flags > 3:
			return fail(syscall.EINVAL), nil
		case len(o.Name) > MaxXattrName:
			return fail(syscall.ERANGE), nil
		case len(o.Value) > MaxXattrVal:
			return fail(syscall.E2BIG), nil
		}
		_, has := n.xattrs[o.Name]
		if has && o.Flags == XattrCreate {
			return fail(syscall.EEXIST), nil
		}
		if !has && o.Flags == XattrReplace {
			return fail(syscall.ENODATA), nil
		}
		if n.xattrs == nil {
			n.xattrs = map[string]string{}
		}
		n.xattrs[o.Name] = o.Value
		n.ctime = t
		return ok0(), nil
	case *RemoveXattr:
		n := obj(o.Inode)
		if !m.live(n) {
			return fail(syscall.ENOENT), nil
		}
		if _, has := n.xattrs[o.Name]; !has {
			return fail(syscall.ENODATA), nil
		}
		delete(n.xattrs, o.Name)
		n.ctime = t
		return ok0(), nil
	case *SetGoal:
		n := obj(o.Inode)
		if !m.live(n) {
			return fail(syscall.ENOENT), nil
		}
		if o.Goal < 1 || o.Goal > MaxGoal {
			return fail(syscall.EINVAL), nil
		}
		n.goal = o.Goal
		n.ctime = t
		return ok0(), nil
	case *Session:
		id := m.nextSess
		m.nextSess++
		m.sessions[id] = map[*mobj]int{}
		return ok1(id), nil
	case *SessionClose:
		ss, ok := m.sessions[o.ID]
		if !ok {
			return fail(syscall.EBADF), nil
		}
		delete(m.sessions, o.ID)
		for n, c := range ss {
			n.opens -= c
			m.maybeFree(n)
		}
		return ok0(), nil
	case *Open:
		ss, ok := m.sessions[o.Session]
		if !ok {
			return fail(syscall.EBADF), nil
		}
		n := obj(o.Inode)
		if !m.live(n) {
			return fail(syscall.ENOENT), nil
		}
		if n.typ == TypeDir {
			return fail(syscall.EISDIR), nil
		}
		ss[n]++
		n.opens++
		return ok0(), nil
	case *Release:
		ss, ok := m.sessions[o.Session]
		if !ok {
			return fail(syscall.EBADF), nil
		}
		n := obj(o.Inode)
		if n == nil || ss[n] == 0 {
			return fail(syscall.EINVAL), nil
		}
		if ss[n]--; ss[n] == 0 {
			delete(ss, n)
		}
		n.opens--
		m.maybeFree(n)
		return ok0(), nil
	case *Write:
		n := obj(o.Inode)
		switch {
		case !m.live(n):
			return fail(syscall.ENOENT), nil
		case n.typ != TypeFile:
			return fail(syscall.EINVAL), nil
		case uint64(o.Index) >= MaxFileSize/ChunkSize:
			return fail(syscall.EFBIG), nil
		}
		if int(o.Index) < len(n.chunks) && n.chunks[o.Index] != nil {
			c := n.chunks[o.Index]
			if c.locked {
				return fail(syscall.EBUSY), nil
			}
			c.version++
			c.locked = true
			return ok2(c.id, uint64(c.version)), nil
		}
		for len(n.chunks) <= int(o.Index) {
			n.chunks = append(n.chunks, nil)
		}
		c := &mchunk{id: m.nextChunk, version: 1, locked: true}
		m.nextChunk++
		n.chunks[o.Index] = c
		return ok2(c.id, 1), nil
	case *Unlock:
		c := m.findChunk(o.Chunk)
		if c == nil {
			return fail(syscall.ENOENT), nil
		}
		if !c.locked {
			return fail(syscall.EINVAL), nil
		}
		c.locked = false
		return ok0(), nil
	case *Length:
		n := obj(o.Inode)
		switch {
		case !m.live(n):
			return fail(syscall.ENOENT), nil
		case n.typ != TypeFile:
			return fail(syscall.EINVAL), nil
		case o.Size > MaxFileSize:
			return fail(syscall.EFBIG), nil
		}
		n.size = max(n.size, o.Size)
		n.mtime, n.ctime = t, t
		return ok0(), nil
	}
	panic(fmt.Sprintf("model: no rule for %T", op))
}

func (m *model) findChunk(id uint64) *mchunk {
	for _, o := range m.objs {
		if o.dead {
			continue
		}
		for _, c := range o.chunks {
			if c != nil && c.id == id {
				return c
			}
		}
	}
	return nil
}

// names with odd bytes, few enough that they collide often.
var oddNames = []string{
	"a", "b", "c", "dir", "file", "x y", "new\nline", "tab\there", "%41", "comma,", "(paren)",
	"pipe|", "\xff\xfe", "ünï", "\x01\x7f", "-", "...", "a b c", "\"q\"", "\\",
}

type gen struct {
	r    *rand.Rand
	m    *model
	ino  map[*mobj]uint32 // model object -> meta inode
	objs map[uint32]*mobj // live meta inode -> model object
	sids []uint64
	// reused counts inode numbers handed out a second time.
	reused int
}

func (g *gen) inodeOf(o *mobj) uint32 {
	if i, ok := g.ino[o]; ok {
		return i
	}
	return 0xfffff000 // an inode no object ever had
}

func (g *gen) pick() *mobj {
	objs := g.m.objs
	if g.r.IntN(10) == 0 {
		return objs[g.r.IntN(len(objs))] // maybe dead
	}
	for range 8 {
		o := objs[g.r.IntN(len(objs))]
		if !o.dead {
			return o
		}
	}
	return g.m.root
}

func (g *gen) pickDir() *mobj {
	for range 8 {
		if o := g.pick(); o.typ == TypeDir || g.r.IntN(20) == 0 {
			return o
		}
	}
	return g.m.root
}

func (g *gen) name() string {
	switch g.r.IntN(60) {
	case 0:
		return ""
	case 1:
		return "."
	case 2:
		return ".."
	case 3:
		return "a/b"
	case 4:
		return strings.Repeat("n", 256)
	case 5:
		return "nul\x00"
	}
	return oddNames[g.r.IntN(len(oddNames))]
}

// existingName picks a name that exists in d most of the time.
func (g *gen) existingName(d *mobj) string {
	if d.entries != nil && len(d.entries) > 0 && g.r.IntN(4) != 0 {
		names := make([]string, 0, len(d.entries))
		for n := range d.entries {
			names = append(names, n)
		}
		slices.Sort(names)
		return names[g.r.IntN(len(names))]
	}
	return g.name()
}

func (g *gen) op() Op {
	r := g.r
	switch k := r.IntN(100); {
	case k < 22:
		types := []Type{TypeFile, TypeFile, TypeDir, TypeDir, TypeFifo, TypeSocket, TypeChar, TypeBlock}
		typ := types[r.IntN(len(types))]
		if r.IntN(200) == 0 {
			typ = TypeSymlink // invalid for Create
		}
		mode := uint16(r.IntN(0o10000))
		if r.IntN(200) == 0 {
			mode = 0o10000
		}
		return &Create{Parent: g.inodeOf(g.pickDir()), Name: g.name(), Type: typ, Mode: mode,
			UID: uint32(r.IntN(3)), GID: uint32(r.IntN(3)), Rdev: uint32(r.IntN(1 << 20))}
	case k < 26:
		target := []string{"", "t", "../x", "a\nb", strings.Repeat("y", 4096)}[r.IntN(5)]
		return &Symlink{Parent: g.inodeOf(g.pickDir()), Name: g.name(), Target: target, UID: 1, GID: 2}
	case k < 31:
		return &Link{Inode: g.inodeOf(g.pick()), Parent: g.inodeOf(g.pickDir()), Name: g.name()}
	case k < 41:
		d := g.pickDir()
		return &Unlink{Parent: g.inodeOf(d), Name: g.existingName(d)}
	case k < 46:
		d := g.pickDir()
		return &Rmdir{Parent: g.inodeOf(d), Name: g.existingName(d)}
	case k < 58:
		sd, dd := g.pickDir(), g.pickDir()
		return &Rename{SrcParent: g.inodeOf(sd), SrcName: g.existingName(sd), DstParent: g.inodeOf(dd), DstName: g.existingName(dd)}
	case k < 62:
		return &SetAttr{Inode: g.inodeOf(g.pick()), Mask: uint8(r.IntN(40)), Mode: uint16(r.IntN(0o10001)),
			UID: uint32(r.IntN(5)), GID: uint32(r.IntN(5)), Atime: r.Uint32(), Mtime: r.Uint32()}
	case k < 66:
		sizes := []uint64{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 7, 3*ChunkSize + 1, MaxFileSize + 1}
		return &Truncate{Inode: g.inodeOf(g.pick()), Size: sizes[r.IntN(len(sizes))]}
	case k < 71:
		names := []string{"user.a", "user.b", "security.x", "", strings.Repeat("z", 256)}
		vals := []string{"", "v", "\x00\xff", strings.Repeat("w", MaxXattrVal+1)}
		return &SetXattr{Inode: g.inodeOf(g.pick()), Name: names[r.IntN(len(names))], Value: vals[r.IntN(len(vals))], Flags: uint8(r.IntN(4))}
	case k < 73:
		return &RemoveXattr{Inode: g.inodeOf(g.pick()), Name: []string{"user.a", "user.b", "nope"}[r.IntN(3)]}
	case k < 75:
		return &SetGoal{Inode: g.inodeOf(g.pick()), Goal: uint8(r.IntN(11))}
	case k < 77:
		return &Session{Info: g.name()}
	case k < 78:
		return &SessionClose{ID: g.sid()}
	case k < 83:
		return &Open{Session: g.sid(), Inode: g.inodeOf(g.pick())}
	case k < 87:
		return &Release{Session: g.sid(), Inode: g.inodeOf(g.pick())}
	case k < 93:
		return &Write{Inode: g.inodeOf(g.pick()), Index: []uint32{0, 0, 1, 2, 5, 1 << 31}[r.IntN(6)]}
	case k < 97:
		return &Unlock{Chunk: uint64(r.IntN(int(g.m.nextChunk) + 2))}
	default:
		return &Length{Inode: g.inodeOf(g.pick()), Size: uint64(r.Int64N(5 * ChunkSize))}
	}
}

func (g *gen) sid() uint64 {
	if len(g.sids) == 0 || g.r.IntN(10) == 0 {
		return uint64(g.r.IntN(4))
	}
	return g.sids[g.r.IntN(len(g.sids))]
}

// runModel applies n random operations to a State and the model, checking
// every result and, every check operations, the whole tree. It returns the
// state and the entries that succeeded.
func runModel(t testing.TB, seed uint64, n, check int) (*State, []Entry, *gen) {
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b9)), ino: map[*mobj]uint32{}, objs: map[uint32]*mobj{}}
	now := uint32(1_700_000_000)
	s := New(42, now)
	g.m = newModel(now)
	g.ino[g.m.root], g.objs[RootInode] = RootInode, g.m.root
	obj := func(ino uint32) *mobj { return g.objs[ino] }
	var log []Entry
	for i := 0; i < n; i++ {
		now += uint32(g.r.IntN(10)) // past InodeReuseDelay within a run: numbers get reused
		op := g.op()
		e := Entry{Version: s.Version() + 1, Term: 1 + uint64(i/(n/3+1)), Time: now, Op: op}
		got, err := s.Apply(&e)
		if err != nil {
			t.Fatalf("seed %d op %d %s: %v", seed, i, op.OpName(), err)
		}
		want, made := g.m.step(op, now, obj)
		if made != nil && got.Ok() {
			ino := uint32(got.Val[0])
			if old, ok := g.objs[ino]; ok && !old.dead {
				t.Fatalf("seed %d op %d: %s handed out inode %d, still used", seed, i, op.OpName(), ino)
			}
			if old, ok := g.objs[ino]; ok {
				delete(g.ino, old) // reused number: the dead object has none now
				g.reused++
			}
			g.ino[made], g.objs[ino] = ino, made
			want = ok1(uint64(ino))
		}
		if _, ok := op.(*Session); ok && got.Ok() {
			g.sids = append(g.sids, got.Val[0])
		}
		if got != want {
			t.Fatalf("seed %d op %d %s %+v: meta gave %v, model %v", seed, i, op.OpName(), op, got, want)
		}
		if got.Ok() {
			e.Result = got
			log = append(log, e)
		}
		if (i+1)%check == 0 || i == n-1 {
			compare(t, fmt.Sprintf("seed %d after op %d", seed, i), s, g)
		}
	}
	return s, log, g
}

// compare checks the whole tree of s against the model.
func compare(t testing.TB, where string, s *State, g *gen) {
	t.Helper()
	var files, dirs, chunks, sustained uint64
	for _, o := range g.m.objs {
		if o.dead {
			continue
		}
		ino, ok := g.ino[o]
		if !ok {
			t.Fatalf("%s: live model object %d has no inode", where, o.id)
		}
		a, e := s.GetAttr(ino)
		if e != 0 {
			t.Fatalf("%s: inode %d: %v", where, ino, e)
		}
		if ino >= s.InodeLimit() {
			t.Fatalf("%s: live inode %d is not below InodeLimit %d", where, ino, s.InodeLimit())
		}
		want := Attr{Inode: ino, Type: o.typ, Mode: o.mode, UID: o.uid, GID: o.gid, Atime: o.atime,
			Mtime: o.mtime, Ctime: o.ctime, Nlink: g.m.nlink(o), Size: o.size, Rdev: o.rdev, Goal: o.goal}
		if o.typ == TypeDir {
			want.Size = uint64(len(o.entries))
			dirs++
			list, _ := s.ReadDir(ino)
			if len(list) != len(o.entries) {
				t.Fatalf("%s: dir %d has %d entries, model %d", where, ino, len(list), len(o.entries))
			}
			for _, de := range list {
				c := o.entries[de.Name]
				if c == nil || g.ino[c] != de.Inode || c.typ != de.Type {
					t.Fatalf("%s: dir %d entry %q -> %d, model disagrees", where, ino, de.Name, de.Inode)
				}
			}
		} else {
			files++
			if want.Nlink == 0 {
				sustained++
			}
		}
		if a != want {
			t.Fatalf("%s: inode %d attr\n got %+v\nwant %+v", where, ino, a, want)
		}
		if o.typ == TypeSymlink {
			if tg, _ := s.ReadLink(ino); tg != o.target {
				t.Fatalf("%s: symlink %d target %q, model %q", where, ino, tg, o.target)
			}
		}
		names, _ := s.ListXattr(ino)
		if len(names) != len(o.xattrs) {
			t.Fatalf("%s: inode %d has xattrs %q, model %v", where, ino, names, o.xattrs)
		}
		for _, nm := range names {
			if v, _ := s.GetXattr(ino, nm); v != o.xattrs[nm] {
				t.Fatalf("%s: inode %d xattr %q differs", where, ino, nm)
			}
		}
		if o.typ == TypeFile {
			cs, _ := s.FileChunks(ino)
			if len(cs) != len(o.chunks) {
				t.Fatalf("%s: file %d has %d chunk slots, model %d", where, ino, len(cs), len(o.chunks))
			}
			for i, c := range o.chunks {
				w := ChunkRef{}
				if c != nil {
					w = ChunkRef{ID: c.id, Version: c.version, Locked: c.locked}
					chunks++
					if v, ok := s.ChunkVersion(c.id); !ok || v != c.version {
						t.Fatalf("%s: ChunkVersion(%d) = %d %v, model %d", where, c.id, v, ok, c.version)
					}
				}
				if cs[i] != w {
					t.Fatalf("%s: file %d chunk %d is %+v, model %+v", where, ino, i, cs[i], w)
				}
			}
		}
	}
	for ino, o := range g.objs {
		if o.dead && g.ino[o] == ino {
			if _, e := s.GetAttr(ino); e != syscall.ENOENT {
				t.Fatalf("%s: inode %d should be gone", where, ino)
			}
		}
	}
	st := s.Stats()
	want := Stats{Files: files, Dirs: dirs, Chunks: chunks, Sessions: uint64(len(g.m.sessions)), Sustained: sustained}
	if st != want {
		t.Fatalf("%s: stats %+v, model %+v", where, st, want)
	}
	if err := check(s); err != nil {
		t.Fatalf("%s: invariants: %v", where, err)
	}
}

// TestModel: at least 100,000 random operations over several seeds agree
// with the naive model, errors included.
func TestModel(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5}
	ops := 25_000
	if testing.Short() {
		ops = 5_000
	}
	total := 0
	for _, seed := range seeds {
		_, log, g := runModel(t, seed, ops, 1000)
		total += ops
		if !testing.Short() && g.reused == 0 {
			t.Fatalf("seed %d: no inode number was reused; the reuse path went untested", seed)
		}
		if len(log) < ops/5 {
			t.Fatalf("seed %d: only %d of %d operations succeeded; the generator is too weak", seed, len(log), ops)
		}
	}
	t.Logf("%d operations over %d seeds agree with the model", total, len(seeds))
}

// TestModelCachedListings runs the model with every directory's sorted
// listing kept between checks: a change to a directory that failed to
// drop its listing would show as a stale ReadDir.
func TestModelCachedListings(t *testing.T) {
	defer func(n int) { listingMinEntries = n }(listingMinEntries)
	listingMinEntries = 0
	for _, seed := range []uint64{11, 12} {
		runModel(t, seed, 5_000, 50)
	}
}
