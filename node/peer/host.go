package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
)

// DefaultCallTimeout is the default Config.CallTimeout.
const DefaultCallTimeout = 10 * time.Second

// userAgent is what identify tells peers this host runs.
const userAgent = "shoal"

// libp2pRegistry receives the few collectors libp2p registers even with
// metrics disabled, so that they stay out of prometheus.DefaultRegisterer.
// Nothing reads it.
var libp2pRegistry = prometheus.NewRegistry()

// Config configures a Host. Identity, ListenIP and Allow are required.
type Config struct {
	// Identity is the node's private key (see LoadOrCreateIdentity); the
	// host's peer ID derives from it. Required.
	Identity crypto.PrivKey
	// ListenIP is the IP to listen on; the unspecified address (0.0.0.0 or
	// ::) listens on every interface. When it is a specific address,
	// outbound connections to the same address family and scope (loopback
	// or not) also use it as their source, so that peers see this node at
	// the IP they know it by. Required.
	ListenIP netip.Addr
	// Port is the TCP port to listen on; 0 picks a free one (see Host.Port).
	Port int
	// Allow reports whether a peer ID is a current cluster member. The
	// gater calls it for every outbound dial and, after the security handshake
	// has authenticated the remote, for every connection in either
	// direction. It must be safe for concurrent use and must not block.
	// Required.
	Allow func(peer.ID) bool
	// AllowAddr, if set, reports whether traffic to or from a remote IP is
	// allowed; tests use it to inject partitions. It is checked when dialing
	// an address, when accepting a connection (before the handshake) and
	// after the handshake. It must be safe for concurrent use and must not
	// block. Nil allows every address.
	AllowAddr func(netip.Addr) bool
	// MaxMessageSize caps the payload of one RPC frame, request or response,
	// in both directions. Zero means DefaultMaxMessageSize (16 MiB).
	MaxMessageSize int
	// CallTimeout bounds a Call whose context has no deadline. It also
	// bounds how long this host serves one inbound request: reading the
	// request and running the handler share one CallTimeout (the handler's
	// context expires with it), and writing the answer gets another. Zero
	// means DefaultCallTimeout (10 s).
	CallTimeout time.Duration
	// Logger receives the host's logs (refusals and bad frames at debug,
	// handler panics at error). Nil means slog.Default().
	Logger *slog.Logger
}

// Host is a node's endpoint on the peer plane. Create it with New and release
// it with Close. It is safe for concurrent use.
type Host struct {
	lh          host.Host
	log         *slog.Logger
	maxMsg      int
	callTimeout time.Duration
	port        int
	stats       counters

	// ctx is the parent of every handler's context; cancel fires on Close.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex     // guards closed and the Add side of running
	closed  bool           // set once by Close; no handler starts after it
	running sync.WaitGroup // handlers in flight

	closeOnce sync.Once
	closeErr  error
}

// counters back Stats; the gater shares refused.
type counters struct {
	refused, badFrames, calls, callErrors, served atomic.Uint64
}

// Stats are a Host's counters since New. All of them only grow.
type Stats struct {
	// Refused counts refusals by the connection gater, at any stage, in
	// either direction (a dial refused for each of a peer's addresses counts
	// once per address).
	Refused uint64
	// BadFrames counts malformed, truncated or oversized frames received,
	// as server or as caller. The stream is reset each time.
	BadFrames uint64
	// Calls counts Calls made by this host.
	Calls uint64
	// CallErrors counts Calls that returned an error, remote errors
	// included.
	CallErrors uint64
	// Served counts inbound requests that reached a handler (an addition to
	// the contract, handy for tests and metrics).
	Served uint64
}

