package meta

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// RecordKind tags one record of a snapshot: the serialized form of a State
// that metadump frames, checksums and writes. Records are streams of
// unsigned varints and length-prefixed byte strings; their layouts are
// listed with each kind. The same state always gives the same records in
// the same order, so two equal states dump to identical bytes.
type RecordKind uint8

// Snapshot record kinds. Records emits counters, free, then node records
// (each with its symlink, file and xattr records), edges, sessions.
const (
	// RecCounters: inode slots (len of the node table), next chunk id, next
	// session id. Always first.
	RecCounters RecordKind = 1
	// RecNode: inode, type, mode, uid, gid, atime, mtime, ctime, nlink,
	// parent, goal, size. In inode order; holes (freed inodes) are absent.
	// For a directory, size is its number of entries: a sizing hint.
	RecNode RecordKind = 2
	// RecSymlink: inode, target. Right after its node.
	RecSymlink RecordKind = 3
	// RecFile: inode, count, then count times (chunk id, version, locked);
	// chunk id 0 is a hole. Right after its node.
	RecFile RecordKind = 4
	// RecXattr: inode, name, value. After its node, names in order.
	RecXattr RecordKind = 5
	// RecEdge: parent, child, name. Parents in inode order, then by child
	// inode, then by name.
	RecEdge RecordKind = 6
	// RecSession: id, info, count, then count times (inode, opens).
	RecSession RecordKind = 7
	// RecFree: inode, time freed. In reuse order, right after the
	// counters.
	RecFree RecordKind = 8
	recMax  RecordKind = 8
)

// String names a record kind for error messages.
func (k RecordKind) String() string {
	names := [...]string{"", "counters", "node", "symlink", "file", "xattr", "edge", "session", "free"}
	if k >= 1 && k <= recMax {
		return names[k]
	}
	return fmt.Sprintf("kind %d", k)
}

// Records streams the state as records. rec is only valid during the call.
func (s *State) Records(emit func(kind RecordKind, rec []byte) error) error {
	b := make([]byte, 0, 512)
	b = binary.AppendUvarint(b, uint64(s.nodes.len()))
	b = binary.AppendUvarint(b, s.nextChunk)
	b = binary.AppendUvarint(b, s.nextSess)
	if err := emit(RecCounters, b); err != nil {
		return err
	}
	// The free list comes before the nodes: it tells the Builder how many
	// holes the node table may have, so a damaged slot count cannot make
	// it allocate more than the dump itself describes.
	for _, f := range s.freeq[s.freeHead:] {
		b = binary.AppendUvarint(b[:0], uint64(f.inode))
		b = binary.AppendUvarint(b, uint64(f.at))
		if err := emit(RecFree, b); err != nil {
			return err
		}
	}
	var names []string
	var edges, spare []edge
	for ino := 1; ino < s.nodes.len(); ino++ {
		n := s.nodes.at(uint32(ino))
		if n.typ == TypeNone {
			continue
		}
		if n.typ == TypeDir {
			// A directory's size field carries its entry count, so a
			// loader can size the directory's map once.
			c := *n
			c.size = uint64(len(s.dirs[uint32(ino)]))
			n = &c
		}
		b = appendNode(b[:0], uint32(ino), n)
		if err := emit(RecNode, b); err != nil {
			return err
		}
		switch n.typ {
		case TypeSymlink:
			b = binary.AppendUvarint(b[:0], uint64(ino))
			b = appendString(b, s.symlinks[uint32(ino)])
			if err := emit(RecSymlink, b); err != nil {
				return err
			}
		case TypeFile:
			if ids, ok := s.files[uint32(ino)]; ok {
				b = binary.AppendUvarint(b[:0], uint64(ino))
				b = binary.AppendUvarint(b, uint64(len(ids)))
				for _, id := range ids {
					c := s.chunks[id]
					b = binary.AppendUvarint(b, id)
					b = binary.AppendUvarint(b, uint64(c.version))
					b = append(b, boolByte(c.locked))
				}
				if err := emit(RecFile, b); err != nil {
					return err
				}
			}
		}
		if len(s.xattrs) == 0 {
			continue
		}
		if xs, ok := s.xattrs[uint32(ino)]; ok {
			names = names[:0]
			for k := range xs {
				names = append(names, k)
			}
			slices.Sort(names)
			for _, k := range names {
				b = binary.AppendUvarint(b[:0], uint64(ino))
				b = appendString(b, k)
				b = appendString(b, xs[k])
				if err := emit(RecXattr, b); err != nil {
					return err
				}
			}
		}
	}
	for ino := 1; ino < s.nodes.len(); ino++ {
		if s.nodes.at(uint32(ino)).typ != TypeDir {
			continue
		}
		entries := s.dirs[uint32(ino)]
		edges = edges[:0]
		for k, child := range entries {
			edges = append(edges, edge{child, k})
		}
		// Ordered by child inode, names breaking ties between hard links:
		// canonical like a name sort, and far cheaper than comparing
		// strings across a million-entry directory.
		edges, spare = sortEdges(edges, spare)
		for _, e := range edges {
			b = binary.AppendUvarint(b[:0], uint64(ino))
			b = binary.AppendUvarint(b, uint64(e.child))
			b = appendString(b, e.name)
			if err := emit(RecEdge, b); err != nil {
				return err
			}
		}
	}
	ids := make([]uint64, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		ss := s.sessions[id]
		inos := make([]uint32, 0, len(ss.opens))
		for ino := range ss.opens {
			inos = append(inos, ino)
		}
		slices.Sort(inos)
		b = binary.AppendUvarint(b[:0], id)
		b = appendString(b, ss.info)
		b = binary.AppendUvarint(b, uint64(len(inos)))
		for _, ino := range inos {
			b = binary.AppendUvarint(b, uint64(ino))
			b = binary.AppendUvarint(b, uint64(ss.opens[ino]))
		}
		if err := emit(RecSession, b); err != nil {
			return err
		}
	}
	return nil
}

