// Command shoal-loadgen is the open-loop HTTP/1.1 load generator of
// scripts/bench-lb.sh: it sends GET requests at a fixed rate over a pool of
// keep-alive connections and prints latency percentiles.
//
// Request i is due at start + i/rate. Each of the -c connections takes the
// next request, waits until it is due, sends it and reads the answer. When a
// connection is free before its next request is due, latency is measured from
// the send. When it is not (every connection is busy: the server is slower
// than the rate), latency is measured from the time the request was due, so
// a stall counts against every request queued behind it (the
// coordinated-omission correction of wrk2) rather than hiding. When fewer
// requests complete than were due, the output says so (achieved rate below
// the target); requests still not sent a second after the end are not sent
// at all but counted as missed, with the time since they were due as their
// latency (a lower bound). Not measuring from the due time when the connection was
// waiting matters because Go's timers on Linux wake up to 1 ms late (the
// runtime's epoll wait has millisecond resolution): counted, that lateness
// would add up to a millisecond to every latency. It also makes the sends
// come in small bursts rather than evenly spaced.
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
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	rate := flag.Float64("rate", 1000, "requests per second, in total")
	duration := flag.Duration("duration", 10*time.Second, "measured duration (after the warmup)")
	warmup := flag.Duration("warmup", 2*time.Second, "load sent before measuring, at the same rate")
	conns := flag.Int("c", 32, "connections (at most this many requests in flight)")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout")
	procs := flag.Int("procs", 1, "GOMAXPROCS: with 1, about a third less CPU per request than with 2 (fewer thread wake-ups)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: shoal-loadgen [flags] URL\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *rate <= 0 || *conns < 1 || *duration <= 0 || *warmup < 0 || *procs < 1 {
		flag.Usage()
		os.Exit(2)
	}
	u, err := url.Parse(flag.Arg(0))
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintf(os.Stderr, "shoal-loadgen: want an http:// URL, got %q\n", flag.Arg(0))
		os.Exit(2)
	}
	runtime.GOMAXPROCS(*procs)
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

