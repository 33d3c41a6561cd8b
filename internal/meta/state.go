package meta

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
)

// Type is the kind of an inode.
type Type uint8

// Inode types. TypeNone marks a free inode slot.
const (
	TypeNone Type = iota
	TypeFile
	TypeDir
	TypeSymlink
	TypeFifo
	TypeSocket
	TypeChar
	TypeBlock
)

const typeLetters = "-fdlpscb"

// Letter is the one-letter name used in changelogs: f d l p s c b.
func (t Type) Letter() string {
	if int(t) < len(typeLetters) && t != TypeNone {
		return typeLetters[t : t+1]
	}
	return "?"
}

// TypeFromLetter parses a Letter.
func TypeFromLetter(s string) (Type, bool) {
	if len(s) == 1 {
		for i := 1; i < len(typeLetters); i++ {
			if typeLetters[i] == s[0] {
				return Type(i), true
			}
		}
	}
	return TypeNone, false
}

// Limits of the namespace.
const (
	RootInode    = 1
	ChunkSize    = 64 << 20
	MaxFileSize  = ChunkSize << 31 // 128 PiB, as MooseFS
	MaxNameLen   = 255
	MaxLinkLen   = 4095
	MaxLinks     = 65000
	MaxXattrName = 255
	MaxXattrVal  = 65536
	MaxGoal      = 9
	DefaultGoal  = 2
	// InodeReuseDelay is how long a freed inode number rests before it is
	// handed out again, so clients holding the old one cannot confuse them.
	InodeReuseDelay = 86400
	maxInode        = 1<<32 - 1
)

// node is one inode. It is kept small because there is one per file: 40
// bytes, in one slice indexed by inode number.
type node struct {
	size                uint64 // regular file length; rdev for devices
	uid, gid            uint32
	atime, mtime, ctime uint32
	nlink               uint32
	parent              uint32 // directories only
	mode                uint16 // permission bits, 07777
	typ                 Type
	goal                uint8
}

type chunk struct {
	version uint32
	locked  bool
}

type freeInode struct {
	inode uint32
	at    uint32 // time it was freed
}

type session struct {
	info  string
	opens map[uint32]uint32 // inode -> times opened
}

// State is the whole namespace of one file system. It is not safe for
// concurrent use; the master serializes Apply and guards reads.
type State struct {
	metaid  uint64
	version uint64
	term    uint64

	nodes     nodeTable // by inode; node 0 unused
	freeq     []freeInode
	freeHead  int
	dirs      map[uint32]map[string]uint32
	symlinks  map[uint32]string
	files     map[uint32][]uint64 // chunk ids by index, 0 = hole
	chunks    map[uint64]chunk
	xattrs    map[uint32]map[string]string
	sessions  map[uint64]*session
	held      map[uint32]uint32 // inode -> opens over all sessions
	nextChunk uint64
	nextSess  uint64
	nfiles    uint64 // live inodes other than directories
	ndirs     uint64
	listings  *listings // directories in name order, see ReadDir
}

// New returns an empty file system with only the root directory, owned by
// root, mode 0755, created at time t.
func New(metaid uint64, t uint32) *State {
	s := newEmpty(metaid)
	*s.nodes.at(s.nodes.add()) = node{
		typ: TypeDir, mode: 0o755, nlink: 2, parent: RootInode, goal: DefaultGoal,
		atime: t, mtime: t, ctime: t,
	}
	s.dirs[RootInode] = map[string]uint32{}
	s.ndirs = 1
	return s
}

func newEmpty(metaid uint64) *State {
	s := &State{
		metaid:    metaid,
		dirs:      map[uint32]map[string]uint32{},
		symlinks:  map[uint32]string{},
		files:     map[uint32][]uint64{},
		chunks:    map[uint64]chunk{},
		xattrs:    map[uint32]map[string]string{},
		sessions:  map[uint64]*session{},
		held:      map[uint32]uint32{},
		nextChunk: 1,
		nextSess:  1,
		listings:  &listings{},
	}
	s.nodes.add() // inode 0 is never used
	return s
}

