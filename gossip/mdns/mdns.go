// Package mdns is zero-conf join on a LAN: it finds Shoal nodes by
// multicast DNS (RFC 6762) service discovery (RFC 6763) and joins their
// gossip, so that `shoal agent --join mdns` needs no seed address.
//
// Every node advertises one service instance of type [Service], named
// after its peer ID, whose TXT record ([Record]) carries its gossip
// address, node name, peer ID and the ID of its gossip encryption key. A
// node that has not joined anyone yet browses for that service in rounds,
// with backoff, and joins the first other node it may join; it keeps
// advertising for as long as it runs, so later nodes find it.
//
// The mDNS implementation is github.com/libp2p/zeroconf/v2, the library
// go-libp2p's own discovery (p2p/discovery/mdns) is built on, used
// directly: libp2p's service advertises only libp2p multiaddrs under
// "_p2p._udp", and a node that is not yet a member cannot use them, since
// the peer plane's connection gater admits current members only. The
// record must therefore carry the gossip address itself.
//
// # Clusters on one LAN
//
// Shoal has no cluster name; what separates clusters is the gossip key.
// The record carries [KeyID] of the node's primary key (none when gossip
// is not encrypted), and a node joins only nodes whose key ID is one of
// its own keys' (or, unencrypted, only unencrypted nodes). Others are
// skipped with a warning naming both IDs. Two unencrypted clusters on one
// LAN do merge, as they would with a shared seed.
//
// # Interfaces
//
// mDNS is sent and answered on the interface that holds the bind address,
// or on every up, multicast-capable interface when it is unspecified
// ([Interfaces]); over IPv4 or IPv6 as the advertised gossip address is.
//
// # Concurrency
//
// [New] only validates and resolves the interfaces; [Discoverer.Run] owns
// every goroutine and socket and releases them (zeroconf's server
// Shutdown) before it returns. Stats is safe for concurrent use.
package mdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/zeroconf/v2"
)

// Service is the DNS-SD service type Shoal nodes advertise.
const Service = "_shoal._udp"

// Domain is the mDNS domain.
const Domain = "local."

// Defaults for zero Config fields.
const (
	DefaultBrowseWindow  = 3 * time.Second
	DefaultRetryInterval = time.Second
	DefaultRetryMax      = 30 * time.Second
	DefaultCheckInterval = 5 * time.Second
	// DefaultTTL is the advertised records' TTL in seconds (RFC 6762
	// section 10 recommends 120 s for records that name a host).
	DefaultTTL = 120
)

// Config configures a Discoverer.
type Config struct {
	// Self is this node's record. Its KeyID is set by New from Keys.
	Self Record
	// Keys are the gossip encryption keys, primary first; nil when gossip
	// is not encrypted. Self advertises the primary key's ID, and only
	// nodes whose key ID is one of these keys' IDs (or, without keys,
	// nodes without one) are joined.
	Keys [][]byte
	// Bind selects the interfaces (see Interfaces).
	Bind netip.Addr
	// Join makes one bounded attempt to join the gossip cluster through
	// addrs (host:port) and returns how many answered. It is called from
	// Run's goroutine only. Required.
	Join func(ctx context.Context, addrs []string) (int, error)
	// Joined reports whether this node is in a cluster with at least one
	// other live node. It must be fast and safe for concurrent use.
	// Required.
	Joined func() bool
	// BrowseWindow is how long one browse round listens for answers.
	BrowseWindow time.Duration
	// RetryInterval is the first pause between browse rounds while alone;
	// it doubles (with jitter) after every round, up to RetryMax.
	RetryInterval, RetryMax time.Duration
	// CheckInterval is how often a joined node checks that it still is;
	// a node left alone browses again.
	CheckInterval time.Duration
	// TTL is the advertised records' time to live in seconds.
	TTL uint32
	// Logger receives the logs (default slog.Default()).
	Logger *slog.Logger
}

// Stats are counters for monitoring and tests.
type Stats struct {
	// Rounds counts browse rounds started.
	Rounds uint64
	// Found counts records of other nodes that decoded.
	Found uint64
	// Malformed counts records dropped because they did not decode.
	Malformed uint64
	// OtherKey counts records of nodes with another gossip key, or
	// encrypted when this node is not, or the reverse.
	OtherKey uint64
	// Joins and JoinFailures count join attempts through discovered nodes.
	Joins, JoinFailures uint64
}

// server is what Run needs of zeroconf's *Server.
type server interface{ Shutdown() }

// Discoverer advertises this node and joins the nodes it discovers.
type Discoverer struct {
	cfg     Config
	log     *slog.Logger
	ifaces  []net.Interface
	ipType  zeroconf.IPType
	keyIDs  []string
	started atomic.Bool

	// register and browse are zeroconf.RegisterProxy and zeroconf.Browse
	// with this Discoverer's arguments; tests replace them. browse closes
	// entries when it returns nil, as zeroconf.Browse does.
	register func(txt []string) (server, error)
	browse   func(ctx context.Context, entries chan<- *zeroconf.ServiceEntry) error

	rounds, found, malformed, otherKey, joins, joinFailures atomic.Uint64

	warned map[peer.ID]bool // owned by Run: nodes already warned about
}

