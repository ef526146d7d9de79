package lb

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawSock does the reads and writes of a fast-path L7 connection (client
// or endpoint) with raw system calls, waiting in Go's poller only when
// the socket is not ready: net.Conn's Read and Write less the runtime's
// system-call bookkeeping.
//
// Why: net.Conn enters every read and write as a blocking system call
// (entersyscall). While the P has goroutines to run, sysmon keeps
// polling every 20 us, and takes the P from a thread whose call outlasts
// a poll, waking another thread to run it. With GOMAXPROCS=1 on a busy
// machine (scripts/bench-lb.sh: generator, backend and agent on 2 cores)
// that is frequent: the kernel preempts the thread inside a loopback
// write, which wakes the reader. Each hand-off costs futex wake-ups and
// context switches, and the woken thread must itself wait for a CPU
// while no goroutine runs. Measured at 13.4k req/s (runtime/trace and
// /proc/PID/task/*/schedstat): the P was taken from a system call 1045
// times in 7 s and moved among 4 threads; sysmon used 0.6 s of CPU in
// 11 s; the agent's threads waited 7.5 s for a CPU in the kernel's run
// queue. With raw calls: 4 times and 2 threads, 27 ms, 4 s. These sockets are
// non-blocking, so the calls never block; when the kernel preempts one,
// no other thread could run the P's goroutines sooner. The L4 event
// loop does the same (see rawRead).
type rawSock struct {
	c  *net.TCPConn
	rc syscall.RawConn

	// The call in progress: what the callbacks read into and write from.
	rp, wp     []byte
	rn, wn     int
	rerr, werr error // the system call's error (not EAGAIN)
	rfn, wfn   func(uintptr) bool
}

// reset points s at c (nil: at nothing). Should c have no raw
// descriptor, s uses c's own Read and Write.
func (s *rawSock) reset(c *net.TCPConn) {
	s.c, s.rc = c, nil
	if c == nil {
		return
	}
	if rc, err := c.SyscallConn(); err == nil {
		s.rc = rc
	}
	if s.rfn == nil { // made once: s lives in a pooled or long-lived value
		s.rfn, s.wfn = s.readFD, s.writeFD
	}
}

// Read is net.Conn's Read: at most one read(2), io.EOF at the end.
func (s *rawSock) Read(p []byte) (int, error) {
	if s.rc == nil {
		return s.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.rp, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.rfn) // waits in the poller (with c's deadline) while EAGAIN
	n, serr := s.rn, s.rerr
	s.rp, s.rerr = nil, nil
	switch {
	case err != nil:
		return 0, err
	case serr != nil:
		return 0, s.opError("read", serr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write is net.Conn's Write: all of p, or an error.
func (s *rawSock) Write(p []byte) (int, error) {
	if s.rc == nil {
		return s.c.Write(p)
	}
	s.wp, s.wn, s.werr = p, 0, nil
	err := s.rc.Write(s.wfn)
	n, serr := s.wn, s.werr
	s.wp, s.werr = nil, nil
	switch {
	case err != nil:
		return n, err
	case serr != nil:
		return n, s.opError("write", serr)
	}
	return n, nil
}

func (s *rawSock) readFD(fd uintptr) bool {
	for {
		n, err := rawRead(int(fd), s.rp)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // park until readable
		}
		s.rn, s.rerr = n, err
		return true
	}
}

func (s *rawSock) writeFD(fd uintptr) bool {
	for s.wn < len(s.wp) {
		n, err := writeFD(int(fd), s.wp[s.wn:])
		switch {
		case err == unix.EAGAIN:
			return false // park until writable
		case err != nil:
			s.werr = err
			return true
		}
		s.wn += n
	}
	return true
}

// opError wraps a system call's error as net.Conn's methods do, so that
// errors.Is finds the errno (classify) and the message names the call.
func (s *rawSock) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: os.NewSyscallError(op, err)}
}
