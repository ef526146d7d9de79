package peer

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdleHosts starts 50 hosts in one process, as the in-process test
// clusters do, and reports what one idle host costs once they settle: heap
// in use, resident memory and goroutines per host. Then each host calls its
// next 4 neighbours once, leaving 200 idle connections, and the cost of one
// connection (both ends) is reported too. ns/op is the time to start and
// link the hosts; run it once:
//
//	go test -run '^$' -bench IdleHosts -benchtime 1x ./node/peer/
func BenchmarkIdleHosts(b *testing.B) {
	const hosts, links = 50, 4
	var perHost, perConn struct{ heap, rss, goroutines float64 }
	for range b.N {
		b.StopTimer()
		g0, h0, r0 := settle(b)
		b.StartTimer()
		hs := make([]*testHost, hosts)
		for i := range hs {
			hs[i] = newTestHost(b, "", nil)
			hs[i].Handle(testProto, echo)
		}
		b.StopTimer()
		g1, h1, r1 := settle(b)
		b.StartTimer()
		befriend(hs...)
		for i, h := range hs {
			for k := 1; k <= links; k++ {
				to := hs[(i+k)%hosts]
				if _, err := h.Call(context.Background(), to.ID(), to.addrPort(), testProto, []byte("hi")); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		g2, h2, r2 := settle(b)
		const conns = hosts * links
		perHost.goroutines += float64(g1-g0) / hosts
		perHost.heap += float64(int64(h1)-int64(h0)) / hosts
		perHost.rss += float64(r1-r0) / hosts
		perConn.goroutines += float64(g2-g1) / conns
		perConn.heap += float64(int64(h2)-int64(h1)) / conns
		perConn.rss += float64(r2-r1) / conns
		for _, h := range hs {
			if err := h.Close(); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(perHost.heap/n, "heap-B/host")
	b.ReportMetric(perHost.rss/n, "rss-B/host")
	b.ReportMetric(perHost.goroutines/n, "goroutines/host")
	b.ReportMetric(perConn.heap/n, "heap-B/conn")
	b.ReportMetric(perConn.rss/n, "rss-B/conn")
	b.ReportMetric(perConn.goroutines/n, "goroutines/conn")
}

// settle collects garbage until the goroutine count stops changing, then
// returns goroutines, heap in use and resident set size.
func settle(b *testing.B) (goroutines int, heapInuse uint64, rss int64) {
	b.Helper()
	prev := -1
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n == prev || time.Now().After(deadline) {
			break
		}
		prev = n
		<-tick.C
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapInuse, residentBytes()
}

// residentBytes reads VmRSS from /proc (Linux); 0 elsewhere.
func residentBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// BenchmarkCall measures one small request/response on a live connection.
func BenchmarkCall(b *testing.B) {
	a := newTestHost(b, "", nil)
	c := newTestHost(b, "", nil)
	befriend(a, c)
	c.Handle(testProto, echo)
	req := []byte("state digest please")
	if _, err := a.Call(context.Background(), c.ID(), c.addrPort(), testProto, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Call(context.Background(), c.ID(), c.addrPort(), testProto, req); err != nil {
			b.Fatal(err)
		}
	}
}
