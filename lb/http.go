package lb

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Headers the L7 balancer sets.
const (
	HeaderRequestID = "X-Request-Id"
	HeaderForwarded = "Forwarded"
)

// errNoEndpoint is the error of a request with no endpoint left to try.
var errNoEndpoint = errors.New("lb: no healthy endpoint")

// reqState rides in a request's context from ServeHTTP to RoundTrip.
type reqState struct {
	t      *table
	key    uint64
	client netip.AddrPort
}

type reqStateKey struct{}

// startHTTP serves the listener as an HTTP reverse proxy: the fast path
// (h1proxy.go) takes every connection and hands those it does not serve
// to a net/http server with ReverseProxy.
func (l *listener) startHTTP() {
	l.transport = &http.Transport{
		DialContext:           l.b.dialer.DialContext,
		MaxIdleConns:          0, // no limit overall
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite:        l.rewrite,
		Transport:      roundTripper{l},
		ErrorHandler:   l.proxyError,
		ModifyResponse: l.modifyResponse,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(l.b.log.Handler(), slog.LevelDebug),
	}
	l.srv = &http.Server{
		Handler:           l.handler(rp),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	l.handoff = newConnQueue(l.ln.Addr())
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		if err := l.srv.Serve(l.handoff); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.b.log.Warn("lb http serve", "port", l.port, "err", err)
		}
	}()
	go l.serve(l.serveHTTPConn)
}

// handler stamps each request with its table and hash key.
func (l *listener) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.budget.deposit()
		t := l.table.Load()
		client, _ := netip.ParseAddrPort(r.RemoteAddr)
		key := hashAddr(client.Addr())
		if t.header != "" {
			if v := r.Header.Get(t.header); v != "" {
				key = hashString(v)
			}
		}
		if len(t.eps) == 0 {
			l.rm.noEndpoint.Inc()
			http.Error(w, "no healthy replica of service "+l.service, http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get(HeaderRequestID) == "" {
			r.Header.Set(HeaderRequestID, newRequestID())
		}
		// A small body is kept in memory so that the request can be
		// retried on another endpoint.
		if r.ContentLength > 0 && r.ContentLength <= l.b.cfg.MaxBufferedBody {
			body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
			if err != nil {
				http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		ctx := context.WithValue(r.Context(), reqStateKey{}, &reqState{t: t, key: key, client: client})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// rewrite sets the forwarding headers. The endpoint is chosen later, per
// attempt, by the round tripper.
func (l *listener) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "endpoint.invalid" // replaced by roundTripper
	pr.Out.Host = pr.In.Host
	// Keep what earlier proxies said, then add this hop.
	pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	pr.SetXForwarded()
	fwd := "for=" + forwardedNode(pr.In.RemoteAddr)
	if pr.In.Host != "" {
		fwd += ";host=" + quoteForwarded(pr.In.Host)
	}
	fwd += ";proto=http"
	if prev := pr.In.Header.Values(HeaderForwarded); len(prev) > 0 {
		fwd = strings.Join(prev, ", ") + ", " + fwd
	}
	pr.Out.Header.Set(HeaderForwarded, fwd)
}

// forwardedNode formats a client address as an RFC 7239 node: IPv6 in
// brackets and quotes.
func forwardedNode(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return "unknown"
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		return `"[` + a.String() + `]"`
	}
	return a.String()
}

// forwardedEscaper escapes a quoted-string's specials.
var forwardedEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// quoteForwarded quotes a value unless it is an RFC 7230 token.
func quoteForwarded(v string) string {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return `"` + forwardedEscaper.Replace(v) + `"`
		}
	}
	return v
}

func (l *listener) modifyResponse(resp *http.Response) error {
	if resp.Header.Get(HeaderRequestID) == "" && resp.Request != nil {
		if id := resp.Request.Header.Get(HeaderRequestID); id != "" {
			resp.Header.Set(HeaderRequestID, id)
		}
	}
	return nil
}

// proxyError answers a request no endpoint could serve.
func (l *listener) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	code, msg := l.requestFailed(err)
	http.Error(w, msg, code)
}

