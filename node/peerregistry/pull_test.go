package peerregistry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/remotes/docker"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const demoRef = "docker.io/library/demo"

// TestPullImageFromPeer pulls a whole image (index, manifest, config, two
// layers) from one peer's content store into another's over the peer plane,
// by digest and then by tag, and checks every blob arrived intact and was
// verified in flight.
func TestPullImageFromPeer(t *testing.T) {
	a, b := newNode(t), newNode(t)
	befriend(a, b)
	im := buildImage(t, a.store, 300<<10, 2<<20)
	a.serve(t, nil, func(_ context.Context, name string) (ocispec.Descriptor, bool) {
		return im.index, name == demoRef+":1"
	}, nil)
	ctx := testCtx(t)

	r := NewResolver(ResolverConfig{Transport: b.transport(t, a), Peers: []lpeer.ID{a.ID()}, Upstream: noUpstream, Logger: discard})
	if err := fetchImage(ctx, r, demoRef+"@"+im.index.Digest.String(), b.store); err != nil {
		t.Fatalf("pull by digest: %v", err)
	}
	checkImage(t, b.store, im)
	s := r.Stats()
	// Every blob came as a full GET and was verified: index, manifest,
	// config, 2 layers.
	if s.Verified != 5 || s.BadContent != 0 || s.Ranged != 0 || s.BadPeers != 0 {
		t.Errorf("Stats %+v, want 5 verified and nothing bad", s)
	}
	for _, d := range im.all() {
		if p, ok := r.LastSource(d.Digest); !ok || p != a.ID() {
			t.Errorf("LastSource(%s) = %s, %v; want %s", d.Digest, p, ok, a.ID())
		}
	}

	// By tag, into a fresh store: resolution asks the peer's tag function.
	fresh, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	name, desc, err := r.Resolve(ctx, demoRef+":1")
	if err != nil {
		t.Fatalf("resolve by tag: %v", err)
	}
	if name != demoRef+":1" || desc.Digest != im.index.Digest || desc.Size != im.index.Size || desc.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("resolved %s to %+v, want %+v", name, desc, im.index)
	}
	if err := fetchImage(ctx, r, demoRef+":1", fresh); err != nil {
		t.Fatalf("pull by tag: %v", err)
	}
	checkImage(t, fresh, im)
	if _, _, err := r.Resolve(ctx, demoRef+":2"); err == nil {
		t.Error("resolving an unknown tag succeeded")
	}
}

// TestUpstreamIsLast checks the host order: peers first, in order, the
// upstream registry (a plain-HTTP registry on loopback, as the default
// upstream configuration allows) last. A peer that lacks the image answers
// 404 and the next host is tried; when a peer has it, upstream is never
// asked.
func TestUpstreamIsLast(t *testing.T) {
	empty, full, b := newNode(t), newNode(t), newNode(t)
	befriend(empty, full, b)
	upStore, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	im := buildImage(t, upStore, 100<<10)
	upHandler := NewHandler(upStore, nil, discard)
	up := httptest.NewServer(upHandler)
	t.Cleanup(up.Close)
	upHost := strings.TrimPrefix(up.URL, "http://")
	ref := upHost + "/demo@" + im.index.Digest.String()
	empty.serve(t, nil, nil, nil)
	ctx := testCtx(t)

	// The only peer lacks the image: everything comes from upstream.
	upClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(upClient.CloseIdleConnections)
	upstream := docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost), docker.WithClient(upClient))
	r := NewResolver(ResolverConfig{Transport: b.transport(t, empty, full), Peers: []lpeer.ID{empty.ID()}, Upstream: upstream, Logger: discard})
	if err := fetchImage(ctx, r, ref, b.store); err != nil {
		t.Fatalf("pull: %v", err)
	}
	checkImage(t, b.store, im)
	if got := empty.handler.Stats(); got.NotFound == 0 || got.OK != 0 {
		t.Errorf("empty peer: %+v, want only 404s", got)
	}
	if got := upHandler.Stats(); got.OK == 0 {
		t.Errorf("upstream served nothing: %+v", got)
	}

	// Now a peer holding the image comes second: it serves everything and
	// upstream sees no request.
	copyImage(t, upStore, full.store, im)
	full.serve(t, nil, nil, nil)
	before := upHandler.Stats().Requests
	dst, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r = NewResolver(ResolverConfig{Transport: b.transport(t, empty, full), Peers: []lpeer.ID{empty.ID(), full.ID()}, Upstream: upstream, Logger: discard})
	if err := fetchImage(ctx, r, ref, dst); err != nil {
		t.Fatalf("pull: %v", err)
	}
	checkImage(t, dst, im)
	if got := upHandler.Stats().Requests; got != before {
		t.Errorf("upstream got %d requests, want none", got-before)
	}
	if got := full.handler.Stats(); got.OK < 5 {
		t.Errorf("second peer served %d answers, want at least 5", got.OK)
	}
}

