package mount

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/mount/fileio"
	"github.com/carpfs/carpfs/internal/mount/session"
	"github.com/carpfs/carpfs/internal/wire"
)

// blockSize is st_blksize: the I/O size programs are told to use.
const blockSize = 64 << 10

// FS is a carpfs file system, mounted with Mount. Requests it does not
// implement (ioctl, poll, copy_file_range, lseek, statx) answer ENOSYS
// from the embedded default, and the kernel then does without them.
type FS struct {
	fuse.RawFileSystem

	s    *session.Session
	e    *fileio.Engine
	pool *chunkio.Pool
	log  *slog.Logger

	attrTTL, entryTTL, negTTL time.Duration

	server *fuse.Server
	dir    string

	mu       sync.Mutex
	nextFh   uint64
	files    map[uint64]*openFile
	dirs     map[uint64]*openDir
	opens    map[uint32]int        // master Opens held per inode, for a new session
	dirAttrs map[uint32]*dirRef    // attributes of open directories
	stamps   map[uint32]cacheStamp // size and mtime at the last open, per inode
	owners   map[uint32]map[uint64]bool
	noCaps   map[uint32]time.Time // inodes known to have no security.capability
	fresh    map[uint32]freshDir  // directories' attributes sent with a change
}

// dirRef is an open directory's last known attributes.
type dirRef struct {
	refs int
	attr wire.Attr
}

// cacheStamp is what decides whether an open keeps the page cache.
type cacheStamp struct {
	size  uint64
	mtime uint32
}

func newFS(cfg Config) *FS {
	ttl := func(d time.Duration) time.Duration {
		switch {
		case d == 0:
			return DefaultCacheTimeout
		case d < 0:
			return 0
		}
		return d
	}
	return &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		log:           cfg.Logger,
		attrTTL:       ttl(cfg.AttrTimeout), entryTTL: ttl(cfg.EntryTimeout), negTTL: ttl(cfg.NegativeTimeout),
		nextFh: 1, files: map[uint64]*openFile{}, dirs: map[uint64]*openDir{},
		opens: map[uint32]int{}, dirAttrs: map[uint32]*dirRef{}, stamps: map[uint32]cacheStamp{},
		owners: map[uint32]map[uint64]bool{}, noCaps: map[uint32]time.Time{},
		fresh: map[uint32]freshDir{},
	}
}

// reqCtx is a request's context: its Done is the kernel's interrupt.
// It needs no goroutine, unlike a context derived with a cancel func.
type reqCtx struct {
	context.Context
	cancel <-chan struct{}
}

func (c reqCtx) Done() <-chan struct{} { return c.cancel }

func (c reqCtx) Err() error {
	select {
	case <-c.cancel:
		return context.Canceled
	default:
		return nil
	}
}

// interruptible is a request context that ends on the kernel's
// interrupt. Only waits that may last forever by design (SetLkw) use it:
// see ctxOf.
func interruptible(cancel <-chan struct{}) context.Context {
	return reqCtx{Context: context.Background(), cancel: cancel}
}

// ctxOf is the context of a request that runs to its end whatever the
// kernel's interrupts say. The kernel interrupts a request whenever the
// calling thread gets any signal, and programs get signals all the time
// (Go's runtime preempts with SIGURG every few milliseconds): answering
// EINTR would fail close(2), fsync(2) and write(2) calls that programs do
// not retry, for operations that half happened. Requests are bounded by
// the session's own timeout instead.
func ctxOf(<-chan struct{}) context.Context { return context.Background() }

func credOf(h *fuse.InHeader) client.Cred {
	return client.Cred{UID: h.Uid, GID: h.Gid}
}

// do runs a master call for a request.
func (fs *FS) do(ctx context.Context, op func(c *client.Client) error) error {
	return fs.s.Do(ctx, op)
}

// status turns an error into the kernel's answer. Errors that are not a
// plain errno from the master are logged: they are what an operator
// looks for when an application reports EIO.
func (fs *FS) status(op string, err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	if errors.Is(err, context.Canceled) {
		return fuse.EINTR
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		fs.log.Warn("request failed", "op", op, "err", err)
		return fuse.EIO
	}
	var re *wire.RemoteError
	if errno == syscall.EIO || !errors.As(err, &re) && errno != syscall.EINTR {
		fs.log.Warn("request failed", "op", op, "err", err)
	}
	return fuse.Status(errno)
}

// modeOf is the stat(2) mode of attributes.
func modeOf(a *wire.Attr) uint32 {
	var t uint32
	switch meta.Type(a.NodeType) {
	case meta.TypeFile:
		t = syscall.S_IFREG
	case meta.TypeDir:
		t = syscall.S_IFDIR
	case meta.TypeSymlink:
		t = syscall.S_IFLNK
	case meta.TypeFifo:
		t = syscall.S_IFIFO
	case meta.TypeSocket:
		t = syscall.S_IFSOCK
	case meta.TypeChar:
		t = syscall.S_IFCHR
	case meta.TypeBlock:
		t = syscall.S_IFBLK
	}
	return t | uint32(a.Mode&0o7777)
}

