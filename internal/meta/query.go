package meta

import (
	"maps"
	"slices"
	"syscall"
)

// Attr is what stat(2) shows of an inode.
type Attr struct {
	Inode               uint32
	Type                Type
	Mode                uint16
	UID, GID            uint32
	Atime, Mtime, Ctime uint32
	Nlink               uint32
	Size                uint64 // files: length; symlinks: target length; dirs: entry count
	Rdev                uint32
	Goal                uint8
}

// GetAttr returns an inode's attributes; unlinked files still open by a
// session are found too, with Nlink 0.
func (s *State) GetAttr(ino uint32) (Attr, syscall.Errno) {
	n := s.live(ino)
	if n == nil {
		return Attr{}, syscall.ENOENT
	}
	a := Attr{
		Inode: ino, Type: n.typ, Mode: n.mode, UID: n.uid, GID: n.gid,
		Atime: n.atime, Mtime: n.mtime, Ctime: n.ctime, Nlink: n.nlink, Size: n.size, Goal: n.goal,
	}
	switch n.typ {
	case TypeChar, TypeBlock:
		a.Size, a.Rdev = 0, uint32(n.size)
	case TypeDir:
		a.Size = uint64(len(s.dirs[ino]))
	}
	return a, 0
}

// Lookup finds name in directory parent.
func (s *State) Lookup(parent uint32, name string) (uint32, syscall.Errno) {
	_, entries, e := s.dir(parent)
	if e != 0 {
		return 0, e
	}
	if name == "." {
		return parent, 0
	}
	if name == ".." {
		return s.nodes.at(parent).parent, 0
	}
	ino, ok := entries[name]
	if !ok {
		return 0, syscall.ENOENT
	}
	return ino, 0
}

// DirEntry is one name in a directory.
type DirEntry struct {
	Name  string
	Inode uint32
	Type  Type
}

// ReadDir lists a directory sorted by name, without "." and "..". The
// slice may be shared with later calls: the caller must not change it.
func (s *State) ReadDir(ino uint32) ([]DirEntry, syscall.Errno) {
	_, entries, e := s.dir(ino)
	if e != 0 {
		return nil, e
	}
	if out, ok := s.listings.get(ino); ok {
		return out, 0
	}
	out := s.sortedListing(entries)
	s.listings.put(ino, out)
	return out, 0
}

// ReadLink returns a symlink's target.
func (s *State) ReadLink(ino uint32) (string, syscall.Errno) {
	n := s.live(ino)
	if n == nil {
		return "", syscall.ENOENT
	}
	if n.typ != TypeSymlink {
		return "", syscall.EINVAL
	}
	return s.symlinks[ino], 0
}

// GetXattr returns one extended attribute.
func (s *State) GetXattr(ino uint32, name string) (string, syscall.Errno) {
	if s.live(ino) == nil {
		return "", syscall.ENOENT
	}
	v, ok := s.xattrs[ino][name]
	if !ok {
		return "", syscall.ENODATA
	}
	return v, 0
}

// ListXattr returns the names of an inode's extended attributes, sorted.
func (s *State) ListXattr(ino uint32) ([]string, syscall.Errno) {
	if s.live(ino) == nil {
		return nil, syscall.ENOENT
	}
	xs := s.xattrs[ino]
	names := make([]string, 0, len(xs))
	for k := range xs {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, 0
}

// ChunkRef is one chunk of a file; ID 0 is a hole.
type ChunkRef struct {
	ID      uint64
	Version uint32
	Locked  bool
}

// FileChunks lists a file's chunks by index.
func (s *State) FileChunks(ino uint32) ([]ChunkRef, syscall.Errno) {
	n := s.live(ino)
	if n == nil {
		return nil, syscall.ENOENT
	}
	if n.typ != TypeFile {
		return nil, syscall.EINVAL
	}
	ids := s.files[ino]
	out := make([]ChunkRef, len(ids))
	for i, id := range ids {
		if id != 0 {
			c := s.chunks[id]
			out[i] = ChunkRef{ID: id, Version: c.version, Locked: c.locked}
		}
	}
	return out, 0
}

// SessionOpens returns, for a session, how often it holds each inode open.
func (s *State) SessionOpens(id uint64) (map[uint32]uint32, syscall.Errno) {
	ss, ok := s.sessions[id]
	if !ok {
		return nil, syscall.EBADF
	}
	return maps.Clone(ss.opens), 0
}

// Stats counts what the namespace holds.
type Stats struct {
	Files, Dirs, Chunks, Sessions uint64
	// Sustained counts files with no name left that a session still holds open.
	Sustained uint64
}

// Stats returns the namespace's counters.
func (s *State) Stats() Stats {
	st := Stats{Files: s.nfiles, Dirs: s.ndirs, Chunks: uint64(len(s.chunks)), Sessions: uint64(len(s.sessions))}
	for ino := range s.held {
		if s.nodes.at(ino).nlink == 0 {
			st.Sustained++
		}
	}
	return st
}

// ChunkVersion returns a chunk's version, or ok false for a chunk id the
// file system does not hold.
func (s *State) ChunkVersion(id uint64) (version uint32, ok bool) {
	c, ok := s.chunks[id]
	return c.version, ok
}

// EachChunk calls f for every chunk, in no particular order.
func (s *State) EachChunk(f func(id uint64, version uint32, locked bool)) {
	for id, c := range s.chunks {
		f(id, c.version, c.locked)
	}
}

// InodeLimit is one more than the highest inode number handed out so
// far: every live inode is below it. A scan that visits inodes in
// slices, as the master's replication loop does, stops there.
func (s *State) InodeLimit() uint32 { return uint32(s.nodes.len()) }
