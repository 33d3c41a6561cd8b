package replication

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const tib = 1 << 40

// srv is a server used ratio pct percent full.
func srv(id, dc, rack string, pct int) Server {
	return Server{ID: ServerID(id), DataCenter: dc, Rack: rack, Total: 100 * tib, Used: uint64(pct) * tib}
}

func mustCluster(t testing.TB, ss ...Server) *Cluster {
	t.Helper()
	c, err := NewCluster(ss)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grid is 2 data centers x 2 racks x 2 servers, named dc-rack-n.
func grid(t testing.TB) *Cluster {
	var ss []Server
	for _, dc := range []string{"d1", "d2"} {
		for _, r := range []string{"r1", "r2"} {
			for n := 1; n <= 2; n++ {
				ss = append(ss, srv(fmt.Sprintf("%s-%s-%d", dc, r, n), dc, r, 10))
			}
		}
	}
	return mustCluster(t, ss...)
}

// satisfies is a naive check, independent of layout, that copies hold an
// xyz goal: some copy's rack holds z+1, y other racks of its data center
// one each, x other data centers one each, and nothing else.
func satisfies(c *Cluster, g Goal, ids []ServerID) bool {
	if len(ids) != g.Copies() {
		return false
	}
	if !g.IsTopology() {
		return len(distinct(ids)) == len(ids)
	}
	x, y, z := g.XYZ()
	for _, p := range ids {
		ps, _ := c.Server(p)
		inRack, racks, dcs := 0, map[string]int{}, map[string]int{}
		for _, id := range ids {
			s, _ := c.Server(id)
			switch {
			case s.DataCenter == ps.DataCenter && s.Rack == ps.Rack:
				inRack++
			case s.DataCenter == ps.DataCenter:
				racks[s.Rack]++
			default:
				dcs[s.DataCenter]++
			}
		}
		ok := inRack == z+1 && len(racks) == y && len(dcs) == x
		for _, n := range racks {
			ok = ok && n == 1
		}
		for _, n := range dcs {
			ok = ok && n == 1
		}
		if ok {
			return true
		}
	}
	return false
}

func distinct(ids []ServerID) []ServerID {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func TestPlaceXYZGrid(t *testing.T) {
	c := grid(t)
	for _, gs := range []string{"000", "001", "010", "100", "011", "101", "110", "111", "1", "2", "3", "8"} {
		g := MustGoal(gs)
		for seed := range uint64(20) {
			got, err := Place(g, c, nil, nil, g.Copies(), rand.New(rand.NewPCG(seed, 1)))
			if err != nil {
				t.Fatalf("goal %s: %v", g, err)
			}
			if !satisfies(c, g, got) {
				t.Fatalf("goal %s seed %d: %v breaks the layout", g, seed, got)
			}
		}
		if err := c.Check(g); err != nil {
			t.Errorf("Check(%s): %v", g, err)
		}
	}
}

func TestPlaceAroundExisting(t *testing.T) {
	c := grid(t)
	for _, tc := range []struct {
		goal string
		have []ServerID
	}{
		{"100", []ServerID{"d1-r1-1"}},
		{"010", []ServerID{"d2-r2-2"}},
		{"001", []ServerID{"d1-r2-1"}},
		{"110", []ServerID{"d1-r1-1"}},
		{"110", []ServerID{"d1-r1-1", "d2-r1-1"}},
		{"111", []ServerID{"d1-r1-1", "d1-r1-2"}},
	} {
		g := MustGoal(tc.goal)
		n := g.Copies() - len(tc.have)
		got, err := Place(g, c, tc.have, nil, n, rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		all := append(slices.Clone(tc.have), got...)
		if !satisfies(c, g, all) {
			t.Errorf("goal %s have %v: placed %v, layout broken", g, tc.have, got)
		}
	}
}

func TestPlaceAvoidsFullAndRemoval(t *testing.T) {
	full := srv("full", "", "", 10)
	full.Full = true
	gone := srv("gone", "", "", 0)
	gone.MarkedForRemoval = true
	nospace := Server{ID: "nospace"}
	packed := srv("packed", "", "", 100)
	c := mustCluster(t, full, gone, nospace, packed, srv("a", "", "", 50), srv("b", "", "", 60))
	for seed := range uint64(50) {
		got, err := Place(MustGoal("2"), c, nil, nil, 2, rand.New(rand.NewPCG(seed, 0)))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Sort(got); !slices.Equal(got, []ServerID{"a", "b"}) {
			t.Fatalf("placed on %v, want a and b only", got)
		}
	}
	got, err := Place(MustGoal("3"), c, nil, nil, 3, nil)
	if !errors.Is(err, ErrNoServers) || !strings.Contains(err.Error(), "goal 3 needs 3 servers, 2 are usable") {
		t.Fatalf("goal 3 on 2 usable: %v", err)
	}
	if len(got) != 2 {
		t.Errorf("under goal placement returned %v, want the 2 usable servers", got)
	}
	if err := c.Check(MustGoal("3")); !errors.Is(err, ErrNoServers) {
		t.Errorf("Check(3) = %v", err)
	}
	// A server holding a copy is usable in the count but not chosen again.
	got, err = Place(MustGoal("3"), c, []ServerID{"full"}, nil, 2, nil)
	if err != nil || len(got) != 2 || slices.Contains(got, "full") {
		t.Errorf("Place with a copy on a full server: %v %v", got, err)
	}
	if _, err := Place(MustGoal("2"), c, nil, []ServerID{"a"}, 2, nil); !errors.Is(err, ErrNoServers) {
		t.Errorf("exclude ignored: %v", err)
	}
}

func TestPlaceImpossibleTopology(t *testing.T) {
	c := grid(t)
	g := MustGoal("200")
	err := c.Check(g)
	if !errors.Is(err, ErrTopology) || !strings.Contains(err.Error(), "needs 3 data centers, 2 have usable servers") {
		t.Errorf("Check(200) = %v", err)
	}
	// Placement still gives the copies the goal counts, spread over racks.
	got, err := Place(g, c, nil, nil, 3, rand.New(rand.NewPCG(3, 3)))
	if err != nil || len(distinct(got)) != 3 {
		t.Fatalf("Place(200) = %v, %v", got, err)
	}
	if err := c.Check(MustGoal("003")); !errors.Is(err, ErrTopology) {
		t.Errorf("Check(003) on racks of 2 = %v", err)
	}
}

func TestPlacePrefersEmpty(t *testing.T) {
	c := mustCluster(t, srv("a", "", "", 90), srv("b", "", "", 10), srv("c", "", "", 50), srv("d", "", "", 30))
	for seed := range uint64(20) {
		got, _ := Place(MustGoal("2"), c, nil, nil, 2, rand.New(rand.NewPCG(seed, 9)))
		if !slices.Equal(got, []ServerID{"b", "d"}) {
			t.Fatalf("placed on %v, want the two emptiest b, d", got)
		}
	}
}

// TestPlaceSpreads: many equally empty servers share new copies rather
// than the first in id order taking them all.
func TestPlaceSpreads(t *testing.T) {
	var ss []Server
	for i := range 10 {
		ss = append(ss, srv(fmt.Sprint("s", i), "", "", 0))
	}
	c := mustCluster(t, ss...)
	rnd := rand.New(rand.NewPCG(7, 7))
	count := map[ServerID]int{}
	for range 2000 {
		got, _ := Place(MustGoal("1"), c, nil, nil, 1, rnd)
		count[got[0]]++
	}
	for _, s := range ss {
		if count[s.ID] < 100 {
			t.Errorf("server %s got %d of 2000 copies: %v", s.ID, count[s.ID], count)
		}
	}
}

func TestPlaceDeterministic(t *testing.T) {
	c := grid(t)
	a, _ := Place(MustGoal("110"), c, nil, nil, 3, rand.New(rand.NewPCG(5, 5)))
	b, _ := Place(MustGoal("110"), c, nil, nil, 3, rand.New(rand.NewPCG(5, 5)))
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different placement: %v %v", a, b)
	}
}

func TestNewClusterErrors(t *testing.T) {
	if _, err := NewCluster([]Server{srv("a", "", "", 0), srv("a", "", "", 0)}); err == nil {
		t.Error("duplicate id accepted")
	}
	if _, err := NewCluster([]Server{{}}); err == nil {
		t.Error("empty id accepted")
	}
}

func TestPlaceEmptyCluster(t *testing.T) {
	c := mustCluster(t)
	for _, g := range []string{"2", "110"} {
		got, err := Place(MustGoal(g), c, nil, nil, 2, nil)
		if !errors.Is(err, ErrNoServers) || len(got) != 0 {
			t.Errorf("goal %s on no servers: %v %v", g, got, err)
		}
		if res := Plan(chunk("a"), MustGoal(g), c, Options{}); res.Status != StatusLost {
			t.Errorf("goal %s: chunk on unknown server is %s", g, res.Status)
		}
	}
	if err := c.Check(MustGoal("1")); !errors.Is(err, ErrNoServers) {
		t.Errorf("Check on no servers: %v", err)
	}
}
