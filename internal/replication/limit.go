package replication

import (
	"fmt"
	"slices"
)

// Limits bound how fast repairs run, so that re-replication after a server
// loss does not starve client reads and writes (MooseFS's
// CHUNKS_WRITE_REP_LIMIT and CHUNKS_READ_REP_LIMIT). Zero means no limit.
type Limits struct {
	Reads   int // replications reading from one server at once
	Writes  int // replications writing to one server at once
	Deletes int // deletes sent to one server per tick
	Budget  int // actions started per tick, over all servers
}

// Validate rejects negative limits.
func (l Limits) Validate() error {
	if l.Reads < 0 || l.Writes < 0 || l.Deletes < 0 || l.Budget < 0 {
		return fmt.Errorf("replication: limits %+v: negative limit", l)
	}
	return nil
}

// Limiter tracks replications in flight across ticks and the budget of the
// current tick. The master owns one and uses it from one goroutine: it calls
// Schedule each tick, Done as each replication ends, and Tick between ticks.
type Limiter struct {
	limits         Limits
	reads, writes  map[ServerID]int
	deletes        map[ServerID]int
	started, inFly int
}

// NewLimiter returns a limiter with nothing in flight.
func NewLimiter(l Limits) (*Limiter, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &Limiter{
		limits: l,
		reads:  map[ServerID]int{}, writes: map[ServerID]int{}, deletes: map[ServerID]int{},
	}, nil
}

// Tick starts a new tick: the budget and per-server delete counts refill;
// replications still running keep their slots until Done.
func (l *Limiter) Tick() {
	l.started = 0
	clear(l.deletes)
}

// Done releases the slots of a replication that finished or failed.
// Deletes hold no slot, so Done ignores them.
func (l *Limiter) Done(a Action) {
	if a.Kind != Replicate {
		return
	}
	dec(l.reads, a.From)
	dec(l.writes, a.To)
	l.inFly = max(0, l.inFly-1)
}

// InFlight is how many replications hold slots.
func (l *Limiter) InFlight() int { return l.inFly }

func dec(m map[ServerID]int, id ServerID) {
	if m[id] <= 1 {
		delete(m, id)
		return
	}
	m[id]--
}

func under(limit, n int) bool { return limit == 0 || n < limit }

// take reserves a's slots if they are free.
func (l *Limiter) take(a Action) bool {
	if !under(l.limits.Budget, l.started) {
		return false
	}
	switch a.Kind {
	case Replicate:
		if !under(l.limits.Reads, l.reads[a.From]) || !under(l.limits.Writes, l.writes[a.To]) {
			return false
		}
		l.reads[a.From]++
		l.writes[a.To]++
		l.inFly++
	case Delete:
		if !under(l.limits.Deletes, l.deletes[a.Server]) {
			return false
		}
		l.deletes[a.Server]++
	default:
		return false
	}
	l.started++
	return true
}

// Schedule splits actions into those to start now, within l's limits, and
// those to leave for a later tick, most urgent first (endangered, then
// under goal, removal, rebalance, deletes); within a priority the input
// order is kept, so the master's scan order decides ties. The slots of the
// actions returned in now are taken from l.
func Schedule(actions []Action, l *Limiter) (now, later []Action) {
	sorted := slices.Clone(actions)
	slices.SortStableFunc(sorted, func(a, b Action) int { return int(a.Priority) - int(b.Priority) })
	for _, a := range sorted {
		if l.take(a) {
			now = append(now, a)
		} else {
			later = append(later, a)
		}
	}
	return now, later
}
