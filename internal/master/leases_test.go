package master_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// TestChunkWriteLease: a new chunk goes to goal-many distinct servers;
// the lease is renewed by its holder, refused to others, ended by
// ChunkWriteEnd; the next write raises the version on every copy.
func TestChunkWriteLease(t *testing.T) {
	c := startData(t, dataOpts{})
	css := []*testCS{c.addCS(t, "cs1"), c.addCS(t, "cs2"), c.addCS(t, "cs3"), c.addCS(t, "cs4")}
	ctx := testCtx(t)
	a, b := c.dial(t), c.dial(t)
	ino := newFile(t, a, "f", 3)

	// A hole reads as chunk 0.
	ci := must[wire.ChunkInfo](t, "read hole")(a.ChunkRead(ctx, user, ino, 0))
	if ci.ID != 0 || len(ci.Servers) != 0 {
		t.Fatalf("hole: %+v", ci)
	}

	w := must[wire.ChunkInfo](t, "chunk write")(a.ChunkWrite(ctx, user, ino, 0))
	if w.ID == 0 || w.Version != 1 || len(w.Servers) != 3 || len(slices.Compact(slices.Sorted(slices.Values(w.Servers)))) != 3 {
		t.Fatalf("new chunk: %+v, want version 1 on 3 distinct servers", w)
	}
	holders := 0
	for _, cs := range css {
		if ch, ok := cs.chunk(w.ID); ok {
			holders++
			if ch.Version != 1 || !slices.Contains(w.Servers, cs.addr) {
				t.Fatalf("%s holds %+v; chain %v", cs.name, ch, w.Servers)
			}
		}
	}
	if holders != 3 {
		t.Fatalf("%d chunkservers hold the new chunk, want 3", holders)
	}
	if ref := c.chunkRef(ino, 0); ref.ID != w.ID || !ref.Locked {
		t.Fatalf("metadata: %+v", ref)
	}

	// The holder asking again gets the same lease; others wait.
	again := must[wire.ChunkInfo](t, "chunk write again")(a.ChunkWrite(ctx, user, ino, 0))
	if again.ID != w.ID || again.Version != w.Version || !slices.Equal(again.Servers, w.Servers) || c.srv.Leases() != 1 {
		t.Fatalf("renewal: %+v, first %+v, leases %d", again, w, c.srv.Leases())
	}
	_, err := b.ChunkWrite(ctx, user, ino, 0)
	wantErrno(t, "write by another session", err, syscall.EBUSY)
	// Readers see the copies meanwhile.
	r := must[wire.ChunkInfo](t, "read")(b.ChunkRead(ctx, user, ino, 0))
	if r.ID != w.ID || r.Version != 1 || !slices.Equal(r.Servers, slices.Sorted(slices.Values(w.Servers))) {
		t.Fatalf("read during write: %+v", r)
	}
	// Another session ending the lease is refused.
	err = b.ChunkWriteEnd(ctx, user, ino, w.ID, 5, nil)
	wantErrno(t, "write end by another session", err, syscall.EIO)

	noErr(t, "write end", a.ChunkWriteEnd(ctx, user, ino, w.ID, 1000, nil))
	if ref := c.chunkRef(ino, 0); ref.Locked || c.srv.Leases() != 0 {
		t.Fatalf("after write end: %+v, %d leases", ref, c.srv.Leases())
	}
	if attr := must[wire.Attr](t, "getattr")(b.GetAttr(ctx, user, ino)); attr.Size != 1000 {
		t.Fatalf("length %d after write end with 1000", attr.Size)
	}

	// The next writer raises the version on all three copies.
	w2 := must[wire.ChunkInfo](t, "second write")(b.ChunkWrite(ctx, user, ino, 0))
	if w2.ID != w.ID || w2.Version != 2 || w2.Length != 1000 || !slices.Equal(slices.Sorted(slices.Values(w2.Servers)), slices.Sorted(slices.Values(w.Servers))) {
		t.Fatalf("second write: %+v, first %+v", w2, w)
	}
	for _, cs := range css {
		if ch, ok := cs.chunk(w.ID); ok && ch.Version != 2 {
			t.Fatalf("%s keeps version %d", cs.name, ch.Version)
		}
	}
	// A length below the file's does not shrink it.
	noErr(t, "write end", b.ChunkWriteEnd(ctx, user, ino, w.ID, 10, nil))
	if attr := must[wire.Attr](t, "getattr")(b.GetAttr(ctx, user, ino)); attr.Size != 1000 {
		t.Fatalf("length %d after write end with 10", attr.Size)
	}

	// A chunk past the end of the file is a hole too, and a directory
	// has no chunks.
	if ci := must[wire.ChunkInfo](t, "read past end")(a.ChunkRead(ctx, user, ino, 7)); ci.ID != 0 || ci.Length != 1000 {
		t.Fatalf("past the end: %+v", ci)
	}
	_, err = a.ChunkWrite(ctx, user, 1, 0)
	wantErrno(t, "write a directory", err, syscall.EINVAL)
}

