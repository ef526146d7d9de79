package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Protocols of a Route.
const (
	ProtocolTCP  = "tcp"  // L4
	ProtocolHTTP = "http" // L7
)

// Config configures a Balancer. Zero fields take the documented defaults.
type Config struct {
	// Bind is the address the listeners bind; the zero Addr or an
	// unspecified one listens on every address.
	Bind netip.Addr
	// Logger receives the balancer's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the balancer's metrics; nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
	// DialTimeout bounds a connect to an endpoint. Default 1 s.
	DialTimeout time.Duration
	// IdleTimeout closes an L4 connection without traffic either way for
	// that long (checked every quarter of it). Default 5 min.
	IdleTimeout time.Duration
	// Attempts is how many endpoints a connection or request tries
	// before it fails. Default 3.
	Attempts int
	// RetryBudget is the share of HTTP requests that may be retries of
	// failed requests (connect failures are always retried), on top of
	// a floor of 10 per second. Default 0.2.
	RetryBudget float64
	// MaxBufferedBody is the largest HTTP request body kept in memory so
	// that the request can be retried. Default 64 KiB.
	MaxBufferedBody int64
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.Attempts <= 0 {
		c.Attempts = 3
	}
	if c.RetryBudget <= 0 {
		c.RetryBudget = 0.2
	}
	if c.MaxBufferedBody <= 0 {
		c.MaxBufferedBody = 64 << 10
	}
}

// Route is one published port of one service and where its traffic goes.
type Route struct {
	// Service is the service's name.
	Service string
	// Port is the published port every node listens on.
	Port int
	// Protocol is ProtocolTCP (the default) or ProtocolHTTP.
	Protocol string
	// Policy is PolicyLeastRequest (the default), PolicyRoundRobin or
	// PolicyMaglev.
	Policy string
	// HashOn is the key of PolicyMaglev: HashClientIP (the default) or
	// "header:NAME".
	HashOn string
	// ProxyProtocol sends a PROXY protocol v2 header first on every L4
	// connection to an endpoint.
	ProxyProtocol bool
	// Endpoints are the healthy replicas.
	Endpoints []Endpoint
}

// Problem is a route the balancer does not serve, and why.
type Problem struct {
	Service string
	Port    int
	Err     error
}

func (p Problem) Error() string {
	return fmt.Sprintf("service %s, published port %d: %v", p.Service, p.Port, p.Err)
}

// ErrPortTaken is the error of a route whose published port another
// service of the update already has.
var ErrPortTaken = errors.New("lb: published port already used by another service")

// Balancer serves routes. Create it with New, feed it with Update, stop
// it with Close.
type Balancer struct {
	cfg    Config
	log    *slog.Logger
	met    *metrics
	dialer net.Dialer
	l4     l4group // the L4 event loops, started with the first L4 connection

	mu        sync.Mutex // guards all following fields
	listeners map[int]*listener
	problems  []Problem
	closed    bool
}

// New returns a Balancer with no routes.
func New(cfg Config) *Balancer {
	cfg.setDefaults()
	return &Balancer{
		cfg:       cfg,
		log:       cfg.Logger,
		met:       newMetrics(cfg.Registerer),
		dialer:    net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 15 * time.Second},
		listeners: make(map[int]*listener),
	}
}

