// Command shoal-loadgen is the open-loop HTTP/1.1 load generator of
// scripts/bench-lb.sh: it sends GET requests at a fixed rate over a pool of
// keep-alive connections and prints latency percentiles.
//
// Request i is due at start + i/rate. It is sent on a free connection as
// soon as it is due, and each connection carries one request at a time.
// When a connection was free when the request was due, latency is measured
// from the send: the generator's own wake-up may be late, and that is not
// the server's. When none was (every connection was busy: the server is
// slower than the rate), the request waits, and latency is measured from
// the time it was due, so a stall counts against every request queued
// behind it (the coordinated-omission correction of wrk2) rather than
// hiding. When fewer requests complete than were due, the output says so
// (achieved rate below the target); requests still not sent a second after
// the end are not sent at all but counted as missed, with the time since
// they were due as their latency (a lower bound).
//
// The generator is one event loop on one thread (run_linux.go): it paces
// the sends with epoll_pwait2's nanosecond timeout, so they come evenly
// spaced, not in millisecond bursts, and no goroutine scheduling of its own
// adds to the latencies it measures.
//
// hey, the obvious alternative, is closed-loop (each worker waits for its
// answer before its next tick, and skipped ticks are lost, so a stall hides
// the latency it caused), prints latencies to 0.1 ms, and on a 2-core machine
// did not reach the rates the benchmark needs.
//
// Usage:
//
//	shoal-loadgen -rate 10000 -duration 10s -warmup 2s -c 32 http://127.0.40.1:8080/
//
// Output, one line of key=value pairs (latencies in microseconds; svc_ are
// always measured from the send, without the correction, for comparison):
//
//	target=10000 achieved=9998.7 ok=99987 errors=0 missed=0 p50=112 p90=190 p99=410 p999=900 max=2300 svc_p50=95 svc_p99=350
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"
)

func main() {
	rate := flag.Float64("rate", 1000, "requests per second, in total")
	duration := flag.Duration("duration", 10*time.Second, "measured duration (after the warmup)")
	warmup := flag.Duration("warmup", 2*time.Second, "load sent before measuring, at the same rate")
	conns := flag.Int("c", 32, "connections (at most this many requests in flight)")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: shoal-loadgen [flags] URL\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *rate <= 0 || *conns < 1 || *duration <= 0 || *warmup < 0 {
		flag.Usage()
		os.Exit(2)
	}
	u, err := url.Parse(flag.Arg(0))
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintf(os.Stderr, "shoal-loadgen: want an http:// URL, got %q\n", flag.Arg(0))
		os.Exit(2)
	}
	r, err := run(u, *rate, *warmup, *duration, *conns, *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "shoal-loadgen: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(r)
}

type result struct {
	target, achieved float64
	ok, errors       int
	missed           int             // due but never sent (the server fell too far behind)
	lat              []time.Duration // corrected latencies, sorted
	svc              []time.Duration // from sent to done, sorted
}

// pct is the p-quantile of sorted durations, in microseconds.
func pct(d []time.Duration, p float64) int64 {
	if len(d) == 0 {
		return -1
	}
	i := int(p * float64(len(d)))
	if i >= len(d) {
		i = len(d) - 1
	}
	return d[i].Microseconds()
}

func (r result) String() string {
	return fmt.Sprintf("target=%.0f achieved=%.1f ok=%d errors=%d missed=%d p50=%d p90=%d p99=%d p999=%d max=%d svc_p50=%d svc_p99=%d",
		r.target, r.achieved, r.ok, r.errors, r.missed, pct(r.lat, 0.50), pct(r.lat, 0.90), pct(r.lat, 0.99), pct(r.lat, 0.999), pct(r.lat, 1),
		pct(r.svc, 0.50), pct(r.svc, 0.99))
}
