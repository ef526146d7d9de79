package lb

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// loopback returns a random 127.a.b.c address with port free, so tests
// (and concurrent test processes) can use fixed published ports.
func loopback(t testing.TB, port int) netip.Addr {
	t.Helper()
	for range 100 {
		a := netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(1 + rand.IntN(250)), byte(2 + rand.IntN(250))})
		ln, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
		if err != nil {
			continue
		}
		_ = ln.Close()
		return a
	}
	t.Fatal("no free loopback address")
	return netip.Addr{}
}

// tcpBackend is a TCP server on a random loopback address.
type tcpBackend struct {
	ln    net.Listener
	addr  netip.AddrPort
	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newTCPBackend(t testing.TB, handle func(net.Conn)) *tcpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(loopback(t, 0), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBackend{ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort(), conns: map[net.Conn]bool{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = true
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() {
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(b.kill)
	return b
}

// kill closes the listener and every connection, as a dying backend.
func (b *tcpBackend) kill() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// httpBackend is an HTTP server on a random loopback address.
type httpBackend struct {
	srv  *http.Server
	addr netip.AddrPort
	done chan struct{}
}

func newHTTPBackend(t testing.TB, h http.Handler) *httpBackend {
	t.Helper()
	return serveHTTPBackend(t, &http.Server{Handler: h})
}

// serveHTTPBackend serves srv on a random loopback address.
func serveHTTPBackend(t testing.TB, srv *http.Server) *httpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(loopback(t, 0), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	b := &httpBackend{srv: srv, addr: ln.Addr().(*net.TCPAddr).AddrPort(), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	}()
	t.Cleanup(b.kill)
	return b
}

// kill closes the server and its connections at once.
func (b *httpBackend) kill() {
	_ = b.srv.Close()
	<-b.done
}

// newBalancer returns a Balancer bound to a fresh loopback address where
// port is free, closed at the end of the test.
func newBalancer(t testing.TB, port int, cfg Config) (*Balancer, netip.Addr) {
	t.Helper()
	cfg.Bind = loopback(t, port)
	b := New(cfg)
	t.Cleanup(func() { _ = b.Close() })
	return b, cfg.Bind
}

// endpoints makes Endpoints of addresses, slots in order.
func endpoints(addrs ...netip.AddrPort) []Endpoint {
	out := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = Endpoint{Addr: a, Node: "n" + string(rune('a'+i)), Slot: i}
	}
	return out
}

// poll calls cond until it returns true or the deadline passes.
func poll(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(loopback(t, 0), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().(*net.TCPAddr).AddrPort()
	_ = ln.Close()
	return a
}

// blackholeAddr returns the address of a socket that listens but never
// accepts, its accept queue full: the kernel drops further SYNs, so a
// connect to it times out, as to a node cut off by a partition.
func blackholeAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	ip := loopback(t, 0)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ip.As4()}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(ip, uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue: connects complete until it is full, then time out.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s still accepts connections into its queue", addr)
	return addr
}
