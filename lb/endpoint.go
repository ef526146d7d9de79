package lb

import (
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Outlier detection defaults (see the package doc).
const (
	ejectBase            = time.Second
	ejectMax             = 30 * time.Second
	timeoutsToEject      = 3
	serverErrorsToEject  = 5
	ewmaAlpha            = 0.3
	ewmaDecay            = 5 * time.Second      // an endpoint not chosen for this long looks 1/e as slow
	costTolerance        = 0.5                  // costs within 2x count as equal
	latencyFloor         = 5 * time.Millisecond // latency differences below it are noise
	successesToForgiveEj = 20
)

// endpoint is the balancer's live state of one endpoint of one route. It
// outlives table swaps: Update carries it over while the route keeps an
// endpoint with the same address and slot.
type endpoint struct {
	Endpoint
	key string // Addr as a string, the dial address and metric label

	active atomic.Int64  // connections (L4) or requests (L7) in flight
	ewma   atomic.Uint64 // float64 bits: smoothed latency in ns, 0 = none yet
	stamp  atomic.Int64  // Unix ns of the last latency sample

	mu           sync.Mutex // guards all following fields
	failures     int        // consecutive connect timeouts
	serverErrors int        // consecutive 5xx answers
	successes    int        // successes since the last ejection ended
	ejections    int        // ejections in a row without forgiveness
	ejectedUntil time.Time

	ejected atomic.Int64 // ejectedUntil in Unix ns, for the lock-free check

	pool connPool // idle keep-alive connections (L7 fast path)

	m *endpointMetrics
}

func newEndpoint(e Endpoint, m *endpointMetrics) *endpoint {
	return &endpoint{Endpoint: e, key: e.Addr.String(), m: m}
}

// available reports whether the endpoint is not ejected at now.
func (e *endpoint) available(now int64) bool { return e.ejected.Load() <= now }

// latency returns the smoothed latency in ns at now, decayed while no
// sample comes (so that an endpoint that lost comparisons after a slow
// spell gets tried again), and never below latencyFloor (so that
// sub-millisecond noise between equal replicas does not starve one, and a
// new endpoint, without samples, competes as a fast one).
func (e *endpoint) latency(now int64) float64 {
	v := math.Float64frombits(e.ewma.Load())
	if age := now - e.stamp.Load(); v > 0 && age > 0 {
		v *= math.Exp(-float64(age) / float64(ewmaDecay))
	}
	return max(v, float64(latencyFloor))
}

// cost is the power-of-two-choices comparison key.
func (e *endpoint) cost(now int64) float64 { return float64(e.active.Load()+1) * e.latency(now) }

// observe folds a latency sample into the EWMA.
func (e *endpoint) observe(d time.Duration) {
	x := float64(d)
	for {
		old := e.ewma.Load()
		// The average starts at the floor, so that one slow first sample
		// (a new connection, a cold cache) does not rule an endpoint out.
		prev := float64(latencyFloor)
		if old != 0 {
			prev = math.Float64frombits(old)
		}
		// One sample moves the average at most 4x up: a single slow
		// request (a new connection, a GC pause) is not a verdict.
		next := prev + ewmaAlpha*(min(x, 4*prev)-prev)
		if e.ewma.CompareAndSwap(old, math.Float64bits(next)) {
			e.stamp.Store(time.Now().UnixNano())
			return
		}
	}
}

// failKind classifies an upstream failure for outlier detection and
// metrics.
type failKind int

const (
	failRefused failKind = iota // connect refused, reset or unreachable: eject now
	failTimeout                 // timeout or closed without an answer: eject after a few
	failServer                  // 5xx answer: eject after several
	failOther                   // anything else: counted, not ejected
)

func (k failKind) String() string {
	switch k {
	case failRefused:
		return "refused"
	case failTimeout:
		return "timeout"
	case failServer:
		return "5xx"
	}
	return "other"
}

// isTimeout reports whether err is a timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// classify maps a dial or round-trip error to a failKind.
func classify(err error) failKind {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ECONNABORTED):
		return failRefused
	case isTimeout(err),
		// Closed without an answer: a broken endpoint, or a keep-alive
		// race now and then; so it counts like a timeout.
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return failTimeout
	}
	return failOther
}

// fail records a failure and ejects the endpoint when it crosses its
// kind's threshold. It reports whether the endpoint was ejected.
func (e *endpoint) fail(kind failKind, now time.Time) bool {
	if e.m != nil {
		e.m.errors(kind).Inc()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.successes = 0
	switch kind {
	case failRefused:
	case failTimeout:
		e.failures++
		if e.failures < timeoutsToEject {
			return false
		}
	case failServer:
		e.serverErrors++
		if e.serverErrors < serverErrorsToEject {
			return false
		}
	default:
		return false
	}
	if now.Before(e.ejectedUntil) {
		return false // already out
	}
	e.failures, e.serverErrors = 0, 0
	e.ejections++
	d := ejectBase << min(e.ejections-1, 10)
	d = min(d, ejectMax)
	e.ejectedUntil = now.Add(d)
	e.ejected.Store(e.ejectedUntil.UnixNano())
	if e.m != nil {
		e.m.ejections.Inc()
	}
	return true
}

// succeed records a success: it resets the failure streaks and, after
// enough successes, the ejection backoff.
func (e *endpoint) succeed() {
	e.mu.Lock()
	e.failures, e.serverErrors = 0, 0
	if e.ejections > 0 {
		e.successes++
		if e.successes >= successesToForgiveEj {
			e.ejections, e.successes = 0, 0
		}
	}
	e.mu.Unlock()
}

// Endpoint is one place a route's traffic can go: a healthy replica.
type Endpoint struct {
	// Addr is where to connect: the replica's advertise-IP:host-port.
	Addr netip.AddrPort
	// Node runs the replica; Slot is its slot number in the service.
	// Maglev tables are built from slots, so that every node maps a key
	// to the same replica.
	Node string
	Slot int
}
