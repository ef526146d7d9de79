package lb

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// serve accepts connections until the listener closes, and serves each
// with handle in a goroutine of its own. The connection is closed when
// handle returns, unless handle reports that it handed it over.
func (l *listener) serve(handle func(*net.TCPConn) (handedOver bool)) {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if open, wasPaused := l.waitAccepting(); !open {
				return
			} else if wasPaused {
				continue // no endpoint meanwhile: the socket did not listen
			}
			// Out of file descriptors and the like: back off as
			// net/http's Server does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.b.log.Warn("lb accept", "port", l.port, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !l.track(c) {
			_ = c.Close()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if !handle(c.(*net.TCPConn)) {
				_ = c.Close()
				l.untrack(c)
			}
		}()
	}
}

// handleTCP forwards one client connection: it dials an endpoint and
// hands the pair over to an L4 event loop (l4loop_linux.go), or, where
// there is none, copies it with pipe until it ends.
func (l *listener) handleTCP(c *net.TCPConn) (handedOver bool) {
	l.rm.accepted.Inc()
	t := l.table.Load()
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	key := hashAddr(client.Addr())
	up, ep, all := l.dial(t, key)
	if up == nil {
		_ = c.SetLinger(0) // a reset tells the client at once
		if all {
			l.cutOff(t) // every endpoint failed: refuse the next ones for a while
		} else {
			l.reconsider() // refused while every endpoint is ejected
		}
		return false
	}
	if l.cutBackoff.Load() != 0 {
		l.cutBackoff.Store(0) // reachable again: a next cut-off starts short
	}
	l.track(up)
	ep.active.Add(1)
	ep.m.active.Inc()
	defer func() {
		if handedOver {
			return // the loop closes, untracks and counts down
		}
		_ = up.Close()
		l.untrack(up)
		ep.active.Add(-1)
		ep.m.active.Dec()
	}()
	if t.route.ProxyProtocol {
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		if _, err := up.Write(proxyHeader(client, local)); err != nil {
			l.b.log.Debug("lb proxy header", "service", l.service, "endpoint", ep.key, "err", err)
			return false
		}
	}
	if l.handOver(c, up, ep) {
		return true
	}
	pipe(c, up, l.b.cfg.IdleTimeout)
	return false
}

// dial connects to an endpoint of t, trying up to Config.Attempts of
// them. It returns nil when none answered, and all when it tried every
// endpoint of t.
func (l *listener) dial(t *table, key uint64) (c *net.TCPConn, ep *endpoint, all bool) {
	var buf [8]*endpoint
	tried := buf[:0]
	for attempt := 0; attempt < l.b.cfg.Attempts; attempt++ {
		ep := t.pick(key, tried)
		if ep == nil {
			break
		}
		if attempt > 0 {
			l.rm.retries.Inc()
		}
		start := time.Now()
		conn, err := l.b.dialer.DialContext(context.Background(), "tcp", ep.key)
		if err != nil {
			kind := classify(err)
			if ep.fail(kind, time.Now()) {
				l.b.log.Info("lb endpoint ejected", "service", l.service, "port", l.port, "endpoint", ep.key, "reason", kind.String())
			}
			l.b.log.Debug("lb connect failed", "service", l.service, "endpoint", ep.key, "err", err)
			tried = append(tried, ep)
			continue
		}
		d := time.Since(start)
		ep.observe(d)
		ep.succeed()
		ep.m.latency.Observe(d.Seconds())
		ep.m.conns.Inc()
		return conn.(*net.TCPConn), ep, false
	}
	if len(tried) == 0 {
		l.rm.noEndpoint.Inc()
	} else {
		l.rm.failed.Inc()
	}
	return nil, nil, len(tried) > 0 && len(tried) == len(t.eps)
}

// copyChunk is how much one splice call may move before the copy loop
// looks at the clock again.
const copyChunk = 256 << 10

// copyBufSize is the buffer of the plain copy path. A read that fills it
// marks a bulk stream, which the direction then moves with splice.
const copyBufSize = 16 << 10

// copyBufs holds the plain copy path's buffers. A direction takes one
// only when its socket has bytes to read and gives it back once they are
// written, so an idle connection holds none.
var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// pipeState is shared by the two directions of a connection.
type pipeState struct {
	last    atomic.Int64 // Unix ns of the last bytes moved either way
	suspect atomic.Bool  // one direction found the connection idle
	stop    atomic.Bool  // tear down both directions
	eof     atomic.Int32 // directions finished by a half-close
}

