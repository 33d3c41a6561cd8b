package master

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// This file is the write path: leases on chunks (ChunkWrite,
// ChunkWriteEnd) and the chunk fix-up a truncation needs.
//
// A writer takes a lease: the chunk is locked in the metadata (meta.Write,
// which creates the chunk or raises its version) and the master
// remembers, in memory only, which session holds it until when. The
// version rise fences every earlier writer: a chunkserver refuses writes
// at another version than its copy's. So a lease the master forgot (it
// restarted, or the lease expired) needs no cleanup beyond unlocking the
// chunk: the next writer unlocks it and takes a new version.
//
// Everything that changes one chunk of a file (granting, ending and
// expiring a lease, truncating into it) holds that chunk's key, the
// (inode, index) pair, for the duration, so the metadata lock, the lease
// table and the copies' versions move together. Key holders never wait
// for a second key, except truncation, which takes its keys in index
// order; the replication loop only tries keys.

// DefaultLeaseTime is how long a write lease lasts unless its holder
// renews it by asking ChunkWrite again.
const DefaultLeaseTime = 60 * time.Second

// chunkKey names a chunk by its place in a file.
type chunkKey struct{ inode, index uint32 }

// lease is a session's right to write a chunk.
type lease struct {
	key     chunkKey
	id      uint64
	version uint32
	session uint64
	chain   []string
	expires time.Time
}

// leaseTable holds the leases and the chunk keys in use.
type leaseTable struct {
	mu   sync.Mutex
	byID map[uint64]*lease
	busy map[chunkKey]chan struct{}
}

func newLeaseTable() *leaseTable {
	return &leaseTable{byID: map[uint64]*lease{}, busy: map[chunkKey]chan struct{}{}}
}

