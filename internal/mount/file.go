package mount

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/mount/fileio"
	"github.com/carpfs/carpfs/internal/wire"
)

// openFile is an open file handle.
type openFile struct {
	ino uint32
	f   *fileio.File
	st  fileio.Stream
}

// opened records a file the master has opened for the session and
// fills the kernel's answer.
func (fs *FS) opened(a *wire.Attr, out *fuse.OpenOut) {
	h := &openFile{ino: a.Inode, f: fs.e.Open(a.Inode, a.Size)}
	stamp := cacheStamp{size: a.Size, mtime: a.Mtime}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fh := fs.nextFh
	fs.nextFh++
	fs.files[fh] = h
	fs.opens[a.Inode]++
	// The page cache is kept only if nobody changed the file since it was
	// filled; an mtime of this second or the last may hide a change.
	old, seen := fs.stamps[a.Inode]
	if len(fs.stamps) > 1<<16 {
		clear(fs.stamps)
	}
	fs.stamps[a.Inode] = stamp
	out.Fh = fh
	out.OpenFlags = 0
	if seen && old == stamp && int64(a.Mtime)+2 <= time.Now().Unix() {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	}
}

// file returns an open file handle.
func (fs *FS) file(fh uint64) (*openFile, fuse.Status) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	h := fs.files[fh]
	if h == nil {
		return nil, fuse.EBADF
	}
	return h, fuse.OK
}

func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ctx := ctxOf(cancel)
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.Open(ctx, credOf(&in.InHeader), uint32(in.NodeId), in.Flags)
		return err
	})
	if err != nil {
		return fs.status("open", err)
	}
	fs.opened(&a, out)
	return fuse.OK
}

func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	ctx := ctxOf(cancel)
	cr, parent := credOf(&in.InHeader), uint32(in.NodeId)
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.Create(ctx, cr, parent, name, client.TypeFile, uint16(in.Mode&0o7777), 0, true)
		return err
	})
	if err == nil {
		// A new file has no extended attributes: its first write need not
		// ask the master for security.capability.
		fs.noteNoCaps(a.Inode)
	}
	if errors.Is(err, syscall.EEXIST) && in.Flags&syscall.O_EXCL == 0 {
		// Another mount created it since the kernel looked: open it.
		err = fs.do(ctx, func(c *client.Client) (err error) {
			if a, err = c.Lookup(ctx, cr, parent, name); err != nil {
				return err
			}
			if a, err = c.Open(ctx, cr, a.Inode, in.Flags); err != nil || in.Flags&syscall.O_TRUNC == 0 {
				return err
			}
			a, err = c.SetAttr(ctx, cr, a.Inode, client.SetAttrArgs{Mask: wire.SetAttrSize})
			return err
		})
	}
	if err != nil {
		return fs.status("create", err)
	}
	fs.entry(&a, &out.EntryOut)
	fs.opened(&a, &out.OpenOut)
	return fuse.OK
}

// Tmpfile makes a file in no directory (O_TMPFILE): the master has no
// such operation, so it is created under a random hidden name, opened,
// and unlinked at once; the open keeps it alive until its last release.
func (fs *FS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	ctx := ctxOf(cancel)
	cr, parent := credOf(&in.InHeader), uint32(in.NodeId)
	name := fmt.Sprintf(".carpfs-tmpfile-%016x", rand.Uint64())
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.Create(ctx, cr, parent, name, client.TypeFile, uint16(in.Mode&0o7777), 0, true)
		return err
	})
	if err != nil {
		return fs.status("tmpfile", err)
	}
	err = fs.do(ctx, func(c *client.Client) error { return c.Unlink(ctx, cr, parent, name) })
	if err != nil {
		fs.do(context.Background(), func(c *client.Client) error { return c.Release(context.Background(), cr, a.Inode) })
		return fs.status("tmpfile", err)
	}
	// The kernel takes the link count of a named file and drops it by
	// one itself.
	fs.entry(&a, &out.EntryOut)
	fs.opened(&a, &out.OpenOut)
	return fuse.OK
}

func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, st := fs.file(in.Fh)
	if !st.Ok() {
		return nil, st
	}
	n, err := h.f.Read(ctxOf(cancel), &h.st, int64(in.Offset), buf[:min(len(buf), int(in.Size))])
	if err != nil {
		return nil, fs.status("read", err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h, st := fs.file(in.Fh)
	if !st.Ok() {
		return 0, st
	}
	if err := h.f.Write(ctxOf(cancel), int64(in.Offset), data); err != nil {
		return 0, fs.status("write", err)
	}
	return uint32(len(data)), fuse.OK
}

// Flush is close(2) of a descriptor: the POSIX locks of the closing
// process on the file go, and buffered data lands with the file's length
// at the master, so the next open anywhere sees it.
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h, st := fs.file(in.Fh)
	if !st.Ok() {
		return st
	}
	ctx := ctxOf(cancel)
	fs.unlockPOSIX(ctx, h.ino, in.LockOwner)
	return fs.status("flush", h.f.Flush(ctx))
}

func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h, st := fs.file(in.Fh)
	if !st.Ok() {
		return st
	}
	return fs.status("fsync", h.f.Fsync(ctxOf(cancel)))
}

// Release is the last close of a handle. The kernel does not wait for
// the answer, so failures can only be logged.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.mu.Lock()
	h := fs.files[in.Fh]
	delete(fs.files, in.Fh)
	if h != nil {
		if fs.opens[h.ino]--; fs.opens[h.ino] <= 0 {
			delete(fs.opens, h.ino)
		}
	}
	fs.mu.Unlock()
	if h == nil {
		return
	}
	ctx := context.Background()
	if in.ReleaseFlags&fuse.FUSE_RELEASE_FLOCK_UNLOCK != 0 {
		l := wire.Lock{Inode: h.ino, Owner: in.LockOwner, Kind: wire.LockFlock, LockType: wire.LockUnlock}
		if err := fs.do(ctx, func(c *client.Client) error { return c.Lock(ctx, client.Cred{}, l) }); err != nil {
			fs.log.Warn("flock not released", "inode", h.ino, "err", err)
		}
	}
	// Data written through a shared mapping may arrive after the last
	// flush.
	if err := h.f.Flush(ctx); err != nil {
		fs.log.Error("data written before close lost", "inode", h.ino, "err", err)
	}
	fs.e.Release(h.f)
	if err := fs.do(ctx, func(c *client.Client) error { return c.Release(ctx, credOf(&in.InHeader), h.ino) }); err != nil {
		fs.log.Warn("release at the master failed", "inode", h.ino, "err", err)
	}
}

// Fallocate supports what a file system without preallocation can:
// extending the file (mode 0) and reserving nothing (KEEP_SIZE). Space
// is only allocated when written.
func (fs *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h, st := fs.file(in.Fh)
	if !st.Ok() {
		return st
	}
	const keepSize = 1 // FALLOC_FL_KEEP_SIZE
	switch in.Mode {
	case keepSize:
		return fuse.OK
	case 0:
	default:
		return fuse.Status(syscall.EOPNOTSUPP)
	}
	ctx := ctxOf(cancel)
	end := in.Offset + in.Length
	if end <= h.f.Size() {
		return fuse.OK
	}
	err := h.f.Truncate(ctx, end, func(ctx context.Context) error {
		return fs.do(ctx, func(c *client.Client) error {
			_, err := c.SetAttr(ctx, credOf(&in.InHeader), h.ino, client.SetAttrArgs{Mask: wire.SetAttrSize, Size: end})
			return err
		})
	})
	return fs.status("fallocate", err)
}
