package lb

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	connMu sync.Mutex             // guards conns and closed
	conns  map[io.Closer]struct{} // connections, and pairs handed to an L4 loop
	closed bool
	stopc  chan struct{} // closed by close

	// An L4 port without an endpoint to try refuses connections
	// (acceptMu guards paused, resumed and recheck; see reconsider).
	acceptMu sync.Mutex
	paused   bool
	resumed  chan struct{} // closed while accepting
	recheck  *time.Timer   // while refusing with endpoints: when that may end
	// A connection that tried every endpoint and reached none cuts the
	// port off: it refuses until cutUntil (Unix ns), for cutBackoff,
	// which doubles while it recurs and is reset by a connect that
	// succeeds (see cutOff).
	cutUntil   atomic.Int64
	cutBackoff atomic.Int64 // a time.Duration

	// L7
	srv       *http.Server    // serves what the fast path hands over
	handoff   *connQueue      // srv's listener
	transport *http.Transport // ReverseProxy's

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
			ep.pool.close()
			if !addrStillUsed(next, ep.Addr) {
				l.b.met.forget(l.service, l.port, ep.key)
			}
		}
	}
	fresh := false // an endpoint this port has not tried yet
	for k := range next {
		if _, ok := l.eps[k]; !ok {
			fresh = true
		}
	}
	l.eps = next
	l.table.Store(newTable(r, eps))
	if l.protocol != ProtocolHTTP {
		if fresh {
			l.cutUntil.Store(0)
		}
		l.reconsider()
	}
}

// cutMax bounds a cut-off (see cutOff).
const cutMax = 5 * time.Second

// cutOff is called when a connection tried every endpoint of t and
// reached none, as on a node cut off from the replicas' nodes: their
// connects time out, and the three timeouts in a row that eject an
// endpoint come one at a time, so the endpoints are seldom all ejected at
// once. The port refuses new connections for 1 s, doubling while it
// recurs up to cutMax, or until an update brings an endpoint it has not
// tried. A connection that began before an update that brought an
// endpoint (its dials took seconds) cuts nothing off.
func (l *listener) cutOff(t *table) {
	for _, ep := range l.table.Load().eps {
		if !slices.Contains(t.eps, ep) {
			return
		}
	}
	l.acceptMu.Lock()
	b := min(max(2*time.Duration(l.cutBackoff.Load()), ejectBase), cutMax)
	l.cutBackoff.Store(int64(b))
	l.cutUntil.Store(time.Now().Add(b).UnixNano())
	l.acceptMu.Unlock()
	l.b.log.Info("lb cut off: no endpoint reachable", "service", l.service, "port", l.port, "for", b)
	l.reconsider()
}

// reconsider makes an L4 port refuse connections while it has no
// endpoint, while every endpoint is ejected (each failed its connects
// here), or while it is cut off (cutOff), as kube-proxy's REJECT rule
// does for a service without endpoints, rather than accept and reset
// them: a client with several node addresses then tries the next node.
// When the first ejection or the cut-off ends, the port accepts again,
// and the next connection tries the endpoints once more (the ejected ones
// too: panic mode, see table.pick).
func (l *listener) reconsider() {
	l.acceptMu.Lock()
	defer l.acceptMu.Unlock()
	select {
	case <-l.stopc:
		return // closed: the socket is gone
	default:
	}
	t := l.table.Load()
	now := time.Now().UnixNano()
	on, next := false, int64(0) // next: when the first ejection ends
	for _, ep := range t.eps {
		until := ep.ejected.Load()
		if until <= now {
			on = true
			break
		}
		if next == 0 || until < next {
			next = until
		}
	}
	why := "no endpoint"
	if len(t.eps) > 0 {
		why = "every endpoint ejected"
	}
	if cut := l.cutUntil.Load(); on && cut > now {
		on, next, why = false, cut, "cut off"
	}
	if l.recheck != nil {
		l.recheck.Stop()
		l.recheck = nil
	}
	if !on && next != 0 {
		l.recheck = time.AfterFunc(time.Duration(next-now), l.reconsider)
	}
	l.setAcceptingLocked(on, why)
}

// setAcceptingLocked switches the port between accepting and refusing.
// The socket stays bound and established connections are untouched: on
// Linux, shutdown of a listening socket stops the listening, and listen
// on the same socket starts it again; the port stays reserved meanwhile.
func (l *listener) setAcceptingLocked(on bool, why string) {
	if on != l.paused {
		return // already so
	}
	tl, ok := l.ln.(*net.TCPListener)
	if !ok {
		return
	}
	rc, err := tl.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			// SO_REUSEADDR is off while paused: with it on both sides,
			// another program could bind and listen on the port of a
			// socket that does not listen.
			if on {
				err = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1),
					syscall.Listen(int(fd), listenBacklog()))
			} else {
				err = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0),
					syscall.Shutdown(int(fd), syscall.SHUT_RD))
			}
		})
		err = errors.Join(err, cerr)
	}
	if err != nil {
		l.b.log.Warn("lb: cannot switch accepting", "service", l.service, "port", l.port, "accepting", on, "err", err)
		return
	}
	l.paused = !on
	if on {
		close(l.resumed)
		l.b.log.Info("lb accepting again", "service", l.service, "port", l.port)
	} else {
		l.resumed = make(chan struct{})
		l.b.log.Info("lb refusing connections: "+why, "service", l.service, "port", l.port)
	}
}

// waitAccepting blocks while the port is paused; it reports false when
// the listener closes meanwhile, and whether it was paused at all.
func (l *listener) waitAccepting() (open, wasPaused bool) {
	l.acceptMu.Lock()
	paused, resumed := l.paused, l.resumed
	l.acceptMu.Unlock()
	if !paused {
		return true, false
	}
	select {
	case <-resumed:
		return true, true
	case <-l.stopc:
		return false, true
	}
}

// listenBacklog is the backlog net.Listen uses: somaxconn.
var listenBacklog = sync.OnceValue(func() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && n > 0 {
		return min(n, 1<<16-1)
	}
	return syscall.SOMAXCONN
})

func addrStillUsed(m map[epKey]*endpoint, a netip.AddrPort) bool {
	for k := range m {
		if k.addr == a {
			return true
		}
	}
	return false
}

// track registers an accepted connection (or a pair handed to an L4
// loop) so close can close it; it reports false when the listener is
// closing (the caller closes c).
func (l *listener) track(c io.Closer) bool {
	l.connMu.Lock()
	defer l.connMu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *listener) untrack(c io.Closer) {
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
	close(l.stopc)
	l.acceptMu.Lock()
	if l.recheck != nil {
		l.recheck.Stop()
	}
	l.acceptMu.Unlock()
	_ = l.ln.Close()
	if l.srv != nil {
		_ = l.srv.Close() // closes the hand-over queue and its connections
		l.transport.CloseIdleConnections()
	}
	for c := range conns {
		_ = c.Close()
	}
	l.setMu.Lock()
	for _, ep := range l.eps {
		ep.pool.close()
	}
	l.setMu.Unlock()
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
