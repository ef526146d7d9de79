package lb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// l4Pairs returns how many pairs the balancer's L4 loops serve, or -1
// when it has no loop.
func l4Pairs(b *Balancer) int64 {
	b.l4.mu.Lock()
	loops := b.l4.loops
	b.l4.mu.Unlock()
	if loops == nil {
		return -1
	}
	var n int64
	for _, lp := range loops {
		n += lp.load.Load()
	}
	return n
}

// l4Route makes a balancer with an L4 route on port to addr.
func l4Route(t *testing.T, port int, cfg Config, addr netip.AddrPort) (*Balancer, string) {
	t.Helper()
	b, ip := newBalancer(t, port, cfg)
	if p := b.Update([]Route{{Service: "svc", Port: port, Endpoints: endpoints(addr)}}); len(p) > 0 {
		t.Fatal(p)
	}
	return b, netip.AddrPortFrom(ip, uint16(port)).String()
}

func dialT(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// Many connections at once, each echoing messages of random sizes, some
// far larger than the copy buffer (spliced), arrive byte for byte, and
// every pair is served by a loop and torn down after its half-closes.
func TestL4LoopManyEchoes(t *testing.T) {
	echo := newTCPBackend(t, func(c net.Conn) {
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
	})
	reg := prometheus.NewRegistry()
	b, addr := l4Route(t, 9100, Config{Registerer: reg}, echo.addr)
	const conns = 40
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	var opened, failed atomic.Int64
	release := make(chan struct{})
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := func() error {
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				var sent bytes.Buffer
				for range 8 {
					var size int
					switch rng.IntN(4) {
					case 0:
						size = 1 + rng.IntN(64)
					case 1:
						size = 1 + rng.IntN(copyBufSize)
					case 2:
						size = copyBufSize + rng.IntN(4*copyBufSize)
					default:
						size = 1 + rng.IntN(512<<10)
					}
					msg := make([]byte, size)
					_, _ = rand.NewChaCha8([32]byte{byte(i), byte(size), byte(size >> 8), byte(size >> 16)}).Read(msg)
					sent.Write(msg)
					werr := make(chan error, 1)
					go func() { _, err := c.Write(msg); werr <- err }()
					got := make([]byte, size)
					if _, err := io.ReadFull(c, got); err != nil {
						return fmt.Errorf("conn %d: echo of %d bytes: %w", i, size, err)
					}
					if err := <-werr; err != nil {
						return err
					}
					if !bytes.Equal(got, msg) {
						return fmt.Errorf("conn %d: echo of %d bytes differs", i, size)
					}
				}
				opened.Add(1)
				<-release // all connections open at once: the loops have them all
				if err := c.(*net.TCPConn).CloseWrite(); err != nil {
					return err
				}
				if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
					return fmt.Errorf("conn %d: after the half-close: %d bytes, %v; want EOF", i, len(rest), err)
				}
				return nil
			}()
			if err != nil {
				failed.Add(1)
			}
			errs <- err
		}()
	}
	poll(t, 60*time.Second, "every connection to finish its exchanges", func() bool { return opened.Load()+failed.Load() == conns })
	if n := l4Pairs(b); failed.Load() == 0 && n != conns {
		t.Errorf("the loops serve %d pairs, want all %d connections", n, conns)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	poll(t, 10*time.Second, "the pairs to be torn down", func() bool { return l4Pairs(b) == 0 })
	if n := testutil.ToFloat64(b.met.active.WithLabelValues("svc", "9100", echo.addr.String())); n != 0 {
		t.Errorf("active connections gauge = %v after every connection closed, want 0", n)
	}
}

