package backoff

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 35 * time.Millisecond}
	want := []time.Duration{10, 20, 35, 35}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("step %d: next %s, want %s", i, got, w*time.Millisecond)
		}
		t0 := time.Now()
		if !b.Wait(context.Background()) {
			t.Fatal("Wait gave up without a cancelled context")
		}
		if d := time.Since(t0); d < w*time.Millisecond/2 || d > w*time.Millisecond+200*time.Millisecond {
			t.Fatalf("step %d waited %s for a delay of %s", i, d, w*time.Millisecond)
		}
	}
	b.Reset()
	if b.Next() != b.Min {
		t.Fatal("Reset did not go back to Min")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Max = time.Hour
	b.Min = time.Hour
	if b.Wait(ctx) {
		t.Fatal("Wait on a cancelled context slept")
	}
}