// MetaID is the file system's identity; every peer checks it.
func (s *State) MetaID() uint64 { return s.metaid }

// Version is the version of the last entry applied.
func (s *State) Version() uint64 { return s.version }

// Term is the term of the last entry applied.
func (s *State) Term() uint64 { return s.term }

// Errors Apply returns for entries that cannot be applied at all (as opposed
// to operations that fail with an errno).
var (
	ErrVersion        = errors.New("version out of sequence")
	ErrTerm           = errors.New("term went backwards")
	ErrResultMismatch = errors.New("result differs from the recorded one")
)

// Apply runs e's operation at e's version. An operation that fails returns
// its errno and leaves the state exactly as it was, version included; an
// error means the entry does not fit this state at all.
func (s *State) Apply(e *Entry) (Result, error) {
	if e.Version != s.version+1 {
		return Result{}, fmt.Errorf("%w: state is at %d, entry is %d", ErrVersion, s.version, e.Version)
	}
	if e.Term < s.term {
		return Result{}, fmt.Errorf("%w: state has term %d, entry %d has term %d", ErrTerm, s.term, e.Version, e.Term)
	}
	if e.Op == nil {
		return Result{}, fmt.Errorf("entry %d: no operation", e.Version)
	}
	r := e.Op.apply(s, e.Time)
	if r.Ok() {
		s.version, s.term = e.Version, e.Term
	}
	return r, nil
}

// Replay applies a logged entry and checks that it gives the recorded
// result. After an error the state may hold part of the entry and must be
// thrown away.
func (s *State) Replay(e *Entry) error {
	r, err := s.Apply(e)
	if err != nil {
		return err
	}
	if r != e.Result {
		return fmt.Errorf("%w: entry %d %s: recorded %v, replay gave %v", ErrResultMismatch, e.Version, e.Op.OpName(), e.Result, r)
	}
	return nil
}

// SetVersion moves an empty state's version, for a file system formatted to
// start at a given point. It fails once anything was applied.
func (s *State) SetVersion(version, term uint64) error {
	if s.version != 0 || s.nodes.len() != 2 {
		return errors.New("set version: state is not freshly formatted")
	}
	s.version, s.term = version, term
	return nil
}

func (s *State) live(ino uint32) *node {
	if ino == 0 || int(ino) >= s.nodes.len() || s.nodes.at(ino).typ == TypeNone {
		return nil
	}
	return s.nodes.at(ino)
}

func (s *State) dir(ino uint32) (*node, map[string]uint32, syscall.Errno) {
	n := s.live(ino)
	if n == nil {
		return nil, nil, syscall.ENOENT
	}
	if n.typ != TypeDir {
		return nil, nil, syscall.ENOTDIR
	}
	return n, s.dirs[ino], 0
}

func checkName(name string) syscall.Errno {
	switch {
	case name == "" || name == "." || name == "..":
		return syscall.EINVAL
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return syscall.EINVAL
		}
	}
	return 0
}

// allocInode hands out the oldest inode number freed long enough ago, or a
// new one. It is deterministic: it reads only the state and the entry time.
func (s *State) allocInode(t uint32) (uint32, bool) {
	if s.freeHead < len(s.freeq) {
		f := s.freeq[s.freeHead]
		if uint64(f.at)+InodeReuseDelay <= uint64(t) {
			s.freeq[s.freeHead] = freeInode{}
			s.freeHead++
			if s.freeHead == len(s.freeq) {
				s.freeq, s.freeHead = s.freeq[:0], 0
			} else if s.freeHead >= 1024 && s.freeHead*2 >= len(s.freeq) {
				s.freeq = append(s.freeq[:0], s.freeq[s.freeHead:]...)
				s.freeHead = 0
			}
			return f.inode, true
		}
	}
	if s.nodes.len() > maxInode {
		return 0, false
	}
	return s.nodes.add(), true
}

