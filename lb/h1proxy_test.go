package lb

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
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
