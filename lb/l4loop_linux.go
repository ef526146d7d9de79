package lb

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The L4 event loop: established L4 connection pairs are served by a few
// loops of our own (one per GOMAXPROCS) instead of two goroutines each in
// Go's netpoller.
//
// Why: in the netpoller a goroutine reads before it parks, so each small
// message costs a read that returns EAGAIN plus a park and a wake-up, and
// a FIN right behind data is seen only by reading again, since the
// poller does not expose EPOLLRDHUP. A loop of our own reads only what
// epoll reported, as HAProxy does: a read that returns less than the
// buffer drained the socket; later data and the peer's FIN raise new
// edges (EPOLLIN, EPOLLRDHUP).
//
// How: handleTCP dials, then hands the pair over (handOver). The sockets
// leave Go's poller: each is duplicated (F_DUPFD_CLOEXEC; the duplicate
// shares the open file description, so it stays non-blocking and keeps
// the socket open) and its *net.TCPConn is closed (which removes it from
// the runtime's epoll). A loop registers both duplicates once,
// edge-triggered, with EPOLLIN|EPOLLOUT|EPOLLRDHUP. The loop's epoll fd
// is itself non-blocking and wrapped in an *os.File, which registers it
// with the runtime's poller (os.NewFile does so for a non-blocking
// descriptor), so the loop goroutine waits with SyscallConn().Read: it
// parks in the runtime, holding no thread and no P, only while its epoll
// has nothing ready. The file's read deadline wakes it for the idle
// check; an eventfd in the epoll wakes it for commands (new pairs,
// closes, stop).
//
// Per direction, small messages are read into the loop's buffer and
// written straight to the peer; what the peer does not take waits in a
// pooled buffer of the direction, and the direction reads no more until
// EPOLLOUT says the peer drains (so memory stays bounded). A read that
// fills the buffer marks a bulk stream, which moves zero-copy with splice
// through a pipe until the source runs dry in less than a buffer. Pipes
// and buffers are held only while bytes wait in them, so an idle
// connection holds neither.
//
// # Concurrency
//
// A loop's state belongs to its goroutine, except the command queue
// (l4loop.mu) and the load counter. A pair belongs to its loop once
// handed over; only l4pair.Close (the listener closing) may be called
// from elsewhere, and it only queues a command.

// l4group is a Balancer's L4 loops, started with the first pair handed
// over and stopped by close.
type l4group struct {
	mu      sync.Mutex // guards all following fields
	loops   []*l4loop  // nil before start, after close, or when they could not start
	started bool
	closed  bool

	wg sync.WaitGroup // the loops' goroutines
}

// pick returns the least loaded loop, starting the loops if need be; nil
// when there are none (closed, or they could not start: the caller falls
// back to pipe).
func (g *l4group) pick(b *Balancer) *l4loop {
	g.mu.Lock()
	if !g.started && !g.closed {
		g.started = true
		if err := g.start(b); err != nil {
			b.log.Warn("lb: L4 event loop unavailable, copying with goroutines", "err", err)
		}
	}
	loops := g.loops
	g.mu.Unlock()
	var best *l4loop
	for _, lp := range loops {
		if lp.failed.Load() {
			continue
		}
		if best == nil || lp.load.Load() < best.load.Load() {
			best = lp
		}
	}
	return best
}

// start starts GOMAXPROCS loops (all or none). g.mu is held.
func (g *l4group) start(b *Balancer) error {
	n := runtime.GOMAXPROCS(0)
	loops := make([]*l4loop, 0, n)
	for range n {
		lp, err := newL4Loop(b.cfg.IdleTimeout, b.log)
		if err != nil {
			for _, lp := range loops {
				lp.release()
			}
			return err
		}
		loops = append(loops, lp)
	}
	for _, lp := range loops {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			lp.run()
		}()
	}
	g.loops = loops
	return nil
}

// close stops the loops, closing any pair they still serve, and waits
// for them. Balancer.Close calls it once every listener has closed.
func (g *l4group) close() {
	g.mu.Lock()
	g.closed = true
	loops := g.loops
	g.loops = nil
	g.mu.Unlock()
	for _, lp := range loops {
		lp.submit(l4cmd{op: l4Stop})
	}
	g.wg.Wait()
}

