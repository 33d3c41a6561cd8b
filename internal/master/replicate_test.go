package master_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/chunkstore"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// fastLoop is a replication loop that ticks often enough for tests.
func fastLoop() *master.ReplicatorConfig {
	return &master.ReplicatorConfig{Interval: 50 * time.Millisecond}
}

// settle waits for two full passes to start and end after now, so that
// the status describes the cluster as it is.
func (c *dataCluster) settle(t *testing.T) master.ReplicationStatus {
	t.Helper()
	p := c.rep.Status().Passes
	waitUntil(t, "two replication passes", func() bool { return c.rep.Status().Passes >= p+2 })
	return c.rep.Status()
}

// holders lists the chunkservers holding id at version.
func holders(id uint64, version uint32, css ...*testCS) []string {
	var out []string
	for _, cs := range css {
		if ch, ok := cs.chunk(id); ok && ch.Version == version {
			out = append(out, cs.addr)
		}
	}
	slices.Sort(out)
	return out
}

// TestReplicationOvergoal: lowering a goal deletes the extra copies,
// but not while the chunk is being written.
func TestReplicationOvergoal(t *testing.T) {
	c := startData(t, dataOpts{rep: fastLoop()})
	css := []*testCS{c.addCS(t, "cs1"), c.addCS(t, "cs2"), c.addCS(t, "cs3")}
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 3)
	w0 := writeChunk(t, cl, ino, 0, meta.ChunkSize)
	w1 := must[wire.ChunkInfo](t, "write")(cl.ChunkWrite(ctx, user, ino, 1)) // stays leased
	if st := c.settle(t); st.Overgoal != 0 || st.Undergoal != 0 || st.Chunks != 1 {
		t.Fatalf("at goal: %+v", st)
	}

	must[wire.Attr](t, "setgoal")(cl.SetGoal(ctx, user, ino, 1))
	waitUntil(t, "extra copies deleted", func() bool { return len(holders(w0.ID, 1, css...)) == 1 })
	st := c.settle(t)
	if st.Overgoal != 0 || st.Deleted != 2 {
		t.Fatalf("after setgoal 1: %+v", st)
	}
	if got := holders(w1.ID, 1, css...); len(got) != 3 {
		t.Fatalf("a leased chunk lost copies: %v", got)
	}
	noErr(t, "write end", cl.ChunkWriteEnd(ctx, user, ino, w1.ID, 2*meta.ChunkSize, nil))
	waitUntil(t, "extra copies of the second chunk deleted", func() bool { return len(holders(w1.ID, 1, css...)) == 1 })
	// The registry learns of a deletion from the server's answer, which
	// follows the file's removal.
	waitUntil(t, "the registry to forget the deleted copies", func() bool { return len(c.copies(w1.ID)) == 1 })
}

// TestReplicationOrphans: copies of chunks the metadata does not hold
// (left by a deleted file, or by a server that was away) are deleted,
// no faster than the deletion limit allows.
func TestReplicationOrphans(t *testing.T) {
	cfg := fastLoop()
	cfg.DeleteLimit = 1
	c := startData(t, dataOpts{rep: cfg})
	cs1 := c.addCS(t, "cs1")
	cs1.stop()
	const base = 1 << 40
	cs1.withStore(func(st *chunkstore.Store) {
		for i := range uint64(5) {
			if err := st.Create(base+i, 3); err != nil {
				t.Fatal(err)
			}
		}
	})
	cs1.start()
	left := func() int {
		n := 0
		for i := range uint64(5) {
			if _, ok := cs1.chunk(base + i); ok {
				n++
			}
		}
		return n
	}
	// One deletion per server and tick: the five go in five ticks at
	// least. Ticks are the loop's own count, so a slow machine only
	// makes the check weaker (the first deletion may be seen late).
	var first uint64
	waitUntil(t, "first orphan deleted", func() bool { first = c.rep.Status().Ticks; return left() < 5 })
	waitUntil(t, "orphans deleted", func() bool { return left() == 0 })
	if last := c.rep.Status().Ticks; last-first < 2 {
		t.Fatalf("five deletions from one server in %d ticks, with a limit of one per tick", last-first)
	}
	cs2 := c.addCS(t, "cs2")
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	w := writeChunk(t, cl, ino, 0, 10)
	if got := holders(w.ID, 1, cs1, cs2); len(got) != 2 {
		t.Fatalf("holders %v", got)
	}
	if err := cl.Unlink(ctx, user, 1, "f"); err != nil {
		t.Fatal(err)
	}

	waitUntil(t, "copies of the unlinked file's chunk deleted", func() bool { return len(holders(w.ID, 1, cs1, cs2)) == 0 })
	if st := c.settle(t); st.Orphans != 0 || st.Deleted != 7 || st.Failed != 0 {
		t.Fatalf("after the orphans went: %+v", st)
	}
}

