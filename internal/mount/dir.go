package mount

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// Page sizes asked of the master. A page with attributes serves
// READDIRPLUS, which takes some 400 entries per call; names only are
// about a third of the bytes, so their pages are bigger and a listing
// takes fewer round trips.
const (
	dirPage   = 512  // ReadDir, with attributes
	namesPage = 4096 // ReadDirNames
	// firstPlus bounds the entries of a listing's first READDIRPLUS
	// answer, "." and ".." included.
	firstPlus = 34
)

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
	filled int // entries before this one had their attributes fetched (or tried)
}

// OpenDir asks the master nothing: the kernel opens only what it knows
// to be a directory, and the listing starts at the first read.
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ino := uint32(in.NodeId)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fh := fs.nextFh
	fs.nextFh++
	fs.dirs[fh] = &openDir{ino: ino}
	d := fs.dirAttrs[ino]
	if d == nil {
		d = &dirRef{}
		fs.dirAttrs[ino] = d
		if f, ok := fs.fresh[ino]; ok {
			d.attr = f.attr
		}
	}
	d.refs++
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
	// The kernel asks for READDIRPLUS at the start of every listing and
	// later only once lookups followed (ls -l). The first answer is kept
	// short: each entry in it costs the kernel an inode, which a plain
	// listing (find, ls) never uses; the rest of it comes as READDIR.
	stop := math.MaxInt
	if plus && in.Offset == 0 {
		stop = firstPlus
	}
	for i := int(in.Offset); i < stop; i++ {
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
		if i >= 2 && e.Attr.Nlink == 0 && i >= d.filled {
			// A names-only page: fetch the attributes from here on.
			d.fillAttrs(ctx, fs, cr, i)
			e = &d.ents[i]
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			return fuse.OK
		}
		// The kernel takes no entries for "." and ".."; an entry whose
		// attributes are still unknown goes with node 0, which the
		// kernel lists without caching anything for it.
		if i >= 2 && e.Attr.Nlink != 0 {
			fs.entry(&e.Attr, eo)
		}
	}
	return fuse.OK
}

// start (re)reads the listing from its beginning: the parent's inode
// for ".." and the first page, asked for together.
func (d *openDir) start(ctx context.Context, fs *FS, cr client.Cred) error {
	self := wire.Attr{Inode: d.ino, NodeType: uint8(meta.TypeDir)}
	parent := self
	var perr error
	var wg sync.WaitGroup
	if d.ino != meta.RootInode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			perr = fs.do(ctx, func(c *client.Client) (err error) {
				parent, err = c.Lookup(ctx, cr, d.ino, "..")
				return err
			})
		}()
	}
	// Room for the whole listing at once, as big as the directory was
	// when last seen (its size is its entry count).
	fs.mu.Lock()
	want := 2
	if r := fs.dirAttrs[d.ino]; r != nil {
		want += int(min(r.attr.Size, 1<<20))
	}
	fs.mu.Unlock()
	if cap(d.ents) < want {
		d.ents = make([]wire.DirEntry, 0, want)
	}
	d.ents = append(d.ents[:0], wire.DirEntry{Name: ".", Attr: self}, wire.DirEntry{Name: "..", Attr: self})
	d.more, d.loaded, d.filled = true, true, 0
	err := d.next(ctx, fs, cr)
	wg.Wait()
	if err == nil {
		err = perr
	}
	if err != nil {
		d.loaded = false
		return err
	}
	d.ents[1].Attr = parent
	return nil
}

// fillAttrs fetches the attributes of the entries from i on (a page's
// worth), for READDIRPLUS after names-only pages. Names that changed
// meanwhile keep no attributes; so does everything if the master fails
// to answer, and the listing goes on without them.
func (d *openDir) fillAttrs(ctx context.Context, fs *FS, cr client.Cred, i int) {
	after := ""
	if i > 2 {
		after = d.ents[i-1].Name
	}
	var page []wire.DirEntry
	var more bool
	err := fs.do(ctx, func(c *client.Client) (err error) {
		page, more, err = c.ReadDir(ctx, cr, d.ino, after, dirPage)
		return err
	})
	d.filled = len(d.ents)
	if err != nil {
		fs.log.Debug("readdirplus without attributes", "dir", d.ino, "err", err)
		return
	}
	if more && len(page) > 0 {
		// Entries past the page's last name get another try later.
		last := page[len(page)-1].Name
		d.filled = i + sort.Search(len(d.ents)-i, func(j int) bool { return d.ents[i+j].Name > last })
	}
	// Both are in name order: walk them together.
	for _, p := range page {
		for i < len(d.ents) && d.ents[i].Name < p.Name {
			i++
		}
		if i == len(d.ents) {
			return
		}
		if d.ents[i].Name == p.Name && d.ents[i].Attr.Inode == p.Attr.Inode {
			d.ents[i].Attr = p.Attr
		}
	}
}

// next fetches the page after the last name read.
func (d *openDir) next(ctx context.Context, fs *FS, cr client.Cred) error {
	after := ""
	if len(d.ents) > 2 {
		after = d.ents[len(d.ents)-1].Name
	}
	var page []wire.DirEntry
	var more bool
	// The first page comes with attributes, for the kernel's first
	// READDIRPLUS (see ReadDirPlus); later ones with names only, which
	// is all a plain listing needs, unless the master is too old.
	names := len(d.ents) > 2
	err := fs.do(ctx, func(c *client.Client) (err error) {
		if names {
			page, more, err = c.ReadDirNames(ctx, cr, d.ino, after, namesPage)
			if !errors.Is(err, client.ErrNoNames) {
				return err
			}
		}
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