// acquire waits for key k and returns the function that frees it.
func (t *leaseTable) acquire(ctx context.Context, k chunkKey) (func(), error) {
	for {
		rel, ch := t.try(k)
		if rel != nil {
			return rel, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// try takes key k if it is free; otherwise it returns a channel closed
// when the holder frees it.
func (t *leaseTable) try(k chunkKey) (func(), <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch, held := t.busy[k]; held {
		return nil, ch
	}
	ch := make(chan struct{})
	t.busy[k] = ch
	return func() {
		t.mu.Lock()
		delete(t.busy, k)
		t.mu.Unlock()
		close(ch)
	}, nil
}

// live returns the unexpired lease on chunk id, or nil.
func (t *leaseTable) live(id uint64, now time.Time) *lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.byID[id]; l != nil && now.Before(l.expires) {
		return l
	}
	return nil
}

// get returns the lease on chunk id, expired or not, or nil.
func (t *leaseTable) get(id uint64) *lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (t *leaseTable) put(l *lease) {
	t.mu.Lock()
	t.byID[l.id] = l
	t.mu.Unlock()
}

// drop removes the lease on id if it is l.
func (t *leaseTable) drop(l *lease) {
	t.mu.Lock()
	if t.byID[l.id] == l {
		delete(t.byID, l.id)
	}
	t.mu.Unlock()
}

// list returns the leases f selects.
func (t *leaseTable) list(f func(*lease) bool) []*lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*lease
	for _, l := range t.byID {
		if f(l) {
			out = append(out, l)
		}
	}
	return out
}

// Leases counts the write leases held now.
func (s *Server) Leases() int {
	s.leases.mu.Lock()
	defer s.leases.mu.Unlock()
	return len(s.leases.byID)
}

// unlockChunk clears a chunk's metadata lock. A chunk already unlocked
// (EINVAL) or gone (ENOENT) is fine. The unlock is not waited for: a lock
// that a crash brings back has no lease behind it, and the next writer or
// the replication loop clears it again; and whatever is acknowledged
// after it is flushed with it.
func (s *Server) unlockChunk(_ context.Context, id uint64) error {
	res, err := s.store.DoLazy(&meta.Unlock{Chunk: id})
	switch {
	case err != nil:
		return fmt.Errorf("unlock chunk %016X: %w", id, err)
	case res.Ok(), res.Err == syscall.EINVAL, res.Err == syscall.ENOENT:
		return nil
	}
	return fmt.Errorf("unlock chunk %016X: %w", id, res.Err)
}

// chunkWrite grants a write lease on chunk m.Index of a file and answers
// the chain of copies to write.
func (r *request) chunkWrite(ctx context.Context, m *wire.ChunkWrite) (wire.Message, error) {
	s := r.cc.srv
	ino := r.in(m.Inode)
	what := fmt.Sprintf("chunk write: inode %d chunk %d", m.Inode, m.Index)
	if r.ss.exp.ReadOnly {
		return nil, fmt.Errorf("%s: the export (line %d) is read-only: %w", what, r.ss.exp.Line, errReadOnly)
	}
	key := chunkKey{ino, m.Index}
	release, err := s.leases.acquire(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, err, syscall.EIO)
	}
	defer release()

	a, ref, e := s.fileChunk(ino, m.Index)
	if e != 0 {
		return nil, fmt.Errorf("%s: %w", what, e)
	}
	now := s.cfg.Clock()
	var valid, placed []string
	if ref.ID != 0 {
		if l := s.leases.live(ref.ID, now); l != nil {
			if l.session != r.ss.id {
				return nil, fmt.Errorf("%s: chunk %016X is being written by session %d: %w", what, ref.ID, l.session, syscall.EBUSY)
			}
			s.leases.mu.Lock()
			l.expires = now.Add(s.cfg.LeaseTime)
			s.leases.mu.Unlock()
			return &wire.ChunkInfo{Length: a.Size, ID: l.id, Version: l.version, Servers: slices.Clone(l.chain)}, nil
		}
		// Check before the version rises: raising it on a chunk whose
		// every copy is away would make those copies stale when they
		// come back.
		if valid = s.chunks.validCopies(ref.ID, ref.Version); len(valid) == 0 {
			return nil, fmt.Errorf("%s: chunk %016X version %d has no valid copy on a connected chunkserver: %w",
				what, ref.ID, ref.Version, syscall.EIO)
		}
		if ref.Locked {
			// Locked with no live lease: its writer's lease expired or
			// a previous master granted it. The new version fences that
			// writer.
			if l := s.leases.get(ref.ID); l != nil {
				s.leases.drop(l)
			}
			if err := s.unlockChunk(ctx, ref.ID); err != nil {
				return nil, fmt.Errorf("%s: %w: %w", what, err, syscall.EIO)
			}
		}
	} else {
		var n int
		if placed, n, err = s.place(a.Goal); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", what, err, syscall.EIO)
		}
		if len(placed) == 0 && n == 0 {
			// After a master starts (a failover), chunkservers take a
			// moment to register again: the writer waits and retries
			// rather than losing its data to an ENOSPC.
			return nil, fmt.Errorf("%s: no chunkserver is connected yet: %w", what, syscall.EAGAIN)
		}
		if len(placed) == 0 {
			return nil, fmt.Errorf("%s: no chunkserver can take a new chunk (%d connected, none with a chunk's worth of free space): %w",
				what, n, syscall.ENOSPC)
		}
	}

	res, err := r.do(ctx, &meta.Write{Inode: ino, Index: m.Index})
	if err != nil {
		return nil, err
	}
	// The version rose: the copies must follow even if the client's
	// connection drops now, or none would be valid (the commands have
	// their own timeout).
	ctx = context.WithoutCancel(ctx)
	id, version := res.Val[0], uint32(res.Val[1])
	var chain []string
	var errs []error
	if version == 1 {
		if placed == nil {
			// The chunk vanished between the two reads (a truncation).
			if placed, _, err = s.place(a.Goal); err != nil {
				placed = nil
			}
		}
		chain, errs = s.fanout(ctx, placed, func(string) []wire.Message {
			return []wire.Message{&wire.CSCreate{ID: id, Version: 1}}
		})
	} else {
		if valid == nil || id != ref.ID || version-1 != ref.Version {
			valid = s.chunks.validCopies(id, version-1)
		}
		chain, errs = s.fanout(ctx, valid, func(string) []wire.Message {
			return []wire.Message{&wire.CSSetVersion{ID: id, Old: version - 1, New: version}}
		})
	}
	if len(errs) > 0 {
		s.log.Warn("chunk copies left out of a write chain", "chunk", fmt.Sprintf("%016X", id), "version", version,
			"inode", ino, "chain", chain, "err", errors.Join(errs...))
	}
	if len(chain) == 0 {
		if err := s.unlockChunk(ctx, id); err != nil {
			s.log.Warn("could not unlock a chunk after a failed write grant", "chunk", fmt.Sprintf("%016X", id), "err", err)
		}
		errno := syscall.EIO
		if version == 1 && allErrno(errs, syscall.ENOSPC) {
			errno = syscall.ENOSPC
		}
		return nil, fmt.Errorf("%s: no chunkserver took chunk %016X version %d: %w: %w", what, id, version, errors.Join(errs...), errno)
	}
	l := &lease{key: key, id: id, version: version, session: r.ss.id, chain: chain, expires: now.Add(s.cfg.LeaseTime)}
	s.leases.put(l)
	if s.sessionEnded(r.ss) {
		// The session ended while the lease was being granted: nobody
		// would release it before it expires.
		s.leases.drop(l)
		if err := s.unlockChunk(ctx, id); err != nil {
			s.log.Warn("could not unlock the chunk of an ended session", "chunk", fmt.Sprintf("%016X", id), "err", err)
		}
		return nil, fmt.Errorf("%s: session %d ended: %w", what, r.ss.id, errBadSession)
	}
	return &wire.ChunkInfo{Length: a.Size, ID: id, Version: version, Servers: slices.Clone(chain)}, nil
}