// freeNode drops an inode that has no links and no opens left, with its
// chunks, xattrs and symlink target.
func (s *State) freeNode(ino uint32, t uint32) {
	n := s.nodes.at(ino)
	switch n.typ {
	case TypeDir:
		delete(s.dirs, ino)
		s.listings.changed(ino)
		s.ndirs--
	default:
		s.nfiles--
	}
	if n.typ == TypeSymlink {
		delete(s.symlinks, ino)
	}
	if ids, ok := s.files[ino]; ok {
		for _, id := range ids {
			if id != 0 {
				delete(s.chunks, id)
			}
		}
		delete(s.files, ino)
	}
	delete(s.xattrs, ino)
	*n = node{}
	s.freeq = append(s.freeq, freeInode{inode: ino, at: t})
}

// newNode allocates and links a new inode under parent; the caller checked
// that parent is a directory and name is free.
func (s *State) newNode(parent uint32, entries map[string]uint32, name string, n node, t uint32) (uint32, syscall.Errno) {
	ino, ok := s.allocInode(t)
	if !ok {
		return 0, syscall.ENOSPC
	}
	p := s.nodes.at(parent)
	n.atime, n.mtime, n.ctime = t, t, t
	n.goal = p.goal
	if n.typ == TypeDir {
		n.nlink = 2
		n.parent = parent
		p.nlink++
		s.dirs[ino] = map[string]uint32{}
		s.ndirs++
	} else {
		n.nlink = 1
		s.nfiles++
	}
	*s.nodes.at(ino) = n
	entries[name] = ino
	s.listings.changed(parent)
	p.mtime, p.ctime = t, t
	return ino, 0
}

func (o *Create) apply(s *State, t uint32) Result {
	p, entries, e := s.dir(o.Parent)
	if e != 0 {
		return fail(e)
	}
	if e := checkName(o.Name); e != 0 {
		return fail(e)
	}
	if o.Type == TypeNone || o.Type == TypeSymlink || o.Type > TypeBlock || o.Mode > 0o7777 {
		return fail(syscall.EINVAL)
	}
	if _, ok := entries[o.Name]; ok {
		return fail(syscall.EEXIST)
	}
	if o.Type == TypeDir && p.nlink >= MaxLinks {
		return fail(syscall.EMLINK)
	}
	n := node{typ: o.Type, mode: o.Mode, uid: o.UID, gid: o.GID}
	if o.Type == TypeChar || o.Type == TypeBlock {
		n.size = uint64(o.Rdev)
	}
	ino, e := s.newNode(o.Parent, entries, o.Name, n, t)
	if e != 0 {
		return fail(e)
	}
	return ok1(uint64(ino))
}

func (o *Symlink) apply(s *State, t uint32) Result {
	_, entries, e := s.dir(o.Parent)
	if e != 0 {
		return fail(e)
	}
	if e := checkName(o.Name); e != 0 {
		return fail(e)
	}
	switch {
	case o.Target == "":
		return fail(syscall.ENOENT)
	case len(o.Target) > MaxLinkLen:
		return fail(syscall.ENAMETOOLONG)
	}
	if _, ok := entries[o.Name]; ok {
		return fail(syscall.EEXIST)
	}
	ino, e := s.newNode(o.Parent, entries, o.Name, node{
		typ: TypeSymlink, mode: 0o777, uid: o.UID, gid: o.GID, size: uint64(len(o.Target)),
	}, t)
	if e != 0 {
		return fail(e)
	}
	s.symlinks[ino] = o.Target
	return ok1(uint64(ino))
}

func (o *Link) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil || n.nlink == 0 {
		return fail(syscall.ENOENT)
	}
	p, entries, e := s.dir(o.Parent)
	if e != 0 {
		return fail(e)
	}
	if n.typ == TypeDir {
		return fail(syscall.EPERM)
	}
	if e := checkName(o.Name); e != 0 {
		return fail(e)
	}
	if _, ok := entries[o.Name]; ok {
		return fail(syscall.EEXIST)
	}
	if n.nlink >= MaxLinks {
		return fail(syscall.EMLINK)
	}
	entries[o.Name] = o.Inode
	s.listings.changed(o.Parent)
	n.nlink++
	n.ctime = t
	p.mtime, p.ctime = t, t
	return ok0()
}

