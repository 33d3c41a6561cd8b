package master_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/exports"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metastore"
	"github.com/carpfs/carpfs/internal/wire"
)

// cluster is a master serving on loopback with a real metadata store in
// a temporary directory.
type cluster struct {
	addr  string
	store *metastore.Store
	srv   *master.Server
}

// start runs a master with the given exports file text ("" for the
// default) and session grace (0 for the default).
func start(t *testing.T, exportsText string, grace time.Duration) *cluster {
	t.Helper()
	ctx := context.Background()
	st, err := metastore.Open(ctx, metastore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tab := exports.Default()
	if exportsText != "" {
		if tab, err = exports.Parse(strings.NewReader(exportsText), "mfsexports.cfg"); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := master.New(master.Config{Store: st, Exports: tab, Name: "m1", SessionGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	return &cluster{addr: ln.Addr().String(), store: st, srv: srv}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (c *cluster) dial(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	cl, err := client.Dial(testCtx(t), c.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Drop)
	return cl
}

// sessionOpens reports the session's open files, or its errno.
func (c *cluster) sessionOpens(id uint64) (map[uint32]uint32, syscall.Errno) {
	var m map[uint32]uint32
	var e syscall.Errno
	c.store.Read(func(s *meta.State) { m, e = s.SessionOpens(id) })
	return m, e
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	var re *wire.RemoteError
	if !errors.Is(err, want) || !errors.As(err, &re) {
		t.Fatalf("%s: error %v, want a remote %s", what, err, meta.ErrnoName(want))
	}
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

var (
	user = client.Cred{UID: 1000, GID: 100}
	root = client.Cred{}
)

// TestOperations runs every operation once through a real connection
// and checks the results against meta's semantics.
func TestOperations(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	cl := c.dial(t, client.Config{Name: "t", Info: "test"})
	if cl.Session() == 0 || cl.ReadOnly() || cl.RootAttr().Inode != 1 || cl.RootAttr().NodeType != uint8(meta.TypeDir) {
		t.Fatalf("session %d ro %v root %+v", cl.Session(), cl.ReadOnly(), cl.RootAttr())
	}

	dir := must[wire.Attr](t, "mkdir")(cl.Mkdir(ctx, user, 1, "d", 0o755))
	if dir.UID != 1000 || dir.GID != 100 || dir.Mode != 0o755 || dir.Nlink != 2 || dir.NodeType != uint8(meta.TypeDir) {
		t.Fatalf("mkdir attr %+v", dir)
	}
	f := must[wire.Attr](t, "create")(cl.Create(ctx, user, dir.Inode, "f", client.TypeFile, 0o644, 0, true))
	if f.Nlink != 1 || f.Size != 0 || f.UID != 1000 {
		t.Fatalf("create attr %+v", f)
	}
	if opens, e := c.sessionOpens(cl.Session()); e != 0 || opens[f.Inode] != 1 {
		t.Fatalf("create with open: opens %v, %v", opens, e)
	}
	_, err := cl.Create(ctx, user, dir.Inode, "f", client.TypeFile, 0o644, 0, false)
	wantErrno(t, "create existing", err, syscall.EEXIST)

	got := must[wire.Attr](t, "lookup")(cl.Lookup(ctx, user, dir.Inode, "f"))
	if got != f {
		t.Fatalf("lookup %+v, create said %+v", got, f)
	}
	_, err = cl.Lookup(ctx, user, dir.Inode, "nope")
	wantErrno(t, "lookup missing", err, syscall.ENOENT)
	if a := must[wire.Attr](t, "lookup ..")(cl.Lookup(ctx, user, dir.Inode, "..")); a.Inode != 1 {
		t.Fatalf("lookup .. of d: inode %d", a.Inode)
	}

	// setattr: mode, owner, times, then truncation.
	a := must[wire.Attr](t, "setattr")(cl.SetAttr(ctx, user, f.Inode, client.SetAttrArgs{
		Mask: wire.SetAttrMode | wire.SetAttrUID | wire.SetAttrGID | wire.SetAttrAtime | wire.SetAttrMtime,
		Mode: 0o600, UID: 7, GID: 8, Atime: 1000, Mtime: 2000,
	}))
	if a.Mode != 0o600 || a.UID != 7 || a.GID != 8 || a.Atime != 1000 || a.Mtime != 2000 {
		t.Fatalf("setattr result %+v", a)
	}
	a = must[wire.Attr](t, "truncate")(cl.SetAttr(ctx, user, f.Inode, client.SetAttrArgs{Mask: wire.SetAttrSize, Size: 12345}))
	if a.Size != 12345 || a.Mtime == 2000 {
		t.Fatalf("truncate result %+v", a)
	}
	a = must[wire.Attr](t, "touch")(cl.SetAttr(ctx, user, f.Inode, client.SetAttrArgs{Mask: wire.SetAttrMtimeNow}))
	if now := uint32(time.Now().Unix()); a.Mtime+5 < now {
		t.Fatalf("mtime=now gave %d, now is %d", a.Mtime, now)
	}
	_, err = cl.SetAttr(ctx, user, dir.Inode, client.SetAttrArgs{Mask: wire.SetAttrSize, Size: 1})
	wantErrno(t, "truncate a directory", err, syscall.EISDIR)

	// symlink, readlink, hard link.
	sl := must[wire.Attr](t, "symlink")(cl.Symlink(ctx, user, dir.Inode, "s", "../target"))
	if sl.NodeType != uint8(meta.TypeSymlink) || sl.Size != 9 {
		t.Fatalf("symlink attr %+v", sl)
	}
	if tg := must[string](t, "readlink")(cl.ReadLink(ctx, user, sl.Inode)); tg != "../target" {
		t.Fatalf("readlink %q", tg)
	}
	_, err = cl.ReadLink(ctx, user, f.Inode)
	wantErrno(t, "readlink a file", err, syscall.EINVAL)
	if l := must[wire.Attr](t, "link")(cl.Link(ctx, user, f.Inode, 1, "hard")); l.Inode != f.Inode || l.Nlink != 2 {
		t.Fatalf("link attr %+v", l)
	}
	_, err = cl.Link(ctx, user, dir.Inode, 1, "dirlink")
	wantErrno(t, "link a directory", err, syscall.EPERM)

	// mknod kinds.
	if dev := must[wire.Attr](t, "mknod")(cl.Create(ctx, root, dir.Inode, "tty", client.TypeChar, 0o620, 0x0501, false)); dev.Rdev != 0x0501 || dev.UID != 0 {
		t.Fatalf("char device attr %+v", dev)
	}
	must[wire.Attr](t, "mkfifo")(cl.Create(ctx, user, dir.Inode, "fifo", client.TypeFifo, 0o600, 0, false))

	// readdir in pages of 2, with attributes.
	var names []string
	after := ""
	for pages := 0; ; pages++ {
		ents, more, err := cl.ReadDir(ctx, user, dir.Inode, after, 2)
		if err != nil || len(ents) > 2 || pages > 5 {
			t.Fatalf("readdir page %d: %d entries, %v", pages, len(ents), err)
		}
		for _, e := range ents {
			names = append(names, e.Name)
			if e.Name == "f" && e.Attr.Size != 12345 {
				t.Fatalf("readdir attr of f: %+v", e.Attr)
			}
		}
		if !more {
			break
		}
		after = ents[len(ents)-1].Name
	}
	if strings.Join(names, " ") != "f fifo s tty" {
		t.Fatalf("readdir names %q", names)
	}
	all := must[[]wire.DirEntry](t, "readdir all")(cl.ReadDirAll(ctx, user, 1))
	if len(all) != 2 || all[0].Name != "d" || all[1].Name != "hard" {
		t.Fatalf("root listing %+v", all)
	}
	_, _, err = cl.ReadDir(ctx, user, f.Inode, "", 0)
	wantErrno(t, "readdir a file", err, syscall.ENOTDIR)

	// xattrs.
	if err := cl.SetXattr(ctx, user, f.Inode, "user.a", []byte("1\x00"), 0); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetXattr(ctx, user, f.Inode, "user.b", []byte("2"), meta.XattrCreate); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "setxattr create existing", cl.SetXattr(ctx, user, f.Inode, "user.b", nil, meta.XattrCreate), syscall.EEXIST)
	if v := must[[]byte](t, "getxattr")(cl.GetXattr(ctx, user, f.Inode, "user.a")); string(v) != "1\x00" {
		t.Fatalf("getxattr %q", v)
	}
	if ns := must[[]string](t, "listxattr")(cl.ListXattr(ctx, user, f.Inode)); strings.Join(ns, ",") != "user.a,user.b" {
		t.Fatalf("listxattr %q", ns)
	}
	if err := cl.RemoveXattr(ctx, user, f.Inode, "user.a"); err != nil {
		t.Fatal(err)
	}
	_, err = cl.GetXattr(ctx, user, f.Inode, "user.a")
	wantErrno(t, "getxattr removed", err, syscall.ENODATA)

	// goals.
	if g := must[uint8](t, "getgoal")(cl.GetGoal(ctx, user, f.Inode)); g != meta.DefaultGoal {
		t.Fatalf("default goal %d", g)
	}
	if a := must[wire.Attr](t, "setgoal")(cl.SetGoal(ctx, user, f.Inode, 3)); a.Goal != 3 {
		t.Fatalf("setgoal attr %+v", a)
	}
	_, err = cl.SetGoal(ctx, user, f.Inode, 0)
	wantErrno(t, "setgoal 0", err, syscall.EPERM) // outside the export's 1-9

	// rename, unlink of an open file, release, rmdir.
	if err := cl.Rename(ctx, user, dir.Inode, "f", 1, "moved"); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "rename missing", cl.Rename(ctx, user, dir.Inode, "f", 1, "x"), syscall.ENOENT)
	wantErrno(t, "rmdir non-empty", cl.Rmdir(ctx, user, 1, "d"), syscall.ENOTEMPTY)
	for _, n := range []string{"s", "tty", "fifo"} {
		if err := cl.Unlink(ctx, user, dir.Inode, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Rmdir(ctx, user, 1, "d"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"moved", "hard"} {
		if err := cl.Unlink(ctx, user, 1, n); err != nil {
			t.Fatal(err)
		}
	}
	// The file has no name left but is open: it lives on until released.
	if a := must[wire.Attr](t, "getattr unlinked open file")(cl.GetAttr(ctx, user, f.Inode)); a.Nlink != 0 {
		t.Fatalf("unlinked open file: %+v", a)
	}
	must[wire.Attr](t, "open")(cl.Open(ctx, user, f.Inode, syscall.O_RDWR))
	for range 2 {
		if err := cl.Release(ctx, user, f.Inode); err != nil {
			t.Fatal(err)
		}
	}
	wantErrno(t, "release once too often", cl.Release(ctx, user, f.Inode), syscall.EINVAL)
	_, err = cl.GetAttr(ctx, user, f.Inode)
	wantErrno(t, "getattr after last release", err, syscall.ENOENT)

	st := must[wire.FSStats](t, "statfs")(cl.StatFS(ctx, user))
	if st.Files != 0 || st.Dirs != 1 {
		t.Fatalf("statfs %+v, want only the root", st)
	}
	if err := cl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, e := c.sessionOpens(cl.Session()); e != syscall.EBADF {
		t.Fatalf("session after goodbye: %v, want closed", e)
	}
}

// TestResumeAfterRestart: a master process that never saw a session (it
// restarted, or took over) lets the client resume it from the metadata.
func TestResumeAfterRestart(t *testing.T) {
	c := start(t, "", 0)
	ctx := testCtx(t)
	cl := c.dial(t, client.Config{})
	id := cl.Session()
	cl.Drop()

	// A second server on the same metadata knows nothing of the session.
	srv, err := master.New(master.Config{Store: c.store, Name: "m2"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	defer func() { cancel(); <-done }()

	cl2, err := client.Dial(ctx, ln.Addr().String(), client.Config{SessionID: id, Seq: cl.Seq()})
	if err != nil {
		t.Fatalf("resume session %d on a restarted master: %v", id, err)
	}
	defer cl2.Drop()
	if cl2.Session() != id {
		t.Fatalf("resumed as session %d, want %d", cl2.Session(), id)
	}
	if _, err := cl2.Create(ctx, user, meta.RootInode, "after", uint8(meta.TypeFile), 0o644, 0, true); err != nil {
		t.Fatalf("create in the resumed session: %v", err)
	}
	// A session the metadata never had is still refused.
	if _, err := client.Dial(ctx, ln.Addr().String(), client.Config{SessionID: id + 1000}); err == nil {
		t.Fatal("resumed a session that never existed")
	}
}
