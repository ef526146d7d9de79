package node

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/peerregistry"
)

// Images travel peer to peer. Every node whose runtime can share its
// content (the containerd driver) serves its content store read-only as an
// OCI registry on the peer plane (package peerregistry), to members only.
// A node that must run an image it lacks pulls it with containerd's own
// pull through a resolver whose hosts are the members that hold the image
// (asked with a HEAD of the manifest, in random order so that a cluster
// pulling at once spreads over the holders), then the image's registry.
// What arrives is verified; a peer that served bad data is skipped for
// badPeerTTL by every later pull of this node.

// imageSharer is the optional runtime interface behind peer images.
type imageSharer interface {
	// ContentStore is the runtime's content store; its calls need
	// contexts from WithNamespace.
	ContentStore() content.Store
	WithNamespace(ctx context.Context) context.Context
	// LookupImage returns the target of a stored image by name, for peers
	// that ask for a tag.
	LookupImage(ctx context.Context, name string) (ocispec.Descriptor, bool)
	// SetImageResolver routes the runtime's pulls through fn.
	SetImageResolver(fn func(ctx context.Context, ref string) (remotes.Resolver, error))
	// PullProgress reports bytes held and needed of a pull of ref (pinned
	// to a digest); total 0 while unknown.
	PullProgress(ctx context.Context, ref string) (done, total int64)
}

// Timings of peer images.
const (
	// holderTimeout bounds the HEAD that asks a member whether it holds
	// an image.
	holderTimeout = 2 * time.Second
	// badPeerTTL is how long a peer that served bad content is skipped.
	badPeerTTL = 10 * time.Minute
)

// peerImages is the agent's side of peer images.
type peerImages struct {
	rt        imageSharer
	handler   *peerregistry.Handler
	server    *peerregistry.Server
	transport *peerregistry.Transport
	plain     *peerregistry.PlainServer // nil unless --image-transfer plain
	client    *http.Client              // over transport, for HEADs and image lists
	badPeers  prometheus.Counter
	log       *slog.Logger

	mu  sync.Mutex
	bad map[peer.ID]time.Time // peer -> skipped until
}

// nsContent runs a content store's reads in the runtime's namespace.
type nsContent struct {
	cs content.Store
	ns func(context.Context) context.Context
}

func (c nsContent) Info(ctx context.Context, dg digest.Digest) (content.Info, error) {
	return c.cs.Info(c.ns(ctx), dg)
}

func (c nsContent) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return c.cs.ReaderAt(c.ns(ctx), desc)
}

// startPeerImages serves this node's images to peers and routes the
// runtime's pulls through them, when the runtime can share content.
func (a *Agent) startPeerImages(ctx context.Context, wg *sync.WaitGroup) {
	rt, ok := a.cfg.Runtime.(imageSharer)
	if !ok {
		return
	}
	p := &peerImages{
		rt:  rt,
		log: a.log,
		bad: make(map[peer.ID]time.Time),
		badPeers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_image_bad_peer_content_total",
			Help: "Image content from peers that failed verification (the peer is then skipped for a while).",
		}),
	}
	a.metrics.reg.MustRegister(p.badPeers)
	lookup := func(ctx context.Context, name string) (ocispec.Descriptor, bool) { return rt.LookupImage(ctx, name) }
	p.handler = peerregistry.NewHandler(nsContent{cs: rt.ContentStore(), ns: rt.WithNamespace}, lookup, a.log)
	mux := http.NewServeMux()
	mux.Handle("/v2/", p.handler)
	mux.HandleFunc("GET "+peerImagesPath, a.servePeerImages)
	p.server = peerregistry.NewServer(a.host.Libp2p(), mux, a.log)
	p.transport = peerregistry.NewTransport(a.host.Libp2p(), a.peerAddr)
	if !a.cfg.BindAddr.IsUnspecified() {
		p.transport.SetPlainSource(a.cfg.BindAddr) // peers' tickets name this address
	}
	p.client = &http.Client{Transport: p.transport}
	if a.plainLn != nil {
		ps, err := peerregistry.NewPlainServer(p.handler, a.plainLn, a.cfg.AdvertiseAddr, a.log)
		if err != nil {
			a.log.Error("plain image transfer off", "err", err)
		} else {
			p.plain = ps
			p.handler.SetPlain(ps, a.plainClient)
			a.log.Info("image blobs go to peers over plain HTTP (--image-transfer plain)", "addr", a.plainLn.Addr())
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := ps.Run(ctx); err != nil && ctx.Err() == nil {
					a.log.Error("plain image server stopped", "err", err)
				}
			}()
		}
	}
	a.images.Store(p)
	rt.SetImageResolver(a.imageResolver)
	a.host.Libp2p().SetStreamHandler(pullProto, a.servePull)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.server.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("peer image server stopped", "err", err)
		}
		a.host.Libp2p().RemoveStreamHandler(pullProto)
	}()
}