// Update makes the balancer serve exactly routes: it opens listeners for
// new published ports, closes those of ports no longer listed, and swaps
// the endpoints of the others. When two routes have the same port, the
// one already served keeps it, else the earlier in routes; the other is a
// Problem wrapping ErrPortTaken. A port that cannot be bound is a Problem
// too, tried again at the next Update. Update returns the problems, which
// Problems also reports until the next Update.
func (b *Balancer) Update(routes []Route) []Problem {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	var problems []Problem
	want := make(map[int]Route, len(routes))
	// Routes already served keep their ports.
	for _, r := range routes {
		if l := b.listeners[r.Port]; l != nil && l.service == r.Service && l.protocol == normProtocol(r.Protocol) {
			if _, dup := want[r.Port]; !dup {
				want[r.Port] = r
			}
		}
	}
	for _, r := range routes {
		if w, ok := want[r.Port]; ok {
			if w.Service != r.Service {
				problems = append(problems, Problem{r.Service, r.Port,
					fmt.Errorf("%w (%d is published by service %s)", ErrPortTaken, r.Port, w.Service)})
			}
			continue
		}
		want[r.Port] = r
	}
	for port, l := range b.listeners {
		if r, ok := want[port]; !ok || r.Service != l.service || normProtocol(r.Protocol) != l.protocol {
			l.close()
			delete(b.listeners, port)
			b.met.forgetRoute(l.service, port)
		}
	}
	for _, port := range slices.Sorted(maps.Keys(want)) {
		r := want[port]
		l := b.listeners[port]
		if l == nil {
			var err error
			l, err = b.listen(r)
			if err != nil {
				problems = append(problems, Problem{r.Service, r.Port, err})
				continue
			}
			b.listeners[port] = l
		}
		l.set(r)
	}
	b.problems = problems
	return slices.Clone(problems)
}

// Problems returns the problems of the last Update.
func (b *Balancer) Problems() []Problem {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.problems)
}

// Ports returns the published ports being served, ascending.
func (b *Balancer) Ports() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Sorted(maps.Keys(b.listeners))
}

// Addr returns the address of the listener of a published port, or the
// zero AddrPort when the port is not served.
func (b *Balancer) Addr(port int) netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.listeners[port]; l != nil {
		return l.addr
	}
	return netip.AddrPort{}
}

// Endpoints returns the addresses a published port routes new
// connections and requests to now (none when the port is not served).
func (b *Balancer) Endpoints(port int) []netip.AddrPort {
	b.mu.Lock()
	l := b.listeners[port]
	b.mu.Unlock()
	if l == nil {
		return nil
	}
	t := l.table.Load()
	out := make([]netip.AddrPort, len(t.eps))
	for i, ep := range t.eps {
		out[i] = ep.Addr
	}
	return out
}

// Close closes every listener and every connection and waits for the
// balancer's goroutines to end.
func (b *Balancer) Close() error {
	b.mu.Lock()
	b.closed = true
	ls := b.listeners
	b.listeners = nil
	b.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
	b.l4.close() // after the listeners: they closed every pair
	return nil
}

func (b *Balancer) listen(r Route) (*listener, error) {
	host := ""
	if b.cfg.Bind.IsValid() && !b.cfg.Bind.IsUnspecified() {
		host = b.cfg.Bind.String()
	}
	lc := net.ListenConfig{KeepAlive: 15 * time.Second}
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, strconv.Itoa(r.Port)))
	if err != nil {
		return nil, err
	}
	l := &listener{
		b:        b,
		service:  r.Service,
		protocol: normProtocol(r.Protocol),
		port:     r.Port,
		ln:       ln,
		addr:     ln.Addr().(*net.TCPAddr).AddrPort(),
		eps:      make(map[epKey]*endpoint),
		rm:       b.met.route(r.Service, r.Port),
		conns:    make(map[io.Closer]struct{}),
		stopc:    make(chan struct{}),
		resumed:  make(chan struct{}),
	}
	close(l.resumed) // accepting
	l.budget.init(b.cfg.RetryBudget)
	l.set(r) // before serving: the first connection sees the endpoints
	if l.protocol == ProtocolHTTP {
		l.startHTTP()
	} else {
		l.wg.Add(1)
		go l.serve(l.handleTCP)
	}
	b.log.Info("lb listening", "service", r.Service, "port", r.Port, "protocol", l.protocol, "addr", l.addr)
	return l, nil
}

func normProtocol(p string) string {
	if p == ProtocolHTTP {
		return ProtocolHTTP
	}
	return ProtocolTCP
}
