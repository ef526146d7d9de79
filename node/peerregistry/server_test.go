package peerregistry

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// TestServerRunStops: requests' contexts carry Run's values (containerd's
// namespace rides there); cancelling Run's context unregisters the protocol,
// resets a transfer in flight (the client's read fails rather than hangs)
// and returns only once the handler has returned; new requests then fail.
func TestServerRunStops(t *testing.T) {
	a, b := newNode(t), newNode(t)
	befriend(a, b)
	im := buildImage(t, a.store, 32<<20)
	layer := im.layers[0]
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "namespace"))
	defer cancel()
	var sawValue atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawValue.Store(r.Context().Value(key{}) == "namespace")
		NewHandler(a.store, nil, discard).ServeHTTP(w, r)
	})
	done := make(chan error, 1)
	go func() { done <- NewServer(a.Libp2p(), h, discard).Run(ctx) }()
	eventually(t, "registry protocol registered", func() bool {
		return slices.Contains(a.Libp2p().Mux().Protocols(), Protocol)
	})

	tr := b.transport(t, a)
	get := func() (*http.Response, error) {
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, "http://"+a.ID().String()+"/v2/x/blobs/"+layer.Digest.String(), nil)
		return tr.RoundTrip(req)
	}
	resp, err := get()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != layer.Size {
		t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if !sawValue.Load() {
		t.Error("the request's context does not carry Run's values")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if slices.Contains(a.Libp2p().Mux().Protocols(), Protocol) {
		t.Error("protocol still registered after Run returned")
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || 1<<20+n >= layer.Size {
		t.Errorf("read %d more bytes, err %v: want the transfer cut", n, err)
	}
	if resp, err := get(); err == nil {
		resp.Body.Close()
		t.Errorf("request after Run returned: status %d", resp.StatusCode)
	}
}

// TestStalledPeerIsCutOff: a transfer that stops moving is cut after the
// stall timeout on either side, rather than holding a stream (and, on the
// server, a handler) forever: a client that stops reading, and a server that
// stops sending.
func TestStalledPeerIsCutOff(t *testing.T) {
	old := stallTimeout
	stallTimeout = 300 * time.Millisecond
	t.Cleanup(func() { stallTimeout = old })
	a, b := newNode(t), newNode(t)
	befriend(a, b)
	im := buildImage(t, a.store, 32<<20)
	layer := im.layers[0]
	release := make(chan struct{})
	a.serve(t, nil, nil, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v2/stuck/blobs/"+layer.Digest.String() {
				h.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Length", "100")
			_, _ = w.Write([]byte("partial"))
			http.NewResponseController(w).Flush()
			<-release
		})
	})
	t.Cleanup(func() { close(release) }) // before the server stops
	tr := b.transport(t, a)
	get := func(name string) *http.Response {
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, "http://"+a.ID().String()+"/v2/"+name+"/blobs/"+layer.Digest.String(), nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	// The client never reads: the server's write stalls and is cut, and
	// the handler returns.
	get("idle")
	eventually(t, "the server to give up on a client that does not read", func() bool {
		gets := a.rec.gets("/idle/blobs/" + layer.Digest.String())
		return len(gets) == 1 && gets[0].bytes < layer.Size
	})

	// The server stops sending: the client's read fails.
	resp := get("stuck")
	start := time.Now()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n != int64(len("partial")) {
		t.Fatalf("read %d bytes, err %v: want a stall error after 7 bytes", n, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the stall was detected after %v", d)
	}
}