// maxWarned bounds the set of nodes warned about.
const maxWarned = 1024

// New validates cfg, fills defaults and resolves the interfaces. It opens
// no socket.
func New(cfg Config) (*Discoverer, error) {
	if cfg.Join == nil || cfg.Joined == nil {
		return nil, errors.New("mdns: Config.Join and Config.Joined are required")
	}
	var keyIDs []string
	for _, k := range cfg.Keys {
		keyIDs = append(keyIDs, KeyID(k))
	}
	cfg.Self.KeyID = ""
	if len(keyIDs) > 0 {
		cfg.Self.KeyID = keyIDs[0]
	}
	if _, err := cfg.Self.Encode(); err != nil {
		return nil, fmt.Errorf("mdns: own record: %w", err)
	}
	if !cfg.Bind.IsValid() {
		return nil, errors.New("mdns: Config.Bind is required")
	}
	ifaces, err := Interfaces(cfg.Bind)
	if err != nil {
		return nil, err
	}
	if cfg.BrowseWindow <= 0 {
		cfg.BrowseWindow = DefaultBrowseWindow
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	cfg.RetryInterval = min(cfg.RetryInterval, cfg.RetryMax)
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Discoverer{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "mdns"),
		ifaces: ifaces,
		ipType: zeroconf.IPv6,
		keyIDs: keyIDs,
		warned: make(map[peer.ID]bool),
	}
	if cfg.Self.Gossip.Addr().Is4() {
		d.ipType = zeroconf.IPv4
	}
	instance := cfg.Self.PeerID.String()
	d.register = func(txt []string) (server, error) {
		return zeroconf.RegisterProxy(instance, Service, Domain, int(cfg.Self.Gossip.Port()),
			instance, []string{cfg.Self.Gossip.Addr().String()}, txt, d.ifaces, zeroconf.TTL(cfg.TTL))
	}
	d.browse = func(ctx context.Context, entries chan<- *zeroconf.ServiceEntry) error {
		return zeroconf.Browse(ctx, Service, Domain, entries,
			zeroconf.SelectIfaces(d.ifaces), zeroconf.SelectIPTraffic(d.ipType))
	}
	return d, nil
}

// Interfaces returns the interfaces mDNS uses for bind: the interface that
// holds bind (the loopback interface for any loopback address), which must
// be up and support multicast, or, when bind is unspecified, every up,
// multicast-capable interface.
func Interfaces(bind netip.Addr) ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("mdns: interfaces: %w", err)
	}
	usable := func(ifc net.Interface) bool {
		return ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagMulticast != 0
	}
	if bind.IsUnspecified() {
		var out []net.Interface
		for _, ifc := range all {
			if usable(ifc) {
				out = append(out, ifc)
			}
		}
		if len(out) == 0 {
			return nil, errors.New("mdns: no up, multicast-capable interface")
		}
		return out, nil
	}
	bind = bind.Unmap()
	holds := func(ifc net.Interface) bool {
		if bind.IsLoopback() { // all of 127.0.0.0/8 is the loopback's
			return ifc.Flags&net.FlagLoopback != 0
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == bind {
				return true
			}
		}
		return false
	}
	for _, ifc := range all {
		if !holds(ifc) {
			continue
		}
		if !usable(ifc) {
			return nil, fmt.Errorf("mdns: interface %s of %s is down or cannot multicast (flags %s)", ifc.Name, bind, ifc.Flags)
		}
		return []net.Interface{ifc}, nil
	}
	return nil, fmt.Errorf("mdns: no interface holds %s", bind)
}

// Stats returns the current counters.
func (d *Discoverer) Stats() Stats {
	return Stats{
		Rounds:       d.rounds.Load(),
		Found:        d.found.Load(),
		Malformed:    d.malformed.Load(),
		OtherKey:     d.otherKey.Load(),
		Joins:        d.joins.Load(),
		JoinFailures: d.joinFailures.Load(),
	}
}

// Run advertises this node and, while it is alone, browses for others and
// joins one. It returns nil when ctx is done, after the advertisement is
// withdrawn (zeroconf's server Shutdown, which waits for its goroutines)
// and the last browse round has ended with its sockets closed; or an error
// if it cannot advertise. It may be called once.
func (d *Discoverer) Run(ctx context.Context) error {
	if !d.started.CompareAndSwap(false, true) {
		return errors.New("mdns: Run called twice")
	}
	txt, err := d.cfg.Self.Encode()
	if err != nil {
		return fmt.Errorf("mdns: own record: %w", err)
	}
	srv, err := d.register(txt)
	if err != nil {
		return fmt.Errorf("mdns: advertise on %s: %w", ifaceNames(d.ifaces), err)
	}
	defer srv.Shutdown() // sends the goodbye (TTL 0) and closes the sockets
	d.log.Info("advertising on mDNS", "service", Service, "interfaces", ifaceNames(d.ifaces),
		"gossip", d.cfg.Self.Gossip, "key_id", d.cfg.Self.KeyID)

	b := newBackoff(d.cfg.RetryInterval, d.cfg.RetryMax)
	for ctx.Err() == nil {
		if d.cfg.Joined() {
			b.reset()
			if !sleep(ctx, d.cfg.CheckInterval) {
				break
			}
			continue
		}
		joined, err := d.round(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			d.log.Warn("mDNS browse failed", "interfaces", ifaceNames(d.ifaces), "err", err)
		}
		if joined {
			continue
		}
		if !sleep(ctx, b.next()) {
			break
		}
	}
	return nil
}