// allErrno reports whether errs is not empty and every error wraps e.
func allErrno(errs []error, e syscall.Errno) bool {
	for _, err := range errs {
		if !errors.Is(err, e) {
			return false
		}
	}
	return len(errs) > 0
}

func (s *Server) sessionEnded(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ss.ended
}

// chunkWriteEnd ends a write lease: the file's length, the copies that
// failed, then the unlock.
func (r *request) chunkWriteEnd(ctx context.Context, m *wire.ChunkWriteEnd) (wire.Message, error) {
	s := r.cc.srv
	ino := r.in(m.Inode)
	what := fmt.Sprintf("chunk write end: inode %d chunk %016X", m.Inode, m.ID)
	if r.ss.exp.ReadOnly {
		return nil, fmt.Errorf("%s: the export (line %d) is read-only: %w", what, r.ss.exp.Line, errReadOnly)
	}
	var key chunkKey
	found := false
	if l := s.leases.get(m.ID); l != nil {
		key, found = l.key, true
		if l.key.inode != ino {
			return nil, fmt.Errorf("%s: the lease on that chunk is for inode %d: %w", what, l.key.inode, errInval)
		}
	} else {
		s.store.Read(func(st *meta.State) {
			refs, _ := st.FileChunks(ino)
			for i, ref := range refs {
				if ref.ID == m.ID {
					key, found = chunkKey{ino, uint32(i)}, true
					return
				}
			}
		})
	}
	if found {
		release, err := s.leases.acquire(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", what, err, syscall.EIO)
		}
		defer release()
	}
	l := s.leases.get(m.ID)
	if l != nil && l.session != r.ss.id {
		if s.cfg.Clock().Before(l.expires) {
			return nil, fmt.Errorf("%s: session %d holds the lease now; writes after this session's lease ended may be lost: %w",
				what, l.session, syscall.EIO)
		}
		l = nil // another session's, expired: it fences nothing any more
	}
	if m.Length > 0 {
		if _, err := r.do(ctx, &meta.Length{Inode: ino, Size: m.Length}); err != nil {
			return nil, err
		}
	}
	if !found {
		// The chunk is no longer the file's (truncated, or the file is
		// gone): there is nothing to unlock or fence.
		return &wire.Ok{}, nil
	}
	if len(m.Bad) > 0 {
		if err := r.dropBad(ctx, key, m.ID, m.Bad); err != nil {
			return nil, err
		}
	}
	if err := s.unlockChunk(ctx, m.ID); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, err, syscall.EIO)
	}
	if l := s.leases.get(m.ID); l != nil {
		s.leases.drop(l)
	}
	return &wire.Ok{}, nil
}

