// Package lb is the per-node load balancer of the routing mesh: every node
// listens on every published port of every service and forwards to the
// service's healthy replicas anywhere in the cluster.
//
// The agent (package node) owns the inputs: it turns the desired state,
// the replica-status view and the membership into a list of Routes (one
// per published port, with its healthy endpoints) and hands it to
// Balancer.Update whenever any of them changes. The Balancer opens and
// closes listeners to match and swaps each listener's endpoint table
// atomically; connections and requests in flight keep the table they
// started with.
//
// # Protocols
//
// "tcp" routes are L4: each accepted connection is forwarded to one
// endpoint and the bytes are copied both ways. On Linux, the established
// pair leaves Go's netpoller for an event loop of the balancer's own (one
// per GOMAXPROCS, edge-triggered epoll, as HAProxy's), which reads only
// what epoll reported: a small message takes one read and one write. A
// read that fills the buffer marks a bulk stream, which moves with
// splice(2) (zero copy through a pipe) until it slows down (HAProxy's
// "splice-auto"). Elsewhere, or when the loop cannot start, two
// goroutines per connection do the same through the netpoller. A
// half-close is passed on with shutdown(SHUT_WR); a connection with no
// traffic either way for Config.IdleTimeout is closed. With
// Route.ProxyProtocol, a PROXY protocol v2 header carrying the client's
// address is sent to the endpoint first.
//
// "http" routes are L7: requests are balanced one by one over keep-alive
// connection pools, with X-Forwarded-For, X-Forwarded-Host,
// X-Forwarded-Proto, Forwarded (RFC 7239) and X-Request-Id headers, and
// hop-by-hop headers removed. A purpose-built HTTP/1.1 proxy serves plain
// requests (no body, or one of at most Config.MaxBufferedBody bytes): one
// goroutine per client connection parses each head into reused buffers
// and writes it, less hop-by-hop headers and plus the forwarding ones, to
// a pooled endpoint connection, then streams the response back. On
// Linux its reads and writes are raw system calls that wait in Go's
// poller only when the socket is not ready (h1raw_linux.go). Heads
// with ambiguous framing (Content-Length with Transfer-Encoding,
// differing lengths, obs-fold) get a 400. Any other connection it does
// not serve (upgrades such as websockets, Expect: 100-continue, chunked
// or large request bodies, HTTP/1.0) goes, with what was read of it, to
// net/http's server and httputil.ReverseProxy over an http.Transport for
// the rest of its life; upgrades and streaming bodies pass through there.
//
// # Policies
//
// PolicyLeastRequest (the default) is the power of two choices: two random
// endpoints are compared by (outstanding requests + 1) x EWMA latency and
// the cheaper one wins (Finagle's and Linkerd's "peak EWMA" idea, without
// the peak). PolicyRoundRobin takes endpoints in turn. PolicyMaglev is
// consistent hashing with a Maglev lookup table keyed on the client IP or
// an HTTP header: the table is built from the replicas' slot numbers, so
// every node of the cluster sends a given key to the same replica, and a
// replica joining or leaving remaps few keys.
//
// # Health
//
// Endpoints come from the owners' health checks (the agent passes only
// healthy replicas of alive nodes). On top, passive outlier detection
// ejects an endpoint after a refused or reset connect at once, or after
// three connect timeouts or five 5xx answers in a row, for 1 s doubling per
// ejection up to 30 s. A failed connect is retried on another endpoint
// (L4 and L7, up to Config.Attempts endpoints); an idempotent HTTP request
// without a body that failed before any response is retried too, within a
// retry budget (Config.RetryBudget of the requests, plus a small floor).
// When every endpoint is ejected, an L4 port refuses new connections
// until the first ejection ends, as it does without endpoints, so that a
// client with several node addresses tries another node (this one cannot
// reach the replicas); then, and on an L7 port at once, ejection is
// ignored (as Envoy's panic threshold does): a guess beats a certain
// failure.
//
// # Concurrency
//
// A Balancer is safe for concurrent use. Update and Close serialize with
// each other; the data path reads immutable tables through atomic
// pointers and never takes the Balancer's lock.
package lb
