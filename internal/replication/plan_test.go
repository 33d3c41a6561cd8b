package replication

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

const ver = 7

// chunk builds a ChunkState from "server[:stale|:damaged]" specs.
func chunk(specs ...string) ChunkState {
	ch := ChunkState{ID: 42, Version: ver}
	for _, s := range specs {
		id, state, _ := strings.Cut(s, ":")
		cp := Copy{Server: ServerID(id), Version: ver}
		switch state {
		case "stale":
			cp.Version = ver - 1
		case "damaged":
			cp.Damaged = true
		}
		ch.Copies = append(ch.Copies, cp)
	}
	return ch
}

// show renders actions compactly and in a stable order for comparison.
func show(as []Action) []string {
	var out []string
	for _, a := range as {
		switch a.Kind {
		case Replicate:
			out = append(out, fmt.Sprintf("rep %s->%s p%d", a.From, a.To, a.Priority))
		case Delete:
			out = append(out, fmt.Sprintf("del %s (%s) p%d", a.Server, a.Reason, a.Priority))
		}
	}
	slices.Sort(out)
	return out
}

// plain is six servers in one rack; a is the most used, f the least, and
// r is marked for removal.
func plain(t testing.TB) *Cluster {
	rm := srv("r", "", "", 5)
	rm.MarkedForRemoval = true
	return mustCluster(t, srv("a", "", "", 90), srv("b", "", "", 70), srv("c", "", "", 50),
		srv("d", "", "", 40), srv("e", "", "", 30), srv("f", "", "", 10), rm)
}

func TestPlan(t *testing.T) {
	pc, gc := plain(t), grid(t)
	two := mustCluster(t, srv("a", "", "", 10), srv("b", "", "", 20))
	for _, tc := range []struct {
		name     string
		c        *Cluster
		goal     string
		noDelete bool
		copies   []string
		status   Status
		missing  int
		want     []string // "" entries match any server
	}{
		{name: "ok", c: pc, goal: "2", copies: []string{"a", "b"}, status: StatusOK},
		{name: "undergoal", c: pc, goal: "3", copies: []string{"a", "b"},
			status: StatusUndergoal, want: []string{"rep *->f p1"}},
		{name: "endangered", c: pc, goal: "2", copies: []string{"a"},
			status: StatusEndangered, want: []string{"rep a->f p0"}},
		{name: "goal 1 single copy is fine", c: pc, goal: "1", copies: []string{"a"}, status: StatusOK},
		{name: "lost keeps stale and damaged", c: pc, goal: "2", copies: []string{"a:stale", "b:damaged"},
			status: StatusLost, missing: 2},
		{name: "lost last stale copy", c: pc, goal: "1", copies: []string{"a:stale"},
			status: StatusLost, missing: 1},
		{name: "stale kept while under goal", c: pc, goal: "2", copies: []string{"a", "b:stale"},
			status: StatusEndangered, want: []string{"rep a->f p0"}},
		{name: "stale deleted at goal", c: pc, goal: "2", copies: []string{"a", "b", "c:stale"},
			status: StatusOK, want: []string{"del c (stale version) p4"}},
		{name: "damaged deleted at goal", c: pc, goal: "2", copies: []string{"a", "b:damaged", "c"},
			status: StatusOK, want: []string{"del b (damaged) p4"}},
		{name: "damaged kept while under goal", c: pc, goal: "3", copies: []string{"a", "b:damaged", "c"},
			status: StatusUndergoal, want: []string{"rep *->f p1"}},
		{name: "stale freed when its server is the only room", c: two, goal: "2", copies: []string{"a", "b:stale"},
			status: StatusEndangered, missing: 1, want: []string{"del b (stale version) p0"}},
		{name: "no room, no stale: under goal reported", c: two, goal: "3", copies: []string{"a", "b"},
			status: StatusUndergoal, missing: 1},
		{name: "over goal drops most used", c: pc, goal: "2", copies: []string{"c", "a", "f"},
			status: StatusOvergoal, want: []string{"del a (over goal) p4"}},
		{name: "over goal by two", c: pc, goal: "1", copies: []string{"c", "a", "f"},
			status: StatusOvergoal, want: []string{"del a (over goal) p4", "del c (over goal) p4"}},
		{name: "removal copy counts, is replaced", c: pc, goal: "2", copies: []string{"a", "r"},
			status: StatusRemoval, want: []string{"rep *->f p2"}},
		{name: "removal copy deleted once replaced", c: pc, goal: "2", copies: []string{"a", "r", "f"},
			status: StatusOvergoal, want: []string{"del r (on removal disk) p4"}},
		{name: "only removal copy: endangered", c: pc, goal: "2", copies: []string{"r"},
			status: StatusEndangered, want: []string{"rep r->e p0", "rep r->f p0"}},
		{name: "unknown server ignored", c: pc, goal: "2", copies: []string{"a", "ghost"},
			status: StatusEndangered, want: []string{"rep a->f p0"}},
		{name: "duplicate copy ignored", c: pc, goal: "2", copies: []string{"a", "a"},
			status: StatusEndangered, want: []string{"rep a->f p0"}},
		{name: "no-delete keeps over goal", c: pc, goal: "1", noDelete: true, copies: []string{"c", "a", "f"},
			status: StatusOvergoal},
		{name: "no-delete keeps stale", c: pc, goal: "2", noDelete: true, copies: []string{"a", "b", "c:stale"},
			status: StatusOK},
		{name: "no-delete keeps removal", c: pc, goal: "2", noDelete: true, copies: []string{"a", "r", "f"},
			status: StatusOvergoal},
		{name: "no-delete still replicates", c: pc, goal: "3", noDelete: true, copies: []string{"a", "b", "c:stale"},
			status: StatusUndergoal, want: []string{"rep *->f p1"}},
		{name: "xyz ok", c: gc, goal: "110", copies: []string{"d1-r1-1", "d1-r2-1", "d2-r1-1"}, status: StatusOK},
		{name: "xyz misplaced same dc", c: gc, goal: "100", copies: []string{"d1-r1-1", "d1-r2-1"},
			status: StatusMisplaced, want: []string{"rep *->d2-?-? p3"}},
		{name: "xyz over goal drops the misplaced copy", c: gc, goal: "100",
			copies: []string{"d1-r1-1", "d1-r2-1", "d2-r2-2"},
			status: StatusOvergoal, want: []string{"del d1-r2-1 (over goal) p4"}},
		{name: "xyz same rack wanted", c: gc, goal: "001", copies: []string{"d1-r1-1", "d2-r1-1"},
			status: StatusMisplaced, want: []string{"rep *->d?-r1-2 p3"}},
		{name: "xyz under goal", c: gc, goal: "010", copies: []string{"d2-r1-1"},
			status: StatusEndangered, want: []string{"rep d2-r1-1->d2-r2-? p0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Plan(chunk(tc.copies...), MustGoal(tc.goal), tc.c, Options{NoDelete: tc.noDelete})
			if res.Status != tc.status || res.Missing != tc.missing {
				t.Errorf("status %s missing %d, want %s missing %d", res.Status, res.Missing, tc.status, tc.missing)
			}
			got := show(res.Actions)
			if !match(got, tc.want) {
				t.Errorf("actions %q, want %q", got, tc.want)
			}
			for _, a := range res.Actions {
				if a.Chunk != 42 {
					t.Errorf("action for chunk %d", a.Chunk)
				}
				if a.Kind == Replicate && a.Version != ver {
					t.Errorf("replicate version %d", a.Version)
				}
			}
		})
	}
}