// TestChunkWriteGoalAndSpace: placement honours a goal above the
// servers there are (under goal is allowed), avoids full servers, and
// with none usable answers ENOSPC (EAGAIN while none is connected, as
// after a failover); StatFS sums the servers' space.
func TestChunkWriteGoalAndSpace(t *testing.T) {
	c := startData(t, dataOpts{})
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 0)

	_, err := cl.ChunkWrite(ctx, user, ino, 0)
	wantErrno(t, "write with no chunkserver", err, syscall.EAGAIN)
	if ref := c.chunkRef(ino, 0); ref.ID != 0 {
		t.Fatalf("a refused write left chunk %+v", ref)
	}

	// A server reporting no free space takes nothing.
	full := rawCS(t, c.csAddr, func(ctx context.Context, f wire.Frame) (wire.Message, error) {
		t.Errorf("full server got %s", f.Type)
		return nil, syscall.EIO
	})
	for _, m := range []wire.Message{
		&wire.CSRegister{Addr: "127.0.0.1:1", Total: 1 << 40, Used: 1 << 40, Free: 0},
		&wire.CSRegisterDone{},
	} {
		if err := call(t, full, m); err != nil {
			t.Fatal(err)
		}
	}
	_, err = cl.ChunkWrite(ctx, user, ino, 0)
	wantErrno(t, "write with only a full server", err, syscall.ENOSPC)
	if !strings.Contains(err.Error(), "1 connected") {
		t.Fatalf("ENOSPC message does not say why: %v", err)
	}

	cs1 := c.addCS(t, "cs1")
	w := writeChunk(t, cl, ino, 0, 1)
	if !slices.Equal(w.Servers, []string{cs1.addr}) {
		t.Fatalf("goal 2 with one usable server: chain %v, want just %s", w.Servers, cs1.addr)
	}

	st := must[wire.FSStats](t, "statfs")(cl.StatFS(ctx, user))
	var total, free uint64
	for _, s := range c.reg.Servers() {
		total += s.Total
		free += s.Free
	}
	if st.TotalSpace != total || st.AvailSpace != free || st.TotalSpace <= 1<<40 || st.Files != 1 {
		t.Fatalf("statfs %+v; servers total %d free %d", st, total, free)
	}
}

// TestLeaseExpiry: a lease not renewed expires; the chunk is unlocked by
// the master, and a new writer gets a new version that fences the old
// one, whose write end is then refused.
func TestLeaseExpiry(t *testing.T) {
	const lease = 300 * time.Millisecond
	c := startData(t, dataOpts{lease: lease})
	c.addCS(t, "cs1")
	c.addCS(t, "cs2")
	ctx := testCtx(t)
	a, b := c.dial(t), c.dial(t)
	ino := newFile(t, a, "f", 0)

	w := must[wire.ChunkInfo](t, "write")(a.ChunkWrite(ctx, user, ino, 0))
	// Renewals keep it past its first lifetime.
	for range 4 {
		time.Sleep(lease / 3)
		must[wire.ChunkInfo](t, "renew")(a.ChunkWrite(ctx, user, ino, 0))
	}
	if _, err := b.ChunkWrite(ctx, user, ino, 0); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("renewed lease: another writer got %v, want EBUSY", err)
	}
	// Left alone, it expires and the master unlocks the chunk.
	waitUntil(t, "lease expiry", func() bool { return c.srv.Leases() == 0 && !c.chunkRef(ino, 0).Locked })

	w2 := must[wire.ChunkInfo](t, "write after expiry")(b.ChunkWrite(ctx, user, ino, 0))
	if w2.ID != w.ID || w2.Version != w.Version+1 {
		t.Fatalf("after expiry: %+v, first %+v", w2, w)
	}
	err := a.ChunkWriteEnd(ctx, user, ino, w.ID, 100, nil)
	wantErrno(t, "write end after the lease passed to another", err, syscall.EIO)
	noErr(t, "write end", b.ChunkWriteEnd(ctx, user, ino, w.ID, 100, nil))

	// A write end with no lease left (expired, nobody else writing)
	// still records the length and unlocks.
	w3 := must[wire.ChunkInfo](t, "third write")(a.ChunkWrite(ctx, user, ino, 0))
	waitUntil(t, "lease expiry", func() bool { return c.srv.Leases() == 0 })
	noErr(t, "late write end", a.ChunkWriteEnd(ctx, user, ino, w3.ID, 5000, nil))
	if attr := must[wire.Attr](t, "getattr")(a.GetAttr(ctx, user, ino)); attr.Size != 5000 {
		t.Fatalf("late write end: size %d", attr.Size)
	}
}

