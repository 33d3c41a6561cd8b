package replication

import "slices"

// Copy is one copy of a chunk as its chunkserver reported it.
type Copy struct {
	Server  ServerID
	Version uint32
	// Damaged is set once a read found a bad block (CRC mismatch) in the
	// copy; the copy keeps its version but can no longer be trusted.
	Damaged bool
}

// ChunkState is what the master knows of one chunk: the version the
// metadata expects and the copies registered for it. Copies on servers the
// Cluster does not know (disconnected ones) are ignored: they can neither
// be read from nor deleted. The master should not plan a chunk that is
// locked for writing (meta.ChunkRef.Locked): its copies are about to change
// version, and a copy made now would be stale at once.
type ChunkState struct {
	ID      uint64
	Version uint32
	Copies  []Copy
}

// Status sums up a chunk's health, worst first.
type Status uint8

const (
	StatusOK         Status = iota // goal met
	StatusLost                     // no valid copy
	StatusEndangered               // one valid copy, goal above 1
	StatusUndergoal                // fewer valid copies than the goal
	StatusRemoval                  // goal met only counting servers marked for removal
	StatusOvergoal                 // more valid copies than the goal
	StatusMisplaced                // enough copies, but not in the xyz layout
)

var statusNames = [...]string{"ok", "lost", "endangered", "undergoal", "removal", "overgoal", "misplaced"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Kind is what an action does.
type Kind uint8

const (
	Replicate Kind = iota + 1 // copy the chunk From one server To another
	Delete                    // delete the copy on Server
)

func (k Kind) String() string {
	switch k {
	case Replicate:
		return "replicate"
	case Delete:
		return "delete"
	}
	return "unknown"
}

// Reason says why a copy is deleted.
type Reason uint8

const (
	ReasonNone     Reason = iota
	ReasonStale           // version differs from the chunk's
	ReasonDamaged         // a block failed its CRC
	ReasonOverGoal        // more valid copies than the goal
	ReasonRemoval         // server marked for removal, goal met elsewhere
)

var reasonNames = [...]string{"", "stale version", "damaged", "over goal", "on removal disk"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Priority orders actions for Schedule; lower runs first.
type Priority uint8

const (
	PriorityEndangered Priority = iota // one valid copy left
	PriorityUndergoal                  // below goal
	PriorityRemoval                    // replacing copies on servers being removed
	PriorityRebalance                  // moving copies into the xyz layout
	PriorityDelete                     // cleanup: over goal, stale, damaged
)

// Action is one step the master should take for a chunk. Every action is
// safe on its own, in any order: deletes never count on a replication of
// the same round having succeeded.
type Action struct {
	Kind  Kind
	Chunk uint64
	// Version is the version of the copy to delete, or to replicate, so a
	// chunkserver refuses an action made stale by a write in between.
	Version  uint32
	From, To ServerID // Replicate
	Server   ServerID // Delete
	Reason   Reason   // Delete
	Priority Priority
}

// Options change how Plan repairs.
type Options struct {
	// NoDelete returns only Replicate actions, as SeaweedFS's
	// volume.fix.replication -doDelete=false: for use while servers or
	// goals are being changed, when a copy that looks surplus may soon be
	// needed.
	NoDelete bool
}

// Result is Plan's verdict on one chunk.
type Result struct {
	Status  Status
	Valid   int // valid copies, those on servers marked for removal included
	Invalid int // stale and damaged copies
	// Missing is how many copies the goal wants that no usable server can
	// take now; the master reports these rather than retrying blindly.
	Missing int
	Actions []Action
}

// entry is one classified copy.
type entry struct {
	s       int32
	version uint32
	reason  Reason // why an invalid copy is invalid
	del     bool
}

// Plan decides what chunk ch needs to meet goal g on cluster c. An invalid
// goal is treated as goal 2, MooseFS's default, so a bad inode never stops
// repairs. Plan allocates only when it returns actions.
func Plan(ch ChunkState, g Goal, c *Cluster, opt Options) Result {
	return AppendPlan(nil, ch, g, c, opt)
}

// AppendPlan is Plan appending its actions to dst, so a scan over many
// chunks can reuse one buffer: Result.Actions is dst with the actions.
func AppendPlan(dst []Action, ch ChunkState, g Goal, c *Cluster, opt Options) Result {
	if g.Validate() != nil {
		g = Goal{n: 2}
	}
	n := int(g.n)
	res := Result{Actions: dst}
	var kb, rb, ib [MaxCopies + 3]entry
	keep, rm, inv := kb[:0], rb[:0], ib[:0]
	var xb [3 * MaxCopies]int32
	excl := xb[:0] // every known server holding any copy
	for _, cp := range ch.Copies {
		i, ok := c.index[cp.Server]
		if !ok || slices.Contains(excl, i) {
			continue
		}
		excl = append(excl, i)
		e := entry{s: i, version: cp.Version}
		switch {
		case cp.Version != ch.Version:
			e.reason = ReasonStale
			inv = append(inv, e)
		case cp.Damaged:
			e.reason = ReasonDamaged
			inv = append(inv, e)
		case c.srv[i].MarkedForRemoval:
			rm = append(rm, e)
		default:
			keep = append(keep, e)
		}
	}
	v := len(keep) + len(rm)
	res.Valid, res.Invalid = v, len(inv)
	if v == 0 {
		// Nothing to copy from, and whatever is left (stale or damaged)
		// is all there is of the data: keep it for the operator.
		res.Status, res.Missing = StatusLost, n
		return res
	}
	c.byRank(keep)
	c.byRank(rm)
	c.byRank(inv)

	var kib [MaxCopies + 3]int32
	kept := kib[:0]
	for _, e := range keep {
		kept = append(kept, e.s)
	}
	l := newLayout(g, c, -1)
	if g.topo && len(kept) > 0 {
		_, l = c.bestPrimary(g, kept, excl)
	} else {
		for _, s := range kept {
			l.add(c, s)
		}
	}
	filled := l.filled()

	switch {
	case v == 1 && n > 1:
		res.Status = StatusEndangered
	case v < n:
		res.Status = StatusUndergoal
	case len(keep) < n:
		res.Status = StatusRemoval
	case v > n:
		res.Status = StatusOvergoal
	case filled < n:
		res.Status = StatusMisplaced
	}
	if res.Status == StatusOK && len(inv) == 0 {
		return res
	}

	// Deletes of valid copies, never taking the count below the goal:
	// copies on servers being removed go first, then copies outside the
	// layout, most used server first.
	if extra := v - n; !opt.NoDelete && extra > 0 {
		for i := len(rm) - 1; i >= 0 && extra > 0; i-- {
			rm[i].del, rm[i].reason = true, ReasonRemoval
			extra--
		}
		slot := newLayout(g, c, -1)
		slot.prack, slot.pdc = l.prack, l.pdc
		var inSlot [MaxCopies + 3]bool
		for i, e := range keep {
			inSlot[i] = slot.add(c, e.s)
		}
		for i := len(keep) - 1; i >= 0 && extra > 0; i-- {
			if !inSlot[i] {
				keep[i].del, keep[i].reason = true, ReasonOverGoal
				extra--
			}
		}
	}

	// Replications: fill the empty slots of the layout, and at least enough
	// to reach the goal without the copies on servers being removed.
	tb := tiebreak{s: ch.ID}
	var tgb [MaxCopies]int32
	targets, _ := c.place(&l, excl, n-filled, n-len(keep), &tb, tgb[:0])
	res.Missing = max(0, n-len(keep)-len(targets))

	prio := PriorityRebalance
	switch res.Status {
	case StatusEndangered:
		prio = PriorityEndangered
	case StatusUndergoal:
		prio = PriorityUndergoal
	case StatusRemoval:
		prio = PriorityRemoval
	}

	if !opt.NoDelete {
		// A copy is missing and the only servers left hold a stale or
		// damaged copy: free the best of them so the next round can use it.
		room := res.Missing
		for i := range inv {
			if room == 0 {
				break
			}
			if c.usable[inv[i].s] {
				inv[i].del = true
				room--
				res.Actions = append(res.Actions, deleteAction(ch.ID, c, inv[i], prio))
			}
		}
		// Invalid copies go once the valid ones meet the goal.
		if v >= n {
			for _, e := range inv {
				if !e.del {
					res.Actions = append(res.Actions, deleteAction(ch.ID, c, e, PriorityDelete))
				}
			}
		}
		for _, list := range [2][]entry{rm, keep} {
			for _, e := range list {
				if e.del {
					res.Actions = append(res.Actions, deleteAction(ch.ID, c, e, PriorityDelete))
				}
			}
		}
	}

	// Read from any valid copy that stays, at random per chunk so that the
	// load of a big repair spreads over all holders.
	var sb [2 * (MaxCopies + 3)]int32
	src := sb[:0]
	for _, list := range [2][]entry{keep, rm} {
		for _, e := range list {
			if !e.del {
				src = append(src, e.s)
			}
		}
	}
	for _, t := range targets {
		res.Actions = append(res.Actions, Action{
			Kind: Replicate, Chunk: ch.ID, Version: ch.Version,
			From: c.srv[src[tb.intn(len(src))]].ID, To: c.srv[t].ID, Priority: prio,
		})
	}
	return res
}

func deleteAction(chunk uint64, c *Cluster, e entry, p Priority) Action {
	return Action{Kind: Delete, Chunk: chunk, Version: e.version, Server: c.srv[e.s].ID, Reason: e.reason, Priority: p}
}

// byRank sorts a few entries best server first (insertion sort: there are
// rarely more than three).
func (c *Cluster) byRank(es []entry) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && c.rank[es[j].s] < c.rank[es[j-1].s]; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}
