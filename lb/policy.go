package lb

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// Balancing policies of a Route.
const (
	// PolicyLeastRequest is the power of two choices over outstanding
	// requests weighted by EWMA latency. The default.
	PolicyLeastRequest = "least_request"
	// PolicyRoundRobin takes the endpoints in turn.
	PolicyRoundRobin = "round_robin"
	// PolicyMaglev hashes Route.HashOn to an endpoint with a Maglev table.
	PolicyMaglev = "maglev"
)

// Hash keys of PolicyMaglev: HashClientIP, or HashHeaderPrefix followed by
// a header name (HTTP routes; requests without the header hash the client
// IP).
const (
	HashClientIP     = "client_ip"
	HashHeaderPrefix = "header:"
)

// table is an immutable snapshot of one route: its settings and its
// endpoints, sorted by slot. Listeners swap tables atomically.
type table struct {
	route  Route
	eps    []*endpoint
	rr     atomic.Uint64
	maglev []int32 // lookup table of PolicyMaglev, else nil
	header string  // header name of HashOn "header:NAME", else ""
}

func newTable(r Route, eps []*endpoint) *table {
	slices.SortFunc(eps, func(a, b *endpoint) int {
		return cmp.Or(cmp.Compare(a.Slot, b.Slot), a.Addr.Compare(b.Addr))
	})
	t := &table{route: r, eps: eps}
	if r.Policy == PolicyMaglev && len(eps) > 0 {
		names := make([]string, len(eps))
		for i, e := range eps {
			// The slot names the replica the same way on every node; the
			// address breaks the tie between two copies of one slot
			// (make-before-break), which is rare and brief.
			names[i] = strconv.Itoa(e.Slot) + "@" + e.key
		}
		t.maglev = maglevTable(names, maglevSize(len(names)))
	}
	if len(r.HashOn) > len(HashHeaderPrefix) && r.HashOn[:len(HashHeaderPrefix)] == HashHeaderPrefix {
		t.header = r.HashOn[len(HashHeaderPrefix):]
	}
	return t
}

// pick chooses an endpoint for a connection or request whose hash key is
// key (used by PolicyMaglev only), skipping the endpoints in tried. It
// skips ejected endpoints unless every untried one is ejected. It returns
// nil when every endpoint has been tried.
func (t *table) pick(key uint64, tried []*endpoint) *endpoint {
	now := time.Now().UnixNano()
	if e := t.pickWith(key, tried, now); e != nil {
		return e
	}
	return t.pickWith(key, tried, 0) // panic mode: every untried one is ejected
}

func (t *table) pickWith(key uint64, tried []*endpoint, now int64) *endpoint {
	eps := t.eps
	n := len(eps)
	ok := func(e *endpoint) bool {
		return (now == 0 || e.available(now)) && !slices.Contains(tried, e)
	}
	switch {
	case n == 0:
		return nil
	case n == 1:
		if ok(eps[0]) {
			return eps[0]
		}
		return nil
	}
	switch t.route.Policy {
	case PolicyRoundRobin:
		start := t.rr.Add(1)
		for k := range uint64(n) {
			if e := eps[(start+k)%uint64(n)]; ok(e) {
				return e
			}
		}
		return nil
	case PolicyMaglev:
		m := uint64(len(t.maglev))
		pos := key % m
		for k := range m {
			if e := eps[t.maglev[(pos+k)%m]]; ok(e) {
				return e
			}
		}
		return nil
	default: // PolicyLeastRequest
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := eps[i], eps[j]
		if ok(a) && ok(b) {
			return cheaper(a, b, now)
		}
		// Some endpoints are out: choose among the rest.
		var buf [16]*endpoint
		cand := buf[:0]
		for _, e := range eps {
			if ok(e) {
				cand = append(cand, e)
			}
		}
		switch len(cand) {
		case 0:
			return nil
		case 1:
			return cand[0]
		}
		i = rand.IntN(len(cand))
		j = rand.IntN(len(cand) - 1)
		if j >= i {
			j++
		}
		return cheaper(cand[i], cand[j], now)
	}
}

// cheaper returns the endpoint of lower cost, or, when their costs are
// within costTolerance of each other, the one with fewer requests in
// flight, else a (a random one of the two): latency noise between equal
// replicas must not starve one of them.
func cheaper(a, b *endpoint, now int64) *endpoint {
	if now == 0 {
		now = time.Now().UnixNano()
	}
	ca, cb := a.cost(now), b.cost(now)
	if cb < ca*(1-costTolerance) {
		return b
	}
	if ca < cb*(1-costTolerance) {
		return a
	}
	if a.active.Load() > b.active.Load() {
		return b
	}
	return a
}

// maglevSize is the lookup table size for n endpoints: a prime at least
// 100 times n (Maglev's rule for a balanced table), 65537 at least.
func maglevSize(n int) int {
	m := max(65537, 100*n+1)
	for !isPrime(m) {
		m++
	}
	return m
}

func isPrime(m int) bool {
	if m < 2 {
		return false
	}
	for d := 2; d*d <= m; d++ {
		if m%d == 0 {
			return false
		}
	}
	return true
}

// maglevTable fills a lookup table of prime size m from the endpoint names
// (Eisenbud et al., "Maglev", NSDI 2016, section 3.4): each name walks its
// own permutation of the positions and the names take turns, in name
// order, claiming the next free position of theirs. Every name gets
// m/len(names) positions, give or take one, and removing a name moves few
// other positions. Entries are indexes into names; the positions do not
// depend on the order of names.
func maglevTable(names []string, m int) []int32 {
	n := len(names)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(names[a], names[b]) })
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	for i, s := range names {
		h := hashString(s)
		offset[i] = h % uint64(m)
		skip[i] = mix64(h^0x9e3779b97f4a7c15)%uint64(m-1) + 1
	}
	entry := make([]int32, m)
	for i := range entry {
		entry[i] = -1
	}
	filled := 0
	for {
		for _, i := range order {
			c := (offset[i] + next[i]*skip[i]) % uint64(m)
			for entry[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % uint64(m)
			}
			entry[c] = int32(i)
			next[i]++
			filled++
			if filled == m {
				return entry
			}
		}
	}
}

// hashString is 64-bit FNV-1a, finished with mix64. Every node must hash
// the same way: it picks Maglev positions and keys.
func hashString[S string | []byte](s S) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// hashAddr hashes a client IP (not its port).
func hashAddr(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
