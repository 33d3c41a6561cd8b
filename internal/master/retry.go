package master

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/carpfs/carpfs/internal/wire"
)

// retryWindow is how many recent mutations per session are remembered
// for retries. A mount retries only requests that were in flight when
// its connection dropped, at most the wire's in-flight limit of them.
const retryWindow = 256

// replies remembers a session's recent mutation replies by request
// sequence number, so that a mount that lost its connection and resends
// a mutation gets the original answer instead of running it twice (a
// second Create would say EEXIST, a second Release would drop someone
// else's open). It lives in this process only: exactly-once across a
// failover needs the sequence numbers in the changelog, which is later
// work.
type replies struct {
	mu    sync.Mutex
	bySeq map[uint64]*reply
	order []uint64 // sequence numbers, oldest first, at most retryWindow
}

// reply is one mutation's outcome; done is closed once it is known.
type reply struct {
	typ  wire.Type
	done chan struct{}
	msg  wire.Message
	err  error
}

// mutation reports whether m changes the metadata, and so must not run
// twice.
func mutation(m wire.Message) bool {
	switch m.(type) {
	case *wire.SetAttr, *wire.Create, *wire.Symlink, *wire.Link, *wire.Unlink, *wire.Rmdir,
		*wire.Rename, *wire.SetXattr, *wire.RemoveXattr, *wire.SetGoal, *wire.Open, *wire.Release,
		*wire.ChunkWrite, *wire.ChunkWriteEnd:
		return true
	}
	return false
}

// once runs serve for the mutation numbered seq unless it ran already,
// in which case it returns the first run's answer, waiting for it if it
// is still under way. serve gets a context that the connection's end
// does not cancel: a mutation already applied must finish its commit
// and leave its answer for the retry.
func (rs *replies) once(ctx context.Context, seq uint64, t wire.Type, serve func(context.Context) (wire.Message, error)) (wire.Message, error) {
	for {
		rs.mu.Lock()
		if rs.bySeq == nil {
			rs.bySeq = map[uint64]*reply{}
		}
		r, ok := rs.bySeq[seq]
		if !ok {
			break // rs.mu still held: this call runs it
		}
		rs.mu.Unlock()
		if r.typ != t {
			return nil, fmt.Errorf("%s: request %d was a %s: %w", t, seq, r.typ, syscall.EINVAL)
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting for the first run of request %d: %w: %w", t, seq, ctx.Err(), syscall.EIO)
		}
		if !errors.Is(r.err, syscall.EIO) {
			return r.msg, r.err
		}
		// The first run settled nothing (see below): run it again.
	}
	r := &reply{typ: t, done: make(chan struct{})}
	rs.bySeq[seq] = r
	rs.order = append(rs.order, seq)
	if len(rs.order) > retryWindow {
		delete(rs.bySeq, rs.order[0])
		rs.order = rs.order[1:]
	}
	rs.mu.Unlock()

	r.msg, r.err = serve(context.WithoutCancel(ctx))
	if errors.Is(r.err, syscall.EIO) {
		// The store could not say whether the entry is durable: a retry
		// must run again rather than repeat an answer that settles
		// nothing.
		rs.mu.Lock()
		if rs.bySeq[seq] == r {
			delete(rs.bySeq, seq)
		}
		rs.mu.Unlock()
	}
	close(r.done)
	return r.msg, r.err
}
