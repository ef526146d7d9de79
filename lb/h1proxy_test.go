package lb

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawBackend answers every request it reads with the response answer
// returns, written as is; it closes the connection after an answer when
// closeAfter says so.
func rawBackend(t *testing.T, answer func(*http.Request) (resp string, closeAfter bool)) *tcpBackend {
	return newTCPBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			resp, closeAfter := answer(req)
			if _, err := io.WriteString(c, resp); err != nil || closeAfter {
				return
			}
		}
	})
}

// rawExchange sends raw to addr and returns the response to it, read as
// a response to method.
func rawExchange(t *testing.T, addr, raw, method string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("response to %.80q: %v", raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body of the response to %.80q: %v", raw, err)
	}
	return resp, string(body)
}

func TestHTTPHopByHopHeaders(t *testing.T) {
	var got atomic.Value
	be := rawBackend(t, func(r *http.Request) (string, bool) {
		got.Store(r.Header.Clone())
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Resp-Hop\r\nX-Resp-Hop: 1\r\n" +
			"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: nothing\r\nX-Kept: yes\r\n\r\nok", false
	})
	b, ip := newBalancer(t, 9120, Config{})
	b.Update([]Route{httpRoute("hop", 9120, "", be.addr)})
	addr := netip.AddrPortFrom(ip, 9120).String()
	resp, body := rawExchange(t, addr, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"+
		"Keep-Alive: 5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nProxy-Authorization: Basic eDp5\r\n"+
		"X-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nX-Kept: yes\r\n\r\n", http.MethodGet)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("answer %d %q", resp.StatusCode, body)
	}
	h := got.Load().(http.Header)
	for _, name := range []string{"Connection", "X-Secret", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization"} {
		if v, ok := h[name]; ok {
			t.Errorf("the endpoint got hop-by-hop header %s: %q", name, v)
		}
	}
	if h.Get("Te") != "trailers" || h.Get("X-Kept") != "yes" {
		t.Errorf("TE %q (want trailers), X-Kept %q (want yes)", h.Get("Te"), h.Get("X-Kept"))
	}
	if h.Get("X-Forwarded-Host") != "h" || h.Get("X-Forwarded-Proto") != "http" || len(h["X-Forwarded-Host"]) != 1 {
		t.Errorf("X-Forwarded-Host %q, X-Forwarded-Proto %q: want the client's values replaced", h["X-Forwarded-Host"], h["X-Forwarded-Proto"])
	}
	for _, name := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Connection", "Upgrade"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("the client got hop-by-hop header %s: %q", name, v)
		}
	}
	if resp.Header.Get("X-Kept") != "yes" || len(resp.Header.Get(HeaderRequestID)) != 32 {
		t.Errorf("response headers %v", resp.Header)
	}
}

// Heads whose framing is ambiguous are refused before anything reaches
// an endpoint (request smuggling), and the listener stays up.
func TestHTTPRefusesAmbiguousHeads(t *testing.T) {
	var reached atomic.Int64
	be := rawBackend(t, func(*http.Request) (string, bool) {
		reached.Add(1)
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	b, ip := newBalancer(t, 9121, Config{})
	b.Update([]Route{httpRoute("smuggle", 9121, "", be.addr)})
	addr := netip.AddrPortFrom(ip, 9121).String()
	for _, tc := range []struct {
		name, raw string
		code      int
	}{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400},
		{"differing CLs", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\nab", 400},
		{"signed CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +2\r\n\r\nab", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 2\r\n\r\nab", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"CR in value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400},
		{"huge head", "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 1100) + "\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := rawExchange(t, addr, tc.raw, http.MethodGet)
			if resp.StatusCode != tc.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d refused requests reached the endpoint", n)
	}
	if resp, body := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", http.MethodGet); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("after the refusals: %d %q", resp.StatusCode, body)
	}
}

// Requests the fast path does not serve go to the net/http path, with
// what was read of them.
func TestHTTPHandsOverUnusualRequests(t *testing.T) {
	be := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Method, r.Proto, n)
	}))
	b, ip := newBalancer(t, 9122, Config{MaxBufferedBody: 1 << 10})
	b.Update([]Route{httpRoute("web", 9122, "", be.addr)})
	addr := netip.AddrPortFrom(ip, 9122).String()
	url := "http://" + addr + "/"

	// Expect: 100-continue.
	tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader("12345"))
	req.Header.Set("Expect", "100-continue")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "PUT HTTP/1.1 5" {
		t.Errorf("Expect: 100-continue: %q", body)
	}
	// A chunked body streamed by the client.
	pr, pw := io.Pipe()
	go func() {
		for range 10 {
			_, _ = pw.Write(bytes.Repeat([]byte("x"), 1000))
		}
		pw.Close()
	}()
	resp, err = http.Post(url, "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "POST HTTP/1.1 10000" {
		t.Errorf("chunked body: %q", body)
	}
	// A body larger than MaxBufferedBody, then another request on the
	// same connection.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	big := strings.Repeat("y", 5000)
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%sGET / HTTP/1.1\r\nHost: h\r\n\r\n", len(big), big)
	br := bufio.NewReader(c)
	for _, want := range []string{"POST HTTP/1.1 5000", "GET HTTP/1.1 0"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Errorf("large body connection: %q, want %q", body, want)
		}
	}
	// HTTP/1.0.
	if resp, body := rawExchange(t, addr, "GET / HTTP/1.0\r\nHost: h\r\n\r\n", http.MethodGet); resp.StatusCode != 200 || body != "GET HTTP/1.1 0" {
		t.Errorf("HTTP/1.0: %d %q", resp.StatusCode, body)
	}
}