// copyImage copies im's blobs from src to dst.
func copyImage(t *testing.T, src content.Provider, dst content.Ingester, im *testImage) {
	t.Helper()
	for _, d := range im.all() {
		b, err := content.ReadBlob(testCtx(t), src, d)
		if err != nil {
			t.Fatal(err)
		}
		put(t, dst, b)
	}
}

// tamperedStore serves the blob with digest bad with one byte flipped.
type tamperedStore struct {
	content.Store
	bad digest.Digest
	at  int64 // offset of the flipped byte
}

func (s *tamperedStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	ra, err := s.Store.ReaderAt(ctx, desc)
	if err != nil || desc.Digest != s.bad {
		return ra, err
	}
	return &flippedReaderAt{ReaderAt: ra, at: s.at}, nil
}

type flippedReaderAt struct {
	content.ReaderAt
	at int64
}

func (f *flippedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.ReaderAt.ReadAt(p, off)
	if i := f.at - off; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	return n, err
}

// TestBadPeerIsSkipped: of two peers holding the image, the first serves
// one layer corrupted. Verification rejects that body with a
// *BadContentError, the peer is counted, logged at warn and reported to
// OnBadPeer; RetryBadContent aborts the ingest and pulls again, the
// resolver skips the bad peer, the second peer serves the layer, and the
// final content is correct.
func TestBadPeerIsSkipped(t *testing.T) {
	bad, good, b := newNode(t), newNode(t), newNode(t)
	befriend(bad, good, b)
	im := buildImage(t, bad.store, 200<<10, 1<<20)
	copyImage(t, bad.store, good.store, im)
	target := im.layers[1]
	bad.serve(t, &tamperedStore{Store: bad.store, bad: target.Digest, at: 12345}, nil, nil)
	good.serve(t, nil, nil, nil)
	ctx := testCtx(t)

	logs := &logRecorder{}
	var mu sync.Mutex
	var reported []lpeer.ID
	r := NewResolver(ResolverConfig{
		Transport: b.transport(t, bad, good),
		Peers:     []lpeer.ID{bad.ID(), good.ID()},
		Upstream:  noUpstream,
		Logger:    slog.New(logs),
		OnBadPeer: func(p lpeer.ID, d digest.Digest, reason error) {
			var e *BadContentError
			if d != target.Digest || !errors.As(reason, &e) {
				t.Errorf("OnBadPeer(%s, %s, %v)", p, d, reason)
			}
			mu.Lock()
			reported = append(reported, p)
			mu.Unlock()
		},
	})
	ref := demoRef + "@" + im.index.Digest.String()
	var firstErr error
	attempts := 0
	err := RetryBadContent(ctx, b.store, r, 3, discard, func(ctx context.Context) error {
		attempts++
		err := fetchImage(ctx, r, ref, b.store)
		if firstErr == nil {
			firstErr = err
		}
		return err
	})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	var e *BadContentError
	if !errors.As(firstErr, &e) || e.Peer != bad.ID() || e.Digest != target.Digest || e.Got == target.Digest || e.Size != target.Size {
		t.Fatalf("first attempt failed with %v, want a *BadContentError from %s for %s", firstErr, bad.ID(), target.Digest)
	}
	if attempts != 2 {
		t.Errorf("%d attempts, want 2", attempts)
	}
	checkImage(t, b.store, im)
	s := r.Stats()
	if s.BadContent != 1 || s.BadPeers != 1 || s.Blamed != 0 {
		t.Errorf("Stats %+v, want 1 bad content from 1 bad peer", s)
	}
	if got := r.BadPeers(); len(got) != 1 || got[0] != bad.ID() {
		t.Errorf("BadPeers %v, want [%s]", got, bad.ID())
	}
	mu.Lock()
	if len(reported) != 1 || reported[0] != bad.ID() {
		t.Errorf("OnBadPeer reported %v, want [%s]", reported, bad.ID())
	}
	mu.Unlock()
	if !logs.find(slog.LevelWarn, "bad content", "peer", bad.ID().String()) {
		t.Error("no warning naming the bad peer")
	}
	if got := good.rec.gets(target.Digest.String()); len(got) != 1 || got[0].status != http.StatusOK || got[0].rangeHdr != "" {
		t.Errorf("good peer's GETs of the layer: %+v, want one full GET", got)
	}
	// The bad peer is skipped for good: a request to it fails fast.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+bad.ID().String()+"/v2/", nil)
	if _, err := r.peerc.Do(req); !errors.Is(err, ErrSkippedPeer) {
		t.Errorf("request to the bad peer: %v, want ErrSkippedPeer", err)
	}
}