// dropLink removes one link of a non-directory and frees it when nothing
// holds it any more.
func (s *State) dropLink(ino uint32, t uint32) {
	n := s.nodes.at(ino)
	n.nlink--
	n.ctime = t
	if n.nlink == 0 && s.held[ino] == 0 {
		s.freeNode(ino, t)
	}
}

// dropDir removes an empty directory whose entry is already gone.
func (s *State) dropDir(ino, parent uint32, t uint32) {
	s.nodes.at(parent).nlink--
	s.freeNode(ino, t)
}

// entry finds an existing name in a directory, checking both.
func (s *State) entry(parent uint32, name string) (*node, map[string]uint32, uint32, syscall.Errno) {
	p, entries, e := s.dir(parent)
	if e == 0 {
		e = checkName(name)
	}
	if e != 0 {
		return nil, nil, 0, e
	}
	ino, ok := entries[name]
	if !ok {
		return nil, nil, 0, syscall.ENOENT
	}
	return p, entries, ino, 0
}

func (o *Unlink) apply(s *State, t uint32) Result {
	p, entries, ino, e := s.entry(o.Parent, o.Name)
	if e != 0 {
		return fail(e)
	}
	if s.nodes.at(ino).typ == TypeDir {
		return fail(syscall.EISDIR)
	}
	delete(entries, o.Name)
	s.listings.changed(o.Parent)
	p.mtime, p.ctime = t, t
	s.dropLink(ino, t)
	return ok0()
}

func (o *Rmdir) apply(s *State, t uint32) Result {
	p, entries, ino, e := s.entry(o.Parent, o.Name)
	if e != 0 {
		return fail(e)
	}
	if s.nodes.at(ino).typ != TypeDir {
		return fail(syscall.ENOTDIR)
	}
	if len(s.dirs[ino]) != 0 {
		return fail(syscall.ENOTEMPTY)
	}
	delete(entries, o.Name)
	s.listings.changed(o.Parent)
	p.mtime, p.ctime = t, t
	s.dropDir(ino, o.Parent, t)
	return ok0()
}

// isAncestor reports whether dir a is d or one of d's ancestors.
func (s *State) isAncestor(a, d uint32) bool {
	for {
		if d == a {
			return true
		}
		if d == RootInode {
			return false
		}
		d = s.nodes.at(d).parent
	}
}

func (o *Rename) apply(s *State, t uint32) Result {
	sp, sents, e := s.dir(o.SrcParent)
	if e != 0 {
		return fail(e)
	}
	dp, dents, e := s.dir(o.DstParent)
	if e != 0 {
		return fail(e)
	}
	if e := checkName(o.SrcName); e != 0 {
		return fail(e)
	}
	if e := checkName(o.DstName); e != 0 {
		return fail(e)
	}
	ino, ok := sents[o.SrcName]
	if !ok {
		return fail(syscall.ENOENT)
	}
	n := s.nodes.at(ino)
	if n.typ == TypeDir && s.isAncestor(ino, o.DstParent) {
		return fail(syscall.EINVAL)
	}
	old, exists := dents[o.DstName]
	if exists {
		if old == ino {
			return ok0() // both names are links of one inode: nothing to do
		}
		on := s.nodes.at(old)
		switch {
		case n.typ == TypeDir && on.typ != TypeDir:
			return fail(syscall.ENOTDIR)
		case n.typ != TypeDir && on.typ == TypeDir:
			return fail(syscall.EISDIR)
		case on.typ == TypeDir && len(s.dirs[old]) != 0:
			return fail(syscall.ENOTEMPTY)
		}
	}
	if n.typ == TypeDir && o.SrcParent != o.DstParent && !exists && dp.nlink >= MaxLinks {
		return fail(syscall.EMLINK)
	}
	// Everything is checked: from here on the rename happens.
	if exists {
		delete(dents, o.DstName)
		if s.nodes.at(old).typ == TypeDir {
			s.dropDir(old, o.DstParent, t)
		} else {
			s.dropLink(old, t)
		}
	}
	delete(sents, o.SrcName)
	dents[o.DstName] = ino
	s.listings.changed(o.SrcParent)
	s.listings.changed(o.DstParent)
	if n.typ == TypeDir && o.SrcParent != o.DstParent {
		n.parent = o.DstParent
		sp.nlink--
		dp.nlink++
	}
	n.ctime = t
	sp.mtime, sp.ctime = t, t
	dp.mtime, dp.ctime = t, t
	return ok0()
}

