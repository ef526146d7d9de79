package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The generator is one event loop on one locked OS thread: raw
// non-blocking sockets in an epoll set of its own, and epoll_pwait2's
// nanosecond timeout as the clock that paces the sends. Each wake-up sends
// every request that is due on a free connection and reads what epoll
// reported. The goroutine per connection it replaces (each sleeping on a
// Go timer, whose resolution on Linux is the millisecond of the runtime's
// epoll wait, then parking in Go's poller for the answer) added its own
// scheduling to every latency: against the demo server on a CPU of its
// own, its p50 at 10,000 req/s was 174-185 us where the loop measures
// 60-66 us, its p99 1.2-2.6 ms against 0.5-1.0 ms (scripts/bench-loadgen.sh).
// The CPU per request is about the same (35-60 us, wrk's 13-16 us): at
// a fixed rate below its maximum the loop sleeps between requests, and
// each wake-up costs a context switch.

// lconn is one of the generator's connections.
type lconn struct {
	fd     int       // -1 while not connected
	buf    []byte    // received bytes of the answer in progress
	busy   bool      // a request is in flight
	idx    int64     // the request in flight
	due    time.Time // when it was due
	from   time.Time // latency of the request in flight counts from here
	sent   time.Time // when it was written
	freeAt time.Time // when the connection was last free (zero: from the start)
	retry  time.Time // not connected: dial again from then
}

// loop is the state of one run.
type loop struct {
	host    string
	req     []byte
	timeout time.Duration
	ep      int
	conns   []*lconn
	free    []*lconn // connected and idle
	rbuf    []byte

	start, measureFrom, end, stopAt time.Time
	interval                        float64 // ns between requests
	total, next                     int64
	inFlight                        int

	lat, svc []time.Duration
	errors   int
	sent     int64 // requests sent; those from sent to total were never sent (missed)
}

func (l *loop) dueAt(i int64) time.Time {
	return l.start.Add(time.Duration(float64(i) * l.interval))
}

