package peerregistry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	logging "github.com/libp2p/go-libp2p/gologshim"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"

	"github.com/shoalmesh/shoal/node/peer"
)

func TestMain(m *testing.M) {
	logging.SetDefaultHandler(discard.Handler())
	// No goroutine is exempt: closed hosts, servers and transports leave
	// nothing behind.
	goleak.VerifyTestMain(m)
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// members is a test's view of cluster membership.
type members struct {
	mu  sync.RWMutex
	ids map[lpeer.ID]bool
}

func (m *members) add(ids ...lpeer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		m.ids[id] = true
	}
}

func (m *members) allow(id lpeer.ID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ids[id]
}

// node is a peer-plane host on 127.0.0.1 with a content store in a temp
// dir; serve adds a registry server.
type node struct {
	*peer.Host
	members *members
	store   content.Store
	handler *Handler
	rec     *recorder // wraps handler once serving
}

func (n *node) addrPort() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.Port()))
}

// newNode starts a host, closed at the end of the test.
func newNode(t testing.TB) *node {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &members{ids: map[lpeer.ID]bool{}}
	h, err := peer.New(peer.Config{
		Identity: key,
		ListenIP: netip.MustParseAddr("127.0.0.1"),
		Allow:    m.allow,
		Logger:   discard,
	})
	if err != nil {
		t.Fatalf("peer.New: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	st, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &node{Host: h, members: m, store: st}
}

// befriend makes every pair of the nodes members of each other's cluster.
func befriend(nodes ...*node) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.members.add(b.ID())
			}
		}
	}
}

// serve runs a registry Server for store (n's by default) until the end of
// the test, and waits until it is registered. The server's handler is a
// recorder, around mod's wrapper if any, around the Handler.
func (n *node) serve(t testing.TB, store content.InfoReaderProvider, tags TagFunc, mod func(http.Handler) http.Handler) {
	t.Helper()
	if store == nil {
		store = n.store
	}
	n.handler = NewHandler(store, tags, discard)
	var h http.Handler = n.handler
	if mod != nil {
		h = mod(h)
	}
	n.rec = &recorder{next: h}
	startServer(t, n.Host, n.rec)
}

func startServer(t testing.TB, h *peer.Host, handler http.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv := NewServer(h.Libp2p(), handler, discard)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "registry protocol registered", func() bool {
		return slices.Contains(h.Libp2p().Mux().Protocols(), Protocol)
	})
}

// transport returns a Transport from n that knows the others' addresses;
// idle streams are closed at the end of the test.
func (n *node) transport(t testing.TB, others ...*node) *Transport {
	addrs := map[lpeer.ID]netip.AddrPort{}
	for _, o := range others {
		addrs[o.ID()] = o.addrPort()
	}
	tr := NewTransport(n.Libp2p(), func(id lpeer.ID) netip.AddrPort { return addrs[id] })
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// noUpstream is a ResolverConfig.Upstream with no hosts: peers only.
func noUpstream(string) ([]docker.RegistryHost, error) { return nil, nil }

// recorder records what a node's registry was asked and answered.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, path, rangeHdr string
	status                 int
	bytes                  int64
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw := &countingWriter{ResponseWriter: w, n: new(atomic.Uint64)}
	defer func() { // deferred: a handler that aborts by panicking is recorded too
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, recorded{r.Method, r.URL.Path, r.Header.Get("Range"), cw.status, cw.written})
		rc.mu.Unlock()
	}()
	rc.next.ServeHTTP(cw, r)
}

// gets returns the recorded GETs of paths ending with suffix.
func (rc *recorder) gets(suffix string) []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []recorded
	for _, r := range rc.reqs {
		if r.method == http.MethodGet && strings.HasSuffix(r.path, suffix) {
			out = append(out, r)
		}
	}
	return out
}

// testImage is a small OCI image: index -> manifest -> config + layers.
type testImage struct {
	index, manifest, config ocispec.Descriptor
	layers                  []ocispec.Descriptor
	blobs                   map[digest.Digest][]byte
}

func (im *testImage) all() []ocispec.Descriptor {
	return append([]ocispec.Descriptor{im.index, im.manifest, im.config}, im.layers...)
}

// randomBytes returns n random bytes.
func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// buildImage writes an image with layers of the given sizes into st.
func buildImage(t testing.TB, st content.Ingester, layerSizes ...int) *testImage {
	t.Helper()
	ctx := testCtx(t)
	im := &testImage{blobs: map[digest.Digest][]byte{}}
	put := func(mt string, b []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := content.WriteBlob(ctx, st, d.Digest.String(), bytes.NewReader(b), d); err != nil {
			t.Fatalf("WriteBlob: %v", err)
		}
		im.blobs[d.Digest] = b
		return d
	}
	var diffIDs []digest.Digest
	for _, n := range layerSizes {
		l := put(ocispec.MediaTypeImageLayerGzip, randomBytes(t, n))
		im.layers = append(im.layers, l)
		diffIDs = append(diffIDs, l.Digest)
	}
	im.config = put(ocispec.MediaTypeImageConfig, mustJSON(t, ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}))
	im.manifest = put(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    im.config,
		Layers:    im.layers,
	}))
	im.manifest.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	im.index = put(ocispec.MediaTypeImageIndex, mustJSON(t, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{im.manifest},
	}))
	return im
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fetchImage resolves ref through r and fetches its whole graph into dst,
// as containerd's pull does.
func fetchImage(ctx context.Context, r remotes.Resolver, ref string, dst content.Store) error {
	name, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	f, err := r.Fetcher(ctx, name)
	if err != nil {
		return err
	}
	return images.Dispatch(ctx, images.Handlers(remotes.FetchHandler(dst, f), images.ChildrenHandler(dst)), nil, desc)
}

// checkImage asserts that st holds every blob of im, intact.
func checkImage(t testing.TB, st content.Store, im *testImage) {
	t.Helper()
	ctx := testCtx(t)
	for _, d := range im.all() {
		b, err := content.ReadBlob(ctx, st, d)
		if err != nil {
			t.Fatalf("blob %s (%s): %v", d.Digest, d.MediaType, err)
		}
		if got := digest.FromBytes(b); got != d.Digest || !bytes.Equal(b, im.blobs[d.Digest]) {
			t.Fatalf("blob %s: content digest %s", d.Digest, got)
		}
	}
	sts, err := st.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 0 {
		t.Fatalf("ingests left behind: %+v", sts)
	}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// testCtx is a context for one test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// logRecorder is a slog.Handler that keeps records.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// find returns the first record at level with msg containing sub and an
// attribute key whose value formats as val.
func (l *logRecorder) find(level slog.Level, sub, key, val string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Level != level || !strings.Contains(r.Message, sub) {
			continue
		}
		found := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key && a.Value.String() == val {
				found = true
				return false
			}
			return true
		})
		if found {
			return true
		}
	}
	return false
}
