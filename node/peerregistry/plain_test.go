package peerregistry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	digest "github.com/opencontainers/go-digest"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// servePlain gives n's handler a plain listener on 127.0.0.1 whose tickets
// are issued for every client as client.
func (n *node) servePlain(t *testing.T, client netip.Addr) *PlainServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := NewPlainServer(n.handler, ln, loopback, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ps.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("plain Run: %v", err)
		}
	})
	n.handler.SetPlain(ps, func(string) (netip.Addr, bool) { return client, true })
	return ps
}

// A whole image pulled with plain transfer on: every blob body comes over
// the plain listener (redirected), manifests and index over the peer plane,
// and everything is verified as before. A ranged GET is redirected with its
// range.
func TestPlainTransferPullsImage(t *testing.T) {
	a, b := newNode(t), newNode(t)
	befriend(a, b)
	im := buildImage(t, a.store, 300<<10, 2<<20)
	a.serve(t, nil, nil, nil)
	ps := a.servePlain(t, loopback)
	ctx := testCtx(t)

	tr := b.transport(t, a)
	tr.SetPlainSource(loopback)
	r := NewResolver(ResolverConfig{Transport: tr, Peers: []lpeer.ID{a.ID()}, Upstream: noUpstream, Logger: discard})
	if err := fetchImage(ctx, r, demoRef+"@"+im.index.Digest.String(), b.store); err != nil {
		t.Fatalf("pull: %v", err)
	}
	checkImage(t, b.store, im)
	// Index and manifest are fetched from the manifests endpoint (served
	// on the plane); config and two layers from the blobs endpoint.
	if s := r.Stats(); s.Verified != 5 || s.BadContent != 0 {
		t.Errorf("resolver stats %+v, want 5 verified", s)
	}
	hs, pst := a.handler.Stats(), ps.Stats()
	if hs.Redirected != 3 || pst.Served != 3 || pst.Refused != 0 {
		t.Errorf("handler %+v, plain %+v: want 3 blobs redirected and served plain", hs, pst)
	}
	layer := im.layers[1]
	if hs.Bytes < uint64(layer.Size) {
		t.Errorf("handler wrote %d bytes, want at least the %d of the layer over plain", hs.Bytes, layer.Size)
	}

	// A range request keeps its range across the redirect.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.ID().String()+"/v2/demo/blobs/"+layer.Digest.String(), nil)
	req.Header.Set("Range", "bytes=1000-")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, im.blobs[layer.Digest][1000:]) {
		t.Fatalf("ranged GET: status %d, %d bytes, %v; want 206 with %d bytes", resp.StatusCode, len(body), err, layer.Size-1000)
	}
	if got := ps.Stats().Served; got != 4 {
		t.Errorf("plain served %d requests, want 4", got)
	}
}

