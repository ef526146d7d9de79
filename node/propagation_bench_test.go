package node_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/store"
	"github.com/shoalmesh/shoal/testenv"
)

// BenchmarkWritePropagation measures the time from an API write on one
// node to the entry being persisted on every node, at several cluster
// sizes, and reports p50 and p99. Run it with a fixed count, e.g.
//
//	go test ./node -run '^$' -bench WritePropagation -benchtime 200x
func BenchmarkWritePropagation(b *testing.B) {
	for _, size := range []int{5, 20, 50} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			var mu sync.Mutex
			seen := map[string]map[int]bool{}
			done := map[string]chan struct{}{}
			c := testenv.New(b, testenv.Options{
				Nodes: size,
				OnStateChange: func(i int, e store.Entry) {
					mu.Lock()
					defer mu.Unlock()
					if seen[e.Key] == nil {
						seen[e.Key] = map[int]bool{}
					}
					seen[e.Key][i] = true
					if len(seen[e.Key]) == size && done[e.Key] != nil {
						close(done[e.Key])
						done[e.Key] = nil
					}
				},
			})
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				key := fmt.Sprintf("bench-%d", i)
				ch := make(chan struct{})
				mu.Lock()
				done[key] = ch
				mu.Unlock()
				start := time.Now()
				if _, err := c.Nodes[i%size].Client.PutService(ctx, web(key, "demo:1", 1), ""); err != nil {
					b.Fatal(err)
				}
				select {
				case <-ch:
				case <-time.After(30 * time.Second):
					mu.Lock()
					n := len(seen[key])
					mu.Unlock()
					b.Fatalf("%s reached %d of %d nodes in 30s", key, n, size)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 {
				return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
		})
	}
}
