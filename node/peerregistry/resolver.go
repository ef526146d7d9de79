package peerregistry

import (
	"context"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/libp2p/go-libp2p/core/peer"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Transport carries requests to peers: a *Transport, or any
	// RoundTripper that routes http://<peer ID>/ URLs. Required when Peers
	// is not empty.
	Transport http.RoundTripper
	// Peers are the candidate peers, tried in this order (the caller puts
	// the ones known to hold the image first). They are trusted to resolve
	// tags, as cluster members.
	Peers []peer.ID
	// Upstream returns the registry hosts tried after every peer. Nil
	// means docker.ConfigureDefaultRegistries with plain HTTP for loopback
	// registries and the default (anonymous token) authorizer. To use
	// peers only, return no hosts.
	Upstream docker.RegistryHosts
	// OnBadPeer, if set, is called (synchronously, so it must not block)
	// each time a peer is marked bad, with the reason: a
	// *BadContentError, or the commit error passed to Blame. It lets the
	// agent remember bad peers beyond one Resolver.
	OnBadPeer func(p peer.ID, d digest.Digest, reason error)
	// Logger receives warnings about bad peers. Nil means slog.Default().
	Logger *slog.Logger
}

// Resolver is a containerd remotes.Resolver whose hosts are the configured
// peers, in order, then the upstream registry. It verifies what peers send
// (see the package doc) and skips a peer for the rest of its life once the
// peer has served bad content. Use one Resolver per pull (with its retries);
// it is safe for concurrent use.
type Resolver struct {
	cfg   ResolverConfig
	inner remotes.Resolver
	peerc *http.Client
	log   *slog.Logger

	mu      sync.Mutex                // guards bad and sources
	bad     map[peer.ID]bool          // peers skipped from now on
	sources map[digest.Digest]peer.ID // last peer that served (part of) each digest

	stats resolverCounters
}

var _ remotes.Resolver = (*Resolver)(nil)

// resolverCounters back ResolverStats.
type resolverCounters struct {
	peerRequests, verified, ranged, badContent, blamed atomic.Uint64
}

// ResolverStats are a Resolver's counters. All only grow.
type ResolverStats struct {
	// PeerRequests counts HTTP requests that reached a peer and got an
	// answer.
	PeerRequests uint64
	// Verified counts full blob and manifest bodies from peers whose
	// digest matched.
	Verified uint64
	// Ranged counts partial (206) bodies from peers: resumed transfers,
	// verified only by containerd's commit.
	Ranged uint64
	// BadContent counts responses from peers that failed verification (body
	// or Docker-Content-Digest header).
	BadContent uint64
	// Blamed counts peers marked bad through Blame.
	Blamed uint64
	// BadPeers is how many distinct peers are marked bad.
	BadPeers int
}

// NewResolver returns a Resolver for cfg. It panics if cfg.Peers is not
// empty and cfg.Transport is nil.
func NewResolver(cfg ResolverConfig) *Resolver {
	if len(cfg.Peers) > 0 && cfg.Transport == nil {
		panic("peerregistry: ResolverConfig.Transport is required with Peers")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Upstream == nil {
		cfg.Upstream = docker.ConfigureDefaultRegistries(
			docker.WithPlainHTTP(docker.MatchLocalhost),
			docker.WithAuthorizer(docker.NewDockerAuthorizer()),
		)
	}
	r := &Resolver{
		cfg:     cfg,
		log:     cfg.Logger,
		bad:     map[peer.ID]bool{},
		sources: map[digest.Digest]peer.ID{},
	}
	r.peerc = &http.Client{Transport: &verifyingTransport{r: r}}
	r.inner = docker.NewResolver(docker.ResolverOptions{Hosts: r.hosts})
	return r
}

// hosts is the docker.RegistryHosts of the inner resolver: the peers not
// marked bad, then upstream. containerd calls it once per Resolve and per
// Fetcher; requests to a peer marked bad later fail fast (ErrSkippedPeer).
func (r *Resolver) hosts(refHost string) ([]docker.RegistryHost, error) {
	var hs []docker.RegistryHost
	for _, p := range r.cfg.Peers {
		if r.isBad(p) {
			continue
		}
		hs = append(hs, docker.RegistryHost{
			Client:       r.peerc,
			Host:         p.String(),
			Scheme:       "http", // the stream is already secured by the peer plane
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		})
	}
	up, err := r.cfg.Upstream(refHost)
	if err != nil {
		if len(hs) == 0 {
			return nil, err
		}
		r.log.Debug("peerregistry: no upstream hosts", "host", refHost, "err", err)
	}
	return append(hs, up...), nil
}

// Resolve implements remotes.Resolver.
func (r *Resolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	return r.inner.Resolve(ctx, ref)
}

// Fetcher implements remotes.Resolver.
func (r *Resolver) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	return r.inner.Fetcher(ctx, ref)
}

// Pusher implements remotes.Resolver; only upstream hosts take pushes.
func (r *Resolver) Pusher(ctx context.Context, ref string) (remotes.Pusher, error) {
	return r.inner.Pusher(ctx, ref)
}