func run(u *url.URL, rate float64, warmup, duration time.Duration, conns int, timeout time.Duration) (result, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	path := u.RequestURI()
	l := &loop{
		host:     u.Host,
		req:      []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: shoal-loadgen\r\nAccept: */*\r\n\r\n"),
		timeout:  timeout,
		interval: float64(time.Second) / rate,
		rbuf:     make([]byte, 64<<10),
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return result{}, fmt.Errorf("epoll: %w", err)
	}
	l.ep = ep
	defer unix.Close(ep)
	// All connections are dialled before the clock starts; the first
	// failure ends the run (the target does not answer at all).
	for range conns {
		c := &lconn{fd: -1}
		if err := l.dial(c); err != nil {
			l.closeAll()
			return result{}, err
		}
		l.conns = append(l.conns, c)
		l.free = append(l.free, c)
	}
	defer l.closeAll()
	l.start = time.Now()
	l.measureFrom = l.start.Add(warmup)
	l.end = l.measureFrom.Add(duration)
	l.total = int64(float64(warmup+duration) / l.interval)
	l.sent = l.total
	// Past stopAt no more requests are sent: when the server is much slower
	// than the rate, the backlog would otherwise take as long to drain.
	l.stopAt = l.end.Add(time.Second)
	l.lat = make([]time.Duration, 0, int(float64(duration)/l.interval)+16)
	l.svc = make([]time.Duration, 0, cap(l.lat))
	if err := l.serve(); err != nil {
		return result{}, err
	}
	finished := time.Now()
	var r result
	r.target = rate
	// Requests never sent count as missed, with the time from when they
	// were due to now as their latency (a lower bound).
	for i := l.sent; i < l.total; i++ {
		r.missed++
		if due := l.dueAt(i); !due.Before(l.measureFrom) {
			r.lat = append(r.lat, finished.Sub(due))
		}
	}
	r.lat = append(r.lat, l.lat...)
	r.svc = l.svc
	r.errors = l.errors
	slices.Sort(r.lat)
	slices.Sort(r.svc)
	r.ok = len(r.svc)
	// Achieved rate: completions over the measured window, stretched when the
	// last requests finished late.
	window := l.end.Sub(l.measureFrom)
	if finished.After(l.end) {
		window = finished.Sub(l.measureFrom)
	}
	r.achieved = float64(r.ok) / window.Seconds()
	return r, nil
}

// serve runs the loop until every request was answered, failed or missed.
func (l *loop) serve() error {
	events := make([]unix.EpollEvent, len(l.conns))
	for {
		now := time.Now()
		if l.next < l.total && now.After(l.stopAt) {
			l.sent, l.next = l.next, l.total // the rest are missed
		}
		l.send()
		if l.next >= l.total && l.inFlight == 0 {
			return nil
		}
		n, err := epollWait(l.ep, events, l.wait(time.Now()))
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("epoll_pwait2: %w", err)
		}
		for _, ev := range events[:max(n, 0)] {
			l.receive(l.conns[ev.Fd])
		}
		l.expire(time.Now())
	}
}

// send writes every request that is due while a connection is free, and
// dials the connections that are due for it.
func (l *loop) send() {
	for _, c := range l.conns {
		if c.fd < 0 && !c.retry.IsZero() && !time.Now().Before(c.retry) {
			c.retry = time.Time{}
			if err := l.dial(c); err != nil {
				l.errors++
				c.retry = time.Now().Add(10 * time.Millisecond)
				continue
			}
			c.freeAt = time.Now()
			l.free = append(l.free, c)
		}
	}
	for l.next < l.total && len(l.free) > 0 {
		due := l.dueAt(l.next)
		now := time.Now()
		if now.Before(due) {
			return
		}
		c := l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
		c.idx, c.due, c.sent, c.busy = l.next, due, now, true
		// A connection that was free when the request was due waited for
		// the generator, whose wake-up may be late: count from the send.
		// One that was busy then kept the request queued: count from the
		// due time, so that a stall counts against every request behind
		// it (wrk2's coordinated-omission correction).
		c.from = due
		if !c.freeAt.After(due) {
			c.from = now
		}
		l.next++
		l.inFlight++
		if n, err := unix.Write(c.fd, l.req); err != nil || n != len(l.req) {
			// A request fits an idle socket's buffer whole; anything
			// else is a broken connection.
			l.fail(c)
		}
	}
}

// wait is how long the loop may sleep: until the next request is due when
// a connection is free for it, else until the next in-flight request or
// dial is due to time out or retry.
func (l *loop) wait(now time.Time) time.Duration {
	var until time.Time
	if l.next < l.total {
		if len(l.free) > 0 {
			until = l.dueAt(l.next)
		} else {
			until = l.stopAt
		}
	}
	for _, c := range l.conns {
		t := c.retry
		if c.busy {
			t = c.sent.Add(l.timeout)
		}
		if !t.IsZero() && (until.IsZero() || t.Before(until)) {
			until = t
		}
	}
	if until.IsZero() {
		return l.timeout
	}
	return max(until.Sub(now), 0)
}

// receive reads what a connection has and takes the answer from it when
// it is whole.
func (l *loop) receive(c *lconn) {
	if c.fd < 0 {
		return
	}
	n, err := unix.Read(c.fd, l.rbuf)
	if err == unix.EAGAIN || err == unix.EINTR {
		return
	}
	eof := n <= 0
	if err != nil || !c.busy {
		// An error, or bytes or a close while no request is in flight:
		// the connection is of no more use.
		l.fail(c)
		return
	}
	c.buf = append(c.buf, l.rbuf[:max(n, 0)]...)
	size, ok, closed, perr := parseResponse(c.buf, eof)
	switch {
	case perr != nil:
		l.fail(c)
		return
	case size == 0:
		if eof {
			l.fail(c)
		}
		return
	case size != len(c.buf):
		// Bytes past the answer: nothing was asked for them.
		l.fail(c)
		return
	}
	done := time.Now()
	c.buf = c.buf[:0]
	c.busy = false
	l.inFlight--
	if !ok {
		if !c.due.Before(l.measureFrom) {
			l.errors++
		}
	} else if !c.due.Before(l.measureFrom) {
		l.lat = append(l.lat, done.Sub(c.from))
		l.svc = append(l.svc, done.Sub(c.sent))
	}
	if closed || eof {
		l.drop(c)
		return
	}
	c.freeAt = done
	l.free = append(l.free, c)
}

// expire fails the requests in flight for longer than the timeout.
func (l *loop) expire(now time.Time) {
	for _, c := range l.conns {
		if c.busy && now.Sub(c.sent) > l.timeout {
			l.fail(c)
		}
	}
}

// fail ends the request in flight on c, if any, as an error, and drops
// the connection.
func (l *loop) fail(c *lconn) {
	if c.busy {
		c.busy = false
		l.inFlight--
		if !c.due.Before(l.measureFrom) {
			l.errors++
		}
	}
	l.drop(c)
}

// drop closes c (taking it off the free list) and has it dialled again.
func (l *loop) drop(c *lconn) {
	if i := slices.Index(l.free, c); i >= 0 {
		l.free = slices.Delete(l.free, i, i+1)
	}
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	c.buf = c.buf[:0]
	c.retry = time.Now()
}

func (l *loop) closeAll() {
	for _, c := range l.conns {
		if c.fd >= 0 {
			unix.Close(c.fd)
			c.fd = -1
		}
	}
}

// dial connects c and puts its socket, non-blocking, in the loop's epoll
// set, with the connection's index as the event's data.
func (l *loop) dial(c *lconn) error {
	nc, err := net.DialTimeout("tcp", l.host, l.timeout)
	if err != nil {
		return err
	}
	// The socket leaves Go's poller: a duplicate of it (it shares the
	// open file description, so it stays non-blocking, with TCP_NODELAY)
	// is ours, and the *net.TCPConn is closed.
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		nc.Close()
		return err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	nc.Close()
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("dup: %w", err)
	}
	idx := slices.Index(l.conns, c)
	if idx < 0 {
		idx = len(l.conns) // being added
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(idx)}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	c.fd = fd
	return nil
}

// epollWait is epoll_pwait2, whose timeout has nanoseconds (epoll_wait's
// has milliseconds, too coarse to pace requests 100 us apart), entered as
// a raw system call. Entered as a blocking one (entersyscall), each wait
// longer than 20 us had sysmon take the P away and wake another thread for
// it, and kept sysmon itself polling every 20 us: 130,000 context switches
// and 30,000 nanosleeps in 5 s at 5,000 req/s (perf stat, strace -c). Raw,
// the runtime sees a running goroutine: a signal it sends to preempt it
// (for a GC, or after 10 ms) ends the wait with EINTR, and the loop, back in
// Go, is preempted at its next call. The wait is at most 100 ms.
func epollWait(ep int, events []unix.EpollEvent, d time.Duration) (int, error) {
	ts := unix.NsecToTimespec(int64(min(d, 100*time.Millisecond)))
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT2, uintptr(ep), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
	if errno != 0 {
		if errno == unix.ENOSYS {
			return 0, errors.New("needs Linux 5.11 or later")
		}
		return 0, errno
	}
	return int(n), nil
}
