package lb

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// nameServer answers every connection with its name and a newline.
func nameServer(name string) func(net.Conn) {
	return func(c net.Conn) { fmt.Fprintln(c, name) }
}

// askName connects to addr and returns the first line it gets.
func askName(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return strings.TrimSpace(line), nil
}

func TestL4SpreadsOverEndpoints(t *testing.T) {
	for _, policy := range []string{PolicyLeastRequest, PolicyRoundRobin} {
		t.Run(policy, func(t *testing.T) {
			var addrs []netip.AddrPort
			for i := range 3 {
				addrs = append(addrs, newTCPBackend(t, nameServer(fmt.Sprint("b", i))).addr)
			}
			b, ip := newBalancer(t, 9000, Config{})
			if p := b.Update([]Route{{Service: "web", Port: 9000, Policy: policy, Endpoints: endpoints(addrs...)}}); len(p) > 0 {
				t.Fatal(p)
			}
			const n = 300
			count := map[string]int{}
			for range n {
				name, err := askName(netip.AddrPortFrom(ip, 9000).String())
				if err != nil {
					t.Fatal(err)
				}
				count[name]++
			}
			// Sequential connections: every endpoint is idle at each pick,
			// so both policies spread evenly; allow 40% either way.
			for i := range 3 {
				got := count[fmt.Sprint("b", i)]
				if got < n/3*6/10 || got > n/3*14/10 {
					t.Errorf("backend b%d got %d of %d connections: %v", i, got, n, count)
				}
			}
		})
	}
}

func TestL4HalfCloseAndLargeTransfer(t *testing.T) {
	// The backend reads until the client's half-close, then answers with
	// the byte count and a checksum, then closes.
	be := newTCPBackend(t, func(c net.Conn) {
		var sum uint32
		n, err := io.Copy(writerFunc(func(p []byte) (int, error) {
			for _, x := range p {
				sum = sum*31 + uint32(x)
			}
			return len(p), nil
		}), c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d %d\n", n, sum)
	})
	b, ip := newBalancer(t, 9001, Config{})
	b.Update([]Route{{Service: "sink", Port: 9001, Endpoints: endpoints(be.addr)}})
	c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 9001).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB: several splice chunks
	var want uint32
	for _, x := range payload {
		want = want*31 + uint32(x)
	}
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if exp := fmt.Sprintf("%d %d\n", len(payload), want); string(got) != exp {
		t.Fatalf("answer after half-close = %q, want %q", got, exp)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestL4ProxyProtocolV2(t *testing.T) {
	type header struct {
		src, dst netip.AddrPort
		err      error
	}
	got := make(chan header, 1)
	be := newTCPBackend(t, func(c net.Conn) {
		h, err := readProxyV2(c)
		got <- header{h[0], h[1], err}
		fmt.Fprintln(c, "ok")
	})
	b, ip := newBalancer(t, 9002, Config{})
	b.Update([]Route{{Service: "pp", Port: 9002, ProxyProtocol: true, Endpoints: endpoints(be.addr)}})
	c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 9002).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ok\n" {
		t.Fatalf("answer %q, %v", line, err)
	}
	h := <-got
	if h.err != nil {
		t.Fatal(h.err)
	}
	if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); h.src != want {
		t.Errorf("PROXY source = %v, want the client %v", h.src, want)
	}
	if want := netip.AddrPortFrom(ip, 9002); h.dst != want {
		t.Errorf("PROXY destination = %v, want the listener %v", h.dst, want)
	}
}

// readProxyV2 parses a PROXY v2 TCP header as a backend would.
func readProxyV2(r io.Reader) ([2]netip.AddrPort, error) {
	var out [2]netip.AddrPort
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return out, err
	}
	if !bytes.Equal(fixed[:12], proxySignature[:]) || fixed[12] != 0x21 {
		return out, fmt.Errorf("bad signature or command % x", fixed[:13])
	}
	body := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return out, err
	}
	switch fixed[13] {
	case 0x11:
		if len(body) < 12 {
			return out, errors.New("short v4 body")
		}
		out[0] = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:]))
		out[1] = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:]))
	case 0x21:
		if len(body) < 36 {
			return out, errors.New("short v6 body")
		}
		out[0] = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])), binary.BigEndian.Uint16(body[32:]))
		out[1] = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])), binary.BigEndian.Uint16(body[34:]))
	default:
		return out, fmt.Errorf("family %#x", fixed[13])
	}
	return out, nil
}