// requestFailed counts and logs a request that no endpoint served, and
// returns the status and message to answer it with.
func (l *listener) requestFailed(err error) (int, string) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, errNoEndpoint):
		code = http.StatusServiceUnavailable
	case isTimeout(err):
		code = http.StatusGatewayTimeout
	}
	l.rm.failed.Inc()
	l.b.log.Debug("lb request failed", "service", l.service, "port", l.port, "err", err)
	return code, http.StatusText(code) + ": " + l.service + ": " + err.Error()
}

// roundTripper picks an endpoint per attempt and retries: connect
// failures always (nothing was sent), other failures before a response
// when the request is idempotent and replayable, within the retry budget.
type roundTripper struct{ l *listener }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	l := rt.l
	st, _ := req.Context().Value(reqStateKey{}).(*reqState)
	if st == nil {
		return nil, errNoEndpoint
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	idempotent := isIdempotent(req) && req.Header.Get("Upgrade") == ""
	var buf [8]*endpoint
	tried := buf[:0]
	var lastErr error = errNoEndpoint
	for attempt := 0; attempt < l.b.cfg.Attempts; attempt++ {
		ep := st.t.pick(st.key, tried)
		if ep == nil {
			break
		}
		out := req
		if attempt > 0 {
			if !replayable || req.Context().Err() != nil {
				break
			}
			out = req.Clone(req.Context())
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					break
				}
				out.Body = body
			}
			l.rm.retries.Inc()
		}
		u := *req.URL
		u.Host = ep.key
		out.URL = &u
		ep.active.Add(1)
		ep.m.active.Inc()
		start := time.Now()
		resp, err := l.transport.RoundTrip(out)
		if err != nil {
			ep.active.Add(-1)
			ep.m.active.Dec()
			if req.Context().Err() != nil {
				return nil, err
			}
			tried = append(tried, ep)
			lastErr = err
			if !l.attemptFailed(ep, err, idempotent) {
				break
			}
			continue
		}
		l.answered(ep, time.Since(start), resp.StatusCode)
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// The body is the upgraded connection, which ReverseProxy
			// needs as an io.ReadWriteCloser: leave it alone.
			ep.active.Add(-1)
			ep.m.active.Dec()
		} else {
			resp.Body = &doneBody{ReadCloser: resp.Body, done: func() {
				ep.active.Add(-1)
				ep.m.active.Dec()
			}}
		}
		return resp, nil
	}
	return nil, lastErr
}

// isIdempotent follows RFC 9110 section 9.2.2, and honours an
// Idempotency-Key header as net/http does.
func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// isDialError reports whether err happened while connecting.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// doneBody calls done once, when the body is closed.
type doneBody struct {
	io.ReadCloser
	once atomic.Bool
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	if b.once.CompareAndSwap(false, true) {
		b.done()
	}
	return err
}

// newRequestID returns 16 random bytes in hex.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// bufferPool recycles ReverseProxy's copy buffers.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// attemptFailed records a failed attempt of a request on ep (and an
// ejection it causes) and reports whether the request may go to another
// endpoint: always after a failed connect, since nothing was sent, and
// otherwise only an idempotent request, within the retry budget.
func (l *listener) attemptFailed(ep *endpoint, err error, idempotent bool) bool {
	kind := classify(err)
	if ep.fail(kind, time.Now()) {
		l.b.log.Info("lb endpoint ejected", "service", l.service, "port", l.port, "endpoint", ep.key, "reason", kind.String())
	}
	if isDialError(err) {
		return true
	}
	return idempotent && l.budget.take()
}

// answered records an endpoint's answer to a request after d: its
// latency and status, and a 5xx as a failure of the endpoint.
func (l *listener) answered(ep *endpoint, d time.Duration, status int) {
	ep.observe(d)
	ep.m.latency.Observe(d.Seconds())
	ep.m.code(status).Inc()
	if status < 500 {
		ep.succeed()
		return
	}
	if ep.fail(failServer, time.Now()) {
		l.b.log.Info("lb endpoint ejected", "service", l.service, "port", l.port, "endpoint", ep.key, "reason", "5xx")
	}
}
