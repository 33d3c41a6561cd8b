package mount

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// dirPage is how many names one ReadDir asks of the master.
const dirPage = 1024

// openDir is an open directory handle. Its listing is a snapshot taken
// page by page as the reader advances and kept until it reads from the
// start again, so the offsets it hands out (an entry's position, plus
// one) stay valid for seekdir(3). The master pages by name, so entries
// added or removed meanwhile neither repeat nor hide others.
type openDir struct {
	ino uint32

	mu     sync.Mutex
	ents   []wire.DirEntry // ".", "..", then the master's names in order
	more   bool            // the master has names after the last one
	loaded bool
}

func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ctx := ctxOf(cancel)
	ino := uint32(in.NodeId)
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.GetAttr(ctx, credOf(&in.InHeader), ino)
		return err
	})
	if err == nil && meta.Type(a.NodeType) != meta.TypeDir {
		err = syscall.ENOTDIR
	}
	if err != nil {
		return fs.status("opendir", err)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fh := fs.nextFh
	fs.nextFh++
	fs.dirs[fh] = &openDir{ino: ino}
	d := fs.dirAttrs[ino]
	if d == nil {
		d = &dirRef{}
		fs.dirAttrs[ino] = d
	}
	d.refs++
	d.attr = a
	out.Fh = fh
	return fuse.OK
}

func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d := fs.dirs[in.Fh]
	if d == nil {
		return
	}
	delete(fs.dirs, in.Fh)
	if r := fs.dirAttrs[d.ino]; r != nil {
		if r.refs--; r.refs == 0 {
			delete(fs.dirAttrs, d.ino)
		}
	}
}

func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(ctxOf(cancel), in, out, false)
}

func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(ctxOf(cancel), in, out, true)
}

func (fs *FS) readDir(ctx context.Context, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	fs.mu.Lock()
	d := fs.dirs[in.Fh]
	fs.mu.Unlock()
	if d == nil {
		return fuse.EBADF
	}
	cr := credOf(&in.InHeader)
	d.mu.Lock()
	defer d.mu.Unlock()
	if in.Offset == 0 || !d.loaded {
		if err := d.start(ctx, fs, cr); err != nil {
			return fs.status("readdir", err)
		}
	}
	for i := int(in.Offset); ; i++ {
		for i >= len(d.ents) && d.more {
			if err := d.next(ctx, fs, cr); err != nil {
				return fs.status("readdir", err)
			}
		}
		if i >= len(d.ents) {
			return fuse.OK
		}
		e := &d.ents[i]
		de := fuse.DirEntry{Name: e.Name, Mode: modeOf(&e.Attr), Ino: uint64(e.Attr.Inode), Off: uint64(i + 1)}
		if !plus {
			if !out.AddDirEntry(de) {
				return fuse.OK
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			return fuse.OK
		}
		if i >= 2 { // the kernel takes no entries for "." and ".."
			fs.entry(&e.Attr, eo)
		}
	}
}

// start (re)reads the listing from its beginning.
func (d *openDir) start(ctx context.Context, fs *FS, cr client.Cred) error {
	self := wire.Attr{Inode: d.ino, NodeType: uint8(meta.TypeDir)}
	parent := self
	if d.ino != meta.RootInode {
		err := fs.do(ctx, func(c *client.Client) (err error) {
			parent, err = c.Lookup(ctx, cr, d.ino, "..")
			return err
		})
		if err != nil {
			return err
		}
	}
	d.ents = append(d.ents[:0], wire.DirEntry{Name: ".", Attr: self}, wire.DirEntry{Name: "..", Attr: parent})
	d.more, d.loaded = true, true
	return d.next(ctx, fs, cr)
}

// next fetches the page after the last name read.
func (d *openDir) next(ctx context.Context, fs *FS, cr client.Cred) error {
	after := ""
	if len(d.ents) > 2 {
		after = d.ents[len(d.ents)-1].Name
	}
	var page []wire.DirEntry
	var more bool
	err := fs.do(ctx, func(c *client.Client) (err error) {
		page, more, err = c.ReadDir(ctx, cr, d.ino, after, dirPage)
		return err
	})
	if err != nil {
		return err
	}
	d.ents = append(d.ents, page...)
	d.more = more && len(page) > 0
	return nil
}