func TestL4RetriesRefusedConnectAndEjects(t *testing.T) {
	reg := prometheus.NewRegistry()
	live := newTCPBackend(t, nameServer("live"))
	dead := closedAddr(t)
	b, ip := newBalancer(t, 9003, Config{Registerer: reg})
	b.Update([]Route{{Service: "web", Port: 9003, Policy: PolicyRoundRobin, Endpoints: endpoints(dead, live.addr)}})
	for i := range 50 {
		name, err := askName(netip.AddrPortFrom(ip, 9003).String())
		if err != nil || name != "live" {
			t.Fatalf("connection %d: %q, %v; want every new connection served by the live endpoint", i, name, err)
		}
	}
	if n := testutil.ToFloat64(b.met.ejections.WithLabelValues("web", "9003", dead.String())); n < 1 {
		t.Errorf("ejections of the dead endpoint = %v, want at least 1", n)
	}
	if n := testutil.ToFloat64(b.met.retries.WithLabelValues("web", "9003")); n < 1 {
		t.Errorf("retries = %v, want at least 1", n)
	}
	// Ejected: most connections no longer try it at all.
	if n := testutil.ToFloat64(b.met.errs.WithLabelValues("web", "9003", dead.String(), "refused")); n > 10 {
		t.Errorf("refused connects to the dead endpoint = %v over 50 connections, want it ejected after the first", n)
	}
}

// An L4 port whose service has no endpoint refuses connections rather
// than accepting and resetting them.
func TestL4NoEndpointRefuses(t *testing.T) {
	b, ip := newBalancer(t, 9004, Config{})
	b.Update([]Route{{Service: "empty", Port: 9004}})
	if c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 9004).String()); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("connect to a service without endpoints: %v, want refused", err)
	}
	if n := testutil.ToFloat64(b.met.errs.WithLabelValues("empty", "9004", "", "no_endpoint")); n != 0 {
		t.Errorf("no_endpoint errors = %v, want 0: nothing was accepted", n)
	}
}

