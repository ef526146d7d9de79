package lb

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// nameHandler answers with its name; it counts new connections.
type nameHandler struct {
	name  string
	conns atomic.Int64
}

func (h *nameHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	fmt.Fprint(w, h.name)
}

func newNameBackend(t *testing.T, name string) (*httpBackend, *nameHandler) {
	h := &nameHandler{name: name}
	return serveHTTPBackend(t, &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			h.conns.Add(1)
		}
	}}), h
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func httpRoute(service string, port int, policy string, eps ...netip.AddrPort) Route {
	return Route{Service: service, Port: port, Protocol: ProtocolHTTP, Policy: policy, Endpoints: endpoints(eps...)}
}

func TestHTTPForwardingHeaders(t *testing.T) {
	be := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{
			"host": r.Host, "xff": r.Header.Get("X-Forwarded-For"), "fwd": r.Header.Get("Forwarded"),
			"xfh": r.Header.Get("X-Forwarded-Host"), "xfp": r.Header.Get("X-Forwarded-Proto"),
			"rid": r.Header.Get(HeaderRequestID), "path": r.URL.RequestURI(),
		})
	}))
	b, ip := newBalancer(t, 9100, Config{})
	b.Update([]Route{httpRoute("hdr", 9100, "", be.addr)})
	url := "http://" + netip.AddrPortFrom(ip, 9100).String()

	req, _ := http.NewRequest(http.MethodGet, url+"/a/b?c=d", nil)
	req.Host = "shop.example"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	client := "127.0.0.1" // the client dials from the default loopback source
	if got["host"] != "shop.example" || got["path"] != "/a/b?c=d" {
		t.Errorf("host %q path %q, want them passed through", got["host"], got["path"])
	}
	if got["xff"] != "203.0.113.7, "+client {
		t.Errorf("X-Forwarded-For = %q, want the earlier hop then the client", got["xff"])
	}
	if want := "for=" + client + ";host=shop.example;proto=http"; got["fwd"] != want {
		t.Errorf("Forwarded = %q, want %q", got["fwd"], want)
	}
	if got["xfh"] != "shop.example" || got["xfp"] != "http" {
		t.Errorf("X-Forwarded-Host %q, X-Forwarded-Proto %q", got["xfh"], got["xfp"])
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got["rid"]) {
		t.Errorf("X-Request-Id = %q, want 32 hex digits", got["rid"])
	}
	if resp.Header.Get(HeaderRequestID) != got["rid"] {
		t.Errorf("response X-Request-Id = %q, want the request's %q", resp.Header.Get(HeaderRequestID), got["rid"])
	}
	// A request ID from the client is kept.
	req.Header.Set(HeaderRequestID, "abc-123")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	if err := json.NewDecoder(resp2.Body).Decode(&got); err != nil || got["rid"] != "abc-123" {
		t.Errorf("client's request ID: backend saw %q (%v)", got["rid"], err)
	}
}

func TestHTTPBalancesRequestsOverPooledConnections(t *testing.T) {
	var hs []*nameHandler
	var addrs []netip.AddrPort
	for i := range 3 {
		be, h := newNameBackend(t, fmt.Sprint("b", i))
		hs = append(hs, h)
		addrs = append(addrs, be.addr)
	}
	b, ip := newBalancer(t, 9101, Config{})
	// Round robin, so that the spread is exact whatever the latencies;
	// the other policies pick per request the same way.
	b.Update([]Route{httpRoute("web", 9101, PolicyRoundRobin, addrs...)})
	url := "http://" + netip.AddrPortFrom(ip, 9101).String() + "/"
	client := &http.Client{Transport: &http.Transport{}} // one keep-alive connection
	defer client.CloseIdleConnections()
	count := map[string]int{}
	const n = 300
	for range n {
		code, body := get(t, client, url)
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		count[body]++
	}
	for i, h := range hs {
		if c := count[h.name]; c != n/3 {
			t.Errorf("b%d answered %d of %d requests over one client connection: %v", i, c, n, count)
		}
		if c := h.conns.Load(); c > 2 {
			t.Errorf("b%d got %d connections for %d sequential requests, want them pooled", i, c, count[h.name])
		}
	}
	if v := testutil.ToFloat64(b.met.reqs.WithLabelValues("web", "9101", addrs[0].String(), "2xx")); int(v) != count["b0"] {
		t.Errorf("2xx requests metric of b0 = %v, want %d", v, count["b0"])
	}
}