// round browses for one window and tries to join every node found until
// one join succeeds or another node joined this one. It reports whether
// this node is joined.
func (d *Discoverer) round(ctx context.Context) (joined bool, err error) {
	d.rounds.Add(1)
	rctx, cancel := context.WithTimeout(ctx, d.cfg.BrowseWindow)
	defer cancel()
	entries := make(chan *zeroconf.ServiceEntry, 16)
	errc := make(chan error, 1)
	go func() { errc <- d.browse(rctx, entries) }()
	for {
		select {
		case e, ok := <-entries:
			if !ok { // browse ended and closed entries
				return joined, <-errc
			}
			if joined || e == nil {
				continue // drain until browse stops
			}
			if d.consider(ctx, e.Text) {
				joined = true
				cancel()
			}
		case err := <-errc:
			if err != nil {
				return joined, err // browse never started; entries stays open
			}
			for range entries { // closed by browse
			}
			return joined, nil
		}
	}
}

// consider handles one discovered TXT record and reports whether this node
// is joined afterwards.
func (d *Discoverer) consider(ctx context.Context, txt []string) bool {
	r, err := Decode(txt)
	if err != nil {
		d.malformed.Add(1)
		d.log.Debug("dropping malformed mDNS record", "txt", txt, "err", err, "dropped", d.malformed.Load())
		return false
	}
	self := d.cfg.Self
	switch {
	case r.PeerID == self.PeerID || r.Gossip == self.Gossip:
		return false // our own advertisement, looped back
	case r.Node == self.Node:
		d.warnOnce(r, "another node on the LAN advertises this node's name; not joining it",
			"remote", r.Node, "gossip", r.Gossip, "peer_id", r.PeerID)
		return false
	}
	d.found.Add(1)
	if !d.sameKey(r.KeyID) {
		d.otherKey.Add(1)
		d.warnOnce(r, "found a Shoal node on the LAN whose gossip key is not ours; not joining it (another cluster, or a different --encrypt key)",
			"remote", r.Node, "gossip", r.Gossip, "their_key_id", orNone(r.KeyID), "our_key_id", orNone(self.KeyID))
		return false
	}
	if d.cfg.Joined() {
		return true
	}
	n, err := d.cfg.Join(ctx, []string{r.Gossip.String()})
	if err != nil || n == 0 {
		d.joinFailures.Add(1)
		if ctx.Err() == nil {
			d.log.Warn("joining a node found by mDNS failed", "remote", r.Node, "gossip", r.Gossip, "err", err)
		}
		return false
	}
	d.joins.Add(1)
	d.log.Info("joined a node found by mDNS", "remote", r.Node, "gossip", r.Gossip, "peer_id", r.PeerID)
	return true
}

// sameKey reports whether a node advertising keyID may be joined.
func (d *Discoverer) sameKey(keyID string) bool {
	if keyID == "" || len(d.keyIDs) == 0 {
		return keyID == "" && len(d.keyIDs) == 0
	}
	return slices.Contains(d.keyIDs, keyID)
}

// warnOnce logs msg at WARN the first time it concerns r's node.
func (d *Discoverer) warnOnce(r Record, msg string, args ...any) {
	if d.warned[r.PeerID] {
		return
	}
	if len(d.warned) >= maxWarned {
		clear(d.warned)
	}
	d.warned[r.PeerID] = true
	d.log.Warn(msg, args...)
}

func orNone(s string) string {
	if s == "" {
		return "none (unencrypted)"
	}
	return s
}

func ifaceNames(ifaces []net.Interface) []string {
	names := make([]string, len(ifaces))
	for i, ifc := range ifaces {
		names[i] = ifc.Name
	}
	return names
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff yields pauses that start at initial and double up to max, each
// drawn uniformly from [base/2, base] (equal jitter), so that nodes
// started together spread out.
type backoff struct{ initial, base, max time.Duration }

func newBackoff(initial, max time.Duration) *backoff {
	return &backoff{initial: initial, base: initial, max: max}
}

func (b *backoff) next() time.Duration {
	half := b.base / 2
	d := half + rand.N(b.base-half+1)
	b.base = min(b.base*2, b.max)
	return d
}

func (b *backoff) reset() { b.base = b.initial }