// New validates cfg, builds the libp2p host and starts listening. The host
// runs TCP only, with TLS (Noise as a fallback) and yamux; relay, NAT port mapping, hole
// punching, AutoNAT probing, identify's address discovery, ping and metrics
// are off, the resource manager is the null one and there is no connection
// manager (the package doc says why).
func New(cfg Config) (*Host, error) {
	if cfg.Identity == nil {
		return nil, errors.New("peer: Config.Identity is required")
	}
	if cfg.Allow == nil {
		return nil, errors.New("peer: Config.Allow is required")
	}
	if !cfg.ListenIP.IsValid() {
		return nil, errors.New("peer: Config.ListenIP is required")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("peer: Config.Port %d out of range", cfg.Port)
	}
	if cfg.MaxMessageSize < 0 || cfg.CallTimeout < 0 {
		return nil, errors.New("peer: Config.MaxMessageSize and Config.CallTimeout must not be negative")
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	listenIP := cfg.ListenIP.Unmap().WithZone("")

	h := &Host{
		log:         cfg.Logger,
		maxMsg:      cfg.MaxMessageSize,
		callTimeout: cfg.CallTimeout,
	}
	g := &gater{allow: cfg.Allow, allowAddr: cfg.AllowAddr, refused: &h.stats.refused, log: cfg.Logger}

	listen, err := manet.FromNetAddr(&net.TCPAddr{IP: listenIP.AsSlice(), Port: cfg.Port})
	if err != nil {
		return nil, fmt.Errorf("peer: listen address: %w", err)
	}
	// libp2p does not release the peerstore and swarm when starting fails
	// (say, the port is taken); keep hold of them to do it here.
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return nil, fmt.Errorf("peer: peerstore: %w", err)
	}
	var sw *swarm.Swarm
	lh, err := libp2p.NewWithoutDefaults(
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrs(listen),
		libp2p.Transport(tcp.NewTCPTransport,
			tcp.DisableReuseport(), // no SO_REUSEPORT: a second host on the same port must fail
			tcp.WithDialerForAddr(dialerFor(listenIP)),
		),
		// TLS first: AES-GCM in hardware moves image blobs about 20%
		// faster than Noise's ChaCha20-Poly1305 (BENCHMARKS.md, issue #7).
		// Noise stays offered, so peers that offer only Noise still connect.
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.Peerstore(ps),
		libp2p.WithFxOption(fx.Invoke(func(s *swarm.Swarm) { sw = s })),
		libp2p.ConnectionGater(g),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.ConnectionManager(&connmgr.NullConnMgr{}),
		libp2p.DisableRelay(),
		libp2p.ForceReachabilityPublic(), // members dial each other directly; no AutoNAT probing
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.Ping(false),
		// libp2p registers some collectors even with metrics disabled; keep
		// them out of the process-wide registry. Must precede DisableMetrics.
		libp2p.PrometheusRegisterer(libp2pRegistry),
		libp2p.DisableMetrics(),
		libp2p.UDPBlackHoleSuccessCounter(nil),
		libp2p.IPv6BlackHoleSuccessCounter(nil),
		libp2p.UserAgent(userAgent),
	)
	if err != nil {
		if sw != nil {
			_ = sw.Close()
		}
		_ = ps.Close()
		return nil, fmt.Errorf("peer: start libp2p host on %s: %w", listen, err)
	}
	h.lh = lh
	h.port = boundPort(lh.Network().ListenAddresses())
	if h.port == 0 {
		_ = lh.Close()
		return nil, fmt.Errorf("peer: libp2p host is not listening on %s", listen)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.log.Debug("peer: host started", "id", lh.ID(), "port", h.port)
	return h, nil
}

// dialerFor returns the TCP transport's dialer: one bound to listenIP (any
// port) for remotes of the same family and scope, else an unbound one.
func dialerFor(listenIP netip.Addr) tcp.DialerForAddr {
	plain := &net.Dialer{}
	if listenIP.IsUnspecified() {
		return func(ma.Multiaddr) (tcp.ContextDialer, error) { return plain, nil }
	}
	bound := &net.Dialer{LocalAddr: &net.TCPAddr{IP: listenIP.AsSlice()}}
	return func(raddr ma.Multiaddr) (tcp.ContextDialer, error) {
		ip, ok := ipOf(raddr)
		if ok && ip.Is4() == listenIP.Is4() && ip.IsLoopback() == listenIP.IsLoopback() {
			return bound, nil
		}
		return plain, nil
	}
}

// boundPort returns the TCP port of the first TCP listen address, or 0.
func boundPort(addrs []ma.Multiaddr) int {
	for _, a := range addrs {
		v, err := a.ValueForProtocol(ma.P_TCP)
		if err != nil {
			continue
		}
		if p, err := strconv.Atoi(v); err == nil && p > 0 {
			return p
		}
	}
	return 0
}

// ID returns the host's peer ID.
func (h *Host) ID() peer.ID { return h.lh.ID() }

// Port returns the TCP port the host listens on.
func (h *Host) Port() int { return h.port }

// Addrs returns the addresses the host listens on (with an unspecified
// ListenIP, one per interface address).
func (h *Host) Addrs() []ma.Multiaddr { return h.lh.Addrs() }

// Libp2p returns the underlying libp2p host, for protocols that need raw
// streams. The gater applies to connections it makes too. Do not Close it;
// close the Host.
func (h *Host) Libp2p() host.Host { return h.lh }

// ClosePeer closes every connection to the peer, resetting its streams in
// flight. The gater decides whether a new connection may be made.
func (h *Host) ClosePeer(id peer.ID) error {
	if err := h.lh.Network().ClosePeer(id); err != nil {
		return fmt.Errorf("peer: close connections to %s: %w", id, err)
	}
	return nil
}

// Close stops the host: handlers' contexts are cancelled, every connection
// is closed and Close waits for running handlers to return. Calls made after
// Close fail with ErrClosed. It is idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		h.cancel()
		if err := h.lh.Close(); err != nil {
			h.closeErr = fmt.Errorf("peer: close libp2p host: %w", err)
		}
		h.running.Wait()
	})
	return h.closeErr
}

// isClosed reports whether Close has begun.
func (h *Host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Stats returns a snapshot of the host's counters.
func (h *Host) Stats() Stats {
	return Stats{
		Refused:    h.stats.refused.Load(),
		BadFrames:  h.stats.badFrames.Load(),
		Calls:      h.stats.calls.Load(),
		CallErrors: h.stats.callErrors.Load(),
		Served:     h.stats.served.Load(),
	}
}