// The plain listener serves only a blob GET with a ticket for that blob,
// that client address, and not expired.
func TestPlainListenerRefusesWithoutValidTicket(t *testing.T) {
	a := newNode(t)
	blob := randomBytes(t, 64<<10)
	d := put(t, a.store, blob).Digest
	other := put(t, a.store, randomBytes(t, 1000)).Digest
	a.serve(t, nil, nil, nil)
	ps := a.servePlain(t, loopback)
	path := "/v2/demo/blobs/" + d.String()
	get := func(method, url string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := get(http.MethodGet, ps.URL(path, d, loopback)); code != http.StatusOK || !bytes.Equal(b, blob) {
		t.Fatalf("valid ticket: %d, %d bytes", code, len(b))
	}
	valid := ps.URL(path, d, loopback)
	ticket := valid[strings.Index(valid, "?"):]
	otherPath := "/v2/demo/blobs/" + other.String()
	expired := &PlainServer{key: ps.key, base: ps.base, now: func() time.Time { return time.Now().Add(-ticketTTL - time.Minute) }}
	cases := []struct {
		name, method, url string
		want              int
	}{
		{"another client's ticket", http.MethodGet, ps.URL(path, d, netip.MustParseAddr("127.0.0.2")), http.StatusForbidden},
		{"another blob's ticket", http.MethodGet, ps.base + otherPath + ticket, http.StatusForbidden},
		{"expired ticket", http.MethodGet, expired.URL(path, d, loopback), http.StatusForbidden},
		{"no ticket", http.MethodGet, ps.base + path, http.StatusForbidden},
		{"garbled ticket", http.MethodGet, ps.base + path + "?ticket=" + strings.Repeat("A", 32), http.StatusForbidden},
		{"HEAD", http.MethodHead, valid, http.StatusMethodNotAllowed},
		{"manifest", http.MethodGet, ps.base + "/v2/demo/manifests/" + d.String() + ticket, http.StatusNotFound},
		{"base", http.MethodGet, ps.base + "/v2/" + ticket, http.StatusNotFound},
	}
	for _, c := range cases {
		if code, _ := get(c.method, c.url); code != c.want {
			t.Errorf("%s: status %d, want %d", c.name, code, c.want)
		}
	}
	if got := ps.Stats(); got.Served != 1 || got.Refused != uint64(len(cases)) {
		t.Errorf("plain stats %+v, want 1 served and %d refused", got, len(cases))
	}
}

// Transport follows a redirect only to the peer's own address and the same
// path; and when the plain listener does not answer, it fetches over the
// peer plane instead.
func TestPlainRedirectRules(t *testing.T) {
	a, b := newNode(t), newNode(t)
	befriend(a, b)
	blob := randomBytes(t, 32<<10)
	d := put(t, a.store, blob).Digest
	path := "/v2/demo/blobs/" + d.String()
	var location func(r *http.Request) string
	a.serve(t, nil, nil, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if location != nil && r.Header.Get(NoRedirectHeader) == "" {
				w.Header().Set("Location", location(r))
				w.WriteHeader(http.StatusTemporaryRedirect)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	tr := b.transport(t, a)
	fetch := func() ([]byte, error) {
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, "http://"+a.ID().String()+path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("status %d", resp.StatusCode)
		}
		return io.ReadAll(resp.Body)
	}
	refused := []struct{ name, loc string }{
		{"another address", "http://127.0.0.2:1234" + path},
		{"a host name", "http://localhost:1234" + path},
		{"another path", "http://127.0.0.1:1234/v2/demo/blobs/" + digest.FromString("x").String()},
		{"https", "https://127.0.0.1:1234" + path},
	}
	for _, c := range refused {
		location = func(*http.Request) string { return c.loc }
		if _, err := fetch(); err == nil || !strings.Contains(err.Error(), "redirected") {
			t.Errorf("redirect to %s: err %v, want a refusal", c.name, err)
		}
	}
	// A plain listener that is not there, or that refuses the ticket: the
	// blob comes over the plane.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	location = func(*http.Request) string { return "http://" + dead + path + "?ticket=x" }
	got, err := fetch()
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("fallback to the peer plane (no listener): %d bytes, %v", len(got), err)
	}
	ps := a.servePlain(t, netip.MustParseAddr("127.0.0.2")) // tickets for another address
	a.handler.SetPlain(nil, nil)
	location = func(*http.Request) string { return ps.URL(path, d, netip.MustParseAddr("127.0.0.2")) }
	got, err = fetch()
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("fallback to the peer plane (ticket refused): %d bytes, %v", len(got), err)
	}
	if s := ps.Stats(); s.Refused != 1 || s.Served != 0 {
		t.Errorf("plain stats %+v, want the one refusal", s)
	}
}

// FuzzParseTicket: any string either decodes to a 16-byte MAC or is
// refused; a ticket made by URL round-trips.
func FuzzParseTicket(f *testing.F) {
	ps := &PlainServer{now: time.Now}
	good := ps.ticket(digest.FromString("a"), loopback, 1234567890)
	for _, s := range []string{"", good, good + "A", strings.Repeat("A", len(good)), "!!!!", strings.Repeat("_", 32)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, mac, err := parseTicket(s)
		if err != nil {
			if mac != nil || exp != 0 {
				t.Fatalf("refused %q but returned %d, %x", s, exp, mac)
			}
			return
		}
		if len(mac) != 16 {
			t.Fatalf("%q: MAC of %d bytes", s, len(mac))
		}
		if s == good && exp != 1234567890 {
			t.Fatalf("expiry %d, want 1234567890", exp)
		}
	})
}
