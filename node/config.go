package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/node/store"
	"github.com/shoalmesh/shoal/runtime"
)

// Default ports and addresses, as `shoal agent` documents them.
const (
	DefaultGossipPort = 7946
	DefaultPeerPort   = 7947
	DefaultAPIAddr    = "127.0.0.1:7070"
	DefaultNamespace  = "shoal"
)

// JoinMDNS, as an entry of Config.Join (`--join mdns`), turns on zero-conf
// discovery of the other nodes on the LAN by multicast DNS.
const JoinMDNS = "mdns"

// Config is the configuration of one agent. The zero value is not usable:
// start from DefaultConfig and set at least DataDir.
type Config struct {
	// Name is the node's unique name in the cluster (default: host name).
	Name string
	// DataDir holds the node's identity, its replicated state (bbolt),
	// its gossip keyring and its membership snapshot. Created 0700.
	DataDir string
	// BindAddr is the IP gossip, peer and load-balancer traffic listens on.
	BindAddr netip.Addr
	// AdvertiseAddr is the IP other nodes use to reach this one. Invalid
	// (the zero Addr) means: BindAddr, or the first non-loopback IP when
	// BindAddr is unspecified (0.0.0.0).
	AdvertiseAddr netip.Addr
	// GossipPort is memberlist's UDP+TCP port (0 picks a free one).
	GossipPort int
	// PeerPort is the libp2p peer plane's TCP port (0 picks a free one).
	PeerPort int
	// APIAddr is the HTTP API's listen address (host:port; port 0 picks one).
	APIAddr string
	// Join lists seed addresses (host:port); the agent retries them with
	// backoff until one answers. The entry JoinMDNS ("mdns") adds
	// zero-conf discovery (package gossip/mdns), alone or with seeds: the
	// agent advertises its gossip address by multicast DNS on the
	// interface that holds BindAddr (every multicast-capable one when
	// BindAddr is unspecified) for as long as it runs, and while it has
	// joined no other node it browses there, with backoff, and joins a
	// node it finds that holds its gossip key. Empty: rely on the
	// membership snapshot of an earlier run, or wait to be joined.
	Join []string
	// EncryptKey enables gossip encryption (16, 24 or 32 bytes). It is
	// persisted in DataDir, so later starts stay encrypted without it.
	EncryptKey []byte
	// Token, when set, is required as a bearer token on every API request.
	// It is mandatory when APIAddr is not a loopback address.
	Token string
	// Labels are user labels advertised to placement (--label k=v).
	Labels map[string]string
	// Containerd is the containerd socket path; Namespace its namespace.
	Containerd string
	Namespace  string
	// Runtime runs the containers. Nil: the node has no runtime, stays a
	// member, and owns no slots.
	Runtime runtime.Driver
	// RuntimeCheckInterval is how often the runtime's readiness is
	// checked (default 5s).
	RuntimeCheckInterval time.Duration
	// Gossip is the gossip preset (timing, memberlist, serf). The agent
	// fills in name, addresses, ports, tags, keyring and snapshot paths.
	Gossip *gossip.Config
	// SyncInterval is the period of anti-entropy with a random peer.
	SyncInterval time.Duration
	// TombstoneHorizon is how long deletes are remembered (default 7 days).
	TombstoneHorizon time.Duration
	// Clock is the physical clock under the hybrid logical clock.
	Clock store.Clock
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// NoStandby turns off the failover standby (standby.go): no replicas
	// are prepared for the slots of a suspected member (prepared ones an
	// earlier run left are still started or removed).
	NoStandby bool
	// ImageTransfer is how this node sends image blobs to peers:
	// ImageTransferEncrypted (the default, "" too) over the peer plane, or
	// ImageTransferPlain: blob bodies over plain HTTP on ImagePort, each
	// authorised by a ticket from the peer plane (peerregistry/plain.go).
	ImageTransfer string
	// ImagePort is the TCP port of the plain image listener (0: any).
	ImagePort int

	// AllowAddr, when set, filters peer-plane traffic by remote IP. Tests
	// use it (with a filtering gossip transport) to inject partitions.
	AllowAddr func(netip.Addr) bool
	// OnStateChange, when set, is called after every change to the
	// replicated state is persisted (local writes and merges). It must not
	// block. Tests and benchmarks use it to time propagation.
	OnStateChange func(store.Entry)
}