// fill converts the master's attributes for the kernel, with the size
// this mount knows of files it has open.
func (fs *FS) fill(a *wire.Attr, out *fuse.Attr) {
	size := a.Size
	if meta.Type(a.NodeType) == meta.TypeFile {
		size = fs.e.Size(a.Inode, size)
	}
	*out = fuse.Attr{
		Ino: uint64(a.Inode), Size: size, Blocks: (size + 511) / 512,
		Atime: uint64(a.Atime), Mtime: uint64(a.Mtime), Ctime: uint64(a.Ctime),
		Mode: modeOf(a), Nlink: a.Nlink, Owner: fuse.Owner{Uid: a.UID, Gid: a.GID},
		Rdev: a.Rdev, Blksize: blockSize,
	}
}

// entry fills an entry answer.
func (fs *FS) entry(a *wire.Attr, out *fuse.EntryOut) {
	out.NodeId = uint64(a.Inode)
	out.Generation = 0
	out.SetEntryTimeout(fs.entryTTL)
	out.SetAttrTimeout(fs.attrTTL)
	fs.fill(a, &out.Attr)
}

func (fs *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	ctx := ctxOf(cancel)
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.Lookup(ctx, credOf(h), uint32(h.NodeId), name)
		return err
	})
	if errors.Is(err, syscall.ENOENT) && fs.negTTL > 0 {
		// A negative entry: the kernel remembers the name is missing.
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(fs.negTTL)
		return fuse.OK
	}
	if err != nil {
		return fs.status("lookup", err)
	}
	fs.entry(&a, out)
	return fuse.OK
}

func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	ctx := ctxOf(cancel)
	ino := uint32(in.NodeId)
	if fs.freshAttr(ino, out) {
		return fuse.OK
	}
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.GetAttr(ctx, credOf(&in.InHeader), ino)
		return err
	})
	switch {
	case err == nil:
		// An open directory keeps its last attributes, and its size
		// sizes the listing.
		fs.mu.Lock()
		if d := fs.dirAttrs[ino]; d != nil {
			d.attr = a
		}
		fs.mu.Unlock()
	case errors.Is(err, syscall.ENOENT):
		// A directory removed while open still has attributes.
		fs.mu.Lock()
		if d := fs.dirAttrs[ino]; d != nil && d.attr.Inode != 0 {
			a, err = d.attr, nil
			a.Nlink = 0
		}
		fs.mu.Unlock()
	}
	if err != nil {
		return fs.status("getattr", err)
	}
	fs.fill(&a, &out.Attr)
	out.SetTimeout(fs.attrTTL)
	return fuse.OK
}

func (fs *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	ctx := ctxOf(cancel)
	ino := uint32(in.NodeId)
	fs.staleDir(ino)
	var args client.SetAttrArgs
	if in.Valid&fuse.FATTR_MODE != 0 {
		args.Mask |= wire.SetAttrMode
		args.Mode = uint16(in.Mode & 0o7777)
	}
	if in.Valid&fuse.FATTR_UID != 0 {
		args.Mask |= wire.SetAttrUID
		args.UID = in.Owner.Uid
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		args.Mask |= wire.SetAttrGID
		args.GID = in.Owner.Gid
	}
	switch {
	case in.Valid&fuse.FATTR_ATIME_NOW != 0:
		args.Mask |= wire.SetAttrAtimeNow
	case in.Valid&fuse.FATTR_ATIME != 0:
		args.Mask |= wire.SetAttrAtime
		args.Atime = uint32(in.Atime)
	}
	switch {
	case in.Valid&fuse.FATTR_MTIME_NOW != 0:
		args.Mask |= wire.SetAttrMtimeNow
	case in.Valid&fuse.FATTR_MTIME != 0:
		args.Mask |= wire.SetAttrMtime
		args.Mtime = uint32(in.Mtime)
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		args.Mask |= wire.SetAttrSize
		args.Size = in.Size
	}
	var a wire.Attr
	set := func(ctx context.Context) error {
		return fs.do(ctx, func(c *client.Client) (err error) {
			a, err = c.SetAttr(ctx, credOf(&in.InHeader), ino, args)
			return err
		})
	}
	var err error
	if f := fs.e.File(ino); f != nil {
		// Buffered writes land first: they would otherwise change the
		// size or the mtime after this call.
		if args.Mask&wire.SetAttrSize != 0 {
			err = f.Truncate(ctx, args.Size, set)
		} else if err = f.Settle(ctx); err == nil {
			err = set(ctx)
		}
	} else {
		err = set(ctx)
	}
	if err != nil {
		return fs.status("setattr", err)
	}
	fs.fill(&a, &out.Attr)
	out.SetTimeout(fs.attrTTL)
	return fuse.OK
}

