package peerregistry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Plain blob transfer, an opt-in fast path for networks the operator
// trusts. Encryption is most of the cost of a transfer on the peer plane
// (Go's TLS reaches about a third of plain HTTP's rate over loopback here,
// and on a board without AES instructions it is slower than a gigabit
// link), while blobs need no confidentiality to stay correct: they are
// verified against their digest on arrival either way.
//
// With a PlainServer set on the Handler, a GET of a blob over the peer plane
// is answered with a 307 redirect to http://<node's address>:<port>/<same
// path>?ticket=T. The ticket authorises exactly that blob, for the member's
// IP address (taken from membership, by the requesting peer ID), for
// ticketTTL; it is an HMAC under a key that never leaves the node. The plain
// listener serves blob GETs with a valid ticket and nothing else (403).
// Transport follows such a redirect only to the peer's own address and the
// same path, so the Resolver verifies the body exactly as before. Manifests,
// HEADs and everything else stay on the peer plane.
//
// What the operator gives up: the bytes of image layers cross the network in
// clear, and anyone who sees a ticket may fetch that blob from that source
// address until it expires (they have just seen the blob go by anyway).

// ticketTTL is how long a redirect's ticket is valid. A transfer that
// outlives it continues; a resumed one asks the peer plane again.
const ticketTTL = 2 * time.Minute

// ticketLen is the length of a decoded ticket: the expiry (Unix seconds,
// big endian) and 16 bytes of HMAC-SHA256.
const ticketLen = 8 + 16

// PlainServer serves blob bodies over plain HTTP to ticket holders.
type PlainServer struct {
	h    *Handler
	ln   net.Listener
	base string // "http://IP:port"
	key  [32]byte
	now  func() time.Time
	log  *slog.Logger

	served, refused atomic.Uint64
}

// NewPlainServer returns a server for h's blobs on ln, which clients reach
// at advertise (and ln's port). Run serves it. log nil means
// slog.Default().
func NewPlainServer(h *Handler, ln net.Listener, advertise netip.Addr, log *slog.Logger) (*PlainServer, error) {
	if log == nil {
		log = slog.Default()
	}
	ap, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		return nil, fmt.Errorf("peerregistry: plain listener address %s: %w", ln.Addr(), err)
	}
	if !advertise.IsValid() || advertise.IsUnspecified() {
		return nil, fmt.Errorf("peerregistry: plain transfer needs a specific address to advertise, got %v", advertise)
	}
	p := &PlainServer{h: h, ln: ln, base: "http://" + netip.AddrPortFrom(advertise, ap.Port()).String(), now: time.Now, log: log}
	if _, err := rand.Read(p.key[:]); err != nil {
		return nil, err
	}
	return p, nil
}

// PlainStats are a PlainServer's counters.
type PlainStats struct {
	// Served counts blob requests with a valid ticket.
	Served uint64
	// Refused counts the others (403, 404, 405).
	Refused uint64
}

// Stats returns a snapshot of the counters.
func (p *PlainServer) Stats() PlainStats {
	return PlainStats{Served: p.served.Load(), Refused: p.refused.Load()}
}

// URL returns where client may fetch blob d, whose request path (escaped,
// "/v2/<name>/blobs/<d>") is path.
func (p *PlainServer) URL(path string, d digest.Digest, client netip.Addr) string {
	exp := p.now().Add(ticketTTL).Unix()
	return p.base + path + "?ticket=" + p.ticket(d, client, exp)
}

// mac is the ticket's MAC of (d, client, exp).
func (p *PlainServer) mac(d digest.Digest, client netip.Addr, exp int64) []byte {
	m := hmac.New(sha256.New, p.key[:])
	m.Write([]byte("shoal-plain-blob\x00"))
	m.Write([]byte(d))
	ip := client.Unmap().As16()
	m.Write(ip[:])
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(exp))
	m.Write(e[:])
	return m.Sum(nil)[:16]
}

func (p *PlainServer) ticket(d digest.Digest, client netip.Addr, exp int64) string {
	var b [ticketLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(exp))
	copy(b[8:], p.mac(d, client, exp))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// errTicket is any ticket that does not authorise the request.
var errTicket = errors.New("peerregistry: no valid ticket for this blob from this address")

// parseTicket decodes a ticket into its expiry and MAC. It is pure.
func parseTicket(s string) (exp int64, mac []byte, err error) {
	if len(s) != base64.RawURLEncoding.EncodedLen(ticketLen) {
		return 0, nil, errTicket
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != ticketLen {
		return 0, nil, errTicket
	}
	return int64(binary.BigEndian.Uint64(b[:8])), b[8:], nil
}

// check verifies that q's ticket authorises blob d for client now.
func (p *PlainServer) check(q url.Values, d digest.Digest, client netip.Addr) error {
	exp, mac, err := parseTicket(q.Get("ticket"))
	if err != nil {
		return err
	}
	if p.now().Unix() > exp || !hmac.Equal(mac, p.mac(d, client, exp)) {
		return errTicket
	}
	return nil
}

// ServeHTTP implements http.Handler for the plain listener.
func (p *PlainServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, err := parsePath(r.URL.Path)
	switch {
	case r.Method != http.MethodGet:
		p.refused.Add(1)
		w.Header().Set("Allow", "GET")
		p.h.fail(w, r, http.StatusMethodNotAllowed, codeUnsupported, "method not allowed: this endpoint serves blobs to ticket holders", r.Method)
		return
	case err != nil || rt.kind != routeBlob:
		p.refused.Add(1)
		p.h.fail(w, r, http.StatusNotFound, codeUnsupported, "unknown endpoint: only blobs are served here", r.URL.Path)
		return
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err == nil {
		err = p.check(r.URL.Query(), rt.digest, ap.Addr())
	}
	if err != nil {
		p.refused.Add(1)
		p.log.Debug("peerregistry: plain request refused", "path", r.URL.Path, "from", r.RemoteAddr, "err", err)
		p.h.fail(w, r, http.StatusForbidden, codeDenied, "no valid ticket for this blob from this address", nil)
		return
	}
	p.served.Add(1)
	p.h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), plainKey{}, true)))
}

// plainKey marks a request that came over the plain listener: it is served,
// never redirected again.
type plainKey struct{}

// Run serves the plain listener until ctx ends, then closes it.
func (p *PlainServer) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(&stallListener{Listener: p.ln}) }()
	var err error
	select {
	case <-ctx.Done():
		_ = srv.Close()
		err = <-errc
	case err = <-errc:
	}
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// stallListener's connections cut a Write that makes no progress for
// stallTimeout (a client that stopped reading).
type stallListener struct{ net.Listener }

func (l *stallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, write: true}, nil
}

// stallConn moves a read (client) or write (server) deadline forward as
// the transfer progresses, like streamConn does on the peer plane.
type stallConn struct {
	net.Conn
	write    bool
	deadline time.Time
}

func (c *stallConn) extend(set func(time.Time) error) {
	now := time.Now()
	if c.deadline.Sub(now) > stallTimeout-stallTimeout/8 {
		return
	}
	c.deadline = now.Add(stallTimeout)
	_ = set(c.deadline)
}

func (c *stallConn) Read(b []byte) (int, error) {
	if !c.write {
		c.extend(c.SetReadDeadline)
	}
	return c.Conn.Read(b)
}

func (c *stallConn) Write(b []byte) (int, error) {
	if c.write {
		c.extend(c.SetWriteDeadline)
	}
	return c.Conn.Write(b)
}
