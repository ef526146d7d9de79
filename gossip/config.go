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
// [DefaultWANConfig], [DefaultLocalConfig]) and set NodeName, Tags and the
// addresses in Serf.MemberlistConfig. [New] copies the configuration (and the
// nested serf and memberlist configurations), so the caller may reuse it.
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
	// Loopback seeds come up within moments; retry quickly.
	c.RetryJoinInterval = 100 * time.Millisecond
	c.RetryJoinMax = 2 * time.Second
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
}

// ProfileConfig returns the preset called name: "lan", "wan" or "local".
func ProfileConfig(name string) (*Config, error) {
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
