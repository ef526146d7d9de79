package lb

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The fast L7 path: a purpose-built HTTP/1.1 proxy. One goroutine per
// client connection reads a request head into a reused buffer, picks an
// endpoint, writes the request to a pooled keep-alive connection to it
// (one write: head and buffered body), reads the response head and
// streams the body back, batching writes to the client until it would
// wait for the endpoint. No goroutine hand-offs, no per-request maps.
//
// It serves plain HTTP/1.1 requests without a body or with a body of at
// most Config.MaxBufferedBody bytes (kept, so that the request can be
// retried). Anything else valid (upgrades, Expect, chunked or large
// bodies, trailers, HTTP/1.0, absolute-form targets, a head with bare LF
// line ends) hands the connection, the bytes read so far included, to the
// net/http server and ReverseProxy for the rest of its life. Invalid or
// ambiguous heads get a 400 and the connection closes.
//
// Differences from the net/http path: a client that disconnects while
// the endpoint has not answered yet is noticed only when the answer
// comes; the response gets no Date header the endpoint did not send.

// Timeouts of client connections, as the net/http server of the slow
// path has them.
const (
	httpReadHeaderTimeout = 30 * time.Second
	httpIdleTimeout       = 2 * time.Minute
)

// Endpoint connection pools.
const (
	poolMaxIdle     = 256              // idle connections per endpoint
	poolIdleTimeout = 90 * time.Second // an idle connection older than this is closed
	spliceMin       = 64 << 10         // bodies longer than this go with splice
	outFlush        = 32 << 10         // client output buffered at most
)

var (
	clientReaders  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	backendReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}
	connStates     = sync.Pool{New: func() any { return new(httpConn) }}
)

// httpConn is a client connection on the fast path.
type httpConn struct {
	l        *listener
	c        *net.TCPConn
	raw      rawSock // c's reads and writes
	br       *bufio.Reader
	client   netip.AddrPort
	key      uint64 // hash of the client IP
	clientIP []byte // for X-Forwarded-For
	fwdNode  []byte // for Forwarded

	head  []byte // the request head as received
	req   reqHead
	body  []byte // the request body, when it has one
	up    []byte // the request as sent to the endpoint
	reqID []byte // the request's X-Request-Id
	rhead []byte // the response head as received
	resp  respHead
	out   []byte // response bytes not yet written to the client
	werr  error  // writing to the client failed

	dlKind   int   // the read deadline set on c: dlNone, dlIdle, dlHeader
	deadline int64 // Unix ns of an idle deadline
}

const (
	dlNone = iota
	dlIdle
	dlHeader
)

// serveHTTPConn serves a client connection; it reports whether the
// connection was handed to the net/http server (which then owns it).
func (l *listener) serveHTTPConn(c *net.TCPConn) (handedOver bool) {
	l.rm.accepted.Inc()
	h := connStates.Get().(*httpConn)
	h.l, h.c = l, c
	h.raw.reset(c)
	h.br = clientReaders.Get().(*bufio.Reader)
	h.br.Reset(&h.raw)
	h.client = c.RemoteAddr().(*net.TCPAddr).AddrPort()
	h.key = hashAddr(h.client.Addr())
	ip := h.client.Addr().Unmap()
	h.clientIP = ip.AppendTo(h.clientIP[:0])
	h.fwdNode = h.fwdNode[:0]
	if ip.Is6() {
		h.fwdNode = append(append(append(h.fwdNode, `"[`...), h.clientIP...), `]"`...)
	} else {
		h.fwdNode = append(h.fwdNode, h.clientIP...)
	}
	h.dlKind, h.deadline = dlNone, 0
	h.out = h.out[:0]
	defer func() {
		h.br.Reset(nil)
		clientReaders.Put(h.br)
		h.br, h.c, h.l, h.werr = nil, nil, nil, nil
		h.raw.reset(nil)
		if cap(h.body) > 64<<10 || cap(h.head) > 64<<10 {
			h.body, h.head = nil, nil
		}
		connStates.Put(h)
	}()
	for {
		switch h.next() {
		case nextClose:
			return false
		case nextHandOver:
			return true
		}
	}
}