// DefaultConfig returns the configuration `shoal agent` starts from: LAN
// gossip timing, default ports, API on loopback.
func DefaultConfig() *Config {
	host, _ := os.Hostname()
	return &Config{
		Name:             host,
		BindAddr:         netip.IPv4Unspecified(),
		GossipPort:       DefaultGossipPort,
		PeerPort:         DefaultPeerPort,
		APIAddr:          DefaultAPIAddr,
		Namespace:        DefaultNamespace,
		Gossip:           gossip.DefaultLANConfig(),
		SyncInterval:     2 * time.Second,
		TombstoneHorizon: 7 * 24 * time.Hour,
		Clock:            store.SystemClock,
	}
}

// ErrTokenRequired is returned when the API would listen beyond loopback
// without a bearer token.
var ErrTokenRequired = errors.New("node: --token is required when --api is not a loopback address")

// validate checks the configuration and fills derived values.
func (c *Config) validate() error {
	if c.Name == "" {
		return errors.New("node: name is required")
	}
	if err := spec.ValidName(c.Name); err != nil {
		// Node names travel in gossip and in version tie-breaks; keep
		// them to the same DNS-label rules as services.
		return fmt.Errorf("node: invalid name %q: %w", c.Name, err)
	}
	if c.DataDir == "" {
		return errors.New("node: data dir is required")
	}
	if !c.BindAddr.IsValid() {
		return errors.New("node: bind address is required")
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"gossip port", c.GossipPort}, {"peer port", c.PeerPort}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("node: %s %d out of range", p.name, p.v)
		}
	}
	if c.GossipPort != 0 && c.GossipPort == c.PeerPort {
		return fmt.Errorf("node: gossip and peer port are both %d", c.GossipPort)
	}
	loop, err := isLoopbackHostPort(c.APIAddr)
	if err != nil {
		return fmt.Errorf("node: invalid api address %q: %w", c.APIAddr, err)
	}
	if !loop && c.Token == "" {
		return ErrTokenRequired
	}
	for k, v := range c.Labels {
		if err := spec.ValidLabel(k, v); err != nil {
			return fmt.Errorf("node: invalid label %s=%s: %w", k, v, err)
		}
	}
	if n := len(c.EncryptKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("node: encrypt key is %d bytes, want 16, 24 or 32", n)
	}
	if c.Gossip == nil {
		c.Gossip = gossip.DefaultLANConfig()
	}
	if c.RuntimeCheckInterval <= 0 {
		c.RuntimeCheckInterval = 5 * time.Second
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = 2 * time.Second
	}
	if c.TombstoneHorizon <= 0 {
		c.TombstoneHorizon = 7 * 24 * time.Hour
	}
	if c.Clock == nil {
		c.Clock = store.SystemClock
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if !c.AdvertiseAddr.IsValid() {
		c.AdvertiseAddr = c.BindAddr
		if c.BindAddr.IsUnspecified() {
			ip, err := firstNonLoopbackIP()
			if err != nil {
				return fmt.Errorf("node: bind address is %s and no advertise address could be found: %w (set --advertise)", c.BindAddr, err)
			}
			c.AdvertiseAddr = ip
		}
	}
	if c.AdvertiseAddr.IsUnspecified() {
		return errors.New("node: advertise address cannot be unspecified")
	}
	switch c.ImageTransfer {
	case "", ImageTransferEncrypted, ImageTransferPlain:
	default:
		return fmt.Errorf("node: image transfer %q: want %q or %q", c.ImageTransfer, ImageTransferEncrypted, ImageTransferPlain)
	}
	if c.ImagePort < 0 || c.ImagePort > 65535 {
		return fmt.Errorf("node: image port %d out of range", c.ImagePort)
	}
	if c.ImagePort != 0 && c.ImageTransfer != ImageTransferPlain {
		return fmt.Errorf("node: an image port (%d) is only used with image transfer %q", c.ImagePort, ImageTransferPlain)
	}
	return nil
}

// Image transfer modes (Config.ImageTransfer).
const (
	ImageTransferEncrypted = "encrypted"
	ImageTransferPlain     = "plain"
)

// isLoopbackHostPort reports whether addr's host is a loopback IP or
// "localhost".
func isLoopbackHostPort(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if port == "" {
		return false, errors.New("missing port")
	}
	if host == "localhost" {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false, fmt.Errorf("host must be an IP address or localhost: %w", err)
	}
	return ip.IsLoopback(), nil
}

// firstNonLoopbackIP returns the first IPv4 address of an up, non-loopback
// interface (then IPv6 if there is no IPv4), as Consul and memberlist do.
func firstNonLoopbackIP() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, err
	}
	var v6 netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
				continue
			}
			if ip.Is4() {
				return ip, nil
			}
			if !v6.IsValid() {
				v6 = ip
			}
		}
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Addr{}, errors.New("no non-loopback address found")
}
