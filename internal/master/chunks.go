package master

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/replication"
	"github.com/carpfs/carpfs/internal/wire"
)

// This file is what the data path reads of the chunkserver registry:
// valid copies, the servers as a placement cluster, and space, plus the
// client's ChunkRead and StatFS.
//
// A copy is valid when its server is connected and registered, its
// version is the metadata's and no read or scrub found it damaged. Only
// valid copies are handed to readers, chained for writers, and counted
// toward a chunk's goal.

// fullBelow is the free space under which a server takes no new copies:
// less than one chunk could not hold the chunk once it is written.
const fullBelow = meta.ChunkSize

// DefaultCommandTimeout bounds one command to a chunkserver on a
// client's behalf (create, set version, truncate, delete).
const DefaultCommandTimeout = 10 * time.Second

// validCopies returns the data addresses of id's valid copies at
// version, ordered by address.
func (r *Registry) validCopies(id uint64, version uint32) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.copies[id] {
		if c.version == version && !c.damaged && c.srv.info.Connected {
			out = append(out, c.srv.info.Addr)
		}
	}
	slices.Sort(out)
	return out
}

// chunkState is id's copies as the replication planner takes them.
func (r *Registry) chunkState(id uint64, version uint32) replication.ChunkState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := replication.ChunkState{ID: id, Version: version}
	for _, c := range r.copies[id] {
		st.Copies = append(st.Copies, replication.Copy{Server: replication.ServerID(c.srv.info.Addr), Version: c.version, Damaged: c.damaged})
	}
	slices.SortFunc(st.Copies, func(a, b replication.Copy) int { return cmp.Compare(a.Server, b.Server) })
	return st
}

// chunkIDs lists every chunk id with a copy on a connected server.
func (r *Registry) chunkIDs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, 0, len(r.copies))
	for id := range r.copies {
		out = append(out, id)
	}
	return out
}

// cluster returns the connected, registered servers for placement. A
// server's used space is what it cannot give to chunks (Total-Free), so
// its reserve counts as used; one with less than a chunk free is full.
func (r *Registry) cluster() (*replication.Cluster, error) {
	r.mu.Lock()
	srv := make([]replication.Server, 0, len(r.servers))
	for _, s := range r.servers {
		in := &s.info
		if !in.Connected || !in.Registered {
			continue
		}
		used := in.Used
		if in.Free <= in.Total {
			used = in.Total - in.Free
		}
		srv = append(srv, replication.Server{
			ID: replication.ServerID(in.Addr), DataCenter: in.DataCenter, Rack: in.Rack,
			Total: in.Total, Used: used, Full: in.Free < fullBelow, Chunks: len(s.ids),
		})
	}
	r.mu.Unlock()
	slices.SortFunc(srv, func(a, b replication.Server) int { return cmp.Compare(a.ID, b.ID) })
	c, err := replication.NewCluster(srv)
	if err != nil {
		return nil, fmt.Errorf("master: chunkservers as a cluster: %w", err)
	}
	return c, nil
}

// Space sums the space of the connected chunkservers: what they hold in
// all, and what chunks may still take.
func (r *Registry) Space() (total, free uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.servers {
		if s.info.Connected && s.info.Registered {
			total += s.info.Total
			free += s.info.Free
		}
	}
	return total, free
}

// place chooses up to goal-many distinct servers for a new chunk, best
// first. Fewer than the goal is not an error: a writer goes ahead under
// goal, as MooseFS does, and the replication loop adds copies later.
func (s *Server) place(goal uint8) ([]string, int, error) {
	c, err := s.chunks.cluster()
	if err != nil {
		return nil, 0, err
	}
	g, err := replication.GoalFromCode(goal)
	if err != nil {
		g, _ = replication.Copies(meta.DefaultGoal)
	}
	ids, err := replication.Place(g, c, nil, nil, g.Copies(), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	if err != nil && !errors.Is(err, replication.ErrNoServers) {
		return nil, 0, err
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out, len(c.Servers()), nil
}

// fanout sends the commands mk makes to every server of addrs at once,
// in order per server, and returns the servers that did them all, in the
// order of addrs, and the errors of the others.
func (s *Server) fanout(ctx context.Context, addrs []string, mk func(addr string) []wire.Message) (ok []string, errs []error) {
	done := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
			defer cancel()
			for _, cmd := range mk(a) {
				if done[i] = s.chunks.Command(ctx, a, cmd); done[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for i, a := range addrs {
		if done[i] == nil {
			ok = append(ok, a)
		} else {
			errs = append(errs, done[i])
		}
	}
	return ok, errs
}

// fileChunk reads a file's attributes and its chunk at index (ID 0 for
// a hole or past the end).
func (s *Server) fileChunk(ino, index uint32) (meta.Attr, meta.ChunkRef, syscall.Errno) {
	var a meta.Attr
	var ref meta.ChunkRef
	var e syscall.Errno
	s.store.Read(func(st *meta.State) {
		if a, e = st.GetAttr(ino); e != 0 {
			return
		}
		var refs []meta.ChunkRef
		if refs, e = st.FileChunks(ino); e == 0 && int(index) < len(refs) {
			ref = refs[index]
		}
	})
	return a, ref, e
}

// chunkRead answers where chunk m.Index of a file can be read.
func (r *request) chunkRead(ctx context.Context, m *wire.ChunkRead) (wire.Message, error) {
	s := r.cc.srv
	ino := r.in(m.Inode)
	a, ref, e := s.fileChunk(ino, m.Index)
	if e == 0 && ref.Locked && ref.ID != 0 && len(s.chunks.validCopies(ref.ID, ref.Version)) == 0 {
		// A write grant may be raising the version on the copies right
		// now: wait for it (it holds the chunk's key), then look again.
		if release, err := s.leases.acquire(ctx, chunkKey{ino, m.Index}); err == nil {
			a, ref, e = s.fileChunk(ino, m.Index)
			release()
		}
	}
	if e != 0 {
		return nil, fmt.Errorf("chunk read: inode %d chunk %d: %w", m.Inode, m.Index, e)
	}
	info := &wire.ChunkInfo{Length: a.Size, ID: ref.ID, Version: ref.Version}
	if ref.ID == 0 {
		return info, nil
	}
	info.Servers = s.chunks.validCopies(ref.ID, ref.Version)
	if len(info.Servers) == 0 {
		return nil, fmt.Errorf("chunk read: chunk %016X version %d (inode %d, chunk %d) has no valid copy on a connected chunkserver: %w",
			ref.ID, ref.Version, ino, m.Index, syscall.EIO)
	}
	return info, nil
}

// statFS answers the file system's counters and the chunkservers' space.
func (r *request) statFS() (wire.Message, error) {
	var st meta.Stats
	r.cc.srv.store.Read(func(s *meta.State) { st = s.Stats() })
	total, free := r.cc.srv.chunks.Space()
	return &wire.FSStats{TotalSpace: total, AvailSpace: free, Files: st.Files, Dirs: st.Dirs}, nil
}