// match compares rendered actions with patterns where * matches any run of
// characters but a space, and ? any run but a space or dash.
func match(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !glob(want[i], got[i]) {
			return false
		}
	}
	return true
}

func glob(p, s string) bool {
	if p == "" {
		return s == ""
	}
	if p[0] == '?' || p[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if glob(p[1:], s[i:]) {
				return true
			}
			if i < len(s) && (s[i] == ' ' || (p[0] == '?' && s[i] == '-')) {
				break
			}
		}
		return false
	}
	return s != "" && p[0] == s[0] && glob(p[1:], s[1:])
}

// TestPlanDeleteVersion: a delete names the version of the copy it
// removes, so a chunkserver can refuse it if the copy changed since.
func TestPlanDeleteVersion(t *testing.T) {
	res := Plan(chunk("a", "b", "c:stale"), MustGoal("2"), plain(t), Options{})
	if len(res.Actions) != 1 || res.Actions[0].Version != ver-1 {
		t.Fatalf("actions %+v", res.Actions)
	}
}

// TestPlanDeterministic: the same chunk plans the same way every time, and
// different chunks spread over near-equal targets.
func TestPlanDeterministic(t *testing.T) {
	var ss []Server
	for i := range 8 {
		ss = append(ss, srv(fmt.Sprint("s", i), "", "", 20))
	}
	c := mustCluster(t, ss...)
	targets := map[ServerID]bool{}
	for id := range uint64(200) {
		ch := chunk("s0")
		ch.ID = id
		a := Plan(ch, MustGoal("2"), c, Options{})
		b := Plan(ch, MustGoal("2"), c, Options{})
		if !slices.Equal(a.Actions, b.Actions) {
			t.Fatalf("chunk %d: %v then %v", id, a.Actions, b.Actions)
		}
		targets[a.Actions[0].To] = true
	}
	if len(targets) < 6 {
		t.Errorf("200 chunks replicated to only %d of 7 servers", len(targets))
	}
}

func TestPlanInvalidGoalIsDefault(t *testing.T) {
	res := Plan(chunk("a"), Goal{}, plain(t), Options{})
	if res.Status != StatusEndangered {
		t.Errorf("zero goal: %s, want goal 2's endangered", res.Status)
	}
}

func TestPlanNoAllocWhenOK(t *testing.T) {
	c, ch, g := grid(t), chunk("d1-r1-1", "d1-r2-1", "d2-r1-1"), MustGoal("110")
	if n := testing.AllocsPerRun(100, func() { Plan(ch, g, c, Options{}) }); n != 0 {
		t.Errorf("%v allocations planning a healthy chunk", n)
	}
}

// TestPlanOvergoalPlacementFirst: over goal, the copy breaking the layout
// goes even when another copy sits on a fuller server.
func TestPlanOvergoalPlacementFirst(t *testing.T) {
	c := mustCluster(t, srv("a", "d1", "r1", 10), srv("b", "d1", "r1", 20), srv("c", "d2", "r1", 90))
	res := Plan(chunk("a", "b", "c"), MustGoal("100"), c, Options{})
	if got := show(res.Actions); !slices.Equal(got, []string{"del b (over goal) p4"}) {
		t.Errorf("actions %q, want b deleted (same data center as a), not c (fullest)", got)
	}
	// With a plain goal placement does not matter: the fullest goes.
	res = Plan(chunk("a", "b", "c"), MustGoal("2"), c, Options{})
	if got := show(res.Actions); !slices.Equal(got, []string{"del c (over goal) p4"}) {
		t.Errorf("plain goal: actions %q, want the fullest c deleted", got)
	}
}
