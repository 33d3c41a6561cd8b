package replication

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomCluster is 3 to 12 servers over up to 3 data centers and 3 racks
// each, some full, some marked for removal, ratios at random.
func randomCluster(t testing.TB, r *rand.Rand) *Cluster {
	var ss []Server
	for i := range 3 + r.IntN(10) {
		s := srv(fmt.Sprint("s", i), fmt.Sprint("d", r.IntN(1+r.IntN(3))), fmt.Sprint("r", r.IntN(3)), r.IntN(100))
		s.Full = r.IntN(10) == 0
		s.MarkedForRemoval = r.IntN(10) == 0
		ss = append(ss, s)
	}
	return mustCluster(t, ss...)
}

var simGoals = []string{"1", "2", "3", "4", "000", "001", "010", "100", "011", "110", "111", "200"}

func randomChunk(r *rand.Rand, c *Cluster) ChunkState {
	ch := ChunkState{ID: r.Uint64(), Version: 10}
	for _, s := range c.Servers() {
		if r.IntN(3) != 0 {
			continue
		}
		cp := Copy{Server: s.ID, Version: 10}
		switch r.IntN(10) {
		case 0, 1:
			cp.Version = uint32(r.IntN(10))
		case 2:
			cp.Damaged = true
		}
		ch.Copies = append(ch.Copies, cp)
	}
	if r.IntN(5) == 0 {
		ch.Copies = append(ch.Copies, Copy{Server: "gone:9422", Version: 10})
	}
	return ch
}

func valid(ch ChunkState, c *Cluster) int {
	n := 0
	for _, cp := range ch.Copies {
		if _, ok := c.Server(cp.Server); ok && cp.Version == ch.Version && !cp.Damaged {
			n++
		}
	}
	return n
}

// apply carries out actions as a chunkserver would, each with probability
// ok (replications and deletes may fail or be deferred), and checks that
// every action is well formed against the state it was planned on.
func apply(t *testing.T, c *Cluster, ch ChunkState, as []Action, ok float64, r *rand.Rand) ChunkState {
	t.Helper()
	holds := func(id ServerID) int {
		return slices.IndexFunc(ch.Copies, func(cp Copy) bool { return cp.Server == id })
	}
	out := ChunkState{ID: ch.ID, Version: ch.Version, Copies: slices.Clone(ch.Copies)}
	for _, a := range as {
		switch a.Kind {
		case Replicate:
			i := holds(a.From)
			if i < 0 || ch.Copies[i].Version != ch.Version || ch.Copies[i].Damaged {
				t.Fatalf("replicate from %s, which holds no valid copy: %+v", a.From, ch)
			}
			if holds(a.To) >= 0 {
				t.Fatalf("replicate to %s, which already holds a copy: %+v", a.To, ch)
			}
			if s, _ := c.Server(a.To); !s.Usable() {
				t.Fatalf("replicate to unusable %+v", s)
			}
			if r.Float64() < ok {
				out.Copies = append(out.Copies, Copy{Server: a.To, Version: ch.Version})
			}
		case Delete:
			if holds(a.Server) < 0 {
				t.Fatalf("delete on %s, which holds no copy", a.Server)
			}
			if r.Float64() < ok {
				out.Copies = slices.DeleteFunc(out.Copies, func(cp Copy) bool { return cp.Server == a.Server })
			}
		}
	}
	return out
}

// onlyDeletes is ch after every delete in as and no replication: the worst
// case the master can meet, since replications may all fail.
func onlyDeletes(ch ChunkState, as []Action) ChunkState {
	out := ChunkState{ID: ch.ID, Version: ch.Version, Copies: slices.Clone(ch.Copies)}
	for _, a := range as {
		if a.Kind == Delete {
			out.Copies = slices.DeleteFunc(out.Copies, func(cp Copy) bool { return cp.Server == a.Server })
		}
	}
	return out
}