// TestNonMemberCannotFetch: the peer plane's gater admits members only. A
// host the server does not list cannot fetch anything: the request fails,
// the server's host counts the refusal and its registry sees no request.
// And a client does not dial a peer it does not list itself.
func TestNonMemberCannotFetch(t *testing.T) {
	srv, stranger := newNode(t), newNode(t)
	im := buildImage(t, srv.store, 10<<10)
	srv.serve(t, nil, nil, nil)
	stranger.members.add(srv.ID()) // the stranger dials; the server says no
	ctx := testCtx(t)

	r := NewResolver(ResolverConfig{Transport: stranger.transport(t, srv), Peers: []lpeer.ID{srv.ID()}, Upstream: noUpstream, Logger: discard})
	err := fetchImage(ctx, r, demoRef+"@"+im.index.Digest.String(), stranger.store)
	if err == nil {
		t.Fatal("a non-member fetched an image")
	}
	eventually(t, "the server's gater to count the refusal", func() bool { return srv.Stats().Refused > 0 })
	if got := srv.handler.Stats(); got.Requests != 0 || got.Bytes != 0 {
		t.Errorf("the registry saw %+v from a non-member", got)
	}

	// The other way round: the server would admit the client, but the
	// client's own gater refuses to dial a non-member.
	other := newNode(t)
	srv.members.add(other.ID())
	tr := other.transport(t, srv)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.ID().String()+"/v2/", nil)
	if resp, err := tr.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("dialed a peer that is not a member")
	}
	if other.Stats().Refused == 0 {
		t.Error("the client's gater counted no refusal")
	}
	if got := srv.handler.Stats(); got.Requests != 0 {
		t.Errorf("the registry saw %d requests", got.Requests)
	}
}

// TestTransportRejectsNonPeerURLs: the Transport only carries
// http://<peer ID>/ URLs.
func TestTransportRejectsNonPeerURLs(t *testing.T) {
	n := newNode(t)
	tr := n.transport(t)
	for _, u := range []string{"http://example.com/v2/", "https://" + n.ID().String() + "/v2/", "http://" + n.ID().String() + ":8080/v2/"} {
		req := &http.Request{Method: http.MethodGet, URL: mustURL(t, u), Header: http.Header{}}
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Errorf("RoundTrip(%s) succeeded", u)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