// Stats returns a snapshot of the resolver's counters.
func (r *Resolver) Stats() ResolverStats {
	r.mu.Lock()
	n := len(r.bad)
	r.mu.Unlock()
	return ResolverStats{
		PeerRequests: r.stats.peerRequests.Load(),
		Verified:     r.stats.verified.Load(),
		Ranged:       r.stats.ranged.Load(),
		BadContent:   r.stats.badContent.Load(),
		Blamed:       r.stats.blamed.Load(),
		BadPeers:     n,
	}
}

// BadPeers returns the peers marked bad, in Peers order.
func (r *Resolver) BadPeers() []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []peer.ID
	for _, p := range r.cfg.Peers {
		if r.bad[p] {
			out = append(out, p)
		}
	}
	return out
}

// LastSource returns the peer that last sent bytes of d (a full or a ranged
// body) through this resolver.
func (r *Resolver) LastSource(d digest.Digest) (peer.ID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.sources[d]
	return p, ok
}

// Blame marks the last peer that sent bytes of d as bad (counted, logged,
// skipped from now on) and returns it; false if no peer sent any. Call it
// when containerd's commit of d failed ("unexpected commit digest"): the
// ingest was resumed with a ranged body, which only the commit can check.
// The blamed peer served the tail; an earlier source of the prefix may be
// the culprit instead, which is why the caller must also abort the ingest
// (AbortIngests) before retrying. Blaming a peer already marked bad changes
// nothing.
func (r *Resolver) Blame(d digest.Digest, reason error) (peer.ID, bool) {
	p, ok := r.LastSource(d)
	if !ok {
		return "", false
	}
	if r.markBad(p, d, reason) {
		r.stats.blamed.Add(1)
	}
	return p, true
}

func (r *Resolver) isBad(p peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad[p]
}

// markBad marks p bad because of d and reports whether it was newly marked.
func (r *Resolver) markBad(p peer.ID, d digest.Digest, reason error) bool {
	r.mu.Lock()
	fresh := !r.bad[p]
	r.bad[p] = true
	r.mu.Unlock()
	if !fresh {
		return false
	}
	r.log.Warn("peerregistry: skipping peer that served bad content", "peer", p, "digest", d, "err", reason)
	if r.cfg.OnBadPeer != nil {
		r.cfg.OnBadPeer(p, d, reason)
	}
	return true
}

// badContent records a verification failure: counted, peer marked bad.
func (r *Resolver) badContent(e *BadContentError) {
	r.stats.badContent.Add(1)
	r.markBad(e.Peer, e.Digest, e)
}

func (r *Resolver) setSource(d digest.Digest, p peer.ID) {
	r.mu.Lock()
	r.sources[d] = p
	r.mu.Unlock()
}

// verifyingTransport is the RoundTripper of every peer host: it skips bad
// peers and checks what the others send for a digest.
type verifyingTransport struct{ r *Resolver }

func (t *verifyingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := t.r
	p, err := peer.Decode(req.URL.Hostname())
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("peerregistry: host %q is not a peer ID", req.URL.Host)
	}
	if r.isBad(p) {
		closeBody(req)
		return nil, fmt.Errorf("%w: %s", ErrSkippedPeer, p)
	}
	resp, err := r.cfg.Transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	r.stats.peerRequests.Add(1)
	rt, perr := parsePath(req.URL.Path)
	if perr != nil || rt.digest == "" || resp.StatusCode/100 != 2 {
		return resp, nil // not content by digest: nothing to verify
	}
	d := rt.digest
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != d.String() {
		_ = resp.Body.Close()
		e := &BadContentError{Peer: p, Digest: d, Got: digest.Digest(h), Size: -1}
		r.badContent(e)
		return nil, e
	}
	if req.Method != http.MethodGet {
		return resp, nil
	}
	r.setSource(d, p)
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength < 0 {
			// Our server always sends a length; an unbounded body could
			// only be cut by the caller's deadline.
			_ = resp.Body.Close()
			return nil, fmt.Errorf("peerregistry: peer %s answered %s without Content-Length", p, req.URL.Path)
		}
		resp.Body = &verifyingBody{rc: resp.Body, h: d.Algorithm().Hash(), want: d, peer: p, r: r}
	case http.StatusPartialContent:
		r.stats.ranged.Add(1)
	}
	return resp, nil
}

// verifyingBody hashes a full body as it is read and, at the end, returns
// a *BadContentError instead of io.EOF if the digest does not match.
type verifyingBody struct {
	rc   io.ReadCloser
	h    hash.Hash
	want digest.Digest
	peer peer.ID
	r    *Resolver
	n    int64
	err  error // sticky final result: io.EOF or *BadContentError
}

func (b *verifyingBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	b.h.Write(p[:n])
	b.n += int64(n)
	if err != io.EOF {
		return n, err
	}
	got := digest.NewDigest(b.want.Algorithm(), b.h)
	if got == b.want {
		b.r.stats.verified.Add(1)
		b.err = io.EOF
	} else {
		e := &BadContentError{Peer: b.peer, Digest: b.want, Got: got, Size: b.n}
		b.r.badContent(e)
		b.err = e
	}
	return n, b.err
}

func (b *verifyingBody) Close() error { return b.rc.Close() }
