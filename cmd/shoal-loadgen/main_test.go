package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var responses = []struct {
	name, resp       string
	ok, closed, fail bool
	needEOF          bool // whole only once the connection closes
}{
	{name: "content-length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", ok: true},
	{name: "empty body", resp: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ok: true},
	{name: "chunked", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: t\r\n\r\n", ok: true},
	{name: "chunked, no trailer", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", ok: true},
	{name: "connection close", resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", ok: true, closed: true},
	{name: "http/1.0", resp: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", ok: true, closed: true},
	{name: "http/1.0 keep-alive", resp: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi", ok: true},
	{name: "until close", resp: "HTTP/1.1 200 OK\r\n\r\nhello", ok: true, closed: true, needEOF: true},
	{name: "not 200", resp: "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"},
	{name: "garbage", resp: "SSH-2.0-x\r\n", closed: true, fail: true},
	{name: "bad length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nh", closed: true, fail: true},
	{name: "bad chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", closed: true, fail: true},
}

// TestParseResponse feeds each answer whole and cut at every byte: a
// prefix is never taken for an answer, the whole is, with the same
// verdicts either way.
func TestParseResponse(t *testing.T) {
	for _, tt := range responses {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.resp)
			size, ok, closed, err := parseResponse(b, tt.needEOF)
			if tt.fail {
				if err == nil {
					t.Fatalf("parsed %q as a %d-byte answer; want an error", tt.resp, size)
				}
				return
			}
			if err != nil || size != len(b) || ok != tt.ok || closed != tt.closed {
				t.Fatalf("got size %d ok %v closed %v err %v; want size %d ok %v closed %v", size, ok, closed, err, len(b), tt.ok, tt.closed)
			}
			if tt.needEOF {
				if size, _, _, err := parseResponse(b, false); size != 0 || err != nil {
					t.Errorf("before the close: size %d, err %v; want 0 and no error (wait for more)", size, err)
				}
			}
			for i := range len(b) {
				if size, _, _, err := parseResponse(b[:i], false); size != 0 || err != nil {
					t.Fatalf("first %d bytes: size %d, err %v; want 0 and no error (wait for more)", i, size, err)
				}
				if !tt.needEOF {
					if _, _, _, err := parseResponse(b[:i], true); err == nil {
						t.Fatalf("first %d bytes then a close: no error", i)
					}
				}
			}
			// Bytes behind the answer are not part of it.
			if !tt.needEOF {
				if size, _, _, err := parseResponse(append(b, "HTTP/1.1 200"...), false); size != len(b) || err != nil {
					t.Errorf("with more behind it: size %d, err %v; want %d", size, err, len(b))
				}
			}
		})
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, tt := range responses {
		f.Add([]byte(tt.resp), false)
		f.Add([]byte(tt.resp), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, eof bool) {
		size, _, _, err := parseResponse(b, eof)
		if err != nil {
			return
		}
		if size < 0 || size > len(b) {
			t.Fatalf("size %d of %d bytes", size, len(b))
		}
		if size > 0 && !eof {
			// Whole on its own: the answer does not depend on what follows.
			if s2, _, _, err := parseResponse(b[:size], false); s2 != size || err != nil {
				t.Fatalf("answer of %d bytes alone: size %d, err %v", size, s2, err)
			}
		}
	})
}

// serve starts an HTTP server with h for the test and returns its URL.
func serve(t *testing.T, h http.HandlerFunc) *url.URL {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRun(t *testing.T) {
	u := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100))
	})
	r, err := run(u, 500, 100*time.Millisecond, 400*time.Millisecond, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.errors != 0 || r.missed != 0 || r.ok < 190 || r.ok > 201 || pct(r.lat, 0.5) <= 0 {
		t.Errorf("got %v, want about 200 requests without errors", r)
	}
}

// TestRunStallCounts: a server that stops answering for a while holds up
// the requests due meanwhile on every connection; their latency counts from
// when they were due, so the stall shows in the tail.
func TestRunStallCounts(t *testing.T) {
	var n atomic.Int64
	const stall = 200 * time.Millisecond
	u := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 150 { // in the measured window (warmup: 50 requests)
			// The server's stall, the input of this test.
			select {
			case <-time.After(stall):
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	r, err := run(u, 500, 100*time.Millisecond, 600*time.Millisecond, 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// With one connection every request due during the stall waits: about
	// 100 of 300, from up to 200 ms down.
	if r.errors != 0 || pct(r.lat, 1) < (stall*9/10).Microseconds() || pct(r.lat, 0.9) < (stall/10).Microseconds() {
		t.Errorf("got %v; want the stall's %v in the max, and queued requests behind it above p90", r, stall)
	}
	// Measured from the send, the stall is one request's.
	if pct(r.svc, 0.9) >= (stall / 10).Microseconds() {
		t.Errorf("svc p90 %d us; want the stall in one request only", pct(r.svc, 0.9))
	}
}

// TestRunConnectionClose: a server that closes each connection after its
// answer has every request answered on a new one.
func TestRunConnectionClose(t *testing.T) {
	u := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "ok")
	})
	r, err := run(u, 200, 50*time.Millisecond, 300*time.Millisecond, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.errors != 0 || r.missed != 0 || r.ok < 55 || r.ok > 61 {
		t.Errorf("got %v, want about 60 requests without errors", r)
	}
}

// TestRunServerDown: a target that does not answer fails the run at once.
func TestRunServerDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(srv.URL + "/")
	srv.Close()
	if r, err := run(u, 100, 0, 100*time.Millisecond, 2, time.Second); err == nil {
		t.Fatalf("got %v, want an error", r)
	}
}

// TestRunMissed: requests that cannot be sent by a second after the end
// (the one connection hangs) count as missed, with their time since due
// as latency; the hung request fails at its timeout.
func TestRunMissed(t *testing.T) {
	u := serve(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	r, err := run(u, 100, 0, 200*time.Millisecond, 1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 20 requests due: the first sent and timed out, 19 never sent.
	if r.ok != 0 || r.errors != 1 || r.missed != 19 || len(r.lat) != 19 || pct(r.lat, 0) < time.Second.Microseconds() {
		t.Errorf("got %v (%d latencies, min %d us); want 0 ok, 1 error, 19 missed, each over 1 s", r, len(r.lat), pct(r.lat, 0))
	}
}