// create makes a node and answers its entry.
func (fs *FS) create(ctx context.Context, h *fuse.InHeader, name string, typ uint8, mode, rdev uint32, out *fuse.EntryOut) fuse.Status {
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.Create(ctx, credOf(h), uint32(h.NodeId), name, typ, uint16(mode&0o7777), rdev, false)
		return err
	})
	if err != nil {
		return fs.status("create", err)
	}
	fs.entry(&a, out)
	return fuse.OK
}

func (fs *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	var typ uint8
	switch in.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		typ = client.TypeFile
	case syscall.S_IFIFO:
		typ = client.TypeFifo
	case syscall.S_IFSOCK:
		typ = client.TypeSocket
	case syscall.S_IFCHR:
		typ = client.TypeChar
	case syscall.S_IFBLK:
		typ = client.TypeBlock
	default:
		return fuse.EINVAL
	}
	return fs.create(ctxOf(cancel), &in.InHeader, name, typ, in.Mode, in.Rdev, out)
}

func (fs *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.create(ctxOf(cancel), &in.InHeader, name, client.TypeDir, in.Mode, 0, out)
}

func (fs *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	ctx := ctxOf(cancel)
	return fs.status("unlink", fs.do(ctx, func(c *client.Client) error {
		return c.Unlink(ctx, credOf(h), uint32(h.NodeId), name)
	}))
}

func (fs *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	ctx := ctxOf(cancel)
	return fs.status("rmdir", fs.do(ctx, func(c *client.Client) error {
		return c.Rmdir(ctx, credOf(h), uint32(h.NodeId), name)
	}))
}

// Rename renames as rename(2). RENAME_NOREPLACE and RENAME_EXCHANGE
// would need to be atomic at the master, which has no such operation:
// EINVAL, which makes callers such as mv(1) fall back.
func (fs *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if in.Flags != 0 {
		return fuse.EINVAL
	}
	ctx := ctxOf(cancel)
	return fs.status("rename", fs.do(ctx, func(c *client.Client) error {
		return c.Rename(ctx, credOf(&in.InHeader), uint32(in.NodeId), oldName, uint32(in.Newdir), newName)
	}))
}

func (fs *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	ctx := ctxOf(cancel)
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.Link(ctx, credOf(&in.InHeader), uint32(in.Oldnodeid), uint32(in.NodeId), name)
		return err
	})
	if err != nil {
		return fs.status("link", err)
	}
	fs.entry(&a, out)
	return fuse.OK
}

func (fs *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	ctx := ctxOf(cancel)
	var a wire.Attr
	err := fs.do(ctx, func(c *client.Client) (err error) {
		a, err = c.Symlink(ctx, credOf(h), uint32(h.NodeId), name, target)
		return err
	})
	if err != nil {
		return fs.status("symlink", err)
	}
	fs.entry(&a, out)
	return fuse.OK
}

func (fs *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	ctx := ctxOf(cancel)
	var target string
	err := fs.do(ctx, func(c *client.Client) (err error) {
		target, err = c.ReadLink(ctx, credOf(h), uint32(h.NodeId))
		return err
	})
	if err != nil {
		return nil, fs.status("readlink", err)
	}
	return []byte(target), fuse.OK
}

// StatFs reports the chunkservers' space in 64 KiB blocks, and the
// master's file count.
func (fs *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	ctx := ctxOf(cancel)
	var st wire.FSStats
	err := fs.do(ctx, func(c *client.Client) (err error) {
		st, err = c.StatFS(ctx, credOf(h))
		return err
	})
	if err != nil {
		return fs.status("statfs", err)
	}
	const maxInodes = 1 << 32
	used := st.Files + st.Dirs
	*out = fuse.StatfsOut{
		Blocks: st.TotalSpace / blockSize, Bfree: st.AvailSpace / blockSize, Bavail: st.AvailSpace / blockSize,
		Files: maxInodes, Ffree: maxInodes - min(used, maxInodes),
		Bsize: blockSize, Frsize: blockSize, NameLen: meta.MaxNameLen,
	}
	return fuse.OK
}

// FsyncDir has nothing to do: the master acknowledges a change only once
// it is durable.
func (fs *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return fuse.OK }

// reopen registers the mount's open files with a new session, after the
// master closed the old one (see session.Config.Reopened).
func (fs *FS) reopen(ctx context.Context, c *client.Client) error {
	fs.mu.Lock()
	opens := make(map[uint32]int, len(fs.opens))
	for ino, n := range fs.opens {
		opens[ino] = n
	}
	fs.mu.Unlock()
	var errs []error
	for ino, n := range opens {
		for range n {
			if _, err := c.Open(ctx, client.Cred{}, ino, syscall.O_RDONLY); err != nil {
				fs.log.Warn("open file lost with the old session", "inode", ino, "err", err)
				errs = append(errs, err)
				break
			}
		}
	}
	if len(errs) > 0 && errors.Is(errs[0], wire.ErrClosed) {
		return errs[0]
	}
	fs.log.Warn("master session replaced; open files registered again, locks and leases of the old one are gone", "session", c.Session(), "files", len(opens))
	return nil
}