// What next does with the connection.
const (
	nextKeep = iota
	nextClose
	nextHandOver
)

// next reads and forwards one request.
func (h *httpConn) next() int {
	l := h.l
	if h.br.Buffered() == 0 {
		now := time.Now().UnixNano()
		if h.dlKind != dlIdle || h.deadline-now < int64(httpIdleTimeout-time.Second) {
			h.deadline = now + int64(httpIdleTimeout)
			h.dlKind = dlIdle
			_ = h.c.SetReadDeadline(time.Unix(0, h.deadline))
		}
		yieldBeforeRead() // the answer was only just written
		if _, err := h.br.Peek(1); err != nil {
			return nextClose // idle timeout, or the client closed
		}
	}
	if b, _ := h.br.Peek(h.br.Buffered()); !containsHeadEnd(b) {
		_ = h.c.SetReadDeadline(time.Now().Add(httpReadHeaderTimeout))
		h.dlKind = dlHeader
	}
	var err error
	h.head, err = readHead(h.br, h.head[:0])
	switch {
	case errors.Is(err, errHeadTooLarge):
		h.refuse("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large")
		return nextClose
	case errors.Is(err, errBareLF):
		return h.handOver()
	case err != nil:
		return nextClose // timeout, or closed mid-head
	}
	switch parseRequestHead(h.head, &h.req) {
	case headBad:
		h.refuse("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
		return nextClose
	case headHandOver:
		return h.handOver()
	}
	h.body = h.body[:0]
	if n := h.req.contentLength; n > 0 {
		if n > l.b.cfg.MaxBufferedBody {
			return h.handOver()
		}
		if int64(h.br.Buffered()) < n && h.dlKind != dlNone {
			_ = h.c.SetReadDeadline(time.Time{}) // no body timeout, as net/http
			h.dlKind = dlNone
		}
		h.body = append(h.body, make([]byte, n)...)
		if _, err := io.ReadFull(h.br, h.body); err != nil {
			return nextClose
		}
	}
	if !h.forward() || h.req.close {
		return nextClose
	}
	return nextKeep
}

// containsHeadEnd reports whether b holds a whole head.
func containsHeadEnd(b []byte) bool {
	for i := 3; i < len(b); i++ {
		if b[i] == '\n' && b[i-1] == '\r' && b[i-2] == '\n' && b[i-3] == '\r' {
			return true
		}
	}
	return false
}

// handOver gives the connection, with the bytes read from it so far, to
// the net/http server.
func (h *httpConn) handOver() int {
	_ = h.c.SetReadDeadline(time.Time{})
	pre := make([]byte, 0, len(h.head)+h.br.Buffered())
	pre = append(pre, h.head...)
	rest, _ := h.br.Peek(h.br.Buffered())
	pre = append(pre, rest...)
	hc := &handedConn{TCPConn: h.c, pre: pre, l: h.l}
	select {
	case h.l.handoff.ch <- hc:
	case <-h.l.handoff.done:
		_ = hc.Close()
	}
	return nextHandOver
}

// forward sends the request to an endpoint, retrying as the roundTripper
// of the net/http path does, and relays the response. It reports whether
// the client connection can serve another request.
func (h *httpConn) forward() bool {
	l := h.l
	l.budget.deposit()
	t := l.table.Load()
	key := h.key
	if t.header != "" {
		if v := h.req.get(t.header); len(v) > 0 {
			key = hashString(v)
		}
	}
	if len(t.eps) == 0 {
		l.rm.noEndpoint.Inc()
		return h.writeError(http.StatusServiceUnavailable, "no healthy replica of service "+l.service)
	}
	h.buildRequest()
	idempotent := isIdempotentMethod(h.req.method) || h.req.idempotencyKey
	var buf [8]*endpoint
	tried := buf[:0]
	var lastErr error = errNoEndpoint
	for attempt := 0; attempt < l.b.cfg.Attempts; attempt++ {
		ep := t.pick(key, tried)
		if ep == nil {
			break
		}
		if attempt > 0 {
			l.rm.retries.Inc()
		}
		ep.active.Add(1)
		ep.m.active.Inc()
		start := time.Now()
		bc, err := h.exchange(ep, idempotent)
		if err != nil {
			ep.active.Add(-1)
			ep.m.active.Dec()
			if h.werr != nil || errors.Is(err, net.ErrClosed) {
				return false // the client is gone, or the listener closing
			}
			tried = append(tried, ep)
			lastErr = err
			if !l.attemptFailed(ep, err, idempotent) {
				break
			}
			continue
		}
		l.answered(ep, time.Since(start), h.resp.status)
		keep := h.relay(ep, bc)
		ep.active.Add(-1)
		ep.m.active.Dec()
		return keep
	}
	return h.writeError(l.requestFailed(lastErr))
}

// isIdempotentMethod follows RFC 9110 section 9.2.2, as isIdempotent.
func isIdempotentMethod(m []byte) bool {
	switch string(m) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// buildRequest writes the request for the endpoint into h.up: the head
// less hop-by-hop headers, plus the forwarding headers, then the body.
func (h *httpConn) buildRequest() {
	r := &h.req
	b := h.up[:0]
	idStart := 0
	b = append(b, r.method...)
	b = append(b, ' ')
	b = append(b, r.target...)
	b = append(b, " HTTP/1.1\r\n"...)
	clSent := false
	for _, f := range r.fields {
		if r.hopByHop(f.name) {
			continue
		}
		if asciiEqualFold(f.name, "Content-Length") {
			if clSent {
				continue // identical duplicates: one is enough
			}
			clSent = true
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	if r.teTrailers {
		b = append(b, "Te: trailers\r\n"...)
	}
	b = append(b, "X-Forwarded-For: "...)
	for _, f := range r.fields {
		if asciiEqualFold(f.name, "X-Forwarded-For") {
			b = append(b, f.value...)
			b = append(b, ", "...)
		}
	}
	b = append(b, h.clientIP...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, r.host...)
	b = append(b, "\r\nX-Forwarded-Proto: http\r\nForwarded: "...)
	for _, f := range r.fields {
		if asciiEqualFold(f.name, HeaderForwarded) {
			b = append(b, f.value...)
			b = append(b, ", "...)
		}
	}
	b = append(b, "for="...)
	b = append(b, h.fwdNode...)
	b = append(b, ";host="...)
	b = appendForwardedValue(b, r.host)
	b = append(b, ";proto=http\r\n"...)
	if r.requestID {
		h.reqID = r.get(HeaderRequestID)
	} else {
		var id [16]byte
		_, _ = rand.Read(id[:])
		b = append(b, HeaderRequestID+": "...)
		idStart = len(b)
		b = hex.AppendEncode(b, id[:])
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, h.body...)
	h.up = b
	if idStart > 0 {
		h.reqID = b[idStart : idStart+32]
	}
}

// appendForwardedValue appends v as an RFC 7239 value: as is when it is
// a token, else quoted (quoteForwarded without allocations).
func appendForwardedValue(b, v []byte) []byte {
	if isToken(v) {
		return append(b, v...)
	}
	b = append(b, '"')
	for _, c := range v {
		if c == '\\' || c == '"' {
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

// exchange sends the request to ep on a pooled or new connection and
// reads the response head (passing 1xx answers on). A pooled connection
// that the endpoint closed meanwhile does not count: the request goes
// again on a new one when it is idempotent, and a non-idempotent request
// takes only a pooled connection that is still open.
func (h *httpConn) exchange(ep *endpoint, idempotent bool) (*backendConn, error) {
	l := h.l
	for {
		bc := ep.pool.get(time.Now().UnixNano())
		reused := bc != nil
		if !reused {
			c, err := l.b.dialer.DialContext(context.Background(), "tcp", ep.key)
			if err != nil {
				return nil, err
			}
			bc = newBackendConn(c.(*net.TCPConn))
		} else if !idempotent && !bc.open() {
			bc.close()
			continue
		}
		if !l.track(bc.c) {
			bc.close()
			return nil, net.ErrClosed
		}
		bc.br = backendReaders.Get().(*bufio.Reader)
		bc.br.Reset(&bc.rd)
		bc.rd.h = h
		_, err := bc.raw.Write(h.up)
		if err == nil {
			yieldBeforeRead() // the request was only just written
			err = h.readResponseHead(bc)
		}
		if err == nil {
			return bc, nil
		}
		h.drop(bc)
		if reused && idempotent && h.werr == nil && !errors.Is(err, errBadResponse) {
			continue // a keep-alive connection the endpoint had closed
		}
		return nil, err
	}
}

// yieldBeforeRead lets the goroutines of other connections run before a
// read that would come too early: of the answer to a request just written
// to an endpoint, or of a client's next request right after its answer.
// Done at once, such a read mostly finds nothing (EAGAIN) and the
// goroutine parks until the poller reports the connection readable: a
// system call for nothing, in a path that is mostly system calls. On a
// busy balancer other goroutines are runnable (the scheduler runs them
// all before the yielded one, which waits in the global run queue), and
// meanwhile the answer or the request has often come, so the read gets it
// at once; HAProxy, whose event loop reads only what its poller reports,
// does no such reads at all. With nothing else runnable, the yield costs
// well under a microsecond. (In scripts/bench-lb.sh, where system calls
// are dear, it took the L7 rate from about 0.76 to 0.82-0.88 of
// HAProxy's; see BENCHMARKS.md.)
func yieldBeforeRead() { runtime.Gosched() }

// readResponseHead reads the final response head into h.rhead and
// h.resp, passing interim (1xx) responses on to the client.
func (h *httpConn) readResponseHead(bc *backendConn) error {
	for {
		var err error
		h.rhead, err = readHead(bc.br, h.rhead[:0])
		switch {
		case errors.Is(err, errBareLF), errors.Is(err, errHeadTooLarge):
			return errBadResponse
		case err != nil:
			return err
		}
		if err := parseResponseHead(h.rhead, &h.resp); err != nil {
			return err
		}
		switch {
		case h.resp.status == http.StatusSwitchingProtocols:
			return errBadResponse // the fast path never asks for an upgrade
		case h.resp.status < 200:
			h.appendResponseHead(false)
			if err := h.flush(); err != nil {
				return err
			}
			continue
		}
		return nil
	}
}

// appendResponseHead appends the response head for the client to h.out.
func (h *httpConn) appendResponseHead(closing bool) {
	r := &h.resp
	line, _ := cutLine(h.rhead)
	b := append(h.out, "HTTP/1.1 "...)
	b = append(b, line[9:]...) // status code and reason
	b = append(b, "\r\n"...)
	for _, f := range r.fields {
		if r.hopByHop(f.name) {
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	if r.status >= 200 {
		if !r.requestID && len(h.reqID) > 0 {
			b = append(b, HeaderRequestID+": "...)
			b = append(b, h.reqID...)
			b = append(b, "\r\n"...)
		}
		if r.chunked && !bodyless(h.req.method, r.status) {
			b = append(b, "Transfer-Encoding: chunked\r\n"...)
		}
		if closing {
			b = append(b, "Connection: close\r\n"...)
		}
	}
	h.out = append(b, "\r\n"...)
}

// relay passes the response on to the client and returns bc to its pool
// when the endpoint can take another request on it. It reports whether
// the client connection can serve another request.
func (h *httpConn) relay(ep *endpoint, bc *backendConn) bool {
	r := &h.resp
	untilClose := !bodyless(h.req.method, r.status) && !r.chunked && r.contentLength < 0
	closing := h.req.close || untilClose
	h.appendResponseHead(closing)
	var err error
	switch {
	case bodyless(h.req.method, r.status):
	case r.chunked:
		err = h.copyChunked(bc)
	case r.contentLength >= 0:
		err = h.copyN(bc, r.contentLength)
	default:
		err = h.copyN(bc, -1)
	}
	if ferr := h.flush(); err == nil {
		err = ferr
	}
	if err != nil || r.close || untilClose {
		h.drop(bc)
		return false
	}
	h.release(ep, bc)
	return !closing
}

// copyN copies n body bytes (n < 0: until EOF) from the endpoint to the
// client.
func (h *httpConn) copyN(bc *backendConn, n int64) error {
	for n != 0 {
		if bc.br.Buffered() == 0 && n > spliceMin {
			if err := h.flush(); err != nil {
				return err
			}
			m, err := h.c.ReadFrom(&io.LimitedReader{R: bc.c, N: n})
			n -= m
			if err != nil {
				return err
			}
			if n > 0 {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		b, err := bc.br.Peek(1) // fills the buffer, flushing h.out first
		if err != nil {
			if n < 0 && err == io.EOF && h.werr == nil {
				return nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		b, _ = bc.br.Peek(bc.br.Buffered())
		if n >= 0 && int64(len(b)) > n {
			b = b[:n]
		}
		h.out = append(h.out, b...)
		_, _ = bc.br.Discard(len(b))
		if n > 0 {
			n -= int64(len(b))
		}
		if len(h.out) >= outFlush {
			if err := h.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyChunked copies a chunked body, trailers included, verbatim, and
// checks its framing on the way.
func (h *httpConn) copyChunked(bc *backendConn) error {
	for {
		line, err := h.copyLine(bc)
		if err != nil {
			return err
		}
		size, ok := parseChunkSize(line[:len(line)-2])
		if !ok {
			return errBadResponse
		}
		if size == 0 {
			trailers := 0
			for {
				line, err := h.copyLine(bc)
				if err != nil {
					return err
				}
				if len(line) == 2 {
					return nil
				}
				if trailers += len(line); trailers > maxHeadBytes || line[0] == ' ' || line[0] == '\t' {
					return errBadResponse
				}
			}
		}
		if err := h.copyN(bc, size); err != nil {
			return err
		}
		if line, err := h.copyLine(bc); err != nil {
			return err
		} else if len(line) != 2 {
			return errBadResponse
		}
	}
}

// copyLine copies a CRLF-ended line of a chunked body (at most the
// reader's buffer long) to h.out and returns it as copied.
func (h *httpConn) copyLine(bc *backendConn) ([]byte, error) {
	line, err := bc.br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return nil, errBadResponse
	case err == io.EOF:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return nil, errBadResponse
	}
	for _, c := range line[:n-2] {
		if c == '\r' || c == 0 {
			return nil, errBadResponse
		}
	}
	start := len(h.out)
	h.out = append(h.out, line...)
	return h.out[start:], nil
}

// flush writes h.out to the client.
func (h *httpConn) flush() error {
	if h.werr != nil {
		return h.werr
	}
	if len(h.out) == 0 {
		return nil
	}
	_, err := h.raw.Write(h.out)
	h.out = h.out[:0]
	if err != nil {
		h.werr = err
	}
	return err
}

// writeError answers with an error as http.Error does; it reports whether
// the connection can go on.
func (h *httpConn) writeError(code int, msg string) bool {
	b := append(h.out, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(msg)+1), 10)
	if h.req.close {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	b = append(b, msg...)
	h.out = append(b, '\n')
	return h.flush() == nil
}

// refuse writes a fixed answer before the connection closes. Closing
// with unread bytes would reset the connection, and the client could lose
// the answer; so the rest of what it sends is read and dropped for a
// moment first (nginx's lingering close).
func (h *httpConn) refuse(answer string) {
	h.out = append(h.out, answer...)
	if h.flush() != nil {
		return
	}
	_ = h.c.CloseWrite()
	_ = h.c.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, h.c, lingerMax)
}

// Lingering close of a refused connection.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 4 << 20
)

// drop closes an endpoint connection that cannot be reused.
func (h *httpConn) drop(bc *backendConn) {
	h.l.untrack(bc.c)
	bc.close()
}

// release puts an endpoint connection whose response is complete back
// into its endpoint's pool.
func (h *httpConn) release(ep *endpoint, bc *backendConn) {
	h.l.untrack(bc.c)
	if bc.br.Buffered() > 0 { // bytes after the response: not HTTP
		bc.close()
		return
	}
	bc.rd.h = nil
	bc.br.Reset(nil)
	backendReaders.Put(bc.br)
	bc.br = nil
	ep.pool.put(bc, time.Now().UnixNano())
}

// backendConn is a connection to an endpoint.
type backendConn struct {
	c         *net.TCPConn
	raw       rawSock // c's reads and writes
	rc        syscall.RawConn
	rd        backendReader
	br        *bufio.Reader // while it serves a request
	idleSince int64         // Unix ns, while in the pool
}

func newBackendConn(c *net.TCPConn) *backendConn {
	bc := &backendConn{c: c}
	bc.raw.reset(c)
	bc.rc, _ = c.SyscallConn()
	bc.rd.s = &bc.raw
	return bc
}

func (bc *backendConn) close() {
	_ = bc.c.Close()
	if bc.br != nil {
		bc.br.Reset(nil)
		backendReaders.Put(bc.br)
		bc.br = nil
	}
	bc.rd.h = nil
}

// open reports whether an idle connection is still open: no EOF, reset
// or stray bytes waiting.
func (bc *backendConn) open() bool {
	if bc.rc == nil {
		return false
	}
	ok := false
	err := bc.rc.Read(func(fd uintptr) bool {
		var b byte
		_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b)), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		ok = errno == syscall.EAGAIN
		return true
	})
	return err == nil && ok
}

// backendReader reads an endpoint connection for its bufio.Reader; before
// it waits for the endpoint, it writes what the client has not got yet,
// so that a streamed body goes on as it comes, in as few writes as the
// endpoint's pace allows.
type backendReader struct {
	s *rawSock  // the endpoint connection's
	h *httpConn // the connection the request came from
}

func (r *backendReader) Read(p []byte) (int, error) {
	if r.h != nil {
		if err := r.h.flush(); err != nil {
			return 0, err
		}
	}
	return r.s.Read(p)
}

// connPool holds an endpoint's idle keep-alive connections, newest last.
type connPool struct {
	mu     sync.Mutex // guards all following fields
	idle   []*backendConn
	closed bool
}

// get returns an idle connection, or nil.
func (p *connPool) get(now int64) *backendConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		bc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if now-bc.idleSince < int64(poolIdleTimeout) {
			return bc
		}
		bc.close()
	}
	return nil
}

// put returns a connection to the pool, or closes it when the pool is
// full or closed.
func (p *connPool) put(bc *backendConn, now int64) {
	bc.idleSince = now
	p.mu.Lock()
	if p.closed || len(p.idle) >= poolMaxIdle {
		p.mu.Unlock()
		bc.close()
		return
	}
	p.idle = append(p.idle, bc)
	p.mu.Unlock()
}

// close closes the idle connections; connections put back later are
// closed too.
func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, bc := range idle {
		bc.close()
	}
}

// handedConn is a client connection handed to the net/http server: it
// reads the bytes the fast path had read first.
type handedConn struct {
	*net.TCPConn
	pre  []byte
	l    *listener
	once sync.Once
}

// Read reads the bytes read before the hand-over, then the connection.
func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// WriteTo hides net.TCPConn's, which would skip the bytes read before.
func (c *handedConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// Close closes the connection and forgets it.
func (c *handedConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() { c.l.untrack(c.TCPConn) })
	return err
}

// connQueue is the net.Listener of the net/http server: it yields the
// connections the fast path hands over.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
