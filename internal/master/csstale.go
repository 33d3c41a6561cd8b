package master

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/carpfs/carpfs/internal/meta"
)

// This file compares what chunkservers hold with what the metadata
// says, for the replication planner: MooseFS's "stale copies are
// detected at registration and replaced" (DESIGN.md section 6).

// ChunkVersions maps every chunk of the metadata to its version, open
// files' chunks included. It must run under the store's read lock
// (Store.Read); it walks only the chunk table, not the namespace.
func ChunkVersions(st *meta.State) (map[uint64]uint32, error) {
	out := make(map[uint64]uint32, st.Stats().Chunks)
	st.EachChunk(func(id uint64, version uint32, _ bool) { out[id] = version })
	return out, nil
}

// Finding is one copy that disagrees with the metadata.
type Finding struct {
	Chunk  uint64
	Server string // data address
	Have   uint32 // the copy's version
	Want   uint32 // the metadata's; 0 for an orphan
}

// CheckReport is what Check found.
type CheckReport struct {
	// Stale copies have an older version than the metadata's: a write
	// happened while they were away. They must be deleted and replaced.
	Stale []Finding
	// Newer copies have a higher version than the metadata's: the
	// metadata lost a version change (a failover in async commit mode).
	// They are reported, not judged: the planner decides.
	Newer []Finding
	// Orphans are copies of chunks the metadata does not know (their
	// file was deleted while the server was away).
	Orphans []Finding
}

// Check compares every copy on connected servers with versions (from
// ChunkVersions), ordered by chunk then server.
func (r *Registry) Check(versions map[uint64]uint32) CheckReport {
	return r.check(versions, "")
}

func (r *Registry) check(versions map[uint64]uint32, only string) CheckReport {
	var rep CheckReport
	r.mu.Lock()
	for id, cs := range r.copies {
		want, known := versions[id]
		for _, c := range cs {
			if only != "" && c.srv.info.Addr != only {
				continue
			}
			f := Finding{Chunk: id, Server: c.srv.info.Addr, Have: c.version, Want: want}
			switch {
			case !known:
				rep.Orphans = append(rep.Orphans, f)
			case c.version < want:
				rep.Stale = append(rep.Stale, f)
			case c.version > want:
				rep.Newer = append(rep.Newer, f)
			}
		}
	}
	r.mu.Unlock()
	for _, l := range [][]Finding{rep.Stale, rep.Newer, rep.Orphans} {
		slices.SortFunc(l, func(a, b Finding) int {
			return cmp.Or(cmp.Compare(a.Chunk, b.Chunk), cmp.Compare(a.Server, b.Server))
		})
	}
	return rep
}

// checkServer logs how one newly registered server's copies compare
// with the metadata.
func (r *Registry) checkServer(addr string) {
	versions, err := r.cfg.Versions()
	if err != nil {
		r.log.Warn("cannot compare a chunkserver's copies with the metadata", "server", addr, "err", err)
		return
	}
	rep := r.check(versions, addr)
	if len(rep.Stale)+len(rep.Newer)+len(rep.Orphans) == 0 {
		return
	}
	r.log.Warn("chunkserver holds copies that disagree with the metadata", "server", addr,
		"stale", len(rep.Stale), "newer", len(rep.Newer), "orphans", len(rep.Orphans))
	for _, f := range rep.Stale[:min(len(rep.Stale), 10)] {
		r.log.Info("stale copy", "server", addr, "chunk", fmt.Sprintf("%016X", f.Chunk), "have", f.Have, "want", f.Want)
	}
}