// An L4 port whose every endpoint is ejected (its connects failed from
// this node) refuses new connections, as one without endpoints does, so
// that a client with several node addresses goes to another node; when
// the first ejection ends it accepts again and tries the endpoints, and
// an update that brings a new endpoint opens it at once.
func TestL4RefusesWhileEveryEndpointIsEjected(t *testing.T) {
	reg := prometheus.NewRegistry()
	dead := closedAddr(t)
	b, ip := newBalancer(t, 9012, Config{Registerer: reg})
	addr := netip.AddrPortFrom(ip, 9012).String()
	b.Update([]Route{{Service: "web", Port: 9012, Endpoints: endpoints(dead)}})
	// The first connection is accepted; its connect is refused, the
	// endpoint ejected, and the client reset.
	if name, err := askName(addr); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("first connection: %q, %v; want accepted, then closed without an answer", name, err)
	}
	// Every endpoint ejected: the port refuses until the ejection ends.
	if _, err := askName(addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connection while every endpoint is ejected: %v, want refused", err)
	}
	if n := testutil.ToFloat64(b.met.ejections.WithLabelValues("web", "9012", dead.String())); n != 1 {
		t.Errorf("ejections = %v, want 1", n)
	}
	// The endpoint comes back: once its ejection (1 s) ends, the port
	// accepts again and the connection is served.
	ln, err := net.Listen("tcp", dead.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			nameServer("back")(c)
			c.Close()
		}
	}()
	poll(t, 10*time.Second, "the port to accept again and serve", func() bool {
		name, err := askName(addr)
		if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("after the endpoint came back: %v, want refused or served", err)
		}
		return name == "back"
	})

	// Ejected again, then a new endpoint arrives: accepting at once.
	ln.Close()
	poll(t, 10*time.Second, "the port to refuse again", func() bool {
		_, err := askName(addr)
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	live := newTCPBackend(t, nameServer("live"))
	b.Update([]Route{{Service: "web", Port: 9012, Endpoints: endpoints(dead, live.addr)}})
	if name, err := askName(addr); err != nil || name != "live" {
		t.Fatalf("with a new endpoint: %q, %v; want served by it at once", name, err)
	}
}

// A connection that tries every endpoint and reaches none (their
// connects time out, as from a node cut off by a partition; too few in a
// row to eject them) cuts the port off: new connections are refused for
// a while, so that a client with several node addresses goes to another
// node, and an update that brings a new endpoint opens it at once.
func TestL4CutOffWhenNoEndpointIsReachable(t *testing.T) {
	reg := prometheus.NewRegistry()
	hole1, hole2 := blackholeAddr(t), blackholeAddr(t)
	b, ip := newBalancer(t, 9013, Config{Registerer: reg, DialTimeout: 100 * time.Millisecond})
	addr := netip.AddrPortFrom(ip, 9013).String()
	b.Update([]Route{{Service: "web", Port: 9013, Endpoints: endpoints(hole1, hole2)}})
	if name, err := askName(addr); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("first connection: %q, %v; want accepted, then closed without an answer", name, err)
	}
	for _, hole := range []netip.AddrPort{hole1, hole2} {
		if n := testutil.ToFloat64(b.met.errs.WithLabelValues("web", "9013", hole.String(), "timeout")); n != 1 {
			t.Errorf("connect timeouts to %s = %v, want 1", hole, n)
		}
		if n := testutil.ToFloat64(b.met.ejections.WithLabelValues("web", "9013", hole.String())); n != 0 {
			t.Errorf("ejections of %s = %v, want 0 (one timeout does not eject)", hole, n)
		}
	}
	if _, err := askName(addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connection after every endpoint timed out: %v, want refused", err)
	}
	live := newTCPBackend(t, nameServer("live"))
	b.Update([]Route{{Service: "web", Port: 9013, Policy: PolicyRoundRobin, Endpoints: endpoints(hole1, hole2, live.addr)}})
	for i := range 3 {
		if name, err := askName(addr); err != nil || name != "live" {
			t.Fatalf("connection %d with a reachable endpoint: %q, %v; want served by it", i, name, err)
		}
	}
}

func TestL4IdleTimeout(t *testing.T) {
	echo := newTCPBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	b, ip := newBalancer(t, 9005, Config{IdleTimeout: time.Second})
	b.Update([]Route{{Service: "echo", Port: 9005, Endpoints: endpoints(echo.addr)}})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 9005).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// A busy connection (a byte every 100 ms for 3 s, three idle
	// timeouts) stays open.
	busy := dial()
	buf := make([]byte, 1)
	deadline := time.Now().Add(3 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		<-tick.C
		if _, err := busy.Write([]byte{'x'}); err != nil {
			t.Fatalf("busy connection: write: %v", err)
		}
		_ = busy.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(busy, buf); err != nil {
			t.Fatalf("busy connection closed: %v", err)
		}
	}
	// An idle one is closed: the read ends with EOF within the deadline.
	idle := dial()
	if _, err := idle.Write([]byte{'y'}); err != nil {
		t.Fatal(err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(idle, buf); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := idle.Read(buf)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read = %v, want EOF from the idle timeout", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("idle connection closed after %v, before the idle timeout", d)
	}
}