// dropBad fences the copies a writer failed to write: the chunk gets a
// new version on the copies that stay, so that the bad ones are stale
// wherever they turn up again and the replication loop replaces them;
// they are deleted now where their server answers. The chunk stays
// locked for the caller to unlock. If no copy stays, nothing changes:
// whatever the copies hold is all there is.
func (r *request) dropBad(ctx context.Context, key chunkKey, id uint64, bad []string) error {
	s := r.cc.srv
	var cur uint32
	var locked, ok bool
	s.store.Read(func(st *meta.State) {
		refs, _ := st.FileChunks(key.inode)
		if int(key.index) < len(refs) && refs[key.index].ID == id {
			cur, locked, ok = refs[key.index].Version, refs[key.index].Locked, true
		}
	})
	if !ok {
		return nil
	}
	var good []string
	for _, a := range s.chunks.validCopies(id, cur) {
		if !slices.Contains(bad, a) {
			good = append(good, a)
		}
	}
	chunk := fmt.Sprintf("%016X", id)
	if len(good) == 0 {
		s.log.Warn("every copy of a chunk failed a write; keeping them as they are", "chunk", chunk, "version", cur, "bad", bad)
		return nil
	}
	if locked {
		if err := s.unlockChunk(ctx, id); err != nil {
			return fmt.Errorf("chunk write end: %w: %w", err, syscall.EIO)
		}
	}
	res, err := r.do(ctx, &meta.Write{Inode: key.inode, Index: key.index})
	if err != nil {
		return err
	}
	if res.Val[0] != id {
		return nil
	}
	version := uint32(res.Val[1])
	kept, errs := s.fanout(ctx, good, func(string) []wire.Message {
		return []wire.Message{&wire.CSSetVersion{ID: id, Old: cur, New: version}}
	})
	var gone []string
	for _, c := range s.chunks.Copies(id) {
		if slices.Contains(bad, c.Server) {
			if err := s.dropCopy(ctx, id, c); err == nil {
				gone = append(gone, c.Server)
			}
		}
	}
	s.log.Info("copies dropped after a failed write", "chunk", chunk, "version", version, "bad", bad,
		"deleted", gone, "kept", kept, "err", errors.Join(errs...))
	return nil
}

// dropCopy deletes one copy, waiting at most the command timeout.
func (s *Server) dropCopy(ctx context.Context, id uint64, c Copy) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
	defer cancel()
	return s.chunks.Command(ctx, c.Server, &wire.CSDelete{ID: id, Version: c.Version})
}

// truncate runs a size change. Chunks past the new end must be unlocked
// for meta.Truncate: a live lease on one gives EBUSY, a stale lock is
// cleared. A chunk cut in the middle gets a new version from the
// metadata; its copies then get it too, and their new length.
func (r *request) truncate(ctx context.Context, ino uint32, size uint64) error {
	s := r.cc.srv
	what := fmt.Sprintf("truncate %d to %d", ino, size)
	var refs []meta.ChunkRef
	var old uint64
	read := func() {
		s.store.Read(func(st *meta.State) {
			refs = nil
			if a, e := st.GetAttr(ino); e == 0 && a.Type == meta.TypeFile {
				old = a.Size
				refs, _ = st.FileChunks(ino)
			}
		})
	}
	read()
	keep := int((size + meta.ChunkSize - 1) / meta.ChunkSize)
	edge := -1
	if size%meta.ChunkSize != 0 && size < old {
		edge = int(size / meta.ChunkSize)
	}
	var keys []chunkKey
	for i, ref := range refs {
		if ref.ID != 0 && (i >= keep || i == edge) {
			keys = append(keys, chunkKey{ino, uint32(i)})
		}
	}
	for _, k := range keys {
		release, err := s.leases.acquire(ctx, k)
		if err != nil {
			return fmt.Errorf("%s: %w: %w", what, err, syscall.EIO)
		}
		defer release()
	}
	if len(keys) > 0 {
		read() // as of holding the keys
	}
	now := s.cfg.Clock()
	var pre meta.ChunkRef
	for i, ref := range refs {
		if ref.ID == 0 || i < keep && i != edge {
			continue
		}
		if i == edge {
			pre = ref
		}
		if !ref.Locked {
			continue
		}
		if l := s.leases.live(ref.ID, now); l != nil {
			return fmt.Errorf("%s: chunk %016X is being written by session %d: %w", what, ref.ID, l.session, syscall.EBUSY)
		}
		if l := s.leases.get(ref.ID); l != nil {
			s.leases.drop(l)
		}
		if err := s.unlockChunk(ctx, ref.ID); err != nil {
			return fmt.Errorf("%s: %w: %w", what, err, syscall.EIO)
		}
	}
	if _, err := r.do(ctx, &meta.Truncate{Inode: ino, Size: size}); err != nil {
		return err
	}
	if pre.ID == 0 {
		return nil
	}
	var nv uint32
	var ok bool
	s.store.Read(func(st *meta.State) { nv, ok = st.ChunkVersion(pre.ID) })
	if !ok || nv == pre.Version {
		return nil
	}
	valid := s.chunks.validCopies(pre.ID, pre.Version)
	done, errs := s.fanout(ctx, valid, func(string) []wire.Message {
		return []wire.Message{
			&wire.CSSetVersion{ID: pre.ID, Old: pre.Version, New: nv},
			&wire.CSTruncate{ID: pre.ID, Version: nv, Length: uint32(size % meta.ChunkSize)},
		}
	})
	if len(errs) > 0 {
		level := "some copies"
		if len(done) == 0 {
			level = "no copy"
		}
		s.log.Warn("truncation: "+level+" of the cut chunk took its new version", "chunk", fmt.Sprintf("%016X", pre.ID),
			"version", nv, "inode", ino, "updated", done, "err", errors.Join(errs...))
	}
	return nil
}