func (o *SetAttr) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	if o.Mask&^setAll != 0 || o.Mode > 0o7777 {
		return fail(syscall.EINVAL)
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
	return ok0()
}

func chunkCount(size uint64) int { return int((size + ChunkSize - 1) / ChunkSize) }

func (o *Truncate) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	switch {
	case n.typ == TypeDir:
		return fail(syscall.EISDIR)
	case n.typ != TypeFile:
		return fail(syscall.EINVAL)
	case o.Size > MaxFileSize:
		return fail(syscall.EFBIG)
	}
	ids := s.files[o.Inode]
	keep := chunkCount(o.Size)
	edge := -1 // chunk cut in the middle: its tail goes, its version rises
	if o.Size%ChunkSize != 0 && o.Size < n.size {
		edge = int(o.Size / ChunkSize)
	}
	for i := keep; i < len(ids); i++ {
		if ids[i] != 0 && s.chunks[ids[i]].locked {
			return fail(syscall.EBUSY)
		}
	}
	if edge >= 0 && edge < len(ids) && ids[edge] != 0 && s.chunks[ids[edge]].locked {
		return fail(syscall.EBUSY)
	}
	if edge >= 0 && edge < len(ids) && ids[edge] != 0 {
		c := s.chunks[ids[edge]]
		c.version++
		s.chunks[ids[edge]] = c
	}
	if keep < len(ids) {
		for _, id := range ids[keep:] {
			if id != 0 {
				delete(s.chunks, id)
			}
		}
		ids = trimHoles(ids[:keep])
		if len(ids) == 0 {
			delete(s.files, o.Inode)
		} else {
			s.files[o.Inode] = slices.Clip(ids)
		}
	}
	n.size = o.Size
	n.mtime, n.ctime = t, t
	return ok0()
}

// trimHoles drops trailing holes so a chunk list never ends in one.
func trimHoles(ids []uint64) []uint64 {
	for len(ids) > 0 && ids[len(ids)-1] == 0 {
		ids = ids[:len(ids)-1]
	}
	return ids
}

func (o *SetXattr) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	switch {
	case o.Name == "" || o.Flags > XattrCreate|XattrReplace || o.Flags == XattrCreate|XattrReplace:
		return fail(syscall.EINVAL)
	case len(o.Name) > MaxXattrName:
		return fail(syscall.ERANGE)
	case len(o.Value) > MaxXattrVal:
		return fail(syscall.E2BIG)
	}
	xs := s.xattrs[o.Inode]
	_, exists := xs[o.Name]
	if exists && o.Flags == XattrCreate {
		return fail(syscall.EEXIST)
	}
	if !exists && o.Flags == XattrReplace {
		return fail(syscall.ENODATA)
	}
	if xs == nil {
		xs = map[string]string{}
		s.xattrs[o.Inode] = xs
	}
	xs[o.Name] = o.Value
	n.ctime = t
	return ok0()
}

func (o *RemoveXattr) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	xs := s.xattrs[o.Inode]
	if _, ok := xs[o.Name]; !ok {
		return fail(syscall.ENODATA)
	}
	delete(xs, o.Name)
	if len(xs) == 0 {
		delete(s.xattrs, o.Inode)
	}
	n.ctime = t
	return ok0()
}