// handOver gives the established pair c (the client) and up (the
// endpoint) to an L4 loop, which then owns their closing, their
// untracking and ep's active counts. It reports false, with c and up
// untouched, when the loop cannot take them (the caller serves them with
// pipe).
func (l *listener) handOver(c, up *net.TCPConn, ep *endpoint) bool {
	lp := l.b.l4.pick(l.b)
	if lp == nil {
		return false
	}
	cfd, err := dupConn(c)
	if err != nil {
		return false
	}
	ufd, err := dupConn(up)
	if err != nil {
		_ = unix.Close(cfd)
		return false
	}
	p := &l4pair{lp: lp, l: l, ep: ep}
	p.a.fd, p.b.fd = cfd, ufd
	p.init()
	if !l.track(p) { // the listener is closing
		_ = unix.Close(cfd)
		_ = unix.Close(ufd)
		return false
	}
	l.wg.Add(1)    // done when the loop tears the pair down
	lp.load.Add(1) // now, so that a burst of pairs spreads over the loops
	if !lp.submit(l4cmd{op: l4Add, p: p}) {
		lp.load.Add(-1)
		l.untrack(p)
		l.wg.Done()
		_ = unix.Close(cfd)
		_ = unix.Close(ufd)
		return false
	}
	// The duplicates keep the sockets open: closing the Go side only
	// takes them out of the runtime's poller.
	_ = c.Close()
	_ = up.Close()
	l.untrack(c)
	l.untrack(up)
	return true
}

// dupConn duplicates c's descriptor (close-on-exec); the duplicate shares
// the open file description, so it is non-blocking as c's is.
func dupConn(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return fd, nil
}

// Loop tuning.
const (
	l4Events   = 256       // epoll events taken per wait
	l4Turn     = 512 << 10 // bytes a direction moves before the others get a turn
	l4PipeSize = 256 << 10 // splice pipe capacity
	l4Pipes    = 4         // idle pipes a loop keeps for reuse
)

// l4loop serves pairs from one goroutine over one epoll instance.
type l4loop struct {
	epfd   int
	file   *os.File        // epfd, registered with the runtime's poller
	rc     syscall.RawConn // file's
	evfd   int             // eventfd in epfd: wakes the loop for commands
	idle   time.Duration
	log    *slog.Logger
	load   atomic.Int64 // pairs handed over and not torn down yet, for pick
	failed atomic.Bool  // the loop ended on an error: pick passes it over
	epoch  time.Time    // of now

	mu    sync.Mutex // guards all following fields
	queue []l4cmd
	woken bool // an eventfd write is pending
	done  bool // stopped: no more commands

	// Owned by the loop goroutine.
	pollFn func(uintptr) bool // poll, one closure for good
	events []unix.EpollEvent
	sides  []*l4side // by descriptor
	pairs  []*l4pair
	again  []*l4dir  // directions that used up their turn with bytes left
	pipes  []*l4pipe // idle
	buf    []byte    // the read buffer of the copy path
	now    int64     // ns since epoch, taken at each epoll wait
	check  int64     // now of the next idle check
	cmds   bool      // the eventfd fired: take the commands after the batch
	stop   bool
	err    error // a failed epoll wait: the loop ends
}

type l4op int

const (
	l4Add l4op = iota
	l4Close
	l4Stop
)

type l4cmd struct {
	op l4op
	p  *l4pair
}

// l4pair is a client connection and its endpoint connection.
type l4pair struct {
	lp *l4loop
	l  *listener
	ep *endpoint

	closeReq atomic.Bool // Close was called

	// Owned by the loop.
	a, b   l4side // client, endpoint
	ab, ba l4dir  // a to b, b to a
	last   int64  // loop now of the last bytes moved either way
	idx    int    // in lp.pairs; -1 while not added
	dead   bool
}

// l4side is one socket of a pair.
type l4side struct {
	fd       int
	p        *l4pair
	out, in  *l4dir // reading this socket, writing it
	readable bool   // an EPOLLIN edge came and the socket was not drained since
	rdhup    bool   // the peer's FIN (or an error) was seen: read to the end
	err      bool   // EPOLLERR was seen (a reset, say)
	writable bool   // the last write did not fill the send buffer, or EPOLLOUT came since
}