// Chunked responses pass through with extensions and trailers, bodies
// without a length end with the connection, HEAD answers have none, and
// pipelined requests are answered in order over one endpoint connection.
func TestHTTPResponseFraming(t *testing.T) {
	var conns atomic.Int64
	be := newTCPBackend(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			var resp string
			switch req.URL.Path {
			case "/chunked":
				resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
					"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n"
			case "/close":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
				return
			case "/head":
				resp = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
			case "/big":
				body := strings.Repeat("0123456789", 20000)
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			default:
				resp = "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(req.URL.Path)) + "\r\n\r\n" + req.URL.Path
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	b, ip := newBalancer(t, 9123, Config{})
	b.Update([]Route{httpRoute("frames", 9123, "", be.addr)})
	addr := netip.AddrPortFrom(ip, 9123).String()
	url := "http://" + addr

	resp, err := http.Get(url + "/chunked")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "hello, world" || resp.Trailer.Get("X-Sum") != "12" {
		t.Errorf("chunked: %q, %v, trailer %v", body, err, resp.Trailer)
	}
	resp, body2 := rawExchange(t, addr, "GET /close HTTP/1.1\r\nHost: h\r\n\r\n", http.MethodGet)
	if body2 != "until the end" || !resp.Close {
		t.Errorf("until close: %q, close %v", body2, resp.Close)
	}
	resp, body2 = rawExchange(t, addr, "HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n", http.MethodHead)
	if body2 != "" || resp.ContentLength != 1000 {
		t.Errorf("HEAD: %q, length %d", body2, resp.ContentLength)
	}
	resp, body2 = rawExchange(t, addr, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", http.MethodGet)
	if body2 != strings.Repeat("0123456789", 20000) {
		t.Errorf("big body: %d bytes", len(body2))
	}

	before := conns.Load()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\n\r\nGET /three HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"/one", "/two", "/three"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Errorf("pipelined: %q, want %q", body, want)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close: %v, want EOF", err)
	}
	if n := conns.Load() - before; n > 1 {
		t.Errorf("three pipelined requests took %d new endpoint connections, want at most 1", n)
	}
}

// Request IDs the fast path makes are distinct across requests and
// connections, reach the endpoint, and come back to the client; an ID
// the client sent is kept.
func TestHTTPRequestIDs(t *testing.T) {
	be := rawBackend(t, func(r *http.Request) (string, bool) {
		id := r.Header.Get(HeaderRequestID)
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(id), id), false
	})
	b, ip := newBalancer(t, 9124, Config{})
	b.Update([]Route{httpRoute("ids", 9124, "", be.addr)})
	addr := netip.AddrPortFrom(ip, 9124).String()
	seen := make(map[string]bool)
	for conn := range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for i := range 25 {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			id := resp.Header.Get(HeaderRequestID)
			if len(id) != 32 || string(body) != id {
				t.Fatalf("connection %d request %d: ID %q to the client, %q to the endpoint", conn, i, id, body)
			}
			if seen[id] {
				t.Fatalf("connection %d request %d: ID %s repeated", conn, i, id)
			}
			seen[id] = true
		}
		c.Close()
	}
	resp, body := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: mine\r\n\r\n", http.MethodGet)
	if body != "mine" || resp.Header.Get(HeaderRequestID) != "mine" {
		t.Fatalf("client's ID: endpoint got %q, client %q", body, resp.Header.Get(HeaderRequestID))
	}
	// An empty one is replaced, as the net/http path does (fuzzing found
	// the fast path forwarding it empty).
	resp, body = rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: \r\n\r\n", http.MethodGet)
	if len(body) != 32 || resp.Header.Get(HeaderRequestID) != body || len(resp.Header.Values(HeaderRequestID)) != 1 {
		t.Fatalf("empty client ID: endpoint got %q, client %q", body, resp.Header.Values(HeaderRequestID))
	}
}

// A pooled connection that the endpoint half-closed while it was idle,
// and then reads without ever answering on, is given up and the request
// goes again on a new connection. (A guard for any attempt to skip the
// read that finds nothing yet after a request is written: waiting for the
// poller instead would miss this close, whose event came before.)
func TestHTTPPooledConnectionHalfClosedWhileIdle(t *testing.T) {
	var conns atomic.Int64
	halfClosed := make(chan struct{})
	be := newTCPBackend(t, func(c net.Conn) {
		first := conns.Add(1) == 1
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
			if first {
				_ = c.(*net.TCPConn).CloseWrite()
				close(halfClosed)
				_, _ = io.Copy(io.Discard, c) // reads on, answers nothing
				return
			}
		}
	})
	b, ip := newBalancer(t, 9125, Config{})
	b.Update([]Route{httpRoute("half", 9125, "", be.addr)})
	addr := netip.AddrPortFrom(ip, 9125).String()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	get := func(i int) {
		t.Helper()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	get(1)
	<-halfClosed
	// Let the endpoint's FIN arrive before the next request takes the
	// pooled connection: poll until the balancer's side has seen it.
	deadline := time.Now().Add(5 * time.Second)
	for !finReceived(t, be) && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	get(2)
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d endpoint connections, want 2 (the half-closed one given up)", n)
	}
}

// finReceived reports whether a connection to be has received its FIN
// and waits for its own close (TCP state CLOSE_WAIT in /proc/net/tcp).
func finReceived(t *testing.T, be *tcpBackend) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	ip := be.addr.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], be.addr.Port())
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == want && f[3] == "08" {
			return true
		}
	}
	return false
}
