package replication

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchChunks is a scan's worth of chunks over 100 servers in 2 data
// centers of 5 racks: most healthy, one in 50 under goal, one in 200 with
// a stale copy, as a cluster looks the day after losing a server.
func benchChunks(b *testing.B, n int) (*Cluster, []ChunkState) {
	var ss []Server
	for i := range 100 {
		ss = append(ss, srv(fmt.Sprintf("10.0.%d.%d:9422", i/10, i%10), fmt.Sprint("d", i%2), fmt.Sprint("r", i%5), 20+i%50))
	}
	c := mustCluster(b, ss...)
	r := rand.New(rand.NewPCG(1, 2))
	chunks := make([]ChunkState, n)
	for i := range chunks {
		ch := ChunkState{ID: uint64(i + 1), Version: 3}
		copies := 2
		if i%50 == 0 {
			copies = 1
		}
		for j := 0; j < copies; j++ {
			ch.Copies = append(ch.Copies, Copy{Server: ss[(i+j*37+r.IntN(3))%100].ID, Version: 3})
		}
		if i%200 == 0 {
			ch.Copies = append(ch.Copies, Copy{Server: ss[(i+71)%100].ID, Version: 2})
		}
		chunks[i] = ch
	}
	return c, chunks
}

// BenchmarkPlan1M plans one million chunks per iteration; ns/chunk is the
// figure to watch (a full scan of 100 M chunks costs 100 M times it).
func BenchmarkPlan1M(b *testing.B) {
	for _, gs := range []string{"2", "010"} {
		b.Run("goal"+gs, func(b *testing.B) {
			c, chunks := benchChunks(b, 1_000_000)
			g := MustGoal(gs)
			var buf []Action
			b.ReportAllocs()
			b.ResetTimer()
			actions := 0
			for b.Loop() {
				actions = 0
				for _, ch := range chunks {
					res := AppendPlan(buf[:0], ch, g, c, Options{})
					buf = res.Actions
					actions += len(res.Actions)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ns/chunk")
			b.ReportMetric(float64(actions), "actions")
		})
	}
}

// BenchmarkPlaceNew is choosing servers for a new chunk, as on every write
// that starts a chunk: 1000 servers in 4 data centers of 25 racks.
func BenchmarkPlaceNew(b *testing.B) {
	var ss []Server
	for i := range 1000 {
		ss = append(ss, srv(fmt.Sprint("s", i), fmt.Sprint("d", i%4), fmt.Sprint("r", i%25), i%60))
	}
	c := mustCluster(b, ss...)
	r := rand.New(rand.NewPCG(1, 1))
	for _, gs := range []string{"3", "110"} {
		b.Run("goal"+gs, func(b *testing.B) {
			g := MustGoal(gs)
			for b.Loop() {
				if _, err := Place(g, c, nil, nil, g.Copies(), r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