// TestPlanConverges is the model check: for random clusters and chunks,
// repeatedly planning and carrying out the plan reaches a fixed point in a
// few rounds; no round ever takes the valid copies below min(goal, valid),
// even if every replication of the round fails; and at the fixed point the
// goal is met whenever the cluster can meet it.
func TestPlanConverges(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	rounds := map[int]int{}
	strict := 0
	for iter := range 20000 {
		c := randomCluster(t, r)
		g := MustGoal(simGoals[r.IntN(len(simGoals))])
		ch := randomChunk(r, c)
		opt := Options{NoDelete: r.IntN(4) == 0}
		lost := valid(ch, c) == 0
		flaky := r.IntN(3) == 0 // some runs lose a third of their actions
		okP := 1.0
		if flaky {
			okP = 0.66
		}
		maxRounds := 8
		if flaky {
			maxRounds = 40
		}
		var res Result
		round := 0
		for ; ; round++ {
			res = Plan(ch, g, c, opt)
			if len(res.Actions) == 0 {
				break
			}
			if round == maxRounds {
				t.Fatalf("iter %d goal %s opt %+v: no fixed point after %d rounds: %+v\nactions %v\ncluster %+v",
					iter, g, opt, round, ch, show(res.Actions), c.Servers())
			}
			v := valid(ch, c)
			if lost {
				t.Fatalf("iter %d: actions %v for a lost chunk", iter, show(res.Actions))
			}
			if after := valid(onlyDeletes(ch, res.Actions), c); after < min(g.Copies(), v) {
				t.Fatalf("iter %d goal %s: deletes take valid copies from %d to %d: %+v %v",
					iter, g, v, after, ch, show(res.Actions))
			}
			for _, a := range res.Actions {
				if opt.NoDelete && a.Kind == Delete {
					t.Fatalf("iter %d: delete in no-delete mode: %+v", iter, a)
				}
			}
			ch = apply(t, c, ch, res.Actions, okP, r)
		}
		rounds[round]++
		if lost {
			if res.Status != StatusLost {
				t.Fatalf("iter %d: lost chunk reported %s", iter, res.Status)
			}
			continue
		}
		if c.Check(g) != nil || opt.NoDelete {
			continue
		}
		// The cluster can hold the goal: it must be met exactly, with
		// nothing stale, damaged or on a server being removed left over.
		if res.Status != StatusOK || res.Invalid != 0 || valid(ch, c) != g.Copies() {
			t.Fatalf("iter %d goal %s: fixed point %s with %d valid, %d invalid: %+v\ncluster %+v",
				iter, g, res.Status, res.Valid, res.Invalid, ch, c.Servers())
		}
		strict++
		var ids []ServerID
		for _, cp := range ch.Copies {
			if s, ok := c.Server(cp.Server); ok {
				if s.MarkedForRemoval {
					t.Fatalf("iter %d: copy left on removal server %s", iter, s.ID)
				}
				ids = append(ids, cp.Server)
			}
		}
		if !satisfies(c, g, ids) {
			t.Fatalf("iter %d goal %s: fixed point %v breaks the layout", iter, g, ids)
		}
	}
	t.Logf("rounds to a fixed point: %v; %d runs reached the goal exactly", rounds, strict)
	if strict < 5000 {
		t.Errorf("only %d runs on clusters that can hold their goal", strict)
	}
}

// TestPlaceRandom: on random clusters Place returns distinct usable
// servers outside have and exclude, meets the layout whenever Check says
// the cluster can, and errors exactly when too few servers are usable.
func TestPlaceRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	met := 0
	for iter := range 20000 {
		c := randomCluster(t, r)
		g := MustGoal(simGoals[r.IntN(len(simGoals))])
		var exclude []ServerID
		for _, s := range c.Servers() {
			if r.IntN(8) == 0 {
				exclude = append(exclude, s.ID)
			}
		}
		got, err := Place(g, c, nil, exclude, g.Copies(), r)
		free := 0
		for _, s := range c.Servers() {
			if s.Usable() && !slices.Contains(exclude, s.ID) {
				free++
			}
		}
		if (err != nil) != (free < g.Copies()) || len(got) != min(free, g.Copies()) {
			t.Fatalf("iter %d goal %s: %d free, got %v, %v", iter, g, free, got, err)
		}
		if len(distinct(got)) != len(got) {
			t.Fatalf("iter %d: duplicate servers %v", iter, got)
		}
		for _, id := range got {
			if s, _ := c.Server(id); !s.Usable() || slices.Contains(exclude, id) {
				t.Fatalf("iter %d: placed on %+v", iter, s)
			}
		}
		if len(exclude) == 0 && c.Check(g) == nil {
			met++
			if !satisfies(c, g, got) {
				t.Fatalf("iter %d goal %s: %v breaks a layout the cluster can hold\n%+v", iter, g, got, c.Servers())
			}
		}
	}
	if met < 2000 {
		t.Errorf("only %d runs checked the layout", met)
	}
}
