package replication

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// layout is how a chunk's copies fill the slots of its goal. For an xyz
// goal the slots hang off a primary rack prack in data center pdc: z+1 in
// prack, one in each of y other racks of pdc, one in each of x other data
// centers. A plain goal has n interchangeable slots. Arrays, not slices,
// keep a layout on the stack: Plan builds several per chunk.
type layout struct {
	g          Goal
	prack, pdc int32
	inRack     int // plain goals count every copy here
	nr, nd     int
	racks      [MaxCopies]int32
	dcs        [MaxCopies]int32
}

func newLayout(g Goal, c *Cluster, primary int32) layout {
	l := layout{g: g, prack: -1, pdc: -1}
	if g.topo && primary >= 0 {
		l.prack, l.pdc = c.rack[primary], c.dc[primary]
	}
	return l
}

func (l *layout) filled() int { return l.inRack + l.nr + l.nd }

// fits reports whether server s would fill an empty slot.
func (l *layout) fits(c *Cluster, s int32) bool {
	if !l.g.topo {
		return l.inRack < int(l.g.n)
	}
	r, d := c.rack[s], c.dc[s]
	switch {
	case r == l.prack:
		return l.inRack < int(l.g.z)+1
	case d == l.pdc:
		return l.nr < int(l.g.y) && !slices.Contains(l.racks[:l.nr], r)
	default:
		return l.nd < int(l.g.x) && !slices.Contains(l.dcs[:l.nd], d)
	}
}

// add puts s in a slot if it fits one and reports whether it did.
func (l *layout) add(c *Cluster, s int32) bool {
	if !l.fits(c, s) {
		return false
	}
	switch {
	case !l.g.topo || c.rack[s] == l.prack:
		l.inRack++
	case c.dc[s] == l.pdc:
		l.racks[l.nr] = c.rack[s]
		l.nr++
	default:
		l.dcs[l.nd] = c.dc[s]
		l.nd++
	}
	return true
}

// freeRack and freeDC count the usable servers of a rack or data center
// that are not excluded. Exclusions are the few servers touching a chunk,
// so they are walked rather than the rack.
func (c *Cluster) freeRack(r int32, excl []int32) int {
	n := len(c.rackSorted[r])
	for _, e := range excl {
		if c.usable[e] && c.rack[e] == r {
			n--
		}
	}
	return n
}

func (c *Cluster) freeDC(d int32, excl []int32) int {
	n := len(c.dcSorted[d])
	for _, e := range excl {
		if c.usable[e] && c.dc[e] == d {
			n--
		}
	}
	return n
}

// fillable is how many of l's empty slots some usable, non-excluded server
// could fill.
func (c *Cluster) fillable(l *layout, excl []int32) int {
	g := l.g
	n := min(int(g.z)+1-l.inRack, c.freeRack(l.prack, excl))
	racks := 0
	for _, r := range c.dcRacks[l.pdc] {
		if racks+l.nr >= int(g.y) {
			break
		}
		if r != l.prack && !slices.Contains(l.racks[:l.nr], r) && c.freeRack(r, excl) > 0 {
			racks++
		}
	}
	dcs := 0
	for d := range c.dcSorted {
		if dcs+l.nd >= int(g.x) {
			break
		}
		if int32(d) != l.pdc && !slices.Contains(l.dcs[:l.nd], int32(d)) && c.freeDC(int32(d), excl) > 0 {
			dcs++
		}
	}
	return n + racks + dcs
}

// bestPrimary chooses the primary rack for an xyz goal given the chunk's
// copies (best first). Racks holding a copy are tried first, so a repair
// never moves data it does not have to: the one whose layout the copies
// fill most wins, and only if none is full are the racks' spare servers
// weighed too, then other racks. With no copies every rack is a candidate and the
// result is the servers of the best racks, for Place to choose from.
// It returns the layout's reachable size and the layout itself.
func (c *Cluster) bestPrimary(g Goal, copies, excl []int32) (int, layout) {
	if len(copies) == 0 {
		best, bl := -1, layout{g: g, prack: -1, pdc: -1}
		for s := range c.rackSorted {
			if c.freeRack(int32(s), excl) == 0 {
				continue
			}
			l := layout{g: g, prack: int32(s), pdc: c.rackDC[s]}
			if n := c.fillable(&l, excl); n > best {
				best, bl = n, l
			}
		}
		return max(best, 0), bl
	}
	best, bl := -1, layout{}
	var tried [MaxCopies * 2]int32
	nt := 0
	for _, p := range copies {
		if slices.Contains(tried[:nt], c.rack[p]) {
			continue
		}
		if nt < len(tried) {
			tried[nt] = c.rack[p]
			nt++
		}
		l := newLayout(g, c, p)
		for _, s := range copies {
			l.add(c, s)
		}
		if l.filled() > best {
			best, bl = l.filled(), l
		}
	}
	if best >= int(g.n) {
		return best, bl
	}
	bestScore := -1
	for _, r := range tried[:nt] {
		l := layout{g: g, prack: r, pdc: c.rackDC[r]}
		for _, s := range copies {
			l.add(c, s)
		}
		score := l.filled() + c.fillable(&l, excl)
		if score > bestScore || (score == bestScore && l.filled() > bl.filled()) {
			bestScore, bl = score, l
		}
	}
	if bestScore >= int(g.n) {
		return bestScore, bl
	}
	// No rack holding a copy can anchor the whole layout: look at the
	// others, so that copies stranded in, say, a one-rack data center move
	// to one that can hold the goal. The copies left outside the new
	// layout are then surplus and deleted once the new ones exist.
	for r := range c.rackSorted {
		if slices.Contains(tried[:nt], int32(r)) || c.freeRack(int32(r), excl) == 0 {
			continue
		}
		l := layout{g: g, prack: int32(r), pdc: c.rackDC[r]}
		for _, s := range copies {
			l.add(c, s)
		}
		score := l.filled() + c.fillable(&l, excl)
		if score > bestScore || (score == bestScore && l.filled() > bl.filled()) {
			bestScore, bl = score, l
		}
	}
	return bestScore, bl
}

