package master

import (
	"fmt"
	"syscall"

	"github.com/carpfs/carpfs/internal/master/locks"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// This file serves advisory file locks (Lock, GetLock) from the
// in-memory table of package locks; a session's locks go with it
// (Server.sessionGone).

// lockFile checks that ino is a live inode: a lock on a deleted file
// would outlive every way to release it but the session's end.
func (r *request) lockFile(ino uint32) syscall.Errno {
	var e syscall.Errno
	r.cc.srv.store.Read(func(s *meta.State) { _, e = s.GetAttr(ino) })
	return e
}

// lock takes or drops an advisory lock; a conflict is EAGAIN.
func (r *request) lock(m *wire.Lock) (wire.Message, error) {
	ino := r.in(m.Inode)
	owner := locks.Owner{Session: r.ss.id, ID: m.Owner}
	t := locks.Type(m.LockType)
	if e := r.lockFile(ino); e != 0 && t != locks.Unlock {
		return nil, fmt.Errorf("lock %d: %w", m.Inode, e)
	}
	switch m.Kind {
	case wire.LockPOSIX:
		c, ok, err := r.cc.srv.locks.SetPosix(ino, locks.Lock{Owner: owner, Type: t, Start: m.Start, End: m.End, PID: m.PID})
		switch {
		case err != nil:
			return nil, fmt.Errorf("lock %d: %w: %w", m.Inode, err, errInval)
		case !ok:
			return nil, fmt.Errorf("lock %d bytes %d-%d: %s lock of pid %d (session %d) on bytes %d-%d conflicts: %w",
				m.Inode, m.Start, m.End, c.Type, c.PID, c.Owner.Session, c.Start, c.End, syscall.EAGAIN)
		}
	case wire.LockFlock:
		ok, err := r.cc.srv.locks.SetFlock(ino, owner, t)
		switch {
		case err != nil:
			return nil, fmt.Errorf("flock %d: %w: %w", m.Inode, err, errInval)
		case !ok:
			return nil, fmt.Errorf("flock %d: another owner holds a conflicting lock: %w", m.Inode, syscall.EAGAIN)
		}
	default:
		return nil, fmt.Errorf("lock %d: kind %d is neither POSIX (%d) nor flock (%d): %w",
			m.Inode, m.Kind, wire.LockPOSIX, wire.LockFlock, errInval)
	}
	return &wire.Ok{}, nil
}

// getLock answers the POSIX lock that would conflict with the one
// described, LockUnlock when none would.
func (r *request) getLock(m *wire.GetLock) (wire.Message, error) {
	ino := r.in(m.Inode)
	if e := r.lockFile(ino); e != 0 {
		return nil, fmt.Errorf("getlock %d: %w", m.Inode, e)
	}
	c, found, err := r.cc.srv.locks.TestPosix(ino, locks.Lock{
		Owner: locks.Owner{Session: r.ss.id, ID: m.Owner}, Type: locks.Type(m.LockType), Start: m.Start, End: m.End,
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("getlock %d: %w: %w", m.Inode, err, errInval)
	case !found:
		return &wire.LockInfo{LockType: wire.LockUnlock}, nil
	}
	return &wire.LockInfo{LockType: uint8(c.Type), Start: c.Start, End: c.End, PID: c.PID}, nil
}