// l4dir is one direction of a pair.
type l4dir struct {
	src, dst *l4side
	other    *l4dir

	pend     *[copyBufSize]byte // bytes dst did not take yet, pend[off:end]
	off, end int
	pipe     *l4pipe // while splicing; holds inPipe bytes
	inPipe   int
	bulk     bool // the last read filled the buffer: splice
	spliced  int  // bytes spliced in since the source last ran dry
	eof      bool // src ended; passed on once the waiting bytes are written
	done     bool // the half-close was passed on
	queued   bool // in lp.again
}

// l4pipe is a splice pipe.
type l4pipe struct{ r, w int }

func (p *l4pair) init() {
	p.idx = -1
	p.a.p, p.b.p = p, p
	p.ab = l4dir{src: &p.a, dst: &p.b, other: &p.ba}
	p.ba = l4dir{src: &p.b, dst: &p.a, other: &p.ab}
	p.a.out, p.a.in = &p.ab, &p.ba
	p.b.out, p.b.in = &p.ba, &p.ab
}

// Close asks the loop to close the pair (the listener is closing); it
// does not wait.
func (p *l4pair) Close() error {
	p.closeReq.Store(true)
	p.lp.submit(l4cmd{op: l4Close, p: p})
	return nil
}

func newL4Loop(idle time.Duration, log *slog.Logger) (*l4loop, error) {
	lp := &l4loop{epfd: -1, evfd: -1, idle: idle, log: log, epoch: time.Now()}
	ok := false
	defer func() {
		if !ok {
			lp.release()
		}
	}()
	var err error
	if lp.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile registers it with the runtime's
	// poller (see os.newFile: a descriptor passed to NewFile is pollable
	// only if it is non-blocking).
	if err = unix.SetNonblock(lp.epfd, true); err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	lp.file = os.NewFile(uintptr(lp.epfd), "lb-l4-epoll")
	// A file outside the runtime's poller has no deadlines.
	if err = lp.file.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("epoll descriptor not pollable by the runtime: %w", err)
	}
	if lp.rc, err = lp.file.SyscallConn(); err != nil {
		return nil, err
	}
	if lp.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(lp.evfd)}
	if err = unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, lp.evfd, &ev); err != nil {
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	lp.events = make([]unix.EpollEvent, l4Events)
	lp.buf = make([]byte, copyBufSize)
	lp.pollFn = lp.poll
	ok = true
	return lp, nil
}

// release closes the loop's descriptors.
func (lp *l4loop) release() {
	if lp.file != nil {
		_ = lp.file.Close()
	} else if lp.epfd >= 0 {
		_ = unix.Close(lp.epfd)
	}
	lp.file, lp.epfd = nil, -1
	if lp.evfd >= 0 {
		_ = unix.Close(lp.evfd)
		lp.evfd = -1
	}
	for _, pp := range lp.pipes {
		pp.close()
	}
	lp.pipes = nil
}

// submit queues a command and wakes the loop; it reports false when the
// loop has stopped.
func (lp *l4loop) submit(c l4cmd) bool {
	lp.mu.Lock()
	if lp.done {
		lp.mu.Unlock()
		return false
	}
	lp.queue = append(lp.queue, c)
	wake := !lp.woken
	lp.woken = true
	if c.op == l4Stop {
		lp.done = true
	}
	if wake {
		// Under mu: the loop closes evfd only after it has set done
		// under mu, so this write cannot land on a closed descriptor, or
		// on one the kernel has since reused for a connection.
		one := [8]byte{1} // any non-zero count wakes
		for {
			_, err := unix.Write(lp.evfd, one[:])
			if err != unix.EINTR {
				break // EAGAIN: the counter is full, the loop is woken anyway
			}
		}
	}
	lp.mu.Unlock()
	return true
}

