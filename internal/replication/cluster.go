package replication

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// NearEqual is how close, in used ratio, two servers must be for placement
// to treat them as equally good and choose between them at random.
const NearEqual = 0.02

// ErrNoServers is wrapped when there are too few usable servers for a goal.
var ErrNoServers = errors.New("not enough usable servers")

// ErrTopology is wrapped when the servers cannot hold an xyz layout.
var ErrTopology = errors.New("topology cannot hold goal")

// ServerID names a chunkserver by its data address, host:port.
type ServerID string

// Server is what the master knows of one chunkserver.
type Server struct {
	ID               ServerID
	DataCenter, Rack string
	Total, Used      uint64 // bytes
	Full             bool
	MarkedForRemoval bool
	Chunks           int
}

// Usable reports whether new copies may go to s.
func (s *Server) Usable() bool {
	return !s.Full && !s.MarkedForRemoval && s.Total > 0 && s.Used < s.Total
}

// Ratio is the used fraction of s, 1 when it reports no space.
func (s *Server) Ratio() float64 {
	if s.Total == 0 {
		return 1
	}
	return float64(s.Used) / float64(s.Total)
}

// Cluster is an indexed snapshot of the chunkservers. The master builds one
// per scan, not per chunk: Plan runs millions of times against it, so data
// centers and racks are interned to small integers and servers are kept
// sorted by preference once. A Cluster is read-only and safe to share.
type Cluster struct {
	srv    []Server
	index  map[ServerID]int32
	dc     []int32   // per server
	rack   []int32   // per server; racks are numbered across data centers
	ratio  []float64 // per server
	usable []bool    // per server
	rank   []int32   // per server: position in preference order

	sorted     []int32   // usable servers, best first
	rackSorted [][]int32 // per rack, usable servers best first
	dcSorted   [][]int32 // per data center, usable servers best first
	rackDC     []int32   // per rack
	dcRacks    [][]int32 // per data center, its racks
}

// NewCluster indexes servers. IDs must be unique and non-empty.
func NewCluster(servers []Server) (*Cluster, error) {
	c := &Cluster{
		srv:   slices.Clone(servers),
		index: make(map[ServerID]int32, len(servers)),
	}
	n := len(servers)
	c.dc, c.rack = make([]int32, n), make([]int32, n)
	c.ratio, c.usable, c.rank = make([]float64, n), make([]bool, n), make([]int32, n)
	type rackKey struct{ dc, rack string }
	dcs := map[string]int32{}
	racks := map[rackKey]int32{}
	for i := range c.srv {
		s := &c.srv[i]
		if s.ID == "" {
			return nil, fmt.Errorf("replication: cluster: server %d has no id", i)
		}
		if _, dup := c.index[s.ID]; dup {
			return nil, fmt.Errorf("replication: cluster: server %s listed twice", s.ID)
		}
		c.index[s.ID] = int32(i)
		d, ok := dcs[s.DataCenter]
		if !ok {
			d = int32(len(dcs))
			dcs[s.DataCenter] = d
			c.dcRacks = append(c.dcRacks, nil)
			c.dcSorted = append(c.dcSorted, nil)
		}
		k := rackKey{s.DataCenter, s.Rack}
		r, ok := racks[k]
		if !ok {
			r = int32(len(racks))
			racks[k] = r
			c.rackDC = append(c.rackDC, d)
			c.dcRacks[d] = append(c.dcRacks[d], r)
			c.rackSorted = append(c.rackSorted, nil)
		}
		c.dc[i], c.rack[i] = d, r
		c.ratio[i], c.usable[i] = s.Ratio(), s.Usable()
	}
	// One total order, so that every tie is broken the same way on every
	// run: used ratio, then fewer chunks, then id.
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		if v := cmp.Compare(c.ratio[a], c.ratio[b]); v != 0 {
			return v
		}
		if v := cmp.Compare(c.srv[a].Chunks, c.srv[b].Chunks); v != 0 {
			return v
		}
		return cmp.Compare(c.srv[a].ID, c.srv[b].ID)
	})
	for pos, i := range order {
		c.rank[i] = int32(pos)
		if c.usable[i] {
			c.sorted = append(c.sorted, i)
			c.rackSorted[c.rack[i]] = append(c.rackSorted[c.rack[i]], i)
			c.dcSorted[c.dc[i]] = append(c.dcSorted[c.dc[i]], i)
		}
	}
	return c, nil
}

// Servers returns the servers the cluster was built from.
func (c *Cluster) Servers() []Server { return slices.Clone(c.srv) }

// Server returns the server with the given id.
func (c *Cluster) Server(id ServerID) (Server, bool) {
	i, ok := c.index[id]
	if !ok {
		return Server{}, false
	}
	return c.srv[i], true
}

// Usable is how many servers may take new copies.
func (c *Cluster) Usable() int { return len(c.sorted) }

// Check reports whether the usable servers can hold goal g: enough of them
// for the copies and, for an xyz goal, a rack, data center and neighbours
// that fit the layout. The master shows this to the operator; Place and
// Plan work as well as the servers allow either way.
func (c *Cluster) Check(g Goal) error {
	if err := g.Validate(); err != nil {
		return fmt.Errorf("replication: check: %w", err)
	}
	if len(c.sorted) < g.Copies() {
		return fmt.Errorf("replication: check: goal %s needs %d servers, %d are usable: %w",
			g, g.Copies(), len(c.sorted), ErrNoServers)
	}
	if !g.topo {
		return nil
	}
	best, _ := c.bestPrimary(g, nil, nil)
	if best >= g.Copies() {
		return nil
	}
	dcs := 0
	for d := range c.dcSorted {
		if len(c.dcSorted[d]) > 0 {
			dcs++
		}
	}
	switch {
	case dcs < int(g.x)+1:
		return fmt.Errorf("replication: check: goal %s needs %d data centers, %d have usable servers: %w",
			g, g.x+1, dcs, ErrTopology)
	default:
		return fmt.Errorf("replication: check: goal %s needs a rack with %d usable servers in a data center with %d racks; the best layout holds %d of %d copies: %w",
			g, g.z+1, g.y+1, best, g.n, ErrTopology)
	}
}

// tiebreak is a splitmix64 stream: tiny, allocation-free, and good enough
// to choose among near-equal servers.
type tiebreak struct{ s uint64 }

func (t *tiebreak) intn(n int) int {
	t.s += 0x9e3779b97f4a7c15
	z := t.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return int(z % uint64(n))
}

// pick returns the best server of list (sorted best first) that ok accepts,
// choosing at random among those within NearEqual of it, or -1. The random
// start plus a forward scan keeps it O(log n) when most servers qualify,
// which is the common case of placing a copy in a large cluster.
func (c *Cluster) pick(list []int32, ok func(int32) bool, tb *tiebreak) int32 {
	first := -1
	for i, s := range list {
		if ok(s) {
			first = i
			break
		}
	}
	if first < 0 {
		return -1
	}
	limit := c.ratio[list[first]] + NearEqual
	rest := list[first:]
	end := sort.Search(len(rest), func(j int) bool { return c.ratio[rest[j]] > limit })
	if end <= 1 {
		return rest[0]
	}
	for _, s := range rest[tb.intn(end):end] {
		if ok(s) {
			return s
		}
	}
	return rest[0]
}