// TestLeaseSessionEnd: a session's leases and locks go with it, whether
// it ends by umount or after its grace period.
func TestLeaseSessionEnd(t *testing.T) {
	st := startData(t, dataOpts{})
	st.addCS(t, "cs1")
	ctx := testCtx(t)
	a, b := st.dial(t), st.dial(t)
	f1 := newFile(t, a, "f1", 1)
	must[wire.ChunkInfo](t, "write")(a.ChunkWrite(ctx, user, f1, 0))
	if err := a.Lock(ctx, user, wire.Lock{Inode: f1, Owner: 1, Kind: wire.LockFlock, LockType: wire.LockWrite}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st.srv.Leases() != 0 || st.chunkRef(f1, 0).Locked {
		t.Fatalf("after umount: %d leases, %+v", st.srv.Leases(), st.chunkRef(f1, 0))
	}
	must[wire.ChunkInfo](t, "write after umount")(b.ChunkWrite(ctx, user, f1, 0))
	if err := b.Lock(ctx, user, wire.Lock{Inode: f1, Owner: 1, Kind: wire.LockFlock, LockType: wire.LockWrite}); err != nil {
		t.Fatalf("flock after its holder's umount: %v", err)
	}
}

// TestLeaseSessionExpiry: a session that vanishes loses its leases when
// its grace period ends.
func TestLeaseSessionExpiry(t *testing.T) {
	c := startData(t, dataOpts{})
	c.addCS(t, "cs1")
	// A second server on a master with a short session grace.
	srv, err := master.New(master.Config{Store: c.store, Name: "m2", Chunks: c.reg, SessionGrace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	ctx := testCtx(t)
	a, err := client.Dial(ctx, ln.Addr().String(), client.Config{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	ino := newFile(t, a, "f", 1)
	must[wire.ChunkInfo](t, "write")(a.ChunkWrite(ctx, user, ino, 0))
	a.Drop()
	waitUntil(t, "lease released with the session", func() bool { return srv.Leases() == 0 && !c.chunkRef(ino, 0).Locked })
}

// TestStaleLock: a chunk locked in the metadata with no lease (granted
// by a master that died before the write ended) is unlocked by the next
// writer, whose new version fences the old one.
func TestStaleLock(t *testing.T) {
	c := startData(t, dataOpts{})
	cs1, cs2 := c.addCS(t, "cs1"), c.addCS(t, "cs2")
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	w := writeChunk(t, cl, ino, 0, 10)
	// What a master does for a lease, behind this master's back.
	res, err := c.store.Do(ctx, &meta.Write{Inode: ino, Index: 0})
	if err != nil || !res.Ok() || res.Val[1] != 2 {
		t.Fatalf("meta write: %v %v", res, err)
	}
	for _, cs := range []*testCS{cs1, cs2} {
		if err := c.reg.Command(ctx, cs.addr, &wire.CSSetVersion{ID: w.ID, Old: 1, New: 2}); err != nil {
			t.Fatal(err)
		}
	}
	w2 := must[wire.ChunkInfo](t, "write over a stale lock")(cl.ChunkWrite(ctx, user, ino, 0))
	if w2.Version != 3 || len(w2.Servers) != 2 {
		t.Fatalf("over a stale lock: %+v", w2)
	}
	for _, cs := range []*testCS{cs1, cs2} {
		if ch, _ := cs.chunk(w.ID); ch.Version != 3 {
			t.Fatalf("%s at version %d", cs.name, ch.Version)
		}
	}
}

// TestChunkReadNoCopy: a chunk whose copies are all away reads as EIO
// with a message naming it, and a write to it is refused without
// raising its version (which would make the absent copies stale).
func TestChunkReadNoCopy(t *testing.T) {
	c := startData(t, dataOpts{})
	cs1 := c.addCS(t, "cs1")
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 1)
	w := writeChunk(t, cl, ino, 0, 10)
	cs1.stop()
	waitUntil(t, "cs1 down", func() bool { return len(c.reg.Copies(w.ID)) == 0 })
	_, err := cl.ChunkRead(ctx, user, ino, 0)
	wantErrno(t, "read with no copy", err, syscall.EIO)
	if !strings.Contains(err.Error(), "no valid copy") || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("message: %v", err)
	}
	_, err = cl.ChunkWrite(ctx, user, ino, 0)
	wantErrno(t, "write with no copy", err, syscall.EIO)
	if ref := c.chunkRef(ino, 0); ref.Version != 1 || ref.Locked {
		t.Fatalf("refused write changed the chunk: %+v", ref)
	}
	cs1.start()
	if ci := must[wire.ChunkInfo](t, "read")(cl.ChunkRead(ctx, user, ino, 0)); !slices.Equal(ci.Servers, []string{cs1.addr}) {
		t.Fatalf("read after cs1 is back: %+v", ci)
	}
}

// TestWriteEndBad: a server named bad at write end is fenced off (the
// chunk's version rises on the others) and its copy deleted.
func TestWriteEndBad(t *testing.T) {
	c := startData(t, dataOpts{})
	css := []*testCS{c.addCS(t, "cs1"), c.addCS(t, "cs2"), c.addCS(t, "cs3")}
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 3)
	w := must[wire.ChunkInfo](t, "write")(cl.ChunkWrite(ctx, user, ino, 0))
	bad := w.Servers[1]
	noErr(t, "write end", cl.ChunkWriteEnd(ctx, user, ino, w.ID, 100, []string{bad}))
	ref := c.chunkRef(ino, 0)
	if ref.Version != 2 || ref.Locked {
		t.Fatalf("after a bad write: %+v", ref)
	}
	for _, cs := range css {
		ch, ok := cs.chunk(w.ID)
		switch {
		case cs.addr == bad && ok:
			t.Fatalf("bad server %s keeps %+v", cs.name, ch)
		case cs.addr != bad && (!ok || ch.Version != 2):
			t.Fatalf("good server %s has %+v %v", cs.name, ch, ok)
		}
	}
	// The next lease leaves the bad server out.
	w2 := must[wire.ChunkInfo](t, "write")(cl.ChunkWrite(ctx, user, ino, 0))
	if len(w2.Servers) != 2 || slices.Contains(w2.Servers, bad) || w2.Version != 3 {
		t.Fatalf("next chain %+v; bad %s", w2, bad)
	}
}

// TestTruncateChunks: a truncation into a chunk raises its version on
// every copy and cuts their data; chunks past the end leave the
// metadata; a chunk being written makes the truncation EBUSY.
func TestTruncateChunks(t *testing.T) {
	c := startData(t, dataOpts{})
	css := []*testCS{c.addCS(t, "cs1"), c.addCS(t, "cs2")}
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	var ids []uint64
	for i := range uint32(3) {
		w := writeChunk(t, cl, ino, i, uint64(i+1)*meta.ChunkSize)
		ids = append(ids, w.ID)
	}
	// Data in chunk 1 on both copies, past where the cut falls.
	for _, cs := range css {
		cs.withStore(func(st *chunkstore.Store) {
			if err := st.WriteAt(ids[1], 1, make([]byte, 200000), 0); err != nil {
				t.Fatal(err)
			}
		})
	}

	other := c.dial(t)
	must[wire.ChunkInfo](t, "write")(other.ChunkWrite(ctx, user, ino, 2))
	_, err := cl.SetAttr(ctx, user, ino, client.SetAttrArgs{Mask: wire.SetAttrSize, Size: meta.ChunkSize + 1000})
	wantErrno(t, "truncate over a leased chunk", err, syscall.EBUSY)
	if err := other.Close(ctx); err != nil {
		t.Fatal(err)
	}

	a := must[wire.Attr](t, "truncate")(cl.SetAttr(ctx, user, ino, client.SetAttrArgs{Mask: wire.SetAttrSize, Size: meta.ChunkSize + 1000}))
	if a.Size != meta.ChunkSize+1000 {
		t.Fatalf("size %d", a.Size)
	}
	ref := c.chunkRef(ino, 1)
	if ref.ID != ids[1] || ref.Version != 2 {
		t.Fatalf("cut chunk: %+v", ref)
	}
	for _, cs := range css {
		ch, ok := cs.chunk(ids[1])
		if !ok || ch.Version != 2 || ch.Length != 1000 {
			t.Fatalf("%s: cut chunk copy %+v", cs.name, ch)
		}
	}
	var gone bool
	c.store.Read(func(s *meta.State) { _, ok := s.ChunkVersion(ids[2]); gone = !ok })
	if !gone {
		t.Fatal("the chunk past the end is still in the metadata")
	}
	// The cut chunk reads from both copies at its new version.
	ci := must[wire.ChunkInfo](t, "read")(cl.ChunkRead(ctx, user, ino, 1))
	if ci.Version != 2 || len(ci.Servers) != 2 {
		t.Fatalf("read after truncate: %+v", ci)
	}
}

// TestReadOnlyData: a read-only export reads chunks but takes no lease.
func TestReadOnlyData(t *testing.T) {
	c := startData(t, dataOpts{})
	c.addCS(t, "cs1")
	ctx := testCtx(t)
	rw := c.dial(t)
	ino := newFile(t, rw, "f", 1)
	writeChunk(t, rw, ino, 0, 10)

	srv, err := master.New(master.Config{Store: c.store, Name: "ro", Chunks: c.reg, Exports: mustExports(t, "* / ro\n")})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	ro, err := client.Dial(ctx, ln.Addr().String(), client.Config{Name: "ro"})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Drop()
	if ci := must[wire.ChunkInfo](t, "read")(ro.ChunkRead(ctx, user, ino, 0)); len(ci.Servers) != 1 {
		t.Fatalf("read: %+v", ci)
	}
	_, err = ro.ChunkWrite(ctx, user, ino, 0)
	wantErrno(t, "read-only write", err, syscall.EROFS)
	err = ro.ChunkWriteEnd(ctx, user, ino, 1, 10, nil)
	wantErrno(t, "read-only write end", err, syscall.EROFS)
}

// TestChunkWriteRace: sessions racing for a new chunk create it once;
// one gets the lease, the others EBUSY, and a session racing with
// itself gets one lease twice.
func TestChunkWriteRace(t *testing.T) {
	c := startData(t, dataOpts{})
	c.addCS(t, "cs1")
	c.addCS(t, "cs2")
	ctx := testCtx(t)
	cls := []*client.Client{c.dial(t), c.dial(t), c.dial(t)}
	ino := newFile(t, cls[0], "f", 2)
	type result struct {
		who int
		ci  wire.ChunkInfo
		err error
	}
	res := make(chan result, 6)
	for i := range 6 {
		go func() {
			ci, err := cls[i%3].ChunkWrite(ctx, user, ino, 0)
			res <- result{i % 3, ci, err}
		}()
	}
	winner := -1
	var first wire.ChunkInfo
	for range 6 {
		r := <-res
		switch {
		case errors.Is(r.err, syscall.EBUSY):
		case r.err != nil:
			t.Fatalf("session %d: %v", r.who, r.err)
		case winner == -1:
			winner, first = r.who, r.ci
		case r.who != winner:
			t.Fatalf("sessions %d and %d both got the lease", winner, r.who)
		case r.ci.ID != first.ID || r.ci.Version != first.Version:
			t.Fatalf("one session, two leases: %+v and %+v", first, r.ci)
		}
	}
	if winner < 0 || c.srv.Leases() != 1 || first.Version != 1 {
		t.Fatalf("winner %d, %d leases, %+v", winner, c.srv.Leases(), first)
	}
	var chunks uint64
	c.store.Read(func(s *meta.State) { chunks = s.Stats().Chunks })
	if chunks != 1 {
		t.Fatalf("%d chunks created", chunks)
	}
}