func (o *SetGoal) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	if o.Goal < 1 || o.Goal > MaxGoal {
		return fail(syscall.EINVAL)
	}
	n.goal = o.Goal
	n.ctime = t
	return ok0()
}

func (o *Session) apply(s *State, t uint32) Result {
	id := s.nextSess
	s.nextSess++
	s.sessions[id] = &session{info: o.Info, opens: map[uint32]uint32{}}
	return ok1(id)
}

// apply of a TermStart changes nothing: Apply moves the state's term to
// the entry's, as for every entry.
func (*TermStart) apply(s *State, t uint32) Result { return ok0() }

func (o *SessionClose) apply(s *State, t uint32) Result {
	ss, ok := s.sessions[o.ID]
	if !ok {
		return fail(syscall.EBADF)
	}
	inos := make([]uint32, 0, len(ss.opens))
	for ino := range ss.opens {
		inos = append(inos, ino)
	}
	slices.Sort(inos) // frees land in the free queue in a fixed order
	delete(s.sessions, o.ID)
	for _, ino := range inos {
		s.unhold(ino, ss.opens[ino], t)
	}
	return ok0()
}

func (s *State) unhold(ino uint32, count uint32, t uint32) {
	left := s.held[ino] - count
	if left == 0 {
		delete(s.held, ino)
		if s.nodes.at(ino).nlink == 0 {
			s.freeNode(ino, t)
		}
	} else {
		s.held[ino] = left
	}
}

func (o *Open) apply(s *State, t uint32) Result {
	ss, ok := s.sessions[o.Session]
	if !ok {
		return fail(syscall.EBADF)
	}
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	if n.typ == TypeDir {
		// Only files are held open: their data must outlive their names.
		// A directory handle needs nothing from the master.
		return fail(syscall.EISDIR)
	}
	ss.opens[o.Inode]++
	s.held[o.Inode]++
	return ok0()
}

func (o *Release) apply(s *State, t uint32) Result {
	ss, ok := s.sessions[o.Session]
	if !ok {
		return fail(syscall.EBADF)
	}
	c, ok := ss.opens[o.Inode]
	if !ok {
		return fail(syscall.EINVAL)
	}
	if c == 1 {
		delete(ss.opens, o.Inode)
	} else {
		ss.opens[o.Inode] = c - 1
	}
	s.unhold(o.Inode, 1, t)
	return ok0()
}

func (o *Write) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	if n.typ != TypeFile {
		return fail(syscall.EINVAL)
	}
	if uint64(o.Index) >= MaxFileSize/ChunkSize {
		return fail(syscall.EFBIG)
	}
	ids := s.files[o.Inode]
	if int(o.Index) < len(ids) && ids[o.Index] != 0 {
		id := ids[o.Index]
		c := s.chunks[id]
		if c.locked {
			return fail(syscall.EBUSY)
		}
		c.version++
		c.locked = true
		s.chunks[id] = c
		return ok2(id, uint64(c.version))
	}
	id := s.nextChunk
	s.nextChunk++
	for int(o.Index) >= len(ids) {
		ids = append(ids, 0)
	}
	ids[o.Index] = id
	s.files[o.Inode] = ids
	s.chunks[id] = chunk{version: 1, locked: true}
	return ok2(id, 1)
}

func (o *Unlock) apply(s *State, t uint32) Result {
	c, ok := s.chunks[o.Chunk]
	if !ok {
		return fail(syscall.ENOENT)
	}
	if !c.locked {
		return fail(syscall.EINVAL)
	}
	c.locked = false
	s.chunks[o.Chunk] = c
	return ok0()
}

func (o *Length) apply(s *State, t uint32) Result {
	n := s.live(o.Inode)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	switch {
	case n.typ != TypeFile:
		return fail(syscall.EINVAL)
	case o.Size > MaxFileSize:
		return fail(syscall.EFBIG)
	}
	if o.Size > n.size {
		n.size = o.Size
	}
	n.mtime, n.ctime = t, t
	return ok0()
}
