package lb

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// listener serves one published port.
type listener struct {
	b        *Balancer
	service  string
	protocol string
	port     int
	ln       net.Listener
	addr     netip.AddrPort
	rm       *routeMetrics
	budget   retryBudget

	table atomic.Pointer[table]

	setMu sync.Mutex // guards eps; set is called under Balancer.mu already
	eps   map[epKey]*endpoint

	// L4
	connMu sync.Mutex // guards conns and closing
	conns  map[net.Conn]struct{}
	closed bool

	// L7
	srv       *http.Server
	transport *http.Transport

	wg sync.WaitGroup
}

// epKey identifies an endpoint across updates.
type epKey struct {
	addr netip.AddrPort
	slot int
}

// set installs the route's endpoints and settings: endpoints that stay
// keep their load, latency and ejection state.
func (l *listener) set(r Route) {
	l.setMu.Lock()
	defer l.setMu.Unlock()
	next := make(map[epKey]*endpoint, len(r.Endpoints))
	eps := make([]*endpoint, 0, len(r.Endpoints))
	for _, e := range r.Endpoints {
		k := epKey{e.Addr, e.Slot}
		if _, dup := next[k]; dup || !e.Addr.IsValid() {
			continue
		}
		ep := l.eps[k]
		if ep == nil {
			ep = newEndpoint(e, l.b.met.endpoint(l.service, l.port, e.Addr.String()))
		}
		ep.Node = e.Node
		next[k] = ep
		eps = append(eps, ep)
	}
	for k, ep := range l.eps {
		if _, ok := next[k]; !ok {
			if !addrStillUsed(next, ep.Addr) {
				l.b.met.forget(l.service, l.port, ep.key)
			}
		}
	}
	l.eps = next
	l.table.Store(newTable(r, eps))
}

func addrStillUsed(m map[epKey]*endpoint, a netip.AddrPort) bool {
	for k := range m {
		if k.addr == a {
			return true
		}
	}
	return false
}

// track registers an accepted connection so close can close it; it
// reports false when the listener is closing (the caller closes c).
func (l *listener) track(c net.Conn) bool {
	l.connMu.Lock()
	defer l.connMu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *listener) untrack(c net.Conn) {
	l.connMu.Lock()
	delete(l.conns, c)
	l.connMu.Unlock()
}

// close stops accepting, closes every connection and waits for the
// listener's goroutines.
func (l *listener) close() {
	l.connMu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.connMu.Unlock()
	if l.srv != nil {
		_ = l.srv.Close() // closes the listener and the connections
		l.transport.CloseIdleConnections()
	} else {
		_ = l.ln.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
	l.wg.Wait()
	l.b.log.Info("lb stopped listening", "service", l.service, "port", l.port)
}

// retryBudget allows retries up to a share of the requests plus a floor
// per second (Finagle's and Linkerd's retry budget).
type retryBudget struct {
	mu     sync.Mutex // guards all following fields
	ratio  float64
	tokens float64
	last   time.Time
}

const (
	retryFloorPerSecond = 10
	retryBudgetCap      = 100
)

func (b *retryBudget) init(ratio float64) {
	b.ratio = ratio
	b.tokens = retryFloorPerSecond
	b.last = time.Now()
}

// deposit records a request.
func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.tokens = min(b.tokens+b.ratio, retryBudgetCap)
	b.mu.Unlock()
}

// take spends one retry, reporting false when the budget is empty.
func (b *retryBudget) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*retryFloorPerSecond, retryBudgetCap)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