// run serves the loop's pairs until stopped.
func (lp *l4loop) run() {
	tick := max(lp.idle/4, time.Millisecond)
	lp.now = lp.clock()
	lp.check = lp.now + int64(tick)
	_ = lp.file.SetReadDeadline(lp.epoch.Add(time.Duration(lp.check)))
	for !lp.stop && lp.err == nil {
		err := lp.rc.Read(lp.pollFn)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			lp.err = err
			break
		}
		if lp.clock() >= lp.check {
			// What is ready first: bytes that waited while the loop
			// was not running are not idleness.
			lp.poll(0)
			lp.now = lp.clock()
			lp.expire()
			lp.check = lp.now + int64(tick)
			_ = lp.file.SetReadDeadline(lp.epoch.Add(time.Duration(lp.check)))
		}
	}
	// Stopped (or broken: then closing its pairs is all it can do; new
	// pairs fall back to pipe).
	if lp.err != nil {
		lp.log.Error("lb: L4 event loop failed; closing its connections", "err", lp.err, "connections", len(lp.pairs))
	}
	lp.failed.Store(lp.err != nil)
	lp.mu.Lock()
	lp.done = true
	q := lp.queue
	lp.queue = nil
	lp.mu.Unlock()
	for _, c := range q {
		if c.op == l4Add {
			lp.add(c.p) // so that teardown finds it in pairs
		}
	}
	for len(lp.pairs) > 0 {
		lp.teardown(lp.pairs[len(lp.pairs)-1])
	}
	lp.release()
}

func (lp *l4loop) clock() int64 { return int64(time.Since(lp.epoch)) }

// poll is the RawConn.Read callback: it serves what epoll reports and
// reports false to park until the epoll descriptor is readable again.
// An edge that comes while it works makes the runtime's poller mark the
// descriptor ready, so parking then returns at once: nothing is missed.
func (lp *l4loop) poll(uintptr) bool {
	for {
		n, err := rawEpollWait(lp.epfd, lp.events)
		if err != nil && err != unix.EINTR {
			lp.err = os.NewSyscallError("epoll_wait", err)
			return true
		}
		lp.now = lp.clock()
		for i := range n {
			lp.event(lp.events[i])
		}
		if lp.cmds {
			// After the batch: a new pair may have a descriptor just
			// closed by a pair torn down in it.
			lp.cmds = false
			lp.commands()
		}
		lp.retry()
		if lp.stop || lp.now >= lp.check {
			return true
		}
		if n < len(lp.events) && len(lp.again) == 0 {
			return false // drained: park
		}
	}
}

func (lp *l4loop) event(ev unix.EpollEvent) {
	fd := int(ev.Fd)
	if fd == lp.evfd {
		lp.cmds = true
		return
	}
	if fd >= len(lp.sides) || lp.sides[fd] == nil {
		return // torn down earlier in this batch
	}
	s := lp.sides[fd]
	p := s.p
	m := ev.Events
	if m&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.readable = true
	}
	if m&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.rdhup = true // read until EOF or the error
	}
	if m&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.writable = true // a write will succeed or tell the error
	}
	if m&unix.EPOLLERR != 0 {
		s.err = true
	}
	lp.move(s.out)
	if !p.dead {
		lp.move(s.in)
	}
	if !p.dead && s.err && s.out.done {
		// Reset (or timed out) after its half-close: reading it tells
		// nothing more, and nothing can be written to it.
		lp.teardown(p)
	}
}

// commands takes the queued commands.
func (lp *l4loop) commands() {
	var b [8]byte
	_, _ = unix.Read(lp.evfd, b[:]) // reset the counter before taking the queue
	lp.mu.Lock()
	q := lp.queue
	lp.queue = nil
	lp.woken = false
	lp.mu.Unlock()
	for _, c := range q {
		switch c.op {
		case l4Add:
			lp.add(c.p)
		case l4Close:
			if c.p.idx >= 0 {
				lp.teardown(c.p)
			} // else not added yet: add sees closeReq
		case l4Stop:
			lp.stop = true
		}
	}
}

// add registers a handed-over pair.
func (lp *l4loop) add(p *l4pair) {
	if p.dead || p.idx >= 0 {
		return
	}
	p.idx = len(lp.pairs)
	lp.pairs = append(lp.pairs, p)
	p.last = lp.now
	for _, s := range []*l4side{&p.a, &p.b} {
		s.writable = true // connected; the first edges tell whether readable
		for s.fd >= len(lp.sides) {
			lp.sides = append(lp.sides, make([]*l4side, len(lp.sides)+64)...)
		}
		lp.sides[s.fd] = s
	}
	if p.closeReq.Load() {
		lp.teardown(p)
		return
	}
	// Registered once, edge-triggered: the first edges report the
	// sockets' current state (writable, maybe readable already).
	for _, s := range []*l4side{&p.a, &p.b} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd)}
		if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			lp.teardown(p)
			return
		}
	}
}