// The client half-closes first and still gets the endpoint's answer;
// the endpoint half-closes first and still gets the client's bytes.
func TestL4LoopHalfClose(t *testing.T) {
	t.Run("client first", func(t *testing.T) {
		be := newTCPBackend(t, func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			fmt.Fprintf(c, "got %d\n", n)
		})
		b, addr := l4Route(t, 9101, Config{}, be.addr)
		c := dialT(t, addr)
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "got 5\n" {
			t.Fatalf("answer after the client's half-close: %q, %v", got, err)
		}
		poll(t, 10*time.Second, "the pair to be torn down", func() bool { return l4Pairs(b) == 0 })
	})
	t.Run("endpoint first", func(t *testing.T) {
		got := make(chan string, 1)
		be := newTCPBackend(t, func(c net.Conn) {
			_, _ = io.WriteString(c, "banner\n")
			_ = c.(*net.TCPConn).CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(b)
		})
		b, addr := l4Route(t, 9102, Config{}, be.addr)
		c := dialT(t, addr)
		banner, err := io.ReadAll(c) // EOF: the endpoint's half-close went through
		if err != nil || string(banner) != "banner\n" {
			t.Fatalf("from the endpoint: %q, %v; want the banner then EOF", banner, err)
		}
		// The other direction still works after the half-close.
		for i := range 5 {
			if _, err := fmt.Fprintf(c, "line %d\n", i); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if s := <-got; s != "line 0\nline 1\nline 2\nline 3\nline 4\n" {
			t.Fatalf("the endpoint got %q after its half-close", s)
		}
		poll(t, 10*time.Second, "the pair to be torn down", func() bool { return l4Pairs(b) == 0 })
	})
}

// A FIN right behind data (in the same segment, or the next) raises no
// edge of its own: the client must still get every byte, then EOF.
func TestL4LoopFINBehindData(t *testing.T) {
	for _, mode := range []string{"close", "shutdown", "cork"} {
		t.Run(mode, func(t *testing.T) {
			var size atomic.Int64
			be := newTCPBackend(t, func(c net.Conn) {
				tc := c.(*net.TCPConn)
				n := int(size.Load())
				msg := bytes.Repeat([]byte{'x'}, n)
				if mode == "cork" {
					rc, _ := tc.SyscallConn()
					_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) })
				}
				_, _ = tc.Write(msg)
				if mode == "shutdown" {
					_ = tc.CloseWrite()
					_, _ = io.Copy(io.Discard, tc)
				}
				// close (and cork): the deferred Close sends the FIN,
				// with a corked write in the same segment.
			})
			b, addr := l4Route(t, 9103, Config{}, be.addr)
			for i, n := range []int{1, 10, 100, 1000, copyBufSize - 1, copyBufSize, copyBufSize + 1, 100000} {
				for range 10 {
					size.Store(int64(n))
					c := dialT(t, addr)
					got, err := io.ReadAll(c)
					if err != nil || len(got) != n {
						t.Fatalf("size %d (%d): got %d bytes, %v; want all then EOF", n, i, len(got), err)
					}
					c.Close()
				}
			}
			poll(t, 10*time.Second, "the pairs to be torn down", func() bool { return l4Pairs(b) == 0 })
		})
	}
}

// A reset on either side tears down both, and the counts go back.
func TestL4LoopResets(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		ended := make(chan error, 1)
		be := newTCPBackend(t, func(c net.Conn) {
			_, _ = io.WriteString(c, "hi\n")
			_, err := io.Copy(io.Discard, c)
			ended <- err
		})
		reg := prometheus.NewRegistry()
		b, addr := l4Route(t, 9104, Config{Registerer: reg}, be.addr)
		c := dialT(t, addr)
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hi\n" {
			t.Fatal(line, err)
		}
		_ = c.SetLinger(0)
		c.Close() // RST
		select {
		case <-ended: // EOF or reset: closed either way
		case <-time.After(10 * time.Second):
			t.Fatal("the endpoint's side stayed open after the client's reset")
		}
		poll(t, 10*time.Second, "the pair to be torn down", func() bool { return l4Pairs(b) == 0 })
		poll(t, 10*time.Second, "the active gauge back to 0", func() bool {
			return testutil.ToFloat64(b.met.active.WithLabelValues("svc", "9104", be.addr.String())) == 0
		})
	})
	t.Run("endpoint", func(t *testing.T) {
		be := newTCPBackend(t, func(c net.Conn) {
			_, _ = io.WriteString(c, "hi\n")
			buf := make([]byte, 5)
			_, _ = io.ReadFull(c, buf)
			_ = c.(*net.TCPConn).SetLinger(0) // the deferred Close resets
		})
		b, addr := l4Route(t, 9105, Config{}, be.addr)
		c := dialT(t, addr)
		r := bufio.NewReader(c)
		if line, err := r.ReadString('\n'); err != nil || line != "hi\n" {
			t.Fatal(line, err)
		}
		if _, err := c.Write([]byte("12345")); err != nil {
			t.Fatal(err)
		}
		// The client's side is closed: EOF (or a reset when bytes were
		// still unread there).
		_, err := r.ReadByte()
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read after the endpoint's reset: %v, want EOF or reset", err)
		}
		poll(t, 10*time.Second, "the pair to be torn down", func() bool { return l4Pairs(b) == 0 })
	})
	t.Run("half-closed client", func(t *testing.T) {
		// The client half-closes, then resets while the endpoint has
		// not answered: the pair must not wait for the endpoint.
		hold := make(chan struct{})
		be := newTCPBackend(t, func(c net.Conn) {
			_, _ = io.Copy(io.Discard, c)
			<-hold // keeps the connection open, half-closed
		})
		t.Cleanup(func() { close(hold) })
		b, addr := l4Route(t, 9106, Config{}, be.addr)
		c := dialT(t, addr)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		_ = c.CloseWrite()
		poll(t, 10*time.Second, "the pair to be served", func() bool { return l4Pairs(b) == 1 })
		_ = c.SetLinger(0)
		c.Close()
		poll(t, 10*time.Second, "the pair to be torn down", func() bool { return l4Pairs(b) == 0 })
	})
}