// pipe copies a to b and b to a until both directions have ended (each by
// EOF, passed on as a half-close), one fails, or neither has moved a byte
// for idle. It does not close a or b. It serves the pairs that no L4
// event loop takes (see l4loop_linux.go): on other systems, or when the
// loops cannot start.
func pipe(a, b *net.TCPConn, idle time.Duration) {
	st := &pipeState{}
	st.last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyHalf(a, b, st, idle) // b -> a
	}()
	copyHalf(b, a, st, idle) // a -> b
	wg.Wait()
}

// copyHalf copies src to dst until EOF (passed on with CloseWrite), an
// error, or idleness.
//
// Small messages, the common case of request/response traffic, take one
// read into a pooled buffer and one write (HAProxy's "splice-auto"): for
// them, splice would cost two calls and a trip through a pipe each. A
// read that fills the buffer marks a bulk stream, which then moves with
// splice (zero copy through a pipe), in chunks, until a chunk comes back
// short at a clock check; then the direction copies again.
//
// Each read waits at most a quarter of idle so that it can see the clock
// (the read deadline is pushed back only once it is half spent, not per
// message). A direction that saw nothing for a whole window while the
// connection as a whole has been quiet for idle marks it suspect and makes
// the other direction check in at once (by expiring its read deadline);
// the other direction, seeing nothing in its own window either, ends the
// connection. So an idle connection is closed after idle to 1.25 x idle,
// and a busy one never.
func copyHalf(dst, src *net.TCPConn, st *pipeState, idle time.Duration) {
	tick := max(idle/4, time.Millisecond)
	past := time.Unix(1, 0)
	abort := func() {
		st.stop.Store(true)
		_ = src.SetDeadline(past) // also ends a write blocked on a slow reader
		_ = dst.SetDeadline(past)
	}
	rc, err := src.SyscallConn()
	if err != nil {
		abort()
		return
	}
	r := &rawReader{}
	readFn := r.read // one closure per direction, not per read
	lr := &io.LimitedReader{R: src}
	var deadline int64 // Unix ns of the read deadline set on src; 0: to set
	bulk := false
	for !st.stop.Load() {
		now := time.Now().UnixNano()
		if deadline-now < int64(tick/2) {
			deadline = now + int64(tick)
			_ = src.SetReadDeadline(time.Unix(0, deadline))
		}
		var n int64
		var eof bool
		if bulk {
			lr.N = copyChunk
			n, err = dst.ReadFrom(lr)
			eof = err == nil && n < copyChunk
			bulk = err == nil && n == copyChunk
		} else {
			r.n, r.err = 0, nil
			if err = rc.Read(readFn); err == nil {
				err = r.err
			}
			n = int64(r.n)
			eof = err == nil && n == 0
			if n > 0 {
				_, werr := dst.Write(r.buf[:n])
				copyBufs.Put(r.buf)
				r.buf = nil
				if werr != nil {
					abort()
					return
				}
				bulk = n == copyBufSize
			}
		}
		if n > 0 {
			now = time.Now().UnixNano()
			st.last.Store(now)
			st.suspect.Store(false)
		}
		switch {
		case eof: // pass the half-close on
			_ = dst.CloseWrite()
			st.eof.Add(1)
			return
		case err == nil:
			continue
		case !errors.Is(err, os.ErrDeadlineExceeded):
			abort() // reset, or the other side is gone
			return
		}
		deadline = 0 // expired (or expired by the other direction): set it again
		if st.stop.Load() {
			return
		}
		if n > 0 || time.Duration(now-st.last.Load()) < idle {
			continue
		}
		if st.eof.Load() > 0 || st.suspect.Load() {
			abort() // the other direction is done or saw nothing either
			return
		}
		st.suspect.Store(true)
		_ = dst.SetReadDeadline(past) // the other direction reads dst
	}
}

// rawReader reads a socket that has bytes into a pooled buffer, inside
// syscall.RawConn.Read, so that a direction waiting for bytes holds no
// buffer.
type rawReader struct {
	buf *[copyBufSize]byte // held from a successful read until written
	n   int
	err error
}

// read is the RawConn.Read callback: it reports false to wait for the
// socket to become readable.
func (r *rawReader) read(fd uintptr) bool {
	if r.buf == nil {
		r.buf = copyBufs.Get().(*[copyBufSize]byte)
	}
	for {
		n, err := syscall.Read(int(fd), r.buf[:])
		switch err {
		case nil:
			if r.n = n; n == 0 { // EOF
				copyBufs.Put(r.buf)
				r.buf = nil
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			copyBufs.Put(r.buf)
			r.buf = nil
			return false
		}
		copyBufs.Put(r.buf)
		r.buf = nil
		r.err = os.NewSyscallError("read", err)
		return true
	}
}
