package containerd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalmesh/shoal/node/peer"
	"github.com/shoalmesh/shoal/node/peerregistry"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/testenv"
)

// judgingResolver is what the agent hands the driver: a peer resolver that
// says which blob was bad and blames its source.
type judgingResolver struct{ *peerregistry.Resolver }

func (r judgingResolver) BadDigest(err error) (digest.Digest, bool) {
	return peerregistry.BadDigest(err)
}
func (r judgingResolver) BlameSource(d digest.Digest, reason error) bool {
	_, ok := r.Blame(d, reason)
	return ok
}

// registryPeer is a peer-plane host serving a content store.
type registryPeer struct {
	host    *peer.Host
	store   content.Store
	root    string
	handler *peerregistry.Handler
}

// peerNet is a set of peer-plane hosts on 127.0.0.1 that admit each other.
type peerNet struct {
	t       *testing.T
	mu      sync.Mutex
	members map[lpeer.ID]bool
}

func (n *peerNet) allow(id lpeer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.members[id]
}

// add starts a host with a content store, closed at the end of the test.
func (n *peerNet) add() *registryPeer {
	t := n.t
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := peer.New(peer.Config{Identity: key, ListenIP: netip.MustParseAddr("127.0.0.1"), Allow: n.allow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	root := t.TempDir()
	st, err := local.NewStore(root)
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.members[h.ID()] = true
	n.mu.Unlock()
	return &registryPeer{host: h, store: st, root: root}
}

// serve runs p's registry (its handler wrapped by wrap, if set) until the
// end of the test.
func (p *registryPeer) serve(t *testing.T, wrap func(http.Handler) http.Handler) {
	p.handler = peerregistry.NewHandler(p.store, nil, nil)
	var h http.Handler = p.handler
	if wrap != nil {
		h = wrap(h)
	}
	srv := peerregistry.NewServer(p.host.Libp2p(), h, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := testenv.Poll(10*time.Second, func() error {
		if !slices.Contains(p.host.Libp2p().Mux().Protocols(), peerregistry.Protocol) {
			return errors.New("registry server not registered")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// resolverTo is a judging resolver on client for peers, in order, with no
// upstream registry.
func resolverTo(t *testing.T, client *registryPeer, peers ...*registryPeer) judgingResolver {
	addrs := map[lpeer.ID]netip.AddrPort{}
	var ids []lpeer.ID
	for _, p := range peers {
		addrs[p.host.ID()] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.host.Port()))
		ids = append(ids, p.host.ID())
	}
	tr := peerregistry.NewTransport(client.host.Libp2p(), func(id lpeer.ID) netip.AddrPort { return addrs[id] })
	t.Cleanup(tr.CloseIdleConnections)
	return judgingResolver{peerregistry.NewResolver(peerregistry.ResolverConfig{
		Transport: tr,
		Peers:     ids,
		Upstream:  func(string) ([]docker.RegistryHost, error) { return nil, nil },
	})}
}

// testBlobs is the test image as blobs: manifest, config, layer.
type testBlobs struct {
	manifest, layer ocispec.Descriptor
	layerBytes      []byte
	all             []struct {
		b    []byte
		desc ocispec.Descriptor
	}
}

func imageBlobs(t *testing.T) testBlobs {
	img := testImage(t, "amd64", true)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := img.LayerByDigest(m.Layers[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	lr, err := layer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	var lb bytes.Buffer
	if _, err := lb.ReadFrom(lr); err != nil {
		t.Fatal(err)
	}
	var b testBlobs
	b.manifest = ocispec.Descriptor{MediaType: string(m.MediaType), Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	b.layer = ocispec.Descriptor{MediaType: string(m.Layers[0].MediaType), Digest: digest.Digest(m.Layers[0].Digest.String()), Size: int64(lb.Len())}
	b.layerBytes = lb.Bytes()
	config := ocispec.Descriptor{MediaType: string(m.Config.MediaType), Digest: digest.FromBytes(rawConfig), Size: int64(len(rawConfig))}
	b.all = append(b.all, struct {
		b    []byte
		desc ocispec.Descriptor
	}{raw, b.manifest}, struct {
		b    []byte
		desc ocispec.Descriptor
	}{rawConfig, config}, struct {
		b    []byte
		desc ocispec.Descriptor
	}{b.layerBytes, b.layer})
	return b
}

// put writes the blobs into p's store.
func (b testBlobs) put(t *testing.T, p *registryPeer) {
	for _, x := range b.all {
		if err := content.WriteBlob(context.Background(), p.store, x.desc.Digest.String(), bytes.NewReader(x.b), x.desc); err != nil {
			t.Fatal(err)
		}
	}
}

// checkPulled checks that the driver holds the image once, under its tag
// p2p:1, with the genuine layer and no download left over, and that a
// replica runs from ref.
func checkPulled(t *testing.T, e *env, b testBlobs, ref string) {
	t.Helper()
	info, err := e.client.ContentStore().Info(e.nsctx(), b.layer.Digest)
	if err != nil || info.Size != b.layer.Size {
		t.Fatalf("layer in containerd: %+v, %v", info, err)
	}
	if sts, _ := e.client.ContentStore().ListStatuses(e.nsctx()); len(sts) != 0 {
		t.Errorf("downloads left over: %+v", sts)
	}
	imgs, err := e.d.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for _, i := range imgs {
		if i.Digest == b.manifest.Digest.String() {
			held = append(held, i.Name)
		}
	}
	if len(held) != 1 || !strings.HasSuffix(held[0], "/p2p:1") {
		t.Errorf("the pulled image is held as %v, want once as p2p:1", held)
	}
	r := e.start(t, runtime.ReplicaSpec{ID: "p2p-0", Service: "p2p", Image: ref, Ports: []int{80}})
	waitHello(t, fmt.Sprintf("http://127.0.0.1:%d/", r.HostPorts[80]))
}

// The driver pulls an image it lacks, pinned to a digest, from peers over
// the peer plane with containerd's own pull: the first peer serves a
// corrupted layer, which is rejected (counted, the peer skipped, the bad
// download dropped), and the second peer's copy is used. The image is then
// held, verified by containerd, and runs.
func TestPullFromPeersSkipsCorruptPeer(t *testing.T) {
	e := newEnv(t)
	net := &peerNet{t: t, members: map[lpeer.ID]bool{}}
	client, bad, good := net.add(), net.add(), net.add()
	b := imageBlobs(t)
	b.put(t, bad)
	b.put(t, good)
	// Corrupt the bad peer's layer on disk: same size, other bytes.
	corrupt := bytes.Clone(b.layerBytes)
	corrupt[len(corrupt)/2] ^= 0xff
	if err := os.WriteFile(filepath.Join(bad.root, "blobs", "sha256", b.layer.Digest.Encoded()), corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	bad.serve(t, nil)
	good.serve(t, nil)
	resolver := resolverTo(t, client, bad, good)
	calls := 0
	e.d.SetImageResolver(func(context.Context, string) (remotes.Resolver, error) {
		calls++
		return resolver, nil
	})

	ref := "docker.io/library/p2p:1@" + b.manifest.Digest.String()
	got, err := e.d.EnsureImage(context.Background(), ref)
	if err != nil {
		t.Fatalf("EnsureImage through peers: %v", err)
	}
	if got.Digest != b.manifest.Digest.String() {
		t.Fatalf("pulled %+v, want digest %s", got, b.manifest.Digest)
	}
	st := resolver.Stats()
	if st.BadContent < 1 || !slices.Contains(resolver.BadPeers(), bad.host.ID()) || slices.Contains(resolver.BadPeers(), good.host.ID()) {
		t.Fatalf("resolver stats %+v, bad peers %v: want the corrupt peer counted and skipped", st, resolver.BadPeers())
	}
	if calls < 2 {
		t.Errorf("%d pull attempts, want a retry after the bad content", calls)
	}
	if good.handler.Stats().Bytes < uint64(b.layer.Size) {
		t.Errorf("the good peer served %d bytes, less than the layer's %d", good.handler.Stats().Bytes, b.layer.Size)
	}
	checkPulled(t, e, b, ref)
}

// A transfer cut in the middle of a layer resumes where it stopped, even
// across pull attempts: the attempt fails (the peer breaks the stream,
// then refuses containerd's reopening), the download stays under the
// pull's lease, and the driver's retry asks the peer for the rest of the
// layer only (a Range request from the offset written). The image is
// whole.
func TestPullFromPeerResumesCutTransfer(t *testing.T) {
	e := newEnv(t)
	net := &peerNet{t: t, members: map[lpeer.ID]bool{}}
	client, src := net.add(), net.add()
	b := imageBlobs(t)
	b.put(t, src)
	cut := b.layer.Size / 2
	var mu sync.Mutex
	var ranges []string // Range header of each GET of the layer
	src.serve(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+b.layer.Digest.String()) {
				next.ServeHTTP(w, r)
				return
			}
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			n := len(ranges)
			mu.Unlock()
			if n > 2 {
				next.ServeHTTP(w, r)
				return
			}
			// The first time: half of the layer, then the stream breaks;
			// the second time (containerd's fetcher reopening the body):
			// the peer is unavailable, so the pull attempt fails. The
			// driver's retry must resume the download it kept.
			if n == 2 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Length", fmt.Sprint(b.layer.Size))
			w.Header().Set("Docker-Content-Digest", b.layer.Digest.String())
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(b.layerBytes[:cut])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		})
	})
	resolver := resolverTo(t, client, src)
	calls := 0
	e.d.SetImageResolver(func(context.Context, string) (remotes.Resolver, error) {
		calls++
		return resolver, nil
	})

	ref := "docker.io/library/p2p:1@" + b.manifest.Digest.String()
	if _, err := e.d.EnsureImage(context.Background(), ref); err != nil {
		t.Fatalf("EnsureImage after a cut transfer: %v", err)
	}
	mu.Lock()
	got := slices.Clone(ranges)
	mu.Unlock()
	if len(got) < 3 || got[0] != "" {
		t.Fatalf("layer requests with Range %q, want a full GET, a failed one, then a resumed one", got)
	}
	var from int64
	if _, err := fmt.Sscanf(got[len(got)-1], "bytes=%d-", &from); err != nil || from <= 0 || from > cut {
		t.Fatalf("the last layer request asked for %q, want bytes=N- with 0 < N <= %d", got[len(got)-1], cut)
	}
	if calls < 2 {
		t.Errorf("%d pull attempts, want the driver's retry after the refused reopening", calls)
	}
	checkPulled(t, e, b, ref)
}
