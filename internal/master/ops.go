package master

import (
	"context"
	"crypto/rand"
	"fmt"
	"sort"
	"syscall"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// ReadDir page bounds: entries per page by default and at most. 8192
// entries of the longest names stay well below the frame limit.
const (
	defaultDirPage = 1024
	maxDirPage     = 8192
	// maxDirNamesPage keeps a DirNames frame well under the 4 MiB limit
	// even with names of 255 bytes.
	maxDirNamesPage = 8192
)

// request is one operation of a session, with the caller's credentials
// after the export's mapping.
type request struct {
	cc       *clientConn
	ss       *session
	h        *wire.ReqHeader
	uid, gid uint32
}

// in turns a client's inode number into the master's: 1 is the export's
// root.
func (r *request) in(ino uint32) uint32 {
	if ino == meta.RootInode {
		return r.ss.root
	}
	return ino
}

// attr turns meta's attributes into the client's, the export's root
// becoming inode 1.
func (r *request) attr(a meta.Attr) wire.Attr {
	ino := a.Inode
	if ino == r.ss.root {
		ino = meta.RootInode
	}
	return wire.Attr{
		Inode: ino, NodeType: uint8(a.Type), Mode: a.Mode, UID: a.UID, GID: a.GID,
		Atime: a.Atime, Mtime: a.Mtime, Ctime: a.Ctime, Nlink: a.Nlink,
		Size: a.Size, Rdev: a.Rdev, Goal: a.Goal,
	}
}

// entry answers with the attributes of the master's inode ino.
func (r *request) entry(ino uint32) (wire.Message, error) {
	var a meta.Attr
	var e syscall.Errno
	r.cc.srv.store.Read(func(s *meta.State) { a, e = s.GetAttr(ino) })
	if e != 0 {
		return nil, fmt.Errorf("getattr %d: %w", ino, e)
	}
	return &wire.Entry{Attr: r.attr(a)}, nil
}

// changed answers a change to the directories dirs that made or linked
// inode ino (0: none). A session at protocol 2 gets Changed with the
// directories' attributes; an older one Entry for ino, or Ok.
func (r *request) changed(ino uint32, dirs ...uint32) (wire.Message, error) {
	if r.cc.version < 2 {
		if ino == 0 {
			return &wire.Ok{}, nil
		}
		return r.entry(ino)
	}
	m := &wire.Changed{Dirs: make([]wire.Attr, 0, len(dirs))}
	var e syscall.Errno
	r.cc.srv.store.Read(func(s *meta.State) {
		if ino != 0 {
			var a meta.Attr
			if a, e = s.GetAttr(ino); e != 0 {
				return
			}
			m.Attr = r.attr(a)
		}
		for _, d := range dirs {
			// A directory gone meanwhile (another client removed it) is
			// left out: the mount asks about it when it needs to.
			if a, de := s.GetAttr(d); de == 0 {
				m.Dirs = append(m.Dirs, r.attr(a))
			}
		}
	})
	if e != 0 {
		return nil, fmt.Errorf("getattr %d: %w", ino, e)
	}
	return m, nil
}

// do applies a mutation durably. A failed operation returns its errno; a
// store that cannot acknowledge gives EIO.
func (r *request) do(ctx context.Context, op meta.Op) (meta.Result, error) {
	if r.ss.exp.ReadOnly {
		return meta.Result{}, fmt.Errorf("%s: the export (line %d) is read-only: %w", op.OpName(), r.ss.exp.Line, errReadOnly)
	}
	res, err := r.cc.srv.store.Do(ctx, op)
	if err != nil {
		return res, fmt.Errorf("%s: %w: %w", op.OpName(), err, syscall.EIO)
	}
	if !res.Ok() {
		return res, fmt.Errorf("%s: %w", op.OpName(), res.Err)
	}
	return res, nil
}

// serve runs one operation request.
func (r *request) serve(ctx context.Context, m wire.Message) (wire.Message, error) {
	store := r.cc.srv.store
	switch m := m.(type) {
	case *wire.LookupName:
		parent := r.in(m.Parent)
		var ino uint32
		var e syscall.Errno
		store.Read(func(s *meta.State) {
			if m.Name == ".." && parent == r.ss.root {
				ino = parent // the export's root is its own parent, as / is
				return
			}
			ino, e = s.Lookup(parent, m.Name)
		})
		if e != 0 {
			return nil, fmt.Errorf("lookup %q in %d: %w", m.Name, m.Parent, e)
		}
		return r.entry(ino)

	case *wire.GetAttr:
		return r.entry(r.in(m.Inode))

	case *wire.SetAttr:
		return r.setAttr(ctx, m)

	case *wire.Create:
		if m.NodeType == uint8(meta.TypeSymlink) {
			return nil, fmt.Errorf("create %q: symlinks are made by Symlink: %w", m.Name, errInval)
		}
		res, err := r.do(ctx, &meta.Create{
			Parent: r.in(m.Parent), Name: m.Name, Type: meta.Type(m.NodeType),
			Mode: m.Mode, UID: r.uid, GID: r.gid, Rdev: m.Rdev,
		})
		if err != nil {
			return nil, err
		}
		ino := uint32(res.Val[0])
		if m.Open {
			// Holding the new file open is bookkeeping (see Open below).
			res, err := store.DoLazy(&meta.Open{Session: r.ss.id, Inode: ino})
			switch {
			case err != nil:
				return nil, fmt.Errorf("open %d: %w: %w", ino, err, syscall.EIO)
			case !res.Ok():
				return nil, fmt.Errorf("open %d: %w", ino, res.Err)
			}
		}
		return r.changed(ino, r.in(m.Parent))

	case *wire.Symlink:
		res, err := r.do(ctx, &meta.Symlink{Parent: r.in(m.Parent), Name: m.Name, Target: m.Target, UID: r.uid, GID: r.gid})
		if err != nil {
			return nil, err
		}
		return r.changed(uint32(res.Val[0]), r.in(m.Parent))

	case *wire.Link:
		ino := r.in(m.Inode)
		if _, err := r.do(ctx, &meta.Link{Inode: ino, Parent: r.in(m.Parent), Name: m.Name}); err != nil {
			return nil, err
		}
		return r.changed(ino, r.in(m.Parent))

	case *wire.Unlink:
		if _, err := r.do(ctx, &meta.Unlink{Parent: r.in(m.Parent), Name: m.Name}); err != nil {
			return nil, err
		}
		return r.changed(0, r.in(m.Parent))

	case *wire.Rmdir:
		parent := r.in(m.Parent)
		var gone meta.Attr
		store.Read(func(s *meta.State) {
			if ino, e := s.Lookup(parent, m.Name); e == 0 {
				gone, _ = s.GetAttr(ino)
			}
		})
		if _, err := r.do(ctx, &meta.Rmdir{Parent: parent, Name: m.Name}); err != nil {
			return nil, err
		}
		msg, err := r.changed(0, parent)
		if ch, ok := msg.(*wire.Changed); ok && gone.Inode != 0 {
			// The directory removed, with no links: a mount that still
			// has it open must not answer with what it knew before.
			store.Read(func(s *meta.State) {
				if _, e := s.GetAttr(gone.Inode); e != 0 {
					gone.Nlink = 0
					ch.Dirs = append(ch.Dirs, r.attr(gone))
				}
			})
		}
		return msg, err

	case *wire.Rename:
		src, dst := r.in(m.SrcParent), r.in(m.DstParent)
		if _, err := r.do(ctx, &meta.Rename{SrcParent: src, SrcName: m.SrcName, DstParent: dst, DstName: m.DstName}); err != nil {
			return nil, err
		}
		if src == dst {
			return r.changed(0, src)
		}
		return r.changed(0, src, dst)

	case *wire.ReadLink:
		var target string
		var e syscall.Errno
		store.Read(func(s *meta.State) { target, e = s.ReadLink(r.in(m.Inode)) })
		if e != 0 {
			return nil, fmt.Errorf("readlink %d: %w", m.Inode, e)
		}
		return &wire.LinkTarget{Target: target}, nil

	case *wire.ReadDir:
		return r.readDir(m)

	case *wire.ReadDirNames:
		return r.readDirNames(m)

	case *wire.GetXattr:
		var v string
		var e syscall.Errno
		store.Read(func(s *meta.State) { v, e = s.GetXattr(r.in(m.Inode), m.Name) })
		if e != 0 {
			return nil, fmt.Errorf("getxattr %q of %d: %w", m.Name, m.Inode, e)
		}
		return &wire.XattrValue{Value: []byte(v)}, nil

	case *wire.ListXattr:
		var names []string
		var e syscall.Errno
		store.Read(func(s *meta.State) { names, e = s.ListXattr(r.in(m.Inode)) })
		if e != 0 {
			return nil, fmt.Errorf("listxattr %d: %w", m.Inode, e)
		}
		if len(names) == 0 {
			names = nil
		}
		return &wire.XattrNames{Names: names}, nil

	case *wire.SetXattr:
		return r.ok(r.do(ctx, &meta.SetXattr{Inode: r.in(m.Inode), Name: m.Name, Value: string(m.Value), Flags: m.Flags}))

	case *wire.RemoveXattr:
		return r.ok(r.do(ctx, &meta.RemoveXattr{Inode: r.in(m.Inode), Name: m.Name}))

	case *wire.StatFS:
		return r.statFS()

	case *wire.Open:
		ino := r.in(m.Inode)
		if r.ss.exp.ReadOnly && (m.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || m.Flags&syscall.O_TRUNC != 0) {
			return nil, fmt.Errorf("open %d for writing: the export (line %d) is read-only: %w", m.Inode, r.ss.exp.Line, errReadOnly)
		}
		// Holding a file open is bookkeeping, not a change to the file,
		// so read-only sessions record it too, and it is answered without
		// waiting for the changelog flush: a crash that loses it only lets
		// an unlinked file go before its last close, while anything
		// acknowledged after it is flushed with it.
		res, err := store.DoLazy(&meta.Open{Session: r.ss.id, Inode: ino})
		switch {
		case err != nil:
			return nil, fmt.Errorf("open %d: %w: %w", m.Inode, err, syscall.EIO)
		case !res.Ok():
			return nil, fmt.Errorf("open %d: %w", m.Inode, res.Err)
		}
		return r.entry(ino)

	case *wire.Release:
		res, err := store.DoLazy(&meta.Release{Session: r.ss.id, Inode: r.in(m.Inode)})
		switch {
		case err != nil:
			return nil, fmt.Errorf("release %d: %w: %w", m.Inode, err, syscall.EIO)
		case !res.Ok():
			return nil, fmt.Errorf("release %d: %w", m.Inode, res.Err)
		}
		return &wire.Ok{}, nil

	case *wire.SetGoal:
		if !r.ss.exp.GoalAllowed(m.Goal) {
			return nil, fmt.Errorf("setgoal %d: goal %d is outside %d-%d allowed by the export (line %d): %w",
				m.Inode, m.Goal, r.ss.exp.MinGoal, r.ss.exp.MaxGoal, r.ss.exp.Line, syscall.EPERM)
		}
		ino := r.in(m.Inode)
		if _, err := r.do(ctx, &meta.SetGoal{Inode: ino, Goal: m.Goal}); err != nil {
			return nil, err
		}
		return r.entry(ino)

	case *wire.GetGoal:
		return r.entry(r.in(m.Inode))

	case *wire.ChunkRead:
		return r.chunkRead(ctx, m)

	case *wire.ChunkWrite:
		return r.chunkWrite(ctx, m)

	case *wire.ChunkWriteEnd:
		return r.chunkWriteEnd(ctx, m)

	case *wire.Lock:
		return r.lock(m)

	case *wire.GetLock:
		return r.getLock(m)
	}
	return nil, fmt.Errorf("%s is not a request a master serves: %w", m.Type(), syscall.ENOSYS)
}

// ok turns a mutation's outcome into an Ok reply.
func (r *request) ok(_ meta.Result, err error) (wire.Message, error) {
	if err != nil {
		return nil, err
	}
	return &wire.Ok{}, nil
}

// setAttr truncates first, then sets the other attributes, so that an
// explicit mtime wins over the one truncation sets. The two are separate
// entries: a crash between them leaves the truncation done, which a
// retried request completes.
func (r *request) setAttr(ctx context.Context, m *wire.SetAttr) (wire.Message, error) {
	ino := r.in(m.Inode)
	if m.Mask&wire.SetAttrSize != 0 {
		if err := r.truncate(ctx, ino, m.Size); err != nil {
			return nil, err
		}
	}
	mask := m.Mask & (meta.SetMode | meta.SetUID | meta.SetGID | meta.SetAtime | meta.SetMtime)
	op := &meta.SetAttr{Inode: ino, Mode: m.Mode, UID: m.NewUID, GID: m.NewGID, Atime: m.Atime, Mtime: m.Mtime}
	now := uint32(r.cc.srv.cfg.Clock().Unix())
	if m.Mask&wire.SetAttrAtimeNow != 0 {
		mask |= meta.SetAtime
		op.Atime = now
	}
	if m.Mask&wire.SetAttrMtimeNow != 0 {
		mask |= meta.SetMtime
		op.Mtime = now
	}
	op.Mask = uint8(mask)
	if mask != 0 || m.Mask&wire.SetAttrSize == 0 {
		// A SetAttr with nothing to set still changes ctime, as
		// utimensat with UTIME_OMIT for both times does.
		if _, err := r.do(ctx, op); err != nil {
			return nil, err
		}
	}
	return r.entry(ino)
}

// dirWindow runs f under the store's read lock with the entries of
// directory ino that follow the name after, in name order, and the page
// size: max, or the default, never over most.
func (r *request) dirWindow(ino uint32, after string, max uint32, most int, f func(s *meta.State, ents []meta.DirEntry, limit int)) error {
	limit := int(max)
	if limit == 0 {
		limit = defaultDirPage
	}
	limit = min(limit, most)
	var e syscall.Errno
	r.cc.srv.store.Read(func(s *meta.State) {
		var ents []meta.DirEntry
		if ents, e = s.ReadDir(r.in(ino)); e != 0 {
			return
		}
		i := sort.Search(len(ents), func(i int) bool { return ents[i].Name > after })
		f(s, ents[i:], limit)
	})
	if e != 0 {
		return fmt.Errorf("readdir %d: %w", ino, e)
	}
	return nil
}

// readDirNames answers a page of names with their inodes and types.
func (r *request) readDirNames(m *wire.ReadDirNames) (wire.Message, error) {
	page := &wire.DirNames{}
	err := r.dirWindow(m.Inode, m.After, m.Max, maxDirNamesPage, func(_ *meta.State, ents []meta.DirEntry, limit int) {
		n := min(limit, len(ents))
		page.Entries = make([]wire.DirName, n)
		for j := range page.Entries {
			de := &ents[j]
			ino := de.Inode
			if ino == r.ss.root {
				ino = meta.RootInode
			}
			page.Entries[j] = wire.DirName{Name: de.Name, Inode: ino, NodeType: uint8(de.Type)}
		}
		page.More = n < len(ents)
	})
	if err != nil {
		return nil, err
	}
	return page, nil
}

// readDir answers a page of names with their attributes.
func (r *request) readDir(m *wire.ReadDir) (wire.Message, error) {
	page := &wire.DirPage{}
	err := r.dirWindow(m.Inode, m.After, m.Max, maxDirPage, func(s *meta.State, ents []meta.DirEntry, limit int) {
		i := 0
		for ; i < len(ents) && len(page.Entries) < limit; i++ {
			a, ae := s.GetAttr(ents[i].Inode)
			if ae != 0 {
				continue
			}
			page.Entries = append(page.Entries, wire.DirEntry{Name: ents[i].Name, Attr: r.attr(a)})
		}
		page.More = i < len(ents)
	})
	if err != nil {
		return nil, err
	}
	return page, nil
}

// newNonce returns random bytes for a password challenge.
// crypto/rand.Read does not fail (it crashes the program if the
// system's source is broken).
func newNonce() (n [wire.NonceSize]byte) {
	_, _ = rand.Read(n[:])
	return n
}