// plainClient is the address a member connects to the plain image listener
// from: its address in membership. remote is a peer ID.
func (a *Agent) plainClient(remote string) (netip.Addr, bool) {
	id, err := peer.Decode(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	m, ok := a.members.Load().byPeer[id]
	if !ok || !m.Addr.IsValid() {
		return netip.Addr{}, false
	}
	return m.Addr, true
}

// peerAddr is a member's peer-plane address (invalid if it is not one).
func (a *Agent) peerAddr(id peer.ID) netip.AddrPort {
	m, ok := a.members.Load().byPeer[id]
	if !ok {
		return netip.AddrPort{}
	}
	_, addr, err := peerOf(m)
	if err != nil {
		return netip.AddrPort{}
	}
	return addr
}

// imageResolver is the runtime's resolver for one pull of ref: the live
// members that hold it, in random order, then ref's registry.
func (a *Agent) imageResolver(ctx context.Context, ref string) (remotes.Resolver, error) {
	p := a.images.Load()
	holders := a.imageHolders(ctx, ref)
	peers := make([]peer.ID, 0, len(holders))
	for _, h := range holders {
		peers = append(peers, h.id)
	}
	a.log.Debug("pulling image", "image", ref, "peers", len(peers))
	return blamingResolver{peerregistry.NewResolver(peerregistry.ResolverConfig{
		Transport: p.transport,
		Peers:     peers,
		Logger:    a.log,
		OnBadPeer: func(id peer.ID, d digest.Digest, reason error) {
			p.badPeers.Inc()
			p.mu.Lock()
			p.bad[id] = time.Now().Add(badPeerTTL)
			p.mu.Unlock()
		},
	})}, nil
}

// blamingResolver lets the runtime blame the source of a blob that failed
// containerd's commit check without knowing about peers.
type blamingResolver struct{ *peerregistry.Resolver }

// BlameSource marks the peer that last served d as bad; false if no peer
// served it.
func (r blamingResolver) BlameSource(d digest.Digest, reason error) bool {
	_, ok := r.Blame(d, reason)
	return ok
}

// BadDigest says which blob a failed pull got bad content for.
func (r blamingResolver) BadDigest(err error) (digest.Digest, bool) {
	return peerregistry.BadDigest(err)
}

// holder is a member that holds an image, and the digest it has for it.
type holder struct {
	id     peer.ID
	digest digest.Digest
}

// imageHolders asks every live member, at once, whether it holds ref
// (HEAD of the manifest on its peer registry) and returns those that do
// and are not skipped for bad content, in random order.
func (a *Agent) imageHolders(ctx context.Context, ref string) []holder {
	p := a.images.Load()
	if p == nil {
		return nil
	}
	path, ok := manifestPath(ref)
	if !ok {
		return nil
	}
	now := time.Now()
	var (
		mu  sync.Mutex
		out []holder
		wg  sync.WaitGroup
	)
	for _, m := range a.livePeers() {
		id, _, err := peerOf(m)
		if err != nil {
			continue
		}
		p.mu.Lock()
		skip := now.Before(p.bad[id])
		p.mu.Unlock()
		if skip {
			continue
		}
		wg.Add(1)
		go func(m gossip.Member, id peer.ID) {
			defer wg.Done()
			hctx, cancel := context.WithTimeout(ctx, holderTimeout)
			defer cancel()
			req, err := http.NewRequestWithContext(hctx, http.MethodHead, "http://"+id.String()+path, nil)
			if err != nil {
				return
			}
			req.Header.Set("Accept", manifestAccept)
			resp, err := p.client.Do(req)
			if err != nil {
				a.log.Debug("asking a peer for an image", "peer", m.Name, "image", ref, "err", err)
				return
			}
			resp.Body.Close()
			dg, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
			if resp.StatusCode != http.StatusOK || err != nil {
				return
			}
			mu.Lock()
			out = append(out, holder{id: id, digest: dg})
			mu.Unlock()
		}(m, id)
	}
	wg.Wait()
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// manifestAccept is the Accept header of manifest requests: every
// manifest and index type containerd pulls.
const manifestAccept = ocispec.MediaTypeImageIndex + ", " + ocispec.MediaTypeImageManifest + ", " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// manifestPath is the registry path of ref's manifest
// ("/v2/library/demo/manifests/1"), by digest when ref has one.
func manifestPath(ref string) (string, bool) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", false
	}
	tagOrDigest := "latest"
	switch r := named.(type) {
	case reference.Digested:
		tagOrDigest = r.Digest().String()
	case reference.Tagged:
		tagOrDigest = r.Tag()
	}
	return "/v2/" + reference.Path(named) + "/manifests/" + tagOrDigest, true
}

