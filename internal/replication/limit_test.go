package replication

import (
	"slices"
	"testing"
)

func rep(from, to ServerID, p Priority) Action {
	return Action{Kind: Replicate, From: from, To: to, Priority: p}
}

func del(s ServerID, p Priority) Action {
	return Action{Kind: Delete, Server: s, Reason: ReasonOverGoal, Priority: p}
}

func TestSchedulePriority(t *testing.T) {
	l, _ := NewLimiter(Limits{Budget: 3})
	in := []Action{
		del("x", PriorityDelete),
		rep("a", "b", PriorityRebalance),
		rep("a", "c", PriorityUndergoal),
		rep("b", "c", PriorityRemoval),
		rep("d", "e", PriorityEndangered),
	}
	now, later := Schedule(in, l)
	want := []Action{in[4], in[2], in[3]}
	if !slices.Equal(now, want) || !slices.Equal(later, []Action{in[1], in[0]}) {
		t.Errorf("now %v later %v", now, later)
	}
	if in[0].Kind != Delete {
		t.Error("Schedule reordered its input")
	}
}

func TestSchedulePerServer(t *testing.T) {
	l, _ := NewLimiter(Limits{Reads: 1, Writes: 2, Deletes: 1})
	in := []Action{
		rep("a", "x", PriorityUndergoal),
		rep("a", "y", PriorityUndergoal), // a already read once
		rep("b", "x", PriorityUndergoal),
		rep("c", "x", PriorityUndergoal), // x already written twice
		del("x", PriorityDelete),
		del("x", PriorityDelete), // one delete per server per tick
	}
	now, later := Schedule(in, l)
	if !slices.Equal(now, []Action{in[0], in[2], in[4]}) || len(later) != 3 {
		t.Fatalf("now %v later %v", now, later)
	}
	// Slots stay taken across ticks until Done; delete counts refill.
	l.Tick()
	now, _ = Schedule(later, l)
	if !slices.Equal(now, []Action{in[5]}) || l.InFlight() != 2 {
		t.Fatalf("after tick: now %v in flight %d", now, l.InFlight())
	}
	l.Done(in[0])
	l.Done(in[2])
	l.Tick()
	now, later = Schedule([]Action{in[1], in[3]}, l)
	if len(now) != 2 || len(later) != 0 {
		t.Fatalf("after done: now %v later %v", now, later)
	}
}

func TestLimitsValidate(t *testing.T) {
	if _, err := NewLimiter(Limits{Reads: -1}); err == nil {
		t.Error("negative limit accepted")
	}
	l, _ := NewLimiter(Limits{})
	in := make([]Action, 1000)
	for i := range in {
		in[i] = rep("a", "b", PriorityUndergoal)
	}
	if now, _ := Schedule(in, l); len(now) != 1000 {
		t.Errorf("zero limits should not limit: %d started", len(now))
	}
}