func TestHTTPRetries(t *testing.T) {
	live, _ := newNameBackend(t, "live")
	// broken accepts requests and drops the connection without answering.
	var brokenGot atomic.Int64
	broken := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		brokenGot.Add(1)
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	dead := closedAddr(t)
	b, ip := newBalancer(t, 9102, Config{})
	url := "http://" + netip.AddrPortFrom(ip, 9102).String() + "/"

	// Connect failures are retried for every method, with the body.
	b.Update([]Route{httpRoute("web", 9102, PolicyRoundRobin, dead, live.addr)})
	for i := range 20 {
		resp, err := http.Post(url, "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "live" {
			t.Fatalf("POST %d with a refused endpoint: %d %q", i, resp.StatusCode, body)
		}
	}
	// A request that failed after it was sent is retried when idempotent...
	b.Update([]Route{httpRoute("web", 9102, PolicyRoundRobin, broken.addr, live.addr)})
	for i := range 20 {
		if code, body := get(t, http.DefaultClient, url); code != 200 || body != "live" {
			t.Fatalf("GET %d with a broken endpoint: %d %q", i, code, body)
		}
	}
	if brokenGot.Load() == 0 {
		t.Fatal("the broken endpoint never got a request: the test proves nothing")
	}
	// ... and not when it is not: a POST that reached the broken endpoint
	// fails with 502 and is not sent again.
	b.Update([]Route{httpRoute("web", 9102, PolicyRoundRobin, broken.addr)})
	before := brokenGot.Load()
	resp, err := http.Post(url, "text/plain", strings.NewReader("once"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("POST to a broken endpoint: %d, want 502", resp.StatusCode)
	}
	if n := brokenGot.Load() - before; n != 1 {
		t.Errorf("a failed POST reached the endpoint %d times, want 1", n)
	}
}

func TestHTTPKilledBackendUnderLoadNoFailedRequests(t *testing.T) {
	var bes []*httpBackend
	var addrs []netip.AddrPort
	for i := range 3 {
		be, _ := newNameBackend(t, fmt.Sprint("b", i))
		bes = append(bes, be)
		addrs = append(addrs, be.addr)
	}
	b, ip := newBalancer(t, 9103, Config{})
	b.Update([]Route{httpRoute("web", 9103, "", addrs...)})
	url := "http://" + netip.AddrPortFrom(ip, 9103).String() + "/"
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	poll(t, 10*time.Second, "300 requests", func() bool { return ok.Load() >= 300 })
	bes[2].kill() // closes its listener and every connection, requests in flight too
	before := ok.Load()
	poll(t, 10*time.Second, "1000 more requests", func() bool { return ok.Load() >= before+1000 })
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed (first: %v)", n, n+ok.Load(), firstErr.Load())
	}
}

func TestHTTPUpgradePassesThrough(t *testing.T) {
	// The backend switches to a line echo protocol, as a websocket
	// server switches to websocket frames.
	be := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(rw, "echo: "+line)
			rw.Flush()
		}
	}))
	b, ip := newBalancer(t, 9104, Config{})
	b.Update([]Route{httpRoute("ws", 9104, "", be.addr)})
	c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 9104).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	for _, msg := range []string{"hello\n", "again\n"} {
		fmt.Fprint(c, msg)
		line, err := br.ReadString('\n')
		if err != nil || line != "echo: "+msg {
			t.Fatalf("after the upgrade: %q, %v", line, err)
		}
	}
}

func TestHTTPStreamsResponses(t *testing.T) {
	release := make(chan struct{})
	be := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintln(w, "second")
	}))
	b, ip := newBalancer(t, 9105, Config{})
	b.Update([]Route{httpRoute("stream", 9105, "", be.addr)})
	resp, err := http.Get("http://" + netip.AddrPortFrom(ip, 9105).String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	// The first chunk arrives while the backend still holds the rest.
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk: %q, %v", line, err)
	}
	close(release)
	if line, err = br.ReadString('\n'); err != nil || line != "second\n" {
		t.Fatalf("second chunk: %q, %v", line, err)
	}
}

func TestHTTPGarbageGets400AndListenerStays(t *testing.T) {
	be, _ := newNameBackend(t, "ok")
	b, ip := newBalancer(t, 9106, Config{})
	b.Update([]Route{httpRoute("web", 9106, "", be.addr)})
	addr := netip.AddrPortFrom(ip, 9106).String()
	for _, garbage := range []string{"\x00\x01\x02\x03 garbage\r\n\r\n", "GET / HTTP/1.1\r\nno colon here\r\n\r\n", "NOT A REQUEST\r\n\r\n"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, garbage)
		status, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 400") {
			t.Errorf("garbage %q: got %q, %v; want 400", garbage, status, err)
		}
	}
	if code, body := get(t, http.DefaultClient, "http://"+addr+"/"); code != 200 || body != "ok" {
		t.Fatalf("after garbage: %d %q", code, body)
	}
}

func TestHTTPMaglevStickyOnHeader(t *testing.T) {
	var addrs []netip.AddrPort
	for i := range 4 {
		be, _ := newNameBackend(t, fmt.Sprint("b", i))
		addrs = append(addrs, be.addr)
	}
	b, ip := newBalancer(t, 9107, Config{})
	r := httpRoute("sticky", 9107, PolicyMaglev, addrs...)
	r.HashOn = HashHeaderPrefix + "X-User"
	b.Update([]Route{r})
	url := "http://" + netip.AddrPortFrom(ip, 9107).String() + "/"
	seen := map[string]bool{}
	for u := range 20 {
		user := fmt.Sprint("user-", u)
		_, first := get(t, http.DefaultClient, url, "X-User", user)
		for range 5 {
			if _, again := get(t, http.DefaultClient, url, "X-User", user); again != first {
				t.Fatalf("%s went to %s, then to %s", user, first, again)
			}
		}
		seen[first] = true
	}
	if len(seen) < 3 {
		t.Errorf("20 users landed on %d of 4 backends", len(seen))
	}
}

func TestHTTP5xxEjects(t *testing.T) {
	var badGot atomic.Int64
	bad := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		badGot.Add(1)
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	good, _ := newNameBackend(t, "good")
	b, ip := newBalancer(t, 9108, Config{})
	b.Update([]Route{httpRoute("web", 9108, PolicyRoundRobin, bad.addr, good.addr)})
	url := "http://" + netip.AddrPortFrom(ip, 9108).String() + "/"
	fails := 0
	for range 40 {
		if code, _ := get(t, http.DefaultClient, url); code == 500 {
			fails++
		}
	}
	// Five 5xx in a row eject it for 1 s: 5 failures, then the good one.
	if n := badGot.Load(); n != serverErrorsToEject || fails != serverErrorsToEject {
		t.Errorf("the failing endpoint got %d requests (%d answered 500), want %d before its ejection", n, fails, serverErrorsToEject)
	}
	if v := testutil.ToFloat64(b.met.ejections.WithLabelValues("web", "9108", bad.addr.String())); v != 1 {
		t.Errorf("ejections = %v, want 1", v)
	}
}
