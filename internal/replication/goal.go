package replication

import (
	"errors"
	"fmt"
	"strconv"
)

// MaxCopies is the most copies a goal may ask for, as meta.MaxGoal.
const MaxCopies = 9

// ErrBadGoal is wrapped by every goal parsing and validation error.
var ErrBadGoal = errors.New("bad goal")

// Goal is how many copies a chunk should have and, for an xyz goal, where.
// The zero Goal is invalid; build one with Copies, Topology or ParseGoal.
type Goal struct {
	n       uint8 // total copies
	topo    bool  // an xyz goal
	x, y, z uint8
}

// Copies returns the plain goal of n copies on distinct servers.
func Copies(n int) (Goal, error) {
	if n < 1 || n > MaxCopies {
		return Goal{}, fmt.Errorf("goal %d: copies must be 1 to %d: %w", n, MaxCopies, ErrBadGoal)
	}
	return Goal{n: uint8(n)}, nil
}

// Topology returns the xyz goal: x copies in other data centers, y in other
// racks of the same data center, z on other servers of the same rack.
func Topology(x, y, z int) (Goal, error) {
	if x < 0 || y < 0 || z < 0 || x+y+z+1 > MaxCopies {
		return Goal{}, fmt.Errorf("goal %d%d%d: x+y+z+1 must be 1 to %d copies: %w", x, y, z, MaxCopies, ErrBadGoal)
	}
	return Goal{n: uint8(x + y + z + 1), topo: true, x: uint8(x), y: uint8(y), z: uint8(z)}, nil
}

// MustGoal is ParseGoal for constants; it panics on a bad goal.
func MustGoal(s string) Goal {
	g, err := ParseGoal(s)
	if err != nil {
		panic(err)
	}
	return g
}

// ParseGoal reads a goal: one digit "1" to "9" is a plain copy count, three
// digits "xyz" a placement. Nothing else is accepted, not even spaces, so
// that "02" or "1 " in a config file is reported rather than guessed at.
func ParseGoal(s string) (Goal, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return Goal{}, fmt.Errorf("parse goal %q: want a copy count 1-9 or three digits xyz: %w", s, ErrBadGoal)
		}
	}
	switch len(s) {
	case 1:
		g, err := Copies(int(s[0] - '0'))
		if err != nil {
			return Goal{}, fmt.Errorf("parse goal %q: %w", s, err)
		}
		return g, nil
	case 3:
		g, err := Topology(int(s[0]-'0'), int(s[1]-'0'), int(s[2]-'0'))
		if err != nil {
			return Goal{}, fmt.Errorf("parse goal %q: %w", s, err)
		}
		return g, nil
	}
	return Goal{}, fmt.Errorf("parse goal %q: want a copy count 1-9 or three digits xyz: %w", s, ErrBadGoal)
}

// String formats the goal as ParseGoal reads it.
func (g Goal) String() string {
	if g.topo {
		return string([]byte{'0' + g.x, '0' + g.y, '0' + g.z})
	}
	if g.n == 0 {
		return "invalid"
	}
	return strconv.Itoa(int(g.n))
}

// Validate reports whether g was built by this package.
func (g Goal) Validate() error {
	if g.n < 1 || g.n > MaxCopies || (g.topo && int(g.x)+int(g.y)+int(g.z)+1 != int(g.n)) {
		return fmt.Errorf("goal %s: %w", g, ErrBadGoal)
	}
	return nil
}

// Copies is how many copies the goal asks for.
func (g Goal) Copies() int { return int(g.n) }

// IsTopology reports whether g is an xyz goal.
func (g Goal) IsTopology() bool { return g.topo }

// XYZ returns the placement of an xyz goal (zeros for a plain goal).
func (g Goal) XYZ() (x, y, z int) { return int(g.x), int(g.y), int(g.z) }

// Goals fit the one byte meta keeps per inode: 1-9 are the plain goals,
// and 10 onward number the 165 xyz goals with x+y+z <= 8 in lexical order.
// topoCodes lists them by code-10.
var topoCodes = func() []Goal {
	var out []Goal
	for x := 0; x < MaxCopies; x++ {
		for y := 0; x+y < MaxCopies; y++ {
			for z := 0; x+y+z < MaxCopies; z++ {
				g, _ := Topology(x, y, z)
				out = append(out, g)
			}
		}
	}
	return out
}()

// Code returns the one-byte form of g, 0 for an invalid goal.
func (g Goal) Code() uint8 {
	if g.Validate() != nil {
		return 0
	}
	if !g.topo {
		return g.n
	}
	for i, t := range topoCodes {
		if t == g {
			return uint8(10 + i)
		}
	}
	return 0
}

// GoalFromCode is the inverse of Goal.Code.
func GoalFromCode(c uint8) (Goal, error) {
	switch {
	case c >= 1 && c <= MaxCopies:
		return Goal{n: c}, nil
	case c >= 10 && int(c)-10 < len(topoCodes):
		return topoCodes[c-10], nil
	}
	return Goal{}, fmt.Errorf("goal code %d: %w", c, ErrBadGoal)
}
