package mount

import (
	"context"
	"errors"
	"math"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/wire"
)

// Locks are the master's, so that they hold between mounts: the kernel
// forwards fcntl(2) and flock(2) locks, and this side only translates
// them. The master does not wait; a lock that must wait (F_SETLKW, flock
// without LOCK_NB) is asked again with backoff until it is granted or
// the caller is interrupted. POSIX locks go when their owner closes any
// descriptor of the file (FLUSH), flock locks when the last descriptor
// of their open file goes (RELEASE).

// offsetMax is the kernel's "to the end of the file".
const offsetMax = math.MaxInt64

func lockEnd(end uint64) uint64 {
	if end >= offsetMax {
		return math.MaxUint64
	}
	return end
}

func kernelEnd(end uint64) uint64 {
	if end >= offsetMax {
		return offsetMax
	}
	return end
}

// lockType converts fcntl's lock type.
func lockType(t uint32) (uint8, bool) {
	switch t {
	case syscall.F_RDLCK:
		return wire.LockRead, true
	case syscall.F_WRLCK:
		return wire.LockWrite, true
	case syscall.F_UNLCK:
		return wire.LockUnlock, true
	}
	return 0, false
}

func (fs *FS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	typ, ok := lockType(in.Lk.Typ)
	if !ok {
		return fuse.EINVAL
	}
	ctx := ctxOf(cancel)
	q := wire.GetLock{Inode: uint32(in.NodeId), Owner: in.Owner, LockType: typ, Start: in.Lk.Start, End: lockEnd(in.Lk.End)}
	var li wire.LockInfo
	err := fs.do(ctx, func(c *client.Client) (err error) {
		li, err = c.GetLock(ctx, credOf(&in.InHeader), q)
		return err
	})
	if err != nil {
		return fs.status("getlk", err)
	}
	switch li.LockType {
	case wire.LockRead:
		out.Lk = fuse.FileLock{Typ: syscall.F_RDLCK, Start: li.Start, End: kernelEnd(li.End), Pid: li.PID}
	case wire.LockWrite:
		out.Lk = fuse.FileLock{Typ: syscall.F_WRLCK, Start: li.Start, End: kernelEnd(li.End), Pid: li.PID}
	default:
		out.Lk = fuse.FileLock{Typ: syscall.F_UNLCK}
	}
	return fuse.OK
}

func (fs *FS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLk(ctxOf(cancel), in, false)
}

func (fs *FS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLk(interruptible(cancel), in, true)
}

func (fs *FS) setLk(ctx context.Context, in *fuse.LkIn, wait bool) fuse.Status {
	typ, ok := lockType(in.Lk.Typ)
	if !ok {
		return fuse.EINVAL
	}
	ino := uint32(in.NodeId)
	l := wire.Lock{Inode: ino, Owner: in.Owner, Kind: wire.LockPOSIX, LockType: typ,
		Start: in.Lk.Start, End: lockEnd(in.Lk.End), PID: in.Lk.Pid}
	if in.LkFlags&fuse.LK_FLOCK != 0 {
		l.Kind, l.Start, l.End = wire.LockFlock, 0, 0
	}
	if l.Kind == wire.LockPOSIX && typ != wire.LockUnlock {
		// Recorded before asking, so that a close racing with the grant
		// still drops it.
		fs.mu.Lock()
		if fs.owners[ino] == nil {
			fs.owners[ino] = map[uint64]bool{}
		}
		fs.owners[ino][in.Owner] = true
		fs.mu.Unlock()
	}
	delay := 5 * time.Millisecond
	for {
		err := fs.do(ctx, func(c *client.Client) error { return c.Lock(ctx, credOf(&in.InHeader), l) })
		if !wait || !errors.Is(err, syscall.EAGAIN) {
			return fs.status("setlk", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fuse.EINTR
		case <-t.C:
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// unlockPOSIX drops the POSIX locks owner holds on inode ino, if it ever
// took one here.
func (fs *FS) unlockPOSIX(ctx context.Context, ino uint32, owner uint64) {
	fs.mu.Lock()
	held := fs.owners[ino][owner]
	if held {
		delete(fs.owners[ino], owner)
		if len(fs.owners[ino]) == 0 {
			delete(fs.owners, ino)
		}
	}
	fs.mu.Unlock()
	if !held {
		return
	}
	l := wire.Lock{Inode: ino, Owner: owner, Kind: wire.LockPOSIX, LockType: wire.LockUnlock, End: math.MaxUint64}
	if err := fs.do(ctx, func(c *client.Client) error { return c.Lock(ctx, client.Cred{}, l) }); err != nil {
		fs.log.Warn("POSIX locks not released on close", "inode", ino, "owner", owner, "err", err)
	}
}