// releaseLeases ends every lease of a session that ended.
func (s *Server) releaseLeases(ctx context.Context, session uint64) {
	for _, l := range s.leases.list(func(l *lease) bool { return l.session == session }) {
		s.endLease(ctx, l, true)
	}
}

// endLease removes lease l and unlocks its chunk. wait says whether to
// wait for the chunk's key; otherwise a busy key leaves l for later.
func (s *Server) endLease(ctx context.Context, l *lease, wait bool) bool {
	var release func()
	if wait {
		var err error
		if release, err = s.leases.acquire(ctx, l.key); err != nil {
			return false
		}
	} else if release, _ = s.leases.try(l.key); release == nil {
		return false
	}
	defer release()
	if s.leases.get(l.id) != l {
		return true // ended or replaced meanwhile
	}
	s.leases.drop(l)
	if err := s.unlockChunk(ctx, l.id); err != nil {
		s.log.Warn("could not unlock a chunk whose lease ended", "chunk", fmt.Sprintf("%016X", l.id), "session", l.session, "err", err)
		return false
	}
	return true
}

// expireLeases runs until ctx ends, ending leases whose time passed.
func (s *Server) expireLeases(ctx context.Context) {
	t := time.NewTicker(max(min(s.cfg.LeaseTime/4, time.Second), 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Clock()
		old := s.leases.list(func(l *lease) bool { return !now.Before(l.expires) })
		n := 0
		for _, l := range old {
			if s.endLease(ctx, l, false) {
				n++
			}
		}
		if n > 0 {
			s.log.Info("write leases expired", "count", n, "lease_time", s.cfg.LeaseTime)
		}
	}
}

// releaseStale clears the metadata lock of chunk id at key if no lease
// covers it and nobody holds the key: the replication loop's cleanup of
// locks a previous master granted. It reports whether it unlocked.
func (s *Server) releaseStale(ctx context.Context, key chunkKey, id uint64) bool {
	release, _ := s.leases.try(key)
	if release == nil {
		return false
	}
	defer release()
	if s.leases.get(id) != nil {
		return false
	}
	var locked bool
	s.store.Read(func(st *meta.State) {
		refs, _ := st.FileChunks(key.inode)
		locked = int(key.index) < len(refs) && refs[key.index].ID == id && refs[key.index].Locked
	})
	if !locked {
		return false
	}
	if err := s.unlockChunk(ctx, id); err != nil {
		s.log.Warn("could not clear a stale chunk lock", "chunk", fmt.Sprintf("%016X", id), "err", err)
		return false
	}
	return true
}
