package master_test

import (
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// TestReadOnly: a read-only export answers every mutation with EROFS,
// and serves queries and read opens.
func TestReadOnly(t *testing.T) {
	c := start(t, "127.0.0.1 / ro,maproot=0", 0)
	ctx := testCtx(t)
	cl := c.dial(t, client.Config{})
	if !cl.ReadOnly() {
		t.Fatal("session is not read-only")
	}
	_, err := cl.Mkdir(ctx, user, 1, "d", 0o755)
	wantErrno(t, "mkdir", err, syscall.EROFS)
	_, err = cl.Create(ctx, user, 1, "f", client.TypeFile, 0o644, 0, true)
	wantErrno(t, "create", err, syscall.EROFS)
	_, err = cl.Symlink(ctx, user, 1, "s", "t")
	wantErrno(t, "symlink", err, syscall.EROFS)
	_, err = cl.SetAttr(ctx, user, 1, client.SetAttrArgs{Mask: wire.SetAttrMode, Mode: 0o777})
	wantErrno(t, "chmod", err, syscall.EROFS)
	wantErrno(t, "setxattr", cl.SetXattr(ctx, user, 1, "user.x", nil, 0), syscall.EROFS)
	wantErrno(t, "rename", cl.Rename(ctx, user, 1, "a", 1, "b"), syscall.EROFS)
	_, err = cl.SetGoal(ctx, user, 1, 3)
	wantErrno(t, "setgoal", err, syscall.EROFS)
	if _, err := cl.GetAttr(ctx, user, 1); err != nil {
		t.Fatalf("getattr: %v", err)
	}
	if _, err := cl.ReadDirAll(ctx, user, 1); err != nil {
		t.Fatalf("readdir: %v", err)
	}
	if _, err := c.store.Do(ctx, &meta.Create{Parent: 1, Name: "f", Type: meta.TypeFile, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	f, err := cl.Lookup(ctx, user, 1, "f")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Open(ctx, user, f.Inode, syscall.O_WRONLY)
	wantErrno(t, "open for writing", err, syscall.EROFS)
	_, err = cl.Open(ctx, user, f.Inode, syscall.O_RDONLY|syscall.O_TRUNC)
	wantErrno(t, "open with O_TRUNC", err, syscall.EROFS)
	if _, err := cl.Open(ctx, user, f.Inode, syscall.O_RDONLY); err != nil {
		t.Fatalf("open for reading: %v", err)
	}
}

// TestRefusedAddress: a client no line admits is refused at session
// open, with a message naming its address, the directory and the file.
func TestRefusedAddress(t *testing.T) {
	c := start(t, "10.9.9.0/24 / rw\n127.0.0.1 /pub ro", 0)
	_, err := client.Dial(testCtx(t), c.addr, client.Config{Path: "/"})
	wantErrno(t, "session open", err, syscall.EACCES)
	for _, want := range []string{"127.0.0.1", "mount /", "mfsexports.cfg"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}
	// The directory that is exported to it still works, read-only.
	if _, err := c.store.Do(testCtx(t), &meta.Create{Parent: 1, Name: "pub", Type: meta.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	cl := c.dial(t, client.Config{Path: "/pub"})
	if !cl.ReadOnly() {
		t.Fatal("/pub should be read-only")
	}
}

// TestPassword: an export with password= refuses a mount without the
// password or with a wrong one, and admits the right one.
func TestPassword(t *testing.T) {
	c := start(t, "* / rw,password=s3cret", 0)
	ctx := testCtx(t)
	_, err := client.Dial(ctx, c.addr, client.Config{})
	wantErrno(t, "no password", err, syscall.EACCES)
	if !strings.Contains(err.Error(), "needs a password") {
		t.Errorf("refusal %q does not say a password is needed", err)
	}
	_, err = client.Dial(ctx, c.addr, client.Config{Password: "guess"})
	wantErrno(t, "wrong password", err, syscall.EACCES)
	if !strings.Contains(err.Error(), "wrong password") {
		t.Errorf("refusal %q does not say the password is wrong", err)
	}
	cl := c.dial(t, client.Config{Password: "s3cret"})
	if _, err := cl.Mkdir(ctx, user, 1, "d", 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestMapping: maproot maps uid 0 only; mapall maps everyone else.
func TestMapping(t *testing.T) {
	c := start(t, "* / rw,maproot=1234:5678,mapall=2000:3000", 0)
	ctx := testCtx(t)
	cl := c.dial(t, client.Config{})
	r, err := cl.Mkdir(ctx, root, 1, "byroot", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	u, err := cl.Create(ctx, user, 1, "byuser", client.TypeFile, 0o644, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != 1234 || r.GID != 5678 || u.UID != 2000 || u.GID != 3000 {
		t.Fatalf("root made %d:%d, user made %d:%d", r.UID, r.GID, u.UID, u.GID)
	}

	c2 := start(t, "* / rw,maproot=77", 0) // no group: the number itself
	cl2 := c2.dial(t, client.Config{})
	r2, err := cl2.Mkdir(ctx, root, 1, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := cl2.Mkdir(ctx, user, 1, "e", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if r2.UID != 77 || u2.UID != 1000 || u2.GID != 100 {
		t.Fatalf("maproot=77: root made %d:%d, user %d:%d", r2.UID, r2.GID, u2.UID, u2.GID)
	}
}

// TestSubdir: a mount of a subdirectory sees it as inode 1, cannot climb
// above it by "..", and mounting a deeper directory needs alldirs.
func TestSubdir(t *testing.T) {
	c := start(t, "* /data rw", 0)
	ctx := testCtx(t)
	res, err := c.store.Do(ctx, &meta.Create{Parent: 1, Name: "data", Type: meta.TypeDir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	dataIno := uint32(res.Val[0])
	cl := c.dial(t, client.Config{Path: "/data"})
	if cl.RootAttr().Inode != 1 {
		t.Fatalf("root of the mount is inode %d", cl.RootAttr().Inode)
	}
	sub, err := cl.Mkdir(ctx, user, 1, "sub", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	var masterIno uint32
	c.store.Read(func(s *meta.State) { masterIno, _ = s.Lookup(dataIno, "sub") })
	if masterIno != sub.Inode {
		t.Fatalf("sub made as %d, master has %d", sub.Inode, masterIno)
	}
	if a, err := cl.Lookup(ctx, user, sub.Inode, ".."); err != nil || a.Inode != 1 {
		t.Fatalf("lookup .. of sub: %+v, %v", a, err)
	}
	if a, err := cl.Lookup(ctx, user, 1, ".."); err != nil || a.Inode != 1 {
		t.Fatalf("lookup .. of the mount's root: %+v, %v", a, err)
	}
	_, err = client.Dial(ctx, c.addr, client.Config{Path: "/data/sub"})
	wantErrno(t, "mount below an export without alldirs", err, syscall.EACCES)
	_, err = client.Dial(ctx, c.addr, client.Config{Path: "/missing"})
	wantErrno(t, "mount of an unexported directory", err, syscall.EACCES)

	c2 := start(t, "* / rw,alldirs", 0)
	_, err = client.Dial(ctx, c2.addr, client.Config{Path: "/nothing/here"})
	wantErrno(t, "mount of a missing directory", err, syscall.ENOENT)
}

// TestConcurrentClients: 16 mounts create files at once; every file is
// there afterwards, and the changelog was flushed far fewer times than
// there were operations (group commit).
func TestConcurrentClients(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	const clients, files = 16, 25
	cls := make([]*client.Client, clients)
	for i := range cls {
		cls[i] = c.dial(t, client.Config{Name: fmt.Sprint("c", i)})
	}
	before := c.store.Flushes()
	var wg sync.WaitGroup
	errs := make(chan error, clients*files)
	for i, cl := range cls {
		d, err := cl.Mkdir(ctx, user, 1, fmt.Sprint("d", i), 0o755)
		if err != nil {
			t.Fatal(err)
		}
		for j := range files {
			wg.Go(func() {
				if _, err := cl.Create(ctx, user, d.Inode, fmt.Sprint("f", j), client.TypeFile, 0o644, 0, false); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	flushes := c.store.Flushes() - before
	ops := uint64(clients * (files + 1))
	t.Logf("%d operations, %d changelog flushes", ops, flushes)
	if flushes >= ops {
		t.Fatalf("%d flushes for %d operations: no group commit", flushes, ops)
	}
	for i, cl := range cls {
		d, err := cl.Lookup(ctx, user, 1, fmt.Sprint("d", i))
		if err != nil {
			t.Fatal(err)
		}
		ents, err := cl.ReadDirAll(ctx, user, d.Inode)
		if err != nil || len(ents) != files {
			t.Fatalf("d%d holds %d files, %v", i, len(ents), err)
		}
	}
}

// TestSessionGrace: a session whose connection drops survives the grace
// period's length, open files and all, and can be resumed; after the
// grace period the master closes it.
func TestSessionGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	c := start(t, "", grace)
	ctx := testCtx(t)
	cl := c.dial(t, client.Config{})
	id := cl.Session()
	f, err := cl.Create(ctx, user, 1, "f", client.TypeFile, 0o644, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	cl.Drop()

	cl2 := c.dial(t, client.Config{SessionID: id, Seq: cl.Seq()})
	if cl2.Session() != id {
		t.Fatalf("resumed session %d, want %d", cl2.Session(), id)
	}
	if err := cl2.Release(ctx, user, f.Inode); err != nil {
		t.Fatalf("release on the resumed session: %v", err)
	}
	if _, err := cl2.Open(ctx, user, f.Inode, syscall.O_RDONLY); err != nil {
		t.Fatal(err)
	}
	cl2.Drop()
	time.Sleep(grace / 3)
	if opens, e := c.sessionOpens(id); e != 0 || opens[f.Inode] != 1 {
		t.Fatalf("within the grace period: opens %v, %v", opens, e)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, e := c.sessionOpens(id); e == syscall.EBADF {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session still open long after its grace period")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = client.Dial(ctx, c.addr, client.Config{SessionID: id})
	wantErrno(t, "resume an expired session", err, syscall.EBADF)
}

// TestTwoSessions: two mounts get two sessions, and ending one leaves
// the other working.
func TestTwoSessions(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	a := c.dial(t, client.Config{})
	b := c.dial(t, client.Config{})
	if a.Session() == b.Session() {
		t.Fatal("two mounts share a session id")
	}
	// Closing a's session leaves b's alone.
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetAttr(ctx, user, 1); err != nil {
		t.Fatal(err)
	}
}

// TestNoSession: operation requests before SessionOpen, or naming
// another session, are refused; the connection stays usable.
func TestNoSession(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	nc, err := net.Dial("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{Role: wire.RoleClient, Name: "raw"})
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	mux := wire.NewMux(conn, wire.MuxConfig{})
	defer mux.Close()
	var e wire.Entry
	err = mux.CallInto(ctx, &wire.GetAttr{Inode: 1}, &e)
	wantErrno(t, "getattr without a session", err, syscall.ENOTCONN)
	var opened wire.SessionOpened
	if err := mux.CallInto(ctx, &wire.SessionOpen{Path: "/"}, &opened); err != nil {
		t.Fatal(err)
	}
	err = mux.CallInto(ctx, &wire.GetAttr{ReqHeader: wire.ReqHeader{Session: opened.SessionID + 1}, Inode: 1}, &e)
	wantErrno(t, "getattr for another session", err, syscall.EBADF)
	err = mux.CallInto(ctx, &wire.SessionOpen{Path: "/"}, &opened)
	wantErrno(t, "a second session on one connection", err, syscall.EINVAL)
	if err := mux.CallInto(ctx, &wire.GetAttr{ReqHeader: wire.ReqHeader{Session: opened.SessionID}, Inode: 1}, &e); err != nil || e.Attr.Inode != 1 {
		t.Fatalf("getattr: %+v, %v", e, err)
	}
}

// TestRetry: a mutation resent with the same sequence number, on the
// same connection or after resuming the session on a new one, gets the
// first run's answer and does not run twice.
func TestRetry(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	raw := func() *wire.Mux {
		nc, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{Role: wire.RoleClient})
		if err != nil {
			t.Fatal(err)
		}
		return wire.NewMux(conn, wire.MuxConfig{})
	}
	m1 := raw()
	var opened wire.SessionOpened
	if err := m1.CallInto(ctx, &wire.SessionOpen{Path: "/"}, &opened); err != nil {
		t.Fatal(err)
	}
	hdr := func(seq uint64) wire.ReqHeader {
		return wire.ReqHeader{Session: opened.SessionID, Seq: seq, UID: 1, GID: 1}
	}
	create := &wire.Create{ReqHeader: hdr(7), Parent: 1, Name: "f", NodeType: client.TypeFile, Mode: 0o644, Open: true}
	var first, again wire.Changed
	if err := m1.CallInto(ctx, create, &first); err != nil {
		t.Fatal(err)
	}
	if err := m1.CallInto(ctx, create, &again); err != nil || !reflect.DeepEqual(again, first) {
		t.Fatalf("retried create: %+v, %v; first gave %+v", again, err, first)
	}
	// A new sequence number is a new request: now the name exists.
	create.Seq = 8
	err := m1.CallInto(ctx, create, &again)
	wantErrno(t, "create with a new sequence number", err, syscall.EEXIST)
	// The same number for another kind of request is a client bug.
	err = m1.CallInto(ctx, &wire.Unlink{ReqHeader: hdr(7), Parent: 1, Name: "f"}, &wire.Ok{})
	wantErrno(t, "reused sequence number", err, syscall.EINVAL)

	// Resume on a new connection and resend a release: it runs once, so
	// the open made by the create is dropped exactly once.
	m1.Close()
	m2 := raw()
	defer m2.Close()
	if err := m2.CallInto(ctx, &wire.SessionOpen{SessionID: opened.SessionID, Path: "/"}, &opened); err != nil {
		t.Fatal(err)
	}
	if _, err := c.store.Do(ctx, &meta.Open{Session: opened.SessionID, Inode: first.Attr.Inode}); err != nil {
		t.Fatal(err)
	}
	rel := &wire.Release{ReqHeader: hdr(9), Inode: first.Attr.Inode}
	for range 3 {
		if err := m2.CallInto(ctx, rel, &wire.Ok{}); err != nil {
			t.Fatal(err)
		}
	}
	if opens, e := c.sessionOpens(opened.SessionID); e != 0 || opens[first.Attr.Inode] != 1 {
		t.Fatalf("after one release resent three times: opens %v, %v; want 1 left", opens, e)
	}
}

// TestChangedDirs: at protocol 2 a change to directories answers with
// their attributes as they are after it (the rmdir'd directory with no
// links); a version 1 session gets Entry and Ok as before.
func TestChangedDirs(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	session := func(maxVersion uint16) (*wire.Mux, func(uint64) wire.ReqHeader) {
		nc, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{Role: wire.RoleClient, MaxVersion: maxVersion})
		if err != nil {
			t.Fatal(err)
		}
		m := wire.NewMux(conn, wire.MuxConfig{})
		t.Cleanup(func() { m.Close() })
		var opened wire.SessionOpened
		if err := m.CallInto(ctx, &wire.SessionOpen{Path: "/"}, &opened); err != nil {
			t.Fatal(err)
		}
		return m, func(seq uint64) wire.ReqHeader { return wire.ReqHeader{Session: opened.SessionID, Seq: seq} }
	}
	m, hdr := session(0)
	var d, f, a, b wire.Changed
	if err := m.CallInto(ctx, &wire.Create{ReqHeader: hdr(1), Parent: 1, Name: "d", NodeType: uint8(meta.TypeDir), Mode: 0o755}, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Dirs) != 1 || d.Dirs[0].Inode != 1 || d.Dirs[0].Size != 1 || d.Dirs[0].Nlink != 3 || d.Attr.NodeType != uint8(meta.TypeDir) {
		t.Fatalf("mkdir d: %+v; want the new dir and the root with 1 entry, 3 links", d)
	}
	if err := m.CallInto(ctx, &wire.Create{ReqHeader: hdr(2), Parent: d.Attr.Inode, Name: "f", NodeType: client.TypeFile, Mode: 0o644}, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Dirs) != 1 || f.Dirs[0].Inode != d.Attr.Inode || f.Dirs[0].Size != 1 {
		t.Fatalf("create d/f: %+v; want d with 1 entry", f)
	}
	if err := m.CallInto(ctx, &wire.Rename{ReqHeader: hdr(3), SrcParent: d.Attr.Inode, SrcName: "f", DstParent: 1, DstName: "g"}, &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Dirs) != 2 || a.Dirs[0].Size != 0 || a.Dirs[1].Inode != 1 || a.Dirs[1].Size != 2 || a.Attr.Inode != 0 {
		t.Fatalf("rename d/f to g: %+v; want d empty, then the root with 2 entries", a)
	}
	if err := m.CallInto(ctx, &wire.Rmdir{ReqHeader: hdr(4), Parent: 1, Name: "d"}, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Dirs) != 2 || b.Dirs[0].Inode != 1 || b.Dirs[0].Nlink != 2 || b.Dirs[1].Inode != d.Attr.Inode || b.Dirs[1].Nlink != 0 {
		t.Fatalf("rmdir d: %+v; want the root with 2 links, then d with none", b)
	}

	old, hdr1 := session(1)
	var e wire.Entry
	if err := old.CallInto(ctx, &wire.Create{ReqHeader: hdr1(1), Parent: 1, Name: "v1", NodeType: client.TypeFile, Mode: 0o644}, &e); err != nil || e.Attr.Inode == 0 {
		t.Fatalf("create at protocol 1: %+v, %v; want Entry", e, err)
	}
	if err := old.CallInto(ctx, &wire.Unlink{ReqHeader: hdr1(2), Parent: 1, Name: "v1"}, &wire.Ok{}); err != nil {
		t.Fatalf("unlink at protocol 1: %v; want Ok", err)
	}
}

// TestReadDirNames pages a directory by name with inodes and types only,
// as ReadDir does with attributes.
func TestReadDirNames(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	cl, err := client.Dial(ctx, c.addr, client.Config{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(ctx)
	cr := client.Cred{}
	d, err := cl.Mkdir(ctx, cr, 1, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint8{}
	for _, n := range []string{"c", "a", "b"} {
		typ := client.TypeFile
		if n == "b" {
			typ = uint8(meta.TypeDir)
		}
		if _, err := cl.Create(ctx, cr, d.Inode, n, typ, 0o644, 0, false); err != nil {
			t.Fatal(err)
		}
		want[n] = typ
	}
	full, _, err := cl.ReadDir(ctx, cr, d.Inode, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []wire.DirEntry
	after := ""
	for pages := 0; ; pages++ {
		ents, more, err := cl.ReadDirNames(ctx, cr, d.Inode, after, 2)
		if err != nil || pages > 2 {
			t.Fatalf("page %d: %v", pages, err)
		}
		got = append(got, ents...)
		if !more {
			break
		}
		after = ents[len(ents)-1].Name
	}
	if len(got) != 3 {
		t.Fatalf("names: %+v", got)
	}
	for i, e := range got {
		if e.Name != full[i].Name || e.Attr.Inode != full[i].Attr.Inode || e.Attr.NodeType != want[e.Name] || e.Attr.Nlink != 0 {
			t.Fatalf("entry %d: %+v; ReadDir says %+v", i, e, full[i])
		}
	}
}
