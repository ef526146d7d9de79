package gossip

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Config configures a [Cluster]. Start from a preset ([DefaultLANConfig],
// [DefaultWANConfig], [DefaultLocalConfig], [DefaultFastLANConfig]) and set
// NodeName, Tags and the addresses in Serf.MemberlistConfig. [New] copies the
// configuration (and the nested serf and memberlist configurations), so the
// caller may reuse it.
type Config struct {
	// NodeName is this node's name, unique in the cluster. Required.
	NodeName string

	// Tags are the node's initial tags; [Cluster.SetTags] changes them later.
	Tags Tags

	// Serf is the nested serf configuration. Serf.MemberlistConfig carries
	// the bind and advertise addresses, timing, keyring and transport: set
	// BindAddr/BindPort/AdvertiseAddr/AdvertisePort there. BindPort 0 picks
	// a free port; [Cluster.LocalMember] reports the actual one.
	//
	// If MemberlistConfig.Transport is set, memberlist uses it and does not
	// bind anything itself. AdvertiseAddr "" lets the transport choose the
	// advertised address and port (a NetTransport advertises the address
	// and port it is bound to). With AdvertiseAddr set and AdvertisePort 0,
	// the port is taken from the transport. The Cluster shuts the
	// transport down with itself; a transport serves one Cluster.
	//
	// New overwrites these fields of its copy: NodeName, Tags, EventCh,
	// Logger, LogOutput, SnapshotPath, RejoinAfterLeave, KeyringFile (and
	// memberlist's Logger, LogOutput and, when encryption is configured
	// here, Keyring and SecretKey). UserEventSizeLimit is raised if needed
	// so that a [MaxNoticeSize] notice fits.
	Serf *serf.Config

	// EncryptKey enables AES-GCM gossip encryption; it must be 16, 24 or
	// 32 bytes (AES-128/192/256). With a key, memberlist's
	// GossipVerifyIncoming/Outgoing (true in every preset) make a node with
	// another key, or with none, unable to join or disturb the cluster.
	EncryptKey []byte

	// KeyringPath, if set, is where the keyring is persisted (mode 0600,
	// serf's format: a JSON array of base64 keys, primary first). With
	// EncryptKey the file is (re)written to hold just that key. Without
	// EncryptKey the keyring is loaded from the file if it exists, so a
	// restarted agent stays encrypted without being given the key again.
	// If the file does not exist and EncryptKey is nil, gossip is not
	// encrypted.
	KeyringPath string

	// SnapshotPath, if set, is serf's snapshot file: the peers this node
	// knew and its clocks. A restarted node with the same file (and the
	// same advertised address and port) rejoins those peers by itself,
	// without seeds; serf's RejoinAfterLeave is set, so this holds after a
	// graceful leave too. serf records peers asynchronously: a node that
	// crashes within moments of learning of a peer may not remember it.
	SnapshotPath string

	// RetryJoinInterval is the first delay between [Cluster.Join] attempts
	// (default 1s); it doubles after each failed attempt, with jitter, up
	// to RetryJoinMax.
	RetryJoinInterval time.Duration

	// RetryJoinMax caps the delay between join attempts (default 30s).
	RetryJoinMax time.Duration

	// EventBuffer is the capacity of the [Cluster.Events] channel
	// (default 1024). Events that do not fit are dropped and counted.
	EventBuffer int

	// Logger receives this package's logs and serf's and memberlist's,
	// whose "[DEBUG]"/"[INFO]"/"[WARN]"/"[ERR]" prefixes become slog
	// levels. Default slog.Default().
	Logger *slog.Logger
}

// Defaults filled in by New for zero fields.
const (
	defaultRetryJoinInterval = time.Second
	defaultRetryJoinMax      = 30 * time.Second
	defaultEventBuffer       = 1024
)

// reconnectForever is serf's ReconnectTimeout of every preset: never give
// up on a failed member (a century).
const reconnectForever = 100 * 365 * 24 * time.Hour

// noticeOverhead is room for serf's encoding of a user event around its
// payload (message type, Lamport time, event name, coalesce flag).
const noticeOverhead = 64

// DefaultLANConfig returns a configuration for a LAN: serf's defaults with
// memberlist.DefaultLANConfig timing (1s probes, 200ms gossip, failure
// detection in a few seconds). Bind address 0.0.0.0, port 7946.
func DefaultLANConfig() *Config {
	sc := serf.DefaultConfig()
	sc.MemberlistConfig = memberlist.DefaultLANConfig()
	sc.UserEventSizeLimit = MaxNoticeSize + noticeOverhead
	// A failed member is tried again (a join to one random failed member
	// per interval) for as long as it stays failed, so that the two sides
	// of a partition of any length find each other again by themselves.
	// serf gives up after 24 h and forgets the member; a node that is gone
	// for good stays listed as failed until it is removed.
	sc.ReconnectTimeout = reconnectForever
	// Every 10 s (serf: 30 s): after a partition heals, the sides merge
	// within about this long.
	sc.ReconnectInterval = 10 * time.Second
	return &Config{
		Serf:              sc,
		RetryJoinInterval: defaultRetryJoinInterval,
		RetryJoinMax:      defaultRetryJoinMax,
		EventBuffer:       defaultEventBuffer,
	}
}

// DefaultWANConfig returns a configuration for nodes spread over a WAN. It is
// DefaultLANConfig with memberlist.DefaultWANConfig timing.
func DefaultWANConfig() *Config {
	c := DefaultLANConfig()
	// Slower probes (5s, 3s timeout), longer suspicion (x6), push/pull every
	// 60s, gossip every 500ms to 4 nodes, TCP timeout 30s.
	c.Serf.MemberlistConfig = memberlist.DefaultWANConfig()
	// Reconnect to failed members every 30 s (serf's default).
	c.Serf.ReconnectInterval = 30 * time.Second
	// Seeds across a WAN fail for longer; retry less eagerly.
	c.RetryJoinMax = 60 * time.Second
	return c
}

// DefaultLocalConfig returns a configuration for loopback clusters (tests,
// `shoal dev`). It is DefaultLANConfig with memberlist.DefaultLocalConfig
// timing.
func DefaultLocalConfig() *Config {
	c := DefaultLANConfig()
	// 200ms probe timeout, 100ms gossip, suspicion x3, 1 indirect check,
	// push/pull every 15s, TCP timeout 1s.
	c.Serf.MemberlistConfig = memberlist.DefaultLocalConfig()
	// memberlist's local value is 2: in a small cluster each broadcast then
	// goes to only two random peers per node, and a member can miss a join
	// until the next push/pull (15s). Loopback bandwidth is free: use the
	// LAN value.
	c.Serf.MemberlistConfig.RetransmitMult = 4
	// Loopback: try failed members again every second.
	c.Serf.ReconnectInterval = time.Second
	// Loopback seeds come up within moments; retry quickly.
	c.RetryJoinInterval = 100 * time.Millisecond
	c.RetryJoinMax = 2 * time.Second
	return c
}

// DefaultFastLANConfig returns a configuration for a LAN where a crashed
// node must be noticed quickly (profile "fast"): DefaultLANConfig with
// faster probes and gossip and a shorter suspicion. Measured with
// scripts/bench-detection.sh (5 real agents on loopback, both cores busy;
// BENCHMARKS.md, "Failure detection"), every other member reported a
// SIGKILLed one failed after 1.26 s (p50) / 1.60 s (p99) instead of
// 5.6 s / 7.4 s with DefaultLANConfig in the same run (1.19 s / 1.76 s in a
// second run), with no live member declared failed in either 10-minute
// soak.
//
// The price: five times the probe packets (5 pings a second per node
// instead of 1), and less tolerance of stalls. A member whose process, host
// or network stops answering for about 1 s (one probe interval to be
// suspected, plus the suspicion timeout to refute) is declared failed; the
// LAN preset allows about 5 s. Under heavy CPU contention members are
// suspected now and then (and refute): 14 and 29 times in the two soaks.
//
// Only the five memberlist values below and the reconnect interval differ
// from DefaultLANConfig. Lifeguard is
// kept as in the LAN preset: awareness (AwarenessMaxMultiplier 8) slows
// down a node that misses acks itself, and suspicion timeouts start long
// and shorten as other members confirm (SuspicionMaxTimeoutMult 6). Both
// timeouts scale with log10 of the cluster size from 10 members on.
func DefaultFastLANConfig() *Config {
	c := DefaultLANConfig()
	ml := c.Serf.MemberlistConfig
	// Probe a member every 200 ms (LAN: 1 s). A member that has not
	// acked, directly, through 3 peers (IndirectChecks, unchanged) or
	// over TCP, by the end of the interval is suspect. Measured: the
	// first survivor saw the killed member suspect after 0.44 s (p50).
	// 300 ms probes with a 600 ms suspicion gave the same detection
	// (1.25 s p50) as this preset with a shorter suspicion window; 500 ms
	// probes gave 1.8 s (p50) / 2.9 s (p99).
	ml.ProbeInterval = 200 * time.Millisecond
	// Wait 100 ms for the direct ack before asking peers to probe
	// indirectly (LAN: 500 ms, which does not fit a 200 ms interval).
	// LAN round trips are well under 1 ms; an ack that comes later still
	// counts until the interval ends. The soaks saw 64 and 72 direct
	// pings time out in 10 minutes, all saved by the indirect probes or
	// refuted.
	ml.ProbeTimeout = 100 * time.Millisecond
	// A suspect member is declared failed 4 x 200 ms = 800 ms after the
	// suspicion once 2 other members confirm it, up to 6x that without
	// confirmations (LAN: 4 x 1 s): the member has that long to refute.
	// Measured under load: x2 (400 ms) declared a live member failed
	// within 2 minutes; in the 300 ms x2 run (600 ms, as x3 here) a
	// suspected member refuted 555 ms after the first suspicion, 45 ms
	// short of being declared failed; x4 declared no live member failed
	// in 10 minutes of soak and 20 kill-and-restart rounds, and costs
	// 0.25 s of detection over x3 (p50 1.26 s against 1.0 s).
	ml.SuspicionMult = 4
	// Gossip every 100 ms (LAN: 200 ms; memberlist's local preset uses
	// 100 ms): suspicions, refutations and deaths spread in half the
	// time, which gives a suspected member more of its 800 ms to refute.
	// memberlist sends gossip only when it has something to send. Not
	// measured on its own: every fast candidate used it.
	ml.GossipInterval = 100 * time.Millisecond
	// TCP exchanges (a join's or a reconnect's push/pull, the periodic
	// push/pull) time out after 1 s (LAN: 10 s; memberlist's local preset
	// uses 1 s). A partition drops packets, so a reconnect to a member on
	// the other side waits for its SYN's retransmissions (1, 3, 7 s after
	// the connect) until the timeout, and serf makes its reconnects one
	// after the other: with 10 s, the sides of a healed partition found
	// each other only at the next retransmission of a connect begun
	// during the partition, 0.4-2 s after the heal in the chaos runs. A
	// push/pull between a few LAN members takes milliseconds.
	ml.TCPTimeout = time.Second
	// Try a failed member again every 500 ms (serf: 30 s), so that the
	// sides of a healed partition merge within about a second: one TCP
	// connect per interval per node while some member is failed (serf
	// throttles it by the ratio of failed to alive members).
	c.Serf.ReconnectInterval = 500 * time.Millisecond
	return c
}

// profiles maps ProfileConfig names to presets, in the order listed in errors.
var profiles = []struct {
	name string
	fn   func() *Config
}{
	{"lan", DefaultLANConfig},
	{"wan", DefaultWANConfig},
	{"local", DefaultLocalConfig},
	{"fast", DefaultFastLANConfig},
}

// tuneProfile, if set, parses profile names that are not presets. Only
// builds tagged detectbench set it (profile_tune.go), for
// scripts/bench-detection.sh; it returns nil, nil for names it does not
// handle.
var tuneProfile func(name string) (*Config, error)

// ProfileConfig returns the preset called name: "lan", "wan", "local" or
// "fast".
func ProfileConfig(name string) (*Config, error) {
	if tuneProfile != nil {
		if c, err := tuneProfile(name); c != nil || err != nil {
			return c, err
		}
	}
	names := make([]string, 0, len(profiles))
	for _, p := range profiles {
		if p.name == name {
			return p.fn(), nil
		}
		names = append(names, fmt.Sprintf("%q", p.name))
	}
	return nil, fmt.Errorf("%w: unknown gossip profile %q (valid: %s)",
		ErrInvalidConfig, name, strings.Join(names, ", "))
}

// prepare validates cfg and returns a copy with defaults filled in and the
// nested serf and memberlist configurations copied too.
func (cfg *Config) prepare() (*Config, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil config", ErrInvalidConfig)
	}
	c := *cfg
	c.EncryptKey = bytes.Clone(cfg.EncryptKey) // memberlist's keyring keeps the slice
	switch {
	case c.NodeName == "":
		return nil, fmt.Errorf("%w: NodeName is required", ErrInvalidConfig)
	case c.Serf == nil:
		return nil, fmt.Errorf("%w: Serf is nil (start from a preset such as DefaultLANConfig)", ErrInvalidConfig)
	case c.Serf.MemberlistConfig == nil:
		return nil, fmt.Errorf("%w: Serf.MemberlistConfig is nil (start from a preset such as DefaultLANConfig)", ErrInvalidConfig)
	case c.RetryJoinInterval < 0 || c.RetryJoinMax < 0:
		return nil, fmt.Errorf("%w: negative RetryJoinInterval or RetryJoinMax", ErrInvalidConfig)
	case c.EventBuffer < 0:
		return nil, fmt.Errorf("%w: negative EventBuffer", ErrInvalidConfig)
	}
	if c.EncryptKey != nil {
		if err := memberlist.ValidateKey(c.EncryptKey); err != nil {
			return nil, fmt.Errorf("%w: EncryptKey: %d bytes, want 16, 24 or 32", ErrInvalidConfig, len(c.EncryptKey))
		}
	}
	if c.RetryJoinInterval == 0 {
		c.RetryJoinInterval = defaultRetryJoinInterval
	}
	if c.RetryJoinMax == 0 {
		c.RetryJoinMax = defaultRetryJoinMax
	}
	if c.RetryJoinMax < c.RetryJoinInterval {
		c.RetryJoinMax = c.RetryJoinInterval
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = defaultEventBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	sc := *c.Serf
	mc := *c.Serf.MemberlistConfig
	sc.MemberlistConfig = &mc
	c.Serf = &sc
	return &c, nil
}