func run(u *url.URL, rate float64, warmup, duration time.Duration, conns int, timeout time.Duration) (result, error) {
	path := u.RequestURI()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: shoal-loadgen\r\nAccept: */*\r\n\r\n")
	// Fail early and clearly when the target does not answer at all.
	c, err := net.DialTimeout("tcp", u.Host, timeout)
	if err != nil {
		return result{}, err
	}
	c.Close()

	interval := float64(time.Second) / rate
	start := time.Now().Add(100 * time.Millisecond) // time to dial
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	total := int64(float64(warmup+duration) / interval)
	// Past stopAt no more requests are sent: when the server is much slower
	// than the rate, the backlog would otherwise take as long to drain.
	stopAt := end.Add(time.Second)
	var next atomic.Int64
	abandoned := make([]int64, conns) // a request taken but not sent, or -1
	var wg sync.WaitGroup
	lats := make([][]time.Duration, conns)
	svcs := make([][]time.Duration, conns)
	errs := make([]int, conns)
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var br *bufio.Reader
			own := make([]time.Duration, 0, int(float64(duration)/interval)/conns+16)
			svc := make([]time.Duration, 0, cap(own))
			abandoned[w] = -1
			for {
				i := next.Add(1) - 1
				if i >= total {
					break
				}
				if time.Now().After(stopAt) {
					abandoned[w] = i
					break
				}
				due := start.Add(time.Duration(float64(i) * interval))
				from := due // latency is counted from here
				slept := false
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
					slept = true
				}
				if conn == nil {
					c, err := net.DialTimeout("tcp", u.Host, timeout)
					if err != nil {
						errs[w]++
						time.Sleep(10 * time.Millisecond)
						continue
					}
					conn, br = c, bufio.NewReaderSize(c, 16<<10)
				}
				sent := time.Now()
				if slept {
					// Go's timers wake up to ~1 ms late on Linux; that
					// lateness is the generator's, not the server's.
					from = sent
				}
				closed, err := roundTrip(conn, br, req, timeout)
				done := time.Now()
				if err != nil || closed {
					conn.Close()
					conn = nil
				}
				if err != nil {
					if !due.Before(measureFrom) {
						errs[w]++
					}
					continue
				}
				if !due.Before(measureFrom) {
					own = append(own, done.Sub(from))
					svc = append(svc, done.Sub(sent))
				}
			}
			if conn != nil {
				conn.Close()
			}
			lats[w], svcs[w] = own, svc
		}()
	}
	wg.Wait()
	finished := time.Now()
	var r result
	r.target = rate
	// Requests never sent count as missed, with the time from when they
	// were due to now as their latency (a lower bound).
	missed := func(i int64) {
		due := start.Add(time.Duration(float64(i) * interval))
		r.missed++
		if !due.Before(measureFrom) {
			r.lat = append(r.lat, finished.Sub(due))
		}
	}
	for _, i := range abandoned {
		if i >= 0 {
			missed(i)
		}
	}
	for i := min(next.Load(), total); i < total; i++ {
		missed(i)
	}
	for w := range conns {
		r.lat = append(r.lat, lats[w]...)
		r.svc = append(r.svc, svcs[w]...)
		r.errors += errs[w]
	}
	slices.Sort(r.lat)
	slices.Sort(r.svc)
	r.ok = len(r.svc)
	// Achieved rate: completions over the measured window, stretched when the
	// last requests finished late.
	window := end.Sub(measureFrom)
	if finished.After(end) {
		window = finished.Sub(measureFrom)
	}
	r.achieved = float64(r.ok) / window.Seconds()
	return r, nil
}

// roundTrip writes one request and reads its whole response, which must be
// 200. closed tells that the connection cannot be used again. It parses just
// enough HTTP/1.x to find the end of the response, without allocating: with
// net/http's ReadResponse the generator took a good part of a core at the
// rates the benchmark uses, on a machine of 2.
func roundTrip(conn net.Conn, br *bufio.Reader, req []byte, timeout time.Duration) (closed bool, err error) {
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(req); err != nil {
		return true, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return true, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return true, fmt.Errorf("bad status line %q", line)
	}
	status := line[9:12]
	closed = line[7] == '0' // HTTP/1.0 closes unless it says keep-alive
	ok := bytes.Equal(status, []byte("200"))
	length, chunked := -1, false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return true, err
		}
		if len(line) <= 2 {
			break
		}
		k, v, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case ascii.EqualFold(k, "content-length"):
			n := 0
			for _, c := range v {
				if c < '0' || c > '9' {
					return true, fmt.Errorf("bad content-length %q", v)
				}
				n = n*10 + int(c-'0')
			}
			length = n
		case ascii.EqualFold(k, "transfer-encoding"):
			chunked = ascii.EqualFold(v, "chunked")
		case ascii.EqualFold(k, "connection"):
			if ascii.EqualFold(v, "close") {
				closed = true
			} else if ascii.EqualFold(v, "keep-alive") {
				closed = false
			}
		}
	}
	switch {
	case chunked:
		if err := discardChunked(br); err != nil {
			return true, err
		}
	case length >= 0:
		if _, err := br.Discard(length); err != nil {
			return true, err
		}
	default: // the body ends with the connection
		if _, err := io.Copy(io.Discard, br); err != nil {
			return true, err
		}
		closed = true
	}
	if !ok {
		return closed, fmt.Errorf("status %s", status)
	}
	return closed, nil
}

// discardChunked reads a chunked body and its trailer.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(size), 16, 64)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailer
				line, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(line) <= 2 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return err
		}
	}
}

// ascii holds a case-insensitive comparison of bytes with a string.
var ascii asciiFold

type asciiFold struct{}

func (asciiFold) EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