// TestReplicationStale: a copy that missed a write (its server was
// away) is deleted once the valid copies meet the goal.
func TestReplicationStale(t *testing.T) {
	c := startData(t, dataOpts{rep: fastLoop()})
	cs1, cs2 := c.addCS(t, "cs1"), c.addCS(t, "cs2")
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	w := writeChunk(t, cl, ino, 0, 10)
	cs2.stop()
	w2 := writeChunk(t, cl, ino, 0, 20)
	if w2.Version != 2 || !slices.Equal(w2.Servers, []string{cs1.addr}) {
		t.Fatalf("write with cs2 away: %+v", w2)
	}
	st := c.settle(t)
	if st.Undergoal != 1 || st.Endangered != 1 {
		t.Fatalf("one copy of goal 2: %+v", st)
	}
	must[wire.Attr](t, "setgoal")(cl.SetGoal(ctx, user, ino, 1))
	cs2.start()
	waitUntil(t, "stale copy deleted", func() bool { _, ok := cs2.chunk(w.ID); return !ok })
	if got := holders(w.ID, 2, cs1, cs2); !slices.Equal(got, []string{cs1.addr}) {
		t.Fatalf("valid copies %v", got)
	}
	if st := c.settle(t); st.Invalid != 0 || st.Undergoal != 0 {
		t.Fatalf("after the stale copy went: %+v", st)
	}
}

// TestReplicationLost: a chunk whose every copy is away is counted lost,
// and nothing of it is deleted when a stale copy is all that comes back.
func TestReplicationLost(t *testing.T) {
	c := startData(t, dataOpts{rep: fastLoop()})
	cs1, cs2 := c.addCS(t, "cs1"), c.addCS(t, "cs2")
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	w := writeChunk(t, cl, ino, 0, 10)
	cs2.stop()
	writeChunk(t, cl, ino, 0, 10) // cs1 at version 2, cs2 stale
	cs1.stop()
	if st := c.settle(t); st.Lost != 1 {
		t.Fatalf("no copy left: %+v", st)
	}
	cs2.start()
	st := c.settle(t)
	if st.Lost != 1 || st.Invalid != 1 || st.Deleted != 0 {
		t.Fatalf("only a stale copy: %+v", st)
	}
	if ch, ok := cs2.chunk(w.ID); !ok || ch.Version != 1 {
		t.Fatalf("the stale copy, all there is, was touched: %+v %v", ch, ok)
	}
}

// TestReplicationStaleLock: a lock no lease covers (a previous master's)
// is cleared by the loop, but only after a lease time.
func TestReplicationStaleLock(t *testing.T) {
	const lease = 500 * time.Millisecond
	c := startData(t, dataOpts{rep: fastLoop(), lease: lease})
	c.addCS(t, "cs1")
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 1)
	writeChunk(t, cl, ino, 0, 10)
	locked := time.Now() // no later than the lock itself
	res, err := c.store.Do(context.Background(), &meta.Write{Inode: ino, Index: 0})
	if err != nil || !res.Ok() {
		t.Fatalf("meta write: %v %v", res, err)
	}
	waitUntil(t, "stale lock cleared", func() bool { return !c.chunkRef(ino, 0).Locked })
	if d := time.Since(locked); d < lease {
		t.Fatalf("lock cleared after %s, before a lease time (%s)", d, lease)
	}
}

