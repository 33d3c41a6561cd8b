package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestConcurrentChunks runs writers and readers on many chunks at once,
// with scrubs, syncs, version changes and a tiny open-file cache, each
// goroutine checking its own chunk against its own model; run it with
// -race. Extra readers share one read-only chunk throughout. A cache of
// one file makes every operation close another chunk's file.
func TestConcurrentChunks(t *testing.T) {
	for _, cache := range []int{1, 4} {
		t.Run(fmt.Sprint(cache), func(t *testing.T) { concurrentChunks(t, cache) })
	}
}

func concurrentChunks(t *testing.T, cache int) {
	disks := testDisks(t, 2)
	o := testOpts(nil)
	o.MaxOpenChunks = cache
	o.HeaderFlushDelay = time.Millisecond
	s := mustOpen(t, disks, o)
	shared := randData(rand.New(rand.NewPCG(0, 0)), 7*BlockSize+5)
	if err := s.Create(1000, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1000, 1, shared, 0); err != nil {
		t.Fatal(err)
	}
	const workers = 8
	iters := 150
	if testing.Short() {
		iters = 40
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2*workers+2)
	for w := 0; w < workers; w++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errc <- worker(s, uint64(w+1), iters)
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, len(shared))
			for ctx.Err() == nil {
				if _, err := s.ReadAt(1000, 1, buf, 0); err != nil || string(buf) != string(shared) {
					errc <- errors.Join(errors.New("shared chunk reads wrong"), err)
					return
				}
			}
		}()
	}
	scrubDone := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			err := s.Scrub(ctx, 0, func(b BadChunk) { errc <- errors.New("scrub reported damage: " + b.Err.Error()) })
			if err != nil && !errors.Is(err, context.Canceled) {
				scrubDone <- err
				return
			}
		}
		scrubDone <- nil
	}()
	// Wait for the writers, then stop the readers and the scrubber.
	for w := 0; w < workers; w++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if err := <-scrubDone; err != nil {
		t.Fatal(err)
	}
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// worker owns one chunk and checks every read against its model.
func worker(s *Store, id uint64, iters int) error {
	r := rand.New(rand.NewPCG(id, 7))
	v := uint32(1)
	if err := s.Create(id, v); err != nil {
		return err
	}
	var model []byte
	for i := 0; i < iters; i++ {
		switch r.IntN(10) {
		case 0, 1, 2, 3:
			n := 1 + r.IntN(3*BlockSize)
			off := int64(r.IntN(2 << 20))
			p := randData(r, n)
			if err := s.WriteAt(id, v, p, off); err != nil {
				return err
			}
			if end := int(off) + n; end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[off:], p)
		case 4, 5, 6, 7:
			n := 1 + r.IntN(2*BlockSize)
			off := int64(r.IntN(len(model) + 1))
			got := make([]byte, n)
			if _, err := s.ReadAt(id, v, got, off); err != nil {
				return err
			}
			want := make([]byte, n)
			if int(off) < len(model) {
				copy(want, model[off:])
			}
			if string(got) != string(want) {
				return errors.New("read differs from the model")
			}
		case 8:
			if err := s.SetVersion(id, v, v+1); err != nil {
				return err
			}
			v++
		case 9:
			if err := s.Sync(id); err != nil {
				return err
			}
		}
	}
	return nil
}