type edge struct {
	child uint32
	name  string
}

// sortEdges orders edges by compareEdges. Large directories are sorted by
// a radix sort on the child inode (a million-entry directory in a few
// milliseconds instead of most of a second of comparisons), then runs of
// one child, hard links in the same directory, by name. spare is scratch
// space; both slices are returned for reuse.
func sortEdges(edges, spare []edge) ([]edge, []edge) {
	if len(edges) < 4096 {
		slices.SortFunc(edges, compareEdges)
		return edges, spare
	}
	spare = slices.Grow(spare[:0], len(edges))[:len(edges)]
	src, dst := edges, spare
	var count [257]int
	for shift := 0; shift < 32; shift += 8 {
		clear(count[:])
		for _, e := range src {
			count[(e.child>>shift)&0xff+1]++
		}
		for i := 1; i < len(count); i++ {
			count[i] += count[i-1]
		}
		for _, e := range src {
			b := (e.child >> shift) & 0xff
			dst[count[b]] = e
			count[b]++
		}
		src, dst = dst, src
	}
	// Four passes: the result is back in edges.
	for i := 0; i < len(edges); {
		j := i + 1
		for j < len(edges) && edges[j].child == edges[i].child {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(edges[i:j], compareEdges)
		}
		i = j
	}
	return edges, spare
}