// A client that does not read: the endpoint's writes stall once the
// buffers on the way are full (the loop holds at most a buffer or a pipe
// per direction, so the backlog is bounded by the sockets' buffers), and
// once the client reads, every byte arrives in order.
func TestL4LoopSlowReader(t *testing.T) {
	// The backlog: the client's receive buffer, the endpoint's send
	// buffer and the balancer's two sockets' buffers, plus one pipe.
	bound := 2*sysctlMax(t, "/proc/sys/net/ipv4/tcp_rmem") + 2*sysctlMax(t, "/proc/sys/net/ipv4/tcp_wmem") + l4PipeSize + copyBufSize
	total := int64(bound + 16<<20)
	// Byte k of the stream is k % 251: pattern[k%251:] starts a window.
	pattern := make([]byte, 251+1<<20)
	for i := range pattern {
		pattern[i] = byte(i % 251)
	}
	var written atomic.Int64
	be := newTCPBackend(t, func(c net.Conn) {
		var off int64
		for off < total {
			n, err := c.Write(pattern[off%251 : off%251+min(64<<10, total-off)])
			off += int64(n)
			written.Store(off)
			if err != nil {
				return
			}
		}
	})
	_, addr := l4Route(t, 9107, Config{}, be.addr)
	c := dialT(t, addr)
	_ = c.SetReadBuffer(64 << 10)
	_ = c.SetDeadline(time.Now().Add(120 * time.Second))
	// Wait until the endpoint's writes stall: no progress across
	// consecutive polls.
	var last int64 = -1
	still := 0
	poll(t, 60*time.Second, "the endpoint's writes to stall", func() bool {
		w := written.Load()
		if w == last && w > 0 {
			still++
		} else {
			still = 0
		}
		last = w
		return still >= 40 // 200 ms without a byte
	})
	if last >= total || last > int64(bound) {
		t.Fatalf("the endpoint wrote %d bytes to a client that reads nothing, want it stalled within %d", last, bound)
	}
	t.Logf("stalled after %d bytes (bound %d)", last, bound)
	buf := make([]byte, 1<<20)
	var off int64
	for off < total {
		n, err := c.Read(buf)
		if !bytes.Equal(buf[:n], pattern[off%251:off%251+int64(n)]) {
			t.Fatalf("bytes %d to %d differ from what the endpoint sent", off, off+int64(n))
		}
		off += int64(n)
		if err != nil {
			t.Fatalf("after %d bytes: %v", off, err)
		}
	}
}

// sysctlMax returns the last field of a tcp_rmem-style sysctl.
func sysctlMax(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skip(err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Idle pairs are closed after the idle timeout, half-closed ones too;
// one that keeps moving bytes is not.
func TestL4LoopIdleTimeout(t *testing.T) {
	hold := make(chan struct{})
	echo := newTCPBackend(t, func(c net.Conn) {
		_, _ = io.Copy(c, c)
		<-hold // a half-closed connection stays so
	})
	t.Cleanup(func() { close(hold) })
	b, addr := l4Route(t, 9108, Config{IdleTimeout: time.Second}, echo.addr)
	idle := dialT(t, addr)
	half := dialT(t, addr)
	if err := half.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	busy := dialT(t, addr)
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		buf := make([]byte, 1)
		pace := time.NewTicker(20 * time.Millisecond) // traffic well within the idle timeout
		defer pace.Stop()
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-pace.C:
			}
			if _, err := busy.Write([]byte{'x'}); err != nil {
				done <- err
				return
			}
			if _, err := io.ReadFull(busy, buf); err != nil {
				done <- err
				return
			}
		}
	}()
	for _, c := range []*net.TCPConn{idle, half} {
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("idle connection: read = %v, want EOF from the idle timeout", err)
		}
	}
	poll(t, 10*time.Second, "the idle pairs to be torn down", func() bool { return l4Pairs(b) == 1 })
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("the busy connection was cut: %v", err)
	}
}