// teardown closes both sockets of p and releases what it holds.
func (lp *l4loop) teardown(p *l4pair) {
	if p.dead {
		return
	}
	p.dead = true
	if p.idx >= 0 {
		last := lp.pairs[len(lp.pairs)-1]
		lp.pairs[p.idx] = last
		last.idx = p.idx
		lp.pairs[len(lp.pairs)-1] = nil
		lp.pairs = lp.pairs[:len(lp.pairs)-1]
		p.idx = -1
		lp.load.Add(-1)
	}
	for _, s := range []*l4side{&p.a, &p.b} {
		if s.fd < len(lp.sides) && lp.sides[s.fd] == s {
			lp.sides[s.fd] = nil
			// Before close: a registration belongs to the open file
			// description, which another descriptor (a child between
			// fork and exec) might still hold.
			_ = unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
		}
		_ = unix.Close(s.fd)
		s.fd = -1
	}
	for _, d := range []*l4dir{&p.ab, &p.ba} {
		lp.dropPend(d)
		if d.pipe != nil {
			if d.inPipe > 0 {
				d.pipe.close()
			} else {
				lp.putPipe(d.pipe)
			}
			d.pipe, d.inPipe = nil, 0
		}
	}
	p.ep.active.Add(-1)
	p.ep.m.active.Dec()
	p.l.untrack(p)
	p.l.wg.Done()
}

// expire closes the pairs that moved no byte either way for idle.
func (lp *l4loop) expire() {
	for i := len(lp.pairs) - 1; i >= 0; i-- {
		if i < len(lp.pairs) && lp.now-lp.pairs[i].last >= int64(lp.idle) {
			lp.teardown(lp.pairs[i])
		}
	}
}

// retry gives the directions that used up their turn another one.
func (lp *l4loop) retry() {
	if len(lp.again) == 0 {
		return
	}
	again := lp.again
	lp.again = nil
	for _, d := range again {
		d.queued = false
		if !d.src.p.dead {
			lp.move(d)
		}
	}
}

// move moves what it can of d: the waiting bytes first, then new ones
// while the source has some and the destination takes them, and passes
// the half-close on after the last byte.
func (lp *l4loop) move(d *l4dir) {
	p := d.src.p
	moved := 0
	for !d.done {
		if d.end > d.off || d.inPipe > 0 {
			if !d.dst.writable || !lp.flush(d) {
				return // waits for EPOLLOUT (or torn down)
			}
			continue
		}
		if d.eof {
			_ = unix.Shutdown(d.dst.fd, unix.SHUT_WR) // as CloseWrite; an error shows on the other direction
			d.done = true
			if d.pipe != nil {
				lp.putPipe(d.pipe)
				d.pipe = nil
			}
			if d.other.done || d.src.err {
				lp.teardown(p) // both ended, or the source is reset too
			}
			return
		}
		if !d.src.readable {
			return
		}
		if moved >= l4Turn {
			if !d.queued {
				d.queued = true
				lp.again = append(lp.again, d)
			}
			return
		}
		if d.bulk && d.pipe == nil {
			if d.pipe = lp.getPipe(); d.pipe == nil {
				d.bulk = false // no pipe to be had: copy
			}
		}
		if d.pipe != nil {
			n, err := rawSplice(d.src.fd, d.pipe.w, l4PipeSize)
			switch {
			case n > 0:
				d.inPipe += int(n)
				d.spliced += int(n)
				moved += int(n)
				p.last = lp.now
			case err == nil:
				d.eof = true
			case err == unix.EAGAIN:
				// Dry (the pipe is empty, so it is the socket): give the
				// pipe back; a stream that brought less than a buffer
				// since it last ran dry is copied again.
				d.src.readable = false
				d.bulk = d.spliced >= copyBufSize
				d.spliced = 0
				lp.putPipe(d.pipe)
				d.pipe = nil
				return
			case err == unix.EINTR:
			default:
				lp.teardown(p) // reset
				return
			}
			continue
		}
		n, err := rawRead(d.src.fd, lp.buf)
		switch {
		case n > 0:
			moved += n
			p.last = lp.now
			if n == len(lp.buf) {
				d.bulk = true // maybe more behind: splice it
			} else if !d.src.rdhup {
				d.src.readable = false // drained; the next bytes raise an edge
			}
			if !lp.send(d, lp.buf[:n]) {
				return
			}
		case err == nil:
			d.eof = true
		case err == unix.EAGAIN:
			d.src.readable = false
			return
		case err == unix.EINTR:
		default:
			lp.teardown(p)
			return
		}
	}
}