func compareEdges(a, b edge) int {
	if a.child != b.child {
		return cmp.Compare(a.child, b.child)
	}
	return strings.Compare(a.name, b.name)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func appendNode(b []byte, ino uint32, n *node) []byte {
	b = binary.AppendUvarint(b, uint64(ino))
	b = append(b, byte(n.typ))
	for _, v := range [...]uint32{uint32(n.mode), n.uid, n.gid, n.atime, n.mtime, n.ctime, n.nlink, n.parent} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	b = append(b, n.goal)
	return binary.AppendUvarint(b, n.size)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// recReader decodes one record; the first error sticks.
type recReader struct {
	b   []byte
	err error
}

func (r *recReader) uv(max uint64, what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%s: bad varint", what)
		return 0
	}
	if v > max {
		r.err = fmt.Errorf("%s: %d out of range", what, v)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recReader) byte1(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("%s: record too short", what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *recReader) str(max int, what string) string {
	n := int(r.uv(uint64(max), what+" length"))
	if r.err != nil {
		return ""
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("%s: record too short", what)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *recReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes left over", len(r.b))
	}
	return r.err
}

const u32max = 1<<32 - 1

// Builder rebuilds a State from records and checks, in Finish, that the
// result is a consistent file system before anyone may use it.
type Builder struct {
	s        *State
	counters bool
	lastNode uint32
	lastEdge struct {
		parent uint32
		edge
	}
	phase int
	slots uint32 // highest inode number the counters allow
	// hints are directories' announced entry counts, presized the total
	// capacity handed out for them.
	hints    map[uint32]uint64
	presized uint64
	holes    int // unused slots so far
	n        int
}

// NewBuilder starts rebuilding a state of the given identity and position.
func NewBuilder(metaid, version, term uint64) *Builder {
	s := newEmpty(metaid)
	s.version, s.term = version, term
	return &Builder{s: s, hints: map[uint32]uint64{}}
}

// ErrBadSnapshot is wrapped by every error Builder returns.
var ErrBadSnapshot = errors.New("inconsistent metadata")

func (b *Builder) errf(format string, a ...any) error {
	return fmt.Errorf("%w: record %d: %s", ErrBadSnapshot, b.n, fmt.Sprintf(format, a...))
}

// phaseOf ranks kinds in the order Records emits them; node, symlink, file
// and xattr records interleave, inode by inode.
func phaseOf(k RecordKind) int {
	switch k {
	case RecCounters:
		return 0
	case RecFree:
		return 1
	case RecNode, RecSymlink, RecFile, RecXattr:
		return 2
	case RecEdge:
		return 3
	}
	return 4
}

// Add takes the next record.
func (b *Builder) Add(kind RecordKind, rec []byte) error {
	b.n++
	if kind < RecCounters || kind > recMax {
		return b.errf("unknown record kind %d", kind)
	}
	if !b.counters && kind != RecCounters {
		return b.errf("%v record before the counters", kind)
	}
	if p := phaseOf(kind); p < b.phase {
		return b.errf("%v record out of order", kind)
	} else {
		b.phase = p
	}
	r := &recReader{b: rec}
	var err error
	switch kind {
	case RecCounters:
		err = b.addCounters(r)
	case RecNode:
		err = b.addNode(r)
	case RecSymlink:
		ino := uint32(r.uv(u32max, "inode"))
		target := r.str(MaxLinkLen, "target")
		if err = r.end(); err == nil {
			if ino != b.lastNode || b.s.nodes.at(ino).typ != TypeSymlink {
				return b.errf("symlink target for inode %d, which is not the symlink just read", ino)
			}
			if _, dup := b.s.symlinks[ino]; dup {
				return b.errf("second target for symlink %d", ino)
			}
			b.s.symlinks[ino] = target
		}
	case RecFile:
		err = b.addFile(r)
	case RecXattr:
		ino := uint32(r.uv(u32max, "inode"))
		name := r.str(MaxXattrName, "xattr name")
		val := r.str(MaxXattrVal, "xattr value")
		if err = r.end(); err == nil {
			if ino != b.lastNode || ino == 0 {
				return b.errf("xattr for inode %d, which is not the node just read", ino)
			}
			xs := b.s.xattrs[ino]
			if xs == nil {
				xs = map[string]string{}
				b.s.xattrs[ino] = xs
			}
			if _, dup := xs[name]; dup || name == "" {
				return b.errf("duplicate or empty xattr %q on inode %d", name, ino)
			}
			xs[name] = val
		}
	case RecEdge:
		err = b.addEdge(r)
	case RecSession:
		err = b.addSession(r)
	case RecFree:
		ino := uint32(r.uv(u32max, "inode"))
		at := uint32(r.uv(u32max, "time"))
		if err = r.end(); err == nil {
			b.s.freeq = append(b.s.freeq, freeInode{inode: ino, at: at})
		}
	}
	if err != nil {
		return b.errf("%v: %v", kind, err)
	}
	return nil
}

func (b *Builder) addCounters(r *recReader) error {
	if b.counters {
		return errors.New("counters given twice")
	}
	slots := r.uv(u32max+1, "inode slots")
	b.s.nextChunk = r.uv(1<<63, "next chunk id")
	b.s.nextSess = r.uv(1<<63, "next session id")
	if err := r.end(); err != nil {
		return err
	}
	if slots < 2 || b.s.nextChunk == 0 || b.s.nextSess == 0 {
		return errors.New("counters out of range")
	}
	// The claimed slot count is not trusted for allocation: the table
	// grows as node records arrive, and holes are bounded by the free list.
	b.slots = uint32(slots - 1)
	b.counters = true
	return nil
}

func (b *Builder) addNode(r *recReader) error {
	ino := uint32(r.uv(u32max, "inode"))
	var n node
	n.typ = Type(r.byte1("type"))
	n.mode = uint16(r.uv(0o7777, "mode"))
	n.uid = uint32(r.uv(u32max, "uid"))
	n.gid = uint32(r.uv(u32max, "gid"))
	n.atime = uint32(r.uv(u32max, "atime"))
	n.mtime = uint32(r.uv(u32max, "mtime"))
	n.ctime = uint32(r.uv(u32max, "ctime"))
	n.nlink = uint32(r.uv(u32max, "nlink"))
	n.parent = uint32(r.uv(u32max, "parent"))
	n.goal = r.byte1("goal")
	n.size = r.uv(1<<64-1, "size")
	if err := r.end(); err != nil {
		return err
	}
	switch {
	case ino <= b.lastNode:
		return fmt.Errorf("inode %d after inode %d", ino, b.lastNode)
	case ino > b.slots:
		return fmt.Errorf("inode %d beyond the %d slots the counters give", ino, b.slots)
	case n.typ == TypeNone || n.typ > TypeBlock:
		return fmt.Errorf("inode %d has bad type %d", ino, n.typ)
	case n.goal < 1 || n.goal > MaxGoal:
		return fmt.Errorf("inode %d has bad goal %d", ino, n.goal)
	case n.typ == TypeFile && n.size > MaxFileSize:
		return fmt.Errorf("inode %d has size %d past the maximum", ino, n.size)
	}
	if err := b.pad(int(ino)); err != nil {
		return err
	}
	if n.typ == TypeDir {
		if n.size > 0 {
			b.hints[ino] = n.size
		}
		n.size = 0
	}
	*b.s.nodes.at(b.s.nodes.add()) = n
	b.lastNode = ino
	if n.typ == TypeDir {
		b.s.dirs[ino] = map[string]uint32{}
		b.s.ndirs++
	} else {
		b.s.nfiles++
	}
	return nil
}

func (b *Builder) addFile(r *recReader) error {
	ino := uint32(r.uv(u32max, "inode"))
	count := r.uv(MaxFileSize/ChunkSize, "chunk count")
	if r.err != nil {
		return r.err
	}
	if ino != b.lastNode || b.s.nodes.at(ino).typ != TypeFile {
		return fmt.Errorf("chunk list for inode %d, which is not the file just read", ino)
	}
	if _, dup := b.s.files[ino]; dup {
		return fmt.Errorf("second chunk list for inode %d", ino)
	}
	if count == 0 || count > uint64(len(r.b)) { // every chunk takes at least 3 bytes
		return fmt.Errorf("chunk count %d does not fit the record", count)
	}
	ids := make([]uint64, count)
	for i := range ids {
		id := r.uv(b.s.nextChunk-1, "chunk id")
		ver := uint32(r.uv(u32max, "chunk version"))
		locked := r.byte1("chunk lock")
		if r.err != nil {
			return r.err
		}
		ids[i] = id
		if id == 0 {
			if ver != 0 || locked != 0 {
				return fmt.Errorf("inode %d: hole %d with a version", ino, i)
			}
			continue
		}
		if locked > 1 || ver == 0 {
			return fmt.Errorf("inode %d: chunk %d has bad version or lock", ino, id)
		}
		if _, dup := b.s.chunks[id]; dup {
			return fmt.Errorf("chunk %d belongs to two files", id)
		}
		b.s.chunks[id] = chunk{version: ver, locked: locked == 1}
	}
	if ids[len(ids)-1] == 0 {
		return fmt.Errorf("inode %d: chunk list ends in a hole", ino)
	}
	b.s.files[ino] = ids
	return r.end()
}

func (b *Builder) addEdge(r *recReader) error {
	parent := uint32(r.uv(u32max, "parent"))
	child := uint32(r.uv(u32max, "child"))
	name := r.str(MaxNameLen, "name")
	if err := r.end(); err != nil {
		return err
	}
	if e := checkName(name); e != 0 {
		return fmt.Errorf("bad name %q in directory %d", name, parent)
	}
	last := &b.lastEdge
	if parent < last.parent || (parent == last.parent && compareEdges(edge{child, name}, last.edge) <= 0) {
		return fmt.Errorf("edge %d/%q out of order", parent, name)
	}
	last.parent, last.edge = parent, edge{child, name}
	entries, ok := b.s.dirs[parent]
	if !ok {
		return fmt.Errorf("edge %q in %d, which is no directory", name, parent)
	}
	if b.s.live(child) == nil || child == RootInode {
		return fmt.Errorf("edge %d/%q points to missing inode %d", parent, name, child)
	}
	if len(entries) == 0 {
		entries = b.presize(parent, entries)
	}
	entries[name] = child
	return nil
}

// presize replaces a directory's empty map by one sized for the entry
// count its node record announced. The hint is not trusted for memory:
// no map is sized past the number of inodes, and all presized maps
// together stay under twice that, so a damaged hint costs at most what an
// honest dump would.
func (b *Builder) presize(parent uint32, entries map[string]uint32) map[string]uint32 {
	hint, ok := b.hints[parent]
	if !ok {
		return entries
	}
	delete(b.hints, parent)
	live := b.s.nfiles + b.s.ndirs
	hint = min(hint, live)
	if hint < 8 || b.presized+hint > 2*live {
		return entries
	}
	b.presized += hint
	m := make(map[string]uint32, hint)
	b.s.dirs[parent] = m
	return m
}

func (b *Builder) addSession(r *recReader) error {
	id := r.uv(b.s.nextSess-1, "session id")
	info := r.str(1<<16, "session info")
	count := r.uv(uint64(len(r.b)), "open count")
	if r.err != nil {
		return r.err
	}
	if _, dup := b.s.sessions[id]; dup || id == 0 {
		return fmt.Errorf("duplicate or zero session id %d", id)
	}
	ss := &session{info: info, opens: make(map[uint32]uint32, count)}
	for range count {
		ino := uint32(r.uv(u32max, "inode"))
		c := uint32(r.uv(u32max, "opens"))
		if r.err != nil {
			return r.err
		}
		if b.s.live(ino) == nil || c == 0 || ss.opens[ino] != 0 {
			return fmt.Errorf("session %d holds missing inode %d or holds it twice", id, ino)
		}
		ss.opens[ino] = c
		if b.s.held[ino] > u32max-c {
			return fmt.Errorf("inode %d held too often", ino)
		}
		b.s.held[ino] += c
	}
	b.s.sessions[id] = ss
	return r.end()
}

// pad grows the node table with holes up to length n. Every hole must be
// on the free list, so there can be no more holes than free records.
func (b *Builder) pad(n int) error {
	holes := n - b.s.nodes.len()
	if holes <= 0 {
		return nil
	}
	if b.holes+holes > len(b.s.freeq) {
		return fmt.Errorf("%d unused inode slots but only %d free inodes", b.holes+holes, len(b.s.freeq))
	}
	b.holes += holes
	b.s.nodes.growTo(n)
	return nil
}

// Finish checks the rebuilt namespace and returns it.
func (b *Builder) Finish() (*State, error) {
	s := b.s
	if !b.counters {
		return nil, fmt.Errorf("%w: no records", ErrBadSnapshot)
	}
	if err := b.pad(int(b.slots) + 1); err != nil {
		return nil, b.errf("%v", err)
	}
	if err := check(s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	b.s = nil
	return s, nil
}

// check verifies the invariants Apply keeps: link counts, one parent per
// directory, every directory reachable from the root, no leaked inodes, and
// every hole in the node table waiting in the free queue.
func check(s *State) error {
	root := s.live(RootInode)
	if root == nil || root.typ != TypeDir || root.parent != RootInode {
		return errors.New("no root directory")
	}
	links := make([]uint32, s.nodes.len())
	for parent, entries := range s.dirs {
		for name, child := range entries {
			c := s.nodes.at(child)
			if c.typ == TypeDir {
				if c.parent != parent {
					return fmt.Errorf("directory %d is named %q in %d but its parent is %d", child, name, parent, c.parent)
				}
				if links[child] != 0 {
					return fmt.Errorf("directory %d has two names", child)
				}
			}
			links[child]++
		}
	}
	for ino := 1; ino < s.nodes.len(); ino++ {
		n := s.nodes.at(uint32(ino))
		switch {
		case n.typ == TypeNone:
		case n.typ == TypeDir:
			want := uint32(2)
			for _, child := range s.dirs[uint32(ino)] {
				if s.nodes.at(child).typ == TypeDir {
					want++
				}
			}
			if n.nlink != want {
				return fmt.Errorf("directory %d has nlink %d, its entries say %d", ino, n.nlink, want)
			}
			if ino != RootInode && links[ino] != 1 {
				return fmt.Errorf("directory %d is in no directory", ino)
			}
		default:
			if n.nlink != links[ino] {
				return fmt.Errorf("inode %d has nlink %d but %d names", ino, n.nlink, links[ino])
			}
			if n.nlink == 0 && s.held[uint32(ino)] == 0 {
				return fmt.Errorf("inode %d has no name and no open: leaked", ino)
			}
			if n.typ == TypeSymlink {
				if _, ok := s.symlinks[uint32(ino)]; !ok {
					return fmt.Errorf("symlink %d has no target", ino)
				}
			}
		}
	}
	// Every directory reachable from the root: walking up from each must
	// reach it, which also rules out cycles.
	seen := make(map[uint32]bool, len(s.dirs))
	seen[RootInode] = true
	var path []uint32
	for d := range s.dirs {
		path = path[:0]
		for !seen[d] {
			if len(path) > len(s.dirs) {
				return fmt.Errorf("directory %d is in a cycle", d)
			}
			path = append(path, d)
			d = s.nodes.at(d).parent
		}
		for _, p := range path {
			seen[p] = true
		}
	}
	free := make(map[uint32]bool, len(s.freeq)-s.freeHead)
	for _, f := range s.freeq[s.freeHead:] {
		if int(f.inode) >= s.nodes.len() || f.inode == 0 || s.nodes.at(f.inode).typ != TypeNone || free[f.inode] {
			return fmt.Errorf("free inode %d is in use or listed twice", f.inode)
		}
		free[f.inode] = true
	}
	for ino := 1; ino < s.nodes.len(); ino++ {
		if s.nodes.at(uint32(ino)).typ == TypeNone && !free[uint32(ino)] {
			return fmt.Errorf("inode %d is neither used nor free", ino)
		}
	}
	for ino := range s.xattrs {
		if len(s.xattrs[ino]) == 0 {
			return fmt.Errorf("inode %d has an empty xattr set", ino)
		}
	}
	return nil
}
