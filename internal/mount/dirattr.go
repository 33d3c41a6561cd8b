package mount

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/carpfs/carpfs/internal/wire"
)

// After a change to a directory the kernel forgets the directory's
// attributes and asks for them before it uses the next name in it (it
// checks permissions against them). The master sends them with the
// change (wire.Changed), so the mount answers that question itself for
// the attribute timeout: the same staleness the kernel's own cache
// allows, without a round trip per file created or removed.

// maxFreshDirs bounds the directories remembered; past it the expired
// ones go, and if that is not enough, all of them.
const maxFreshDirs = 4096

// freshDir is a directory's attributes as the master gave them with a
// change, and until when they may answer a getattr.
type freshDir struct {
	attr  wire.Attr
	until time.Time
}

// noteDirs remembers directories' attributes sent with a change. A
// reply that crossed an older one in flight does not undo it: of two
// answers, the one with the later ctime stays (equal ctimes: the last).
func (fs *FS) noteDirs(dirs []wire.Attr) {
	until := time.Now().Add(fs.attrTTL)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.fresh) >= maxFreshDirs {
		now := time.Now()
		for ino, d := range fs.fresh {
			if !now.Before(d.until) {
				delete(fs.fresh, ino)
			}
		}
		if len(fs.fresh) >= maxFreshDirs {
			clear(fs.fresh)
		}
	}
	for _, a := range dirs {
		if old, ok := fs.fresh[a.Inode]; ok && old.attr.Ctime > a.Ctime {
			continue
		}
		fs.fresh[a.Inode] = freshDir{attr: a, until: until}
		if d := fs.dirAttrs[a.Inode]; d != nil {
			d.attr = a
		}
	}
}

// freshAttr answers a getattr of ino from noteDirs, if it may.
func (fs *FS) freshAttr(ino uint32, out *fuse.AttrOut) bool {
	fs.mu.Lock()
	d, ok := fs.fresh[ino]
	fs.mu.Unlock()
	left := time.Until(d.until)
	if !ok || left <= 0 {
		return false
	}
	fs.fill(&d.attr, &out.Attr)
	out.SetTimeout(left)
	return true
}

// staleDir forgets what noteDirs knew of ino: this mount changed its
// attributes some other way (chmod, xattrs).
func (fs *FS) staleDir(ino uint32) {
	fs.mu.Lock()
	delete(fs.fresh, ino)
	fs.mu.Unlock()
}
