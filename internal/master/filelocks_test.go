package master_test

import (
	"syscall"
	"testing"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/master/locks"
	"github.com/carpfs/carpfs/internal/wire"
)

// TestFileLocks: POSIX and flock locks through the client link:
// conflicts across sessions are EAGAIN, GetLock names the holder, bad
// requests are EINVAL, and a session's locks go with it.
func TestFileLocks(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	a := c.dial(t, client.Config{Name: "a"})
	b := c.dial(t, client.Config{Name: "b"})
	f := must[wire.Attr](t, "create")(a.Create(ctx, user, 1, "f", client.TypeFile, 0o644, 0, false)).Inode

	posix := func(typ uint8, start, end uint64, pid uint32) wire.Lock {
		return wire.Lock{Inode: f, Owner: 7, Kind: wire.LockPOSIX, LockType: typ, Start: start, End: end, PID: pid}
	}
	noErr(t, "a read-locks 0-99", a.Lock(ctx, user, posix(wire.LockRead, 0, 99, 11)))
	noErr(t, "b read-locks 50-149", b.Lock(ctx, user, posix(wire.LockRead, 50, 149, 22)))
	wantErrno(t, "b write-locks 90-95", b.Lock(ctx, user, posix(wire.LockWrite, 90, 95, 22)), syscall.EAGAIN)
	noErr(t, "b write-locks 100-149", b.Lock(ctx, user, posix(wire.LockWrite, 100, 149, 22)))

	li := must[wire.LockInfo](t, "getlk")(a.GetLock(ctx, user, wire.GetLock{Inode: f, Owner: 7, LockType: wire.LockWrite, Start: 100, End: locks.ToEnd}))
	if li.LockType != wire.LockWrite || li.Start != 100 || li.End != 149 || li.PID != 22 {
		t.Fatalf("getlk: %+v", li)
	}
	li = must[wire.LockInfo](t, "getlk free")(a.GetLock(ctx, user, wire.GetLock{Inode: f, Owner: 7, LockType: wire.LockWrite, Start: 150, End: locks.ToEnd}))
	if li.LockType != wire.LockUnlock {
		t.Fatalf("getlk past the locks: %+v", li)
	}

	wantErrno(t, "bad kind", a.Lock(ctx, user, wire.Lock{Inode: f, Kind: 9, LockType: wire.LockRead}), syscall.EINVAL)
	wantErrno(t, "bad range", a.Lock(ctx, user, posix(wire.LockRead, 10, 5, 11)), syscall.EINVAL)
	wantErrno(t, "bad type", a.Lock(ctx, user, posix(0, 0, 5, 11)), syscall.EINVAL)
	_, err := a.GetLock(ctx, user, wire.GetLock{Inode: f, LockType: wire.LockUnlock, End: 1})
	wantErrno(t, "getlk unlock", err, syscall.EINVAL)
	wantErrno(t, "lock a missing inode", a.Lock(ctx, user, wire.Lock{Inode: 999, Kind: wire.LockFlock, LockType: wire.LockRead}), syscall.ENOENT)

	flock := func(typ uint8) wire.Lock { return wire.Lock{Inode: f, Owner: 3, Kind: wire.LockFlock, LockType: typ} }
	noErr(t, "a flock shared", a.Lock(ctx, user, flock(wire.LockRead)))
	wantErrno(t, "b flock exclusive", b.Lock(ctx, user, flock(wire.LockWrite)), syscall.EAGAIN)
	noErr(t, "b flock shared", b.Lock(ctx, user, flock(wire.LockRead)))

	// b's session ends: its locks go, and a may take what b held.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	noErr(t, "a write-locks all after b left", a.Lock(ctx, user, posix(wire.LockWrite, 0, locks.ToEnd, 11)))
	noErr(t, "a flock exclusive after b left", a.Lock(ctx, user, flock(wire.LockWrite)))
}
