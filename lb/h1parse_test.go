package lb

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseRequestHead: request heads are outside input. Whatever the
// fast path forwards (headOK) net/http must read as the same request,
// before and after the rewrite, with no hop-by-hop header left.
func FuzzParseRequestHead(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /a/b?c=d HTTP/1.1\r\nHost: shop.example:8080\r\nX-Forwarded-For: 203.0.113.7\r\nForwarded: for=1.2.3.4\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-A\r\nX-A: 1\r\nKeep-Alive: 1\r\nTE: trailers\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /?a=1;b=2 HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.1\nHost: h\n\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\nX-Request-Id: abc\r\n\r\n",
		"\x00\x01\x02\x03 garbage\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: \"x\"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		head, err := readHead(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			return
		}
		h := &httpConn{clientIP: []byte("192.0.2.1"), fwdNode: []byte("192.0.2.1")}
		if parseRequestHead(head, &h.req) != headOK {
			return
		}
		in, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("the fast path forwards a head net/http refuses (%v):\n%q", err, head)
		}
		if h.req.contentLength > 0 {
			h.body = bytes.Repeat([]byte("b"), int(min(h.req.contentLength, 1<<16)))
			h.req.contentLength = int64(len(h.body))
		}
		h.buildRequest()
		out, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(h.up)))
		if err != nil {
			t.Fatalf("net/http cannot read the forwarded request (%v):\n%q\nfrom\n%q", err, h.up, head)
		}
		if out.Method != in.Method || out.RequestURI != in.RequestURI || out.Host != in.Host {
			t.Fatalf("forwarded %s %s host %q, received %s %s host %q", out.Method, out.RequestURI, out.Host, in.Method, in.RequestURI, in.Host)
		}
		if in.ContentLength > 0 && out.ContentLength != int64(len(h.body)) || in.ContentLength <= 0 && out.ContentLength > 0 {
			t.Fatalf("forwarded Content-Length %d, received %d", out.ContentLength, in.ContentLength)
		}
		for _, name := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Proxy-Authorization"} {
			if _, ok := out.Header[name]; ok {
				t.Fatalf("hop-by-hop %s forwarded:\n%q", name, h.up)
			}
		}
		if got := out.Header.Get("X-Forwarded-For"); !strings.HasSuffix(got, "192.0.2.1") {
			t.Fatalf("X-Forwarded-For %q", got)
		}
		if len(out.Header.Get(HeaderRequestID)) == 0 {
			t.Fatalf("no %s forwarded", HeaderRequestID)
		}
	})
}

// FuzzParseResponseHead: response heads come from endpoints. What the
// fast path accepts, net/http must read with the same status and framing.
func FuzzParseResponseHead(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
		"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 500\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		head, err := readHead(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			return
		}
		var h respHead
		if parseResponseHead(head, &h) != nil {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("accepted a response head net/http refuses (%v):\n%q", err, head)
		}
		if resp.StatusCode != h.status {
			t.Fatalf("status %d, net/http %d", h.status, resp.StatusCode)
		}
		if h.status >= 200 && h.status != 204 && h.status != 304 {
			if chunked := len(resp.TransferEncoding) > 0; chunked != h.chunked {
				t.Fatalf("chunked %v, net/http %v:\n%q", h.chunked, chunked, head)
			}
			if !h.chunked && resp.ContentLength != h.contentLength {
				t.Fatalf("length %d, net/http %d:\n%q", h.contentLength, resp.ContentLength, head)
			}
		}
	})
}

// FuzzParseChunkSize: chunk-size lines come from endpoints.
func FuzzParseChunkSize(f *testing.F) {
	for _, seed := range []string{"0", "5", "a;ext=1", "FFFFFFFFFFFFFFF", "1000000000000000", "-1", "", " 5", "5 ;x", "5x", "0x5"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		n, ok := parseChunkSize([]byte(line))
		if !ok {
			return
		}
		digits := line
		if i := strings.IndexFunc(line, func(r rune) bool { return !strings.ContainsRune("0123456789abcdefABCDEF", r) }); i >= 0 {
			digits = line[:i]
		}
		want, err := strconv.ParseInt(digits, 16, 64)
		if err != nil || want != n || n < 0 {
			t.Fatalf("parseChunkSize(%q) = %d, ParseInt(%q) = %d, %v", line, n, digits, want, err)
		}
	})
}
