package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	tests := []struct {
		name, resp   string
		closed, fail bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: t\r\n\r\n", false, false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", true, false},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", true, false},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi", false, false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nhello", true, false},
		{"not 200", "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", false, true},
		{"garbage", "SSH-2.0-x\r\n", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := net.Pipe()
			defer c.Close()
			go func() {
				defer s.Close()
				buf := make([]byte, len(req))
				if _, err := io.ReadFull(s, buf); err != nil {
					return
				}
				io.WriteString(s, tt.resp)
				// Twice over the same connection when it stays open.
				if !tt.closed {
					if _, err := io.ReadFull(s, buf); err != nil {
						return
					}
					io.WriteString(s, tt.resp)
				}
			}()
			br := bufio.NewReader(c)
			for i := range 2 {
				closed, err := roundTrip(c, br, req, time.Second)
				if (err != nil) != tt.fail || closed != tt.closed {
					t.Fatalf("round trip %d: closed %v, err %v; want closed %v, error %v", i, closed, err, tt.closed, tt.fail)
				}
				if closed {
					break
				}
			}
		})
	}
}

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/")
	r, err := run(u, 500, 100*time.Millisecond, 400*time.Millisecond, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.errors != 0 || r.ok < 150 || r.ok > 201 || pct(r.lat, 0.5) <= 0 {
		t.Errorf("got %v, want about 200 requests without errors", r)
	}
}