// fill writes data into every copy of chunk id at version, as a mount's
// write through the chain would, and returns it.
func fill(t *testing.T, id uint64, version uint32, n int, css ...*testCS) []byte {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + int(id))
	}
	for _, cs := range css {
		if _, ok := cs.chunk(id); !ok {
			continue
		}
		cs.withStore(func(st *chunkstore.Store) {
			if err := st.WriteAt(id, version, data, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
	return data
}

// sameData checks that cs's copy of id at version holds data.
func sameData(t *testing.T, cs *testCS, id uint64, version uint32, data []byte) {
	t.Helper()
	got := make([]byte, len(data))
	cs.withStore(func(st *chunkstore.Store) {
		if _, err := st.ReadAt(id, version, got, 0); err != nil {
			t.Fatalf("%s: read chunk %016X: %v", cs.name, id, err)
		}
	})
	if !bytes.Equal(got, data) {
		t.Fatalf("%s: the copy of chunk %016X differs from the source", cs.name, id)
	}
}

// TestReplicationServerDown: the chunks of a server that went away are
// copied to the others, no more than the write limit at a time per
// target, until every chunk is at its goal again.
func TestReplicationServerDown(t *testing.T) {
	cfg := fastLoop()
	cfg.WriteLimit = 1
	c := startData(t, dataOpts{rep: cfg})
	css := []*testCS{c.addCS(t, "cs1"), c.addCS(t, "cs2"), c.addCS(t, "cs3"), c.addCS(t, "cs4")}
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	var ws []wire.ChunkInfo
	var data [][]byte
	for i := range uint32(8) {
		w := writeChunk(t, cl, ino, i, uint64(i+1)*meta.ChunkSize)
		ws = append(ws, w)
		data = append(data, fill(t, w.ID, 1, 100000+int(i), css...))
	}
	if st := c.settle(t); st.Undergoal != 0 || st.Chunks != 8 {
		t.Fatalf("at goal: %+v", st)
	}
	// The server holding the most chunks goes.
	down := css[0]
	for _, cs := range css {
		if len(holdersOf(ws, cs)) > len(holdersOf(ws, down)) {
			down = cs
		}
	}
	lost := holdersOf(ws, down)
	down.stop()
	rest := slices.DeleteFunc(slices.Clone(css), func(cs *testCS) bool { return cs == down })

	peak := 0
	waitUntil(t, "chunks back at goal", func() bool {
		st := c.rep.Status()
		peak = max(peak, st.InFlight)
		for _, w := range ws {
			if len(holders(w.ID, 1, rest...)) != 2 {
				return false
			}
		}
		return true
	})
	if peak > len(rest) {
		t.Fatalf("%d replications at once to %d servers with a limit of 1 each", peak, len(rest))
	}
	st := c.settle(t)
	if st.Undergoal != 0 || st.Replicated != uint64(len(lost)) || st.Failed != 0 {
		t.Fatalf("after re-replication of %d chunks: %+v", len(lost), st)
	}
	for i, w := range ws {
		for _, cs := range rest {
			if _, ok := cs.chunk(w.ID); ok {
				sameData(t, cs, w.ID, 1, data[i])
			}
		}
	}
	// The server comes back: its copies are surplus now, and go.
	down.start()
	waitUntil(t, "surplus copies deleted", func() bool {
		for _, w := range ws {
			if len(c.reg.Copies(w.ID)) != 2 {
				return false
			}
		}
		return true
	})
}

// holdersOf returns the chunks of ws that cs holds.
func holdersOf(ws []wire.ChunkInfo, cs *testCS) []uint64 {
	var out []uint64
	for _, w := range ws {
		if slices.Contains(w.Servers, cs.addr) {
			out = append(out, w.ID)
		}
	}
	return out
}

// TestReplicationAfterBadWrite: a server a writer named bad loses its
// copy, and the loop makes a new one elsewhere from the good copies.
func TestReplicationAfterBadWrite(t *testing.T) {
	c := startData(t, dataOpts{rep: fastLoop()})
	css := []*testCS{c.addCS(t, "cs1"), c.addCS(t, "cs2"), c.addCS(t, "cs3")}
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	w := must[wire.ChunkInfo](t, "write")(cl.ChunkWrite(ctx, user, ino, 0))
	data := fill(t, w.ID, 1, 300000, css...)
	bad := w.Servers[0]
	noErr(t, "write end", cl.ChunkWriteEnd(ctx, user, ino, w.ID, 300000, []string{bad}))
	waitUntil(t, "chunk back at goal", func() bool { return len(holders(w.ID, 2, css...)) == 2 })
	for _, cs := range css {
		if _, ok := cs.chunk(w.ID); ok {
			sameData(t, cs, w.ID, 2, data)
		}
	}
	if st := c.settle(t); st.Undergoal != 0 || st.Invalid != 0 {
		t.Fatalf("after the repair: %+v", st)
	}
}

// TestReplicationDamaged: a damaged copy is replaced from a good one,
// then deleted; until then readers are not sent to it.
func TestReplicationDamaged(t *testing.T) {
	c := startData(t, dataOpts{rep: fastLoop()})
	css := []*testCS{c.addCS(t, "cs1"), c.addCS(t, "cs2"), c.addCS(t, "cs3")}
	ctx := testCtx(t)
	cl := c.dial(t)
	ino := newFile(t, cl, "f", 2)
	w := writeChunk(t, cl, ino, 0, 70000)
	data := fill(t, w.ID, 1, 70000, css...)
	var sick, good *testCS
	for _, cs := range css {
		if _, ok := cs.chunk(w.ID); ok {
			if sick == nil {
				sick = cs
			} else {
				good = cs
			}
		}
	}
	sick.stop()
	sick.corruptHeader(w.ID)
	sick.start()
	if ci := must[wire.ChunkInfo](t, "read")(cl.ChunkRead(ctx, user, ino, 0)); slices.Contains(ci.Servers, sick.addr) || !slices.Contains(ci.Servers, good.addr) {
		t.Fatalf("read sends to %v; damaged on %s", ci.Servers, sick.addr)
	}
	waitUntil(t, "damaged copy replaced and deleted", func() bool {
		_, has := sick.chunk(w.ID)
		return !has && len(holders(w.ID, 1, css...)) == 2
	})
	for _, cs := range css {
		if cs != sick {
			sameData(t, cs, w.ID, 1, data)
		}
	}
	if st := c.settle(t); st.Invalid != 0 || st.Undergoal != 0 || st.Replicated != 1 || st.Deleted != 1 {
		t.Fatalf("after the repair: %+v", st)
	}
}