// send writes b to d's destination and keeps what it does not take; it
// reports false when the pair was torn down.
func (lp *l4loop) send(d *l4dir, b []byte) bool {
	if d.dst.writable {
		n, err := writeFD(d.dst.fd, b)
		switch {
		case err == unix.EAGAIN:
			n = 0
		case err != nil:
			lp.teardown(d.src.p) // reset, or the other side is gone
			return false
		}
		if n == len(b) {
			return true
		}
		d.dst.writable = false // the send buffer is full: EPOLLOUT comes when it drains
		b = b[n:]
	}
	d.pend = copyBufs.Get().(*[copyBufSize]byte)
	d.off, d.end = 0, copy(d.pend[:], b)
	return true
}

// flush writes the waiting bytes of d; it reports whether they are all
// written (false: the destination is full, or the pair was torn down).
func (lp *l4loop) flush(d *l4dir) bool {
	for d.end > d.off {
		n, err := writeFD(d.dst.fd, d.pend[d.off:d.end])
		if err == unix.EAGAIN {
			d.dst.writable = false
			return false
		} else if err != nil {
			lp.teardown(d.src.p)
			return false
		}
		d.src.p.last = lp.now // bytes moved: not idle
		if d.off += n; d.off < d.end {
			d.dst.writable = false
			return false
		}
		lp.dropPend(d)
	}
	for d.inPipe > 0 {
		n, err := rawSplice(d.pipe.r, d.dst.fd, d.inPipe)
		switch {
		case n > 0:
			d.inPipe -= int(n)
			d.src.p.last = lp.now
		case err == unix.EAGAIN:
			d.dst.writable = false
			return false
		case err == unix.EINTR:
		default: // err, or 0 (nothing moved: the destination is gone)
			lp.teardown(d.src.p)
			return false
		}
	}
	return true
}

func (lp *l4loop) dropPend(d *l4dir) {
	if d.pend != nil {
		copyBufs.Put(d.pend)
		d.pend, d.off, d.end = nil, 0, 0
	}
}

// writeFD writes to a non-blocking socket, again on EINTR.
func writeFD(fd int, b []byte) (int, error) {
	for {
		n, err := rawWrite(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// The data path's system calls never block (non-blocking sockets and
// pipes, an epoll wait with no timeout), so they are made raw, without
// telling the scheduler. Through syscall.Syscall, the P is marked as in a
// system call; when the kernel deschedules the thread inside it for a
// moment (a busy machine), sysmon hands the P to another thread, and the
// loop must win one back: futex wake-ups and context switches that cost
// more than the call.

func rawRead(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawSplice moves up to n bytes from in to out (one of them a pipe).
func rawSplice(in, out, n int) (int, error) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(m), nil
}

// rawEpollWait takes the ready events without waiting.
func rawEpollWait(epfd int, ev []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(ev))), uintptr(len(ev)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// getPipe returns a pipe for splicing, nil when none can be made.
func (lp *l4loop) getPipe() *l4pipe {
	if n := len(lp.pipes); n > 0 {
		pp := lp.pipes[n-1]
		lp.pipes = lp.pipes[:n-1]
		return pp
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, l4PipeSize) // best effort
	return &l4pipe{r: fds[0], w: fds[1]}
}

// putPipe keeps an empty pipe for reuse, or closes it.
func (lp *l4loop) putPipe(pp *l4pipe) {
	if len(lp.pipes) < l4Pipes {
		lp.pipes = append(lp.pipes, pp)
		return
	}
	pp.close()
}

func (pp *l4pipe) close() {
	_ = unix.Close(pp.r)
	_ = unix.Close(pp.w)
}
