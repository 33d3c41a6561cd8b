// Package backoff spaces out reconnection attempts: waits that start
// short and double up to a cap, with jitter, so that many daemons that
// lost the same master do not come back in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the delay before the next attempt. The zero value with Min
// and Max set is ready; it is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next is the delay the next Wait uses.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		return b.Min
	}
	return b.cur
}

// Reset goes back to Min, after an attempt that worked.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait sleeps between half and all of Next, then doubles the delay up to
// Max. It returns false, at once, when ctx ends.
func (b *Backoff) Wait(ctx context.Context) bool {
	d := b.Next()
	b.cur = min(2*d, b.Max)
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
