package replication

import (
	"errors"
	"testing"
)

func TestParseGoal(t *testing.T) {
	for _, tc := range []struct {
		in      string
		copies  int
		topo    bool
		x, y, z int
	}{
		{"1", 1, false, 0, 0, 0},
		{"2", 2, false, 0, 0, 0},
		{"9", 9, false, 0, 0, 0},
		{"000", 1, true, 0, 0, 0},
		{"001", 2, true, 0, 0, 1},
		{"010", 2, true, 0, 1, 0},
		{"100", 2, true, 1, 0, 0},
		{"200", 3, true, 2, 0, 0},
		{"110", 3, true, 1, 1, 0},
		{"111", 4, true, 1, 1, 1},
		{"800", 9, true, 8, 0, 0},
		{"224", 9, true, 2, 2, 4},
	} {
		g, err := ParseGoal(tc.in)
		if err != nil {
			t.Fatalf("ParseGoal(%q): %v", tc.in, err)
		}
		x, y, z := g.XYZ()
		if g.Copies() != tc.copies || g.IsTopology() != tc.topo || x != tc.x || y != tc.y || z != tc.z {
			t.Errorf("ParseGoal(%q) = %d copies topo=%v %d%d%d", tc.in, g.Copies(), g.IsTopology(), x, y, z)
		}
		if g.String() != tc.in {
			t.Errorf("ParseGoal(%q).String() = %q", tc.in, g.String())
		}
		if err := g.Validate(); err != nil {
			t.Errorf("Validate(%q): %v", tc.in, err)
		}
	}
}

func TestParseGoalErrors(t *testing.T) {
	for _, in := range []string{"", "0", "10", "02", "0000", "a", "-1", " 2", "2 ", "900", "333", "1x0", "+1", "١"} {
		_, err := ParseGoal(in)
		if !errors.Is(err, ErrBadGoal) {
			t.Errorf("ParseGoal(%q) = %v, want ErrBadGoal", in, err)
		}
	}
	if err := (Goal{}).Validate(); !errors.Is(err, ErrBadGoal) {
		t.Errorf("zero Goal validates: %v", err)
	}
	if _, err := Copies(10); !errors.Is(err, ErrBadGoal) {
		t.Errorf("Copies(10) = %v", err)
	}
	if _, err := Topology(-1, 0, 0); !errors.Is(err, ErrBadGoal) {
		t.Errorf("Topology(-1,0,0) = %v", err)
	}
}

func TestGoalCode(t *testing.T) {
	seen := map[uint8]Goal{}
	for c := 0; c < 256; c++ {
		g, err := GoalFromCode(uint8(c))
		if err != nil {
			continue
		}
		if g.Code() != uint8(c) {
			t.Errorf("code %d -> %s -> %d", c, g, g.Code())
		}
		seen[uint8(c)] = g
	}
	// 9 plain goals and every xyz with x+y+z <= 8.
	if len(seen) != 9+165 {
		t.Errorf("%d codes, want %d", len(seen), 9+165)
	}
	if (Goal{}).Code() != 0 {
		t.Error("zero goal has a code")
	}
	if g, _ := GoalFromCode(2); g != MustGoal("2") {
		t.Errorf("code 2 is %s; meta stores plain goals as their count", g)
	}
}

func FuzzParseGoal(f *testing.F) {
	for _, s := range []string{"1", "9", "000", "010", "224", "900", "", "12", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGoal(s)
		if err != nil {
			if !errors.Is(err, ErrBadGoal) {
				t.Fatalf("ParseGoal(%q): error %v does not wrap ErrBadGoal", s, err)
			}
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("ParseGoal(%q) gave invalid goal: %v", s, err)
		}
		if g.String() != s {
			t.Fatalf("ParseGoal(%q).String() = %q", s, g.String())
		}
		if g.Copies() < 1 || g.Copies() > MaxCopies {
			t.Fatalf("ParseGoal(%q) has %d copies", s, g.Copies())
		}
		back, err := GoalFromCode(g.Code())
		if err != nil || back != g {
			t.Fatalf("code round trip of %q: %v %v", s, back, err)
		}
	})
}