// TestL4KilledBackendUnderLoadNoFailedConnects kills one of three
// backends under load, before anything tells the balancer. A connection
// that the dead backend had already taken (accepted, or waiting in its
// accept queue) is cut, as with any L4 proxy; every connection opened
// after the backend is gone must be served by the others (the refused
// connect is retried on another endpoint and the dead one is ejected).
func TestL4KilledBackendUnderLoadNoFailedConnects(t *testing.T) {
	var backends []*tcpBackend
	var addrs []netip.AddrPort
	for i := range 3 {
		be := newTCPBackend(t, nameServer(fmt.Sprint("b", i)))
		backends = append(backends, be)
		addrs = append(addrs, be.addr)
	}
	b, ip := newBalancer(t, 9006, Config{})
	b.Update([]Route{{Service: "web", Port: 9006, Endpoints: endpoints(addrs...)}})
	var ok, okAfter, failed, cut atomic.Int64
	var dead atomic.Bool
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				after := dead.Load() // the backend was gone before this dial
				_, err := askName(netip.AddrPortFrom(ip, 9006).String())
				switch {
				case err == nil:
					ok.Add(1)
					if after {
						okAfter.Add(1)
					}
				case after:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				default:
					cut.Add(1)
				}
			}
		}()
	}
	poll(t, 10*time.Second, "200 connections", func() bool { return ok.Load() >= 200 })
	backends[1].kill() // dies under load; the agent has not noticed yet
	dead.Store(true)
	poll(t, 10*time.Second, "500 connections after the kill", func() bool { return okAfter.Load() >= 500 })
	close(stop)
	wg.Wait()
	t.Logf("%d connections served, %d in flight to the dying backend cut", ok.Load(), cut.Load())
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d connections opened after the kill failed (first: %v)", n, n+okAfter.Load(), firstErr.Load())
	}
}

func TestListenersFollowUpdates(t *testing.T) {
	be := newTCPBackend(t, nameServer("x"))
	b, ip := newBalancer(t, 9007, Config{})
	addr := netip.AddrPortFrom(ip, 9007).String()
	if p := b.Update([]Route{{Service: "a", Port: 9007, Endpoints: endpoints(be.addr)}}); len(p) != 0 {
		t.Fatal(p)
	}
	if name, err := askName(addr); err != nil || name != "x" {
		t.Fatalf("served: %q, %v", name, err)
	}
	// Scaled to zero: the port stays, without endpoints, and refuses
	// connections (a client with other node addresses tries those).
	b.Update([]Route{{Service: "a", Port: 9007}})
	if _, err := askName(addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a service scaled to 0: %v, want the connection refused", err)
	}
	if got := b.Ports(); len(got) != 1 || got[0] != 9007 {
		t.Fatalf("ports after scale to 0 = %v, want [9007]", got)
	}
	if other, err := net.Listen("tcp", addr); err == nil {
		other.Close()
		t.Fatal("another program could take the port of a service scaled to 0")
	}
	// Scaled up again: served on the same port.
	b.Update([]Route{{Service: "a", Port: 9007, Endpoints: endpoints(be.addr)}})
	if name, err := askName(addr); err != nil || name != "x" {
		t.Fatalf("served after scaling up again: %q, %v", name, err)
	}
	b.Update([]Route{{Service: "a", Port: 9007}})
	// Deleted: the port closes.
	b.Update(nil)
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("the listener of a deleted service still accepts")
	}
	if got := b.Ports(); len(got) != 0 {
		t.Fatalf("ports after delete = %v", got)
	}
	// Two services on one port: the one already served keeps it.
	b.Update([]Route{{Service: "a", Port: 9007, Endpoints: endpoints(be.addr)}})
	p := b.Update([]Route{{Service: "b", Port: 9007}, {Service: "a", Port: 9007, Endpoints: endpoints(be.addr)}})
	if len(p) != 1 || p[0].Service != "b" || !errors.Is(p[0].Err, ErrPortTaken) {
		t.Fatalf("problems = %v, want service b's port taken", p)
	}
	if name, err := askName(addr); err != nil || name != "x" {
		t.Fatalf("service a lost its port to a clash: %q, %v", name, err)
	}
	// A port another process holds is a problem, not a crash, and is
	// taken once free.
	other, err := net.Listen("tcp", netip.AddrPortFrom(ip, 9008).String())
	if err != nil {
		t.Fatal(err)
	}
	routes := []Route{{Service: "a", Port: 9007, Endpoints: endpoints(be.addr)}, {Service: "c", Port: 9008, Endpoints: endpoints(be.addr)}}
	p = b.Update(routes)
	if len(p) != 1 || p[0].Service != "c" || !strings.Contains(p[0].Error(), "address already in use") {
		t.Fatalf("problems = %v, want service c: address already in use", p)
	}
	if len(b.Problems()) != 1 {
		t.Errorf("Problems() = %v", b.Problems())
	}
	other.Close()
	if p := b.Update(routes); len(p) != 0 {
		t.Fatalf("after the port was freed: %v", p)
	}
	if name, err := askName(netip.AddrPortFrom(ip, 9008).String()); err != nil || name != "x" {
		t.Fatalf("service c: %q, %v", name, err)
	}
}

