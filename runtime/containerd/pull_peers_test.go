package containerd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	host  *peer.Host
	store content.Store
	root  string
}

// The driver pulls an image it lacks, pinned to a digest, from peers over
// the peer plane with containerd's own pull: the first peer serves a
// corrupted layer, which is rejected (counted, the peer skipped, the bad
// download dropped), and the second peer's copy is used. The image is then
// held, verified by containerd, and runs.
func TestPullFromPeersSkipsCorruptPeer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	members := map[lpeer.ID]bool{}
	var mu sync.Mutex
	allow := func(id lpeer.ID) bool { mu.Lock(); defer mu.Unlock(); return members[id] }
	newPeer := func() *registryPeer {
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := peer.New(peer.Config{Identity: key, ListenIP: netip.MustParseAddr("127.0.0.1"), Allow: allow})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		root := t.TempDir()
		st, err := local.NewStore(root)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		members[h.ID()] = true
		mu.Unlock()
		return &registryPeer{host: h, store: st, root: root}
	}
	client, bad, good := newPeer(), newPeer(), newPeer()

	// The test image's blobs in both serving stores.
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
	layerBytes := new(bytes.Buffer)
	if _, err := layerBytes.ReadFrom(lr); err != nil {
		t.Fatal(err)
	}
	manifestDesc := ocispec.Descriptor{MediaType: string(m.MediaType), Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	layerDigest := digest.Digest(m.Layers[0].Digest.String())
	blobs := []struct {
		b    []byte
		desc ocispec.Descriptor
	}{
		{raw, manifestDesc},
		{rawConfig, ocispec.Descriptor{MediaType: string(m.Config.MediaType), Digest: digest.FromBytes(rawConfig), Size: int64(len(rawConfig))}},
		{layerBytes.Bytes(), ocispec.Descriptor{MediaType: string(m.Layers[0].MediaType), Digest: layerDigest, Size: int64(layerBytes.Len())}},
	}
	for _, p := range []*registryPeer{bad, good} {
		for _, b := range blobs {
			if err := content.WriteBlob(ctx, p.store, b.desc.Digest.String(), bytes.NewReader(b.b), b.desc); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Corrupt the bad peer's layer on disk: same size, other bytes.
	corrupt := bytes.Clone(layerBytes.Bytes())
	corrupt[len(corrupt)/2] ^= 0xff
	if err := os.WriteFile(filepath.Join(bad.root, "blobs", "sha256", layerDigest.Encoded()), corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	served := map[*registryPeer]*peerregistry.Handler{}
	for _, p := range []*registryPeer{bad, good} {
		h := peerregistry.NewHandler(p.store, nil, nil)
		served[p] = h
		srv := peerregistry.NewServer(p.host.Libp2p(), h, nil)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Run(sctx) }()
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
	addrs := map[lpeer.ID]netip.AddrPort{}
	for _, p := range []*registryPeer{bad, good} {
		addrs[p.host.ID()] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.host.Port()))
	}
	tr := peerregistry.NewTransport(client.host.Libp2p(), func(id lpeer.ID) netip.AddrPort { return addrs[id] })
	t.Cleanup(tr.CloseIdleConnections)
	resolver := judgingResolver{peerregistry.NewResolver(peerregistry.ResolverConfig{
		Transport: tr,
		Peers:     []lpeer.ID{bad.host.ID(), good.host.ID()},
		Upstream:  func(string) ([]docker.RegistryHost, error) { return nil, nil },
	})}
	calls := 0
	e.d.SetImageResolver(func(context.Context, string) (remotes.Resolver, error) {
		calls++
		return resolver, nil
	})

	ref := "docker.io/library/p2p:1@" + manifestDesc.Digest.String()
	got, err := e.d.EnsureImage(ctx, ref)
	if err != nil {
		t.Fatalf("EnsureImage through peers: %v", err)
	}
	if got.Digest != manifestDesc.Digest.String() {
		t.Fatalf("pulled %+v, want digest %s", got, manifestDesc.Digest)
	}
	st := resolver.Stats()
	if st.BadContent < 1 || !slices.Contains(resolver.BadPeers(), bad.host.ID()) || slices.Contains(resolver.BadPeers(), good.host.ID()) {
		t.Fatalf("resolver stats %+v, bad peers %v: want the corrupt peer counted and skipped", st, resolver.BadPeers())
	}
	if calls < 2 {
		t.Errorf("%d pull attempts, want a retry after the bad content", calls)
	}
	if served[good].Stats().Bytes < uint64(layerBytes.Len()) {
		t.Errorf("the good peer served %d bytes, less than the layer's %d", served[good].Stats().Bytes, layerBytes.Len())
	}
	// containerd holds the genuine layer, and no download is left over.
	info, err := e.client.ContentStore().Info(e.nsctx(), layerDigest)
	if err != nil || info.Size != int64(layerBytes.Len()) {
		t.Fatalf("layer in containerd: %+v, %v", info, err)
	}
	if sts, _ := e.client.ContentStore().ListStatuses(e.nsctx()); len(sts) != 0 {
		t.Errorf("downloads left over: %+v", sts)
	}
	// The image also has its tag, and a replica runs from the digest.
	imgs, err := e.d.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Stored once, under its tag.
	var held []string
	for _, i := range imgs {
		if i.Digest == manifestDesc.Digest.String() {
			held = append(held, i.Name)
		}
	}
	if len(held) != 1 || !strings.HasSuffix(held[0], "/p2p:1") {
		t.Errorf("the pulled image is held as %v, want once as p2p:1", held)
	}
	r := e.start(t, runtime.ReplicaSpec{ID: "p2p-0", Service: "p2p", Image: ref, Ports: []int{80}})
	waitHello(t, fmt.Sprintf("http://127.0.0.1:%d/", r.HostPorts[80]))
}