// place appends to dst up to strict servers that fill empty slots of l, then
// more servers, spread over racks without a copy where it can, until at
// least total were added. excl holds every server touching the chunk and
// grows with each choice. It is the shared core of Place and Plan.
func (c *Cluster) place(l *layout, excl []int32, strict, total int, tb *tiebreak, dst []int32) ([]int32, []int32) {
	added := 0
	notExcl := func(s int32) bool { return !slices.Contains(excl, s) }
	if l.g.topo && l.prack < 0 && strict > 0 {
		// No copy yet: the first server becomes the primary, chosen among
		// the racks that can hold the most of the layout.
		s := int32(-1)
		if _, bl := c.bestPrimary(l.g, nil, excl); bl.prack >= 0 {
			s = c.pick(c.rackSorted[bl.prack], notExcl, tb)
		}
		if s >= 0 {
			*l = newLayout(l.g, c, s)
			l.add(c, s)
			excl, dst = append(excl, s), append(dst, s)
			added++
		}
	}
	fits := func(s int32) bool { return !slices.Contains(excl, s) && l.fits(c, s) }
	for added < strict {
		s := int32(-1)
		switch {
		case !l.g.topo:
			s = c.pick(c.sorted, notExcl, tb)
		default:
			// Widest slots first: a copy in another data center protects
			// against more than one in the same rack.
			if l.nd < int(l.g.x) {
				s = c.pick(c.sorted, fits, tb)
			}
			if s < 0 && l.nr < int(l.g.y) && l.pdc >= 0 {
				s = c.pick(c.dcSorted[l.pdc], fits, tb)
			}
			if s < 0 && l.inRack <= int(l.g.z) && l.prack >= 0 {
				s = c.pick(c.rackSorted[l.prack], fits, tb)
			}
		}
		if s < 0 {
			break
		}
		l.add(c, s)
		excl, dst = append(excl, s), append(dst, s)
		added++
	}
	for added < total {
		// Out of slots the topology allows: still place the copies, on a
		// rack without one if possible.
		spread := func(s int32) bool {
			if slices.Contains(excl, s) {
				return false
			}
			for _, e := range excl {
				if c.rack[e] == c.rack[s] {
					return false
				}
			}
			return true
		}
		s := c.pick(c.sorted, spread, tb)
		if s < 0 {
			s = c.pick(c.sorted, notExcl, tb)
		}
		if s < 0 {
			break
		}
		excl, dst = append(excl, s), append(dst, s)
		added++
	}
	return dst, excl
}

// Place chooses n servers for new copies of a chunk with goal g. have lists
// the servers already holding valid copies: they are not chosen again and,
// for an xyz goal, the new copies are placed around them. exclude lists
// further servers not to choose (say ones holding a stale copy). Servers
// that are full or marked for removal are never chosen.
//
// Randomness among near-equal servers comes from rnd (nil means none).
// When too few servers are usable Place returns those it could choose with
// an error wrapping ErrNoServers, so a writer may go ahead under goal as
// MooseFS does. An xyz layout the servers cannot hold is not an error: the
// copies go to distinct servers anyway, and Cluster.Check explains.
func Place(g Goal, c *Cluster, have, exclude []ServerID, n int, rnd *rand.Rand) ([]ServerID, error) {
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("replication: place: %w", err)
	}
	if n < 0 {
		return nil, fmt.Errorf("replication: place: negative count %d", n)
	}
	var copies, excl []int32
	for _, id := range have {
		if i, ok := c.index[id]; ok && !slices.Contains(copies, i) {
			copies = append(copies, i)
		}
	}
	slices.SortFunc(copies, func(a, b int32) int { return int(c.rank[a] - c.rank[b]) })
	excl = append(excl, copies...)
	for _, id := range exclude {
		if i, ok := c.index[id]; ok && !slices.Contains(excl, i) {
			excl = append(excl, i)
		}
	}
	tb := tiebreak{}
	if rnd != nil {
		tb.s = rnd.Uint64()
	}
	l := newLayout(g, c, -1)
	if g.topo && len(copies) > 0 {
		_, l = c.bestPrimary(g, copies, excl)
	} else {
		for _, s := range copies {
			l.add(c, s)
		}
	}
	chosen, _ := c.place(&l, excl, n, n, &tb, nil)
	out := make([]ServerID, len(chosen))
	for i, s := range chosen {
		out[i] = c.srv[s].ID
	}
	if len(chosen) < n {
		return out, fmt.Errorf("replication: place: goal %s needs %d servers, %d are usable: %w",
			g, len(copies)+n, len(copies)+len(chosen), ErrNoServers)
	}
	return out, nil
}