// Deleting the service (or unpublishing the port) ends its pairs; a
// route that lost its endpoints keeps them.
func TestL4LoopListenerCloseEndsPairs(t *testing.T) {
	echo := newTCPBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	b, ip := newBalancer(t, 9109, Config{})
	route := Route{Service: "svc", Port: 9109, Endpoints: endpoints(echo.addr)}
	b.Update([]Route{route})
	addr := netip.AddrPortFrom(ip, 9109).String()
	var cs []*net.TCPConn
	for range 10 {
		c := dialT(t, addr)
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
			t.Fatal(line, err)
		}
		cs = append(cs, c)
	}
	if n := l4Pairs(b); n != 10 {
		t.Fatalf("the loops serve %d pairs, want 10", n)
	}
	b.Update([]Route{{Service: "svc", Port: 9109}}) // no endpoint: pairs stay
	if n := l4Pairs(b); n != 10 {
		t.Fatalf("the loops serve %d pairs after the endpoints left, want 10", n)
	}
	b.Update(nil) // deleted: Update returns once the pairs are closed
	if n := l4Pairs(b); n != 0 {
		t.Fatalf("the loops serve %d pairs after the service was deleted, want 0", n)
	}
	for _, c := range cs {
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a connection of a deleted service: read = %v, want it closed", err)
		}
	}
}

// Without the loop (other systems, or when it cannot start), pipe serves
// the pairs.
func TestL4LoopFallback(t *testing.T) {
	echo := newTCPBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	b, ip := newBalancer(t, 9110, Config{})
	b.l4.mu.Lock()
	b.l4.started = true // as if the loops could not start
	b.l4.mu.Unlock()
	b.Update([]Route{{Service: "svc", Port: 9110, Endpoints: endpoints(echo.addr)}})
	c := dialT(t, netip.AddrPortFrom(ip, 9110).String())
	payload := bytes.Repeat([]byte("0123456789"), 100000)
	go func() { _, _ = c.Write(payload); _ = c.CloseWrite() }()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo through pipe: %d bytes, %v", len(got), err)
	}
	if n := l4Pairs(b); n != -1 {
		t.Fatalf("loops serve %d pairs, want no loop", n)
	}
}

// Every descriptor the loops and their pairs take is closed again: the
// process has as many open after a balancer's life as before, and no
// goroutine of it is left.
func TestL4LoopNoFDLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	countFDs := func() int {
		es, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip(err)
		}
		return len(es)
	}
	before := countFDs()
	func() {
		echo := newTCPBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
		defer echo.kill()
		b := New(Config{Bind: loopback(t, 9111), IdleTimeout: time.Second})
		defer b.Close()
		b.Update([]Route{{Service: "svc", Port: 9111, Endpoints: endpoints(echo.addr)}})
		addr := netip.AddrPortFrom(b.cfg.Bind, 9111).String()
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				msg := bytes.Repeat([]byte{'z'}, 1+i*7919%(3*copyBufSize))
				go func() { _, _ = c.Write(msg) }()
				if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
					t.Error(err)
				}
				switch i % 3 {
				case 0: // reset
					_ = c.(*net.TCPConn).SetLinger(0)
				case 1: // half-close, then wait for the EOF back
					_ = c.(*net.TCPConn).CloseWrite()
					_, _ = io.Copy(io.Discard, c)
				case 2: // idle until the timeout closes it
					_, _ = io.Copy(io.Discard, c)
				}
			}()
		}
		wg.Wait()
		poll(t, 10*time.Second, "the pairs to be torn down", func() bool { return l4Pairs(b) == 0 })
	}()
	// Closing a socket can take a moment to show in /proc (the backend's
	// goroutines end after their connections).
	// The echo's io.Copy splices through pipes from the runtime's pool,
	// which a GC frees.
	poll(t, 10*time.Second, fmt.Sprintf("open descriptors back to %d", before), func() bool {
		runtime.GC()
		return countFDs() <= before
	})
}