// resolveImageOnPeers returns the digest the live members hold for ref:
// the one most of them hold (ties: the smallest), for a tag that was
// loaded twice with different content on different nodes.
func (a *Agent) resolveImageOnPeers(ctx context.Context, ref string) (string, bool) {
	hs := a.imageHolders(ctx, ref)
	if len(hs) == 0 {
		return "", false
	}
	count := map[digest.Digest]int{}
	for _, h := range hs {
		count[h.digest]++
	}
	best := slices.MaxFunc(slices.Collect(maps.Keys(count)), func(x, y digest.Digest) int {
		if c := cmp.Compare(count[x], count[y]); c != 0 {
			return c
		}
		return cmp.Compare(y, x) // smaller digest wins a tie
	})
	return best.String(), true
}

// peerImagesPath is the peer registry's extra endpoint: the images the
// node holds, as a JSON list of api.Image.
const peerImagesPath = "/shoal/v1/images"

// Limits on a peer's image list.
const (
	maxPeerImages     = 10000
	maxPeerImagesBody = 8 << 20
)

// servePeerImages answers peerImagesPath.
func (a *Agent) servePeerImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := a.cfg.Runtime.Images(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, apiImages(imgs))
}

// decodePeerImages decodes a peer's image list, checking every entry.
func decodePeerImages(b []byte) ([]api.Image, error) {
	if len(b) > maxPeerImagesBody {
		return nil, fmt.Errorf("%w: image list of %d bytes", errBadMessage, len(b))
	}
	var imgs []api.Image
	if err := json.Unmarshal(b, &imgs); err != nil {
		return nil, fmt.Errorf("%w: image list: %v", errBadMessage, err)
	}
	if len(imgs) > maxPeerImages {
		return nil, fmt.Errorf("%w: %d images", errBadMessage, len(imgs))
	}
	for _, img := range imgs {
		if img.Name == "" || len(img.Name) > 512 || len(img.Platforms) > 64 || img.Size < 0 || len(img.Nodes) > 0 {
			return nil, fmt.Errorf("%w: bad image entry %.80q", errBadMessage, img.Name)
		}
		if _, err := digest.Parse(img.Digest); err != nil {
			return nil, fmt.Errorf("%w: image %.80q: %v", errBadMessage, img.Name, err)
		}
	}
	return imgs, nil
}

// peerImageList fetches member m's image list.
func (a *Agent) peerImageList(ctx context.Context, m gossip.Member) ([]api.Image, error) {
	id, _, err := peerOf(m)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+id.String()+peerImagesPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.images.Load().client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPeerImagesBody+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	imgs, err := decodePeerImages(b)
	if err != nil {
		a.metrics.droppedPeer.Inc()
		a.log.Warn("dropped a bad image list", "from", m.Name, "err", err)
	}
	return imgs, err
}

// clusterImages merges this node's images with every live member's, by
// name and digest, and says which nodes hold each. It returns the members
// whose list did not arrive.
func (a *Agent) clusterImages(ctx context.Context, mine []api.Image) ([]api.Image, []string) {
	type key struct{ name, digest string }
	merged := map[key]*api.Image{}
	add := func(node string, imgs []api.Image) {
		for _, img := range imgs {
			k := key{img.Name, img.Digest}
			e, ok := merged[k]
			if !ok {
				c := img
				c.Nodes = nil
				e = &c
				merged[k] = e
			}
			e.Nodes = append(e.Nodes, node)
		}
	}
	add(a.cfg.Name, mine)
	var missing []string
	if a.images.Load() != nil {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, m := range a.livePeers() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				imgs, err := a.peerImageList(lctx, m)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					a.log.Debug("image list from a peer", "peer", m.Name, "err", err)
					missing = append(missing, m.Name)
					return
				}
				add(m.Name, imgs)
			}()
		}
		wg.Wait()
	}
	out := make([]api.Image, 0, len(merged))
	for _, e := range merged {
		slices.Sort(e.Nodes)
		out = append(out, *e)
	}
	slices.SortFunc(out, func(x, y api.Image) int {
		return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.Digest, y.Digest))
	})
	slices.Sort(missing)
	return out, missing
}