// A connection established before its service loses every endpoint keeps
// working; new ones are refused until an endpoint is back.
func TestL4RefusesWithoutEndpointsKeepsConnections(t *testing.T) {
	be := newTCPBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	b, ip := newBalancer(t, 9011, Config{})
	addr := netip.AddrPortFrom(ip, 9011).String()
	b.Update([]Route{{Service: "echo", Port: 9011, Endpoints: endpoints(be.addr)}})
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	echo := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			t.Fatal(err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != msg+"\n" {
			t.Fatalf("echo of %q: %q, %v", msg, line, err)
		}
	}
	echo("before")
	b.Update([]Route{{Service: "echo", Port: 9011}})
	if _, err := net.DialTimeout("tcp", addr, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("new connection without endpoints: %v, want refused", err)
	}
	echo("during")
	b.Update([]Route{{Service: "echo", Port: 9011, Endpoints: endpoints(be.addr)}})
	c2, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("new connection with the endpoint back: %v", err)
	}
	c2.Close()
	echo("after")
}

// Transfers of every size around the copy buffer's (small messages are
// copied, a read that fills the buffer switches the direction to splice)
// arrive intact both ways, and the client's half-close is passed on after
// the last byte.
func TestL4TransferSizes(t *testing.T) {
	echo := newTCPBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	b, ip := newBalancer(t, 9012, Config{})
	b.Update([]Route{{Service: "echo", Port: 9012, Endpoints: endpoints(echo.addr)}})
	for _, size := range []int{1, 100, copyBufSize - 1, copyBufSize, copyBufSize + 1, 3*copyBufSize + 7, copyChunk + 1, 3 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 9012).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i*7 + i>>8)
			}
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(payload)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c) // EOF: the half-close went through and back
			if err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("echoed %d bytes, want the %d sent back unchanged", len(got), len(payload))
			}
		})
	}
}

// One connection alternates small exchanges and bulk transfers, so that
// each direction switches between copying and splicing and back.
func TestL4SmallAndBulkOnOneConnection(t *testing.T) {
	echo := newTCPBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	// A short idle timeout: pipe's clock checks, which end a splice
	// stretch, come every 250 ms. (The L4 loop ends one when the source
	// runs dry.) Shorter, the connection was closed as idle when the
	// test's own goroutines did not run for that long on a loaded
	// machine.
	b, ip := newBalancer(t, 9013, Config{IdleTimeout: time.Second})
	b.Update([]Route{{Service: "echo", Port: 9013, Endpoints: endpoints(echo.addr)}})
	c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 9013).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	exchange := func(msg []byte) {
		t.Helper()
		werr := make(chan error, 1)
		go func() { _, err := c.Write(msg); werr <- err }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes differs", len(msg))
		}
	}
	bulk := bytes.Repeat([]byte("bulk data "), 100<<10) // 1 MB
	for round := range 3 {
		for i := range 20 {
			exchange([]byte(fmt.Sprintf("small %d %d\n", round, i)))
		}
		exchange(bulk)
		// Past a clock check: the splice stretch ends and small messages
		// are copied again (observable only as correct echoes).
		start := time.Now()
		for time.Since(start) < 300*time.Millisecond {
			exchange([]byte("tick\n"))
		}
	}
}
