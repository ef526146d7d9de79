package gossip

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestPresets(t *testing.T) {
	tests := []struct {
		name string
		ml   *memberlist.Config
	}{
		{"lan", memberlist.DefaultLANConfig()},
		{"wan", memberlist.DefaultWANConfig()},
		{"local", memberlist.DefaultLocalConfig()},
		{"fast", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ProfileConfig(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			ml := c.Serf.MemberlistConfig
			if tt.ml != nil && (ml.ProbeInterval != tt.ml.ProbeInterval || ml.ProbeTimeout != tt.ml.ProbeTimeout ||
				ml.GossipInterval != tt.ml.GossipInterval || ml.SuspicionMult != tt.ml.SuspicionMult ||
				ml.PushPullInterval != tt.ml.PushPullInterval || ml.TCPTimeout != tt.ml.TCPTimeout) {
				t.Fatalf("%s timing differs from memberlist's preset", tt.name)
			}
			if !ml.GossipVerifyIncoming || !ml.GossipVerifyOutgoing {
				t.Fatal("gossip verification must be on")
			}
			if !c.Serf.EnableNameConflictResolution {
				t.Fatal("name conflict resolution must be on")
			}
			if c.Serf.UserEventSizeLimit < MaxNoticeSize {
				t.Fatalf("UserEventSizeLimit %d < MaxNoticeSize", c.Serf.UserEventSizeLimit)
			}
			if c.Serf.ReconnectTimeout < 50*365*24*time.Hour || c.Serf.ReconnectInterval <= 0 || c.Serf.ReconnectInterval > 30*time.Second {
				t.Fatalf("failed members must be retried forever, at most every 30 s: timeout %v, interval %v", c.Serf.ReconnectTimeout, c.Serf.ReconnectInterval)
			}
			if c.RetryJoinInterval <= 0 || c.RetryJoinMax < c.RetryJoinInterval || c.EventBuffer <= 0 {
				t.Fatalf("bad retry/buffer defaults: %+v", c)
			}
		})
	}
}

func TestProfileConfigUnknown(t *testing.T) {
	_, err := ProfileConfig("turbo")
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("error = %v, want ErrInvalidConfig", err)
	}
	for _, name := range []string{`"turbo"`, `"lan"`, `"wan"`, `"local"`, `"fast"`} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not mention %s", err, name)
		}
	}
}

func TestPresetsAreIndependent(t *testing.T) {
	a, b := DefaultLANConfig(), DefaultLANConfig()
	a.Serf.MemberlistConfig.BindPort = 1
	if b.Serf.MemberlistConfig.BindPort == 1 {
		t.Fatal("presets share their nested config")
	}
}

func TestNewInvalidConfig(t *testing.T) {
	valid := func() *Config {
		c := DefaultLocalConfig()
		c.NodeName = "n"
		c.Serf.MemberlistConfig.BindAddr = "127.0.0.1"
		c.Serf.MemberlistConfig.BindPort = 0
		return c
	}
	tests := []struct {
		name   string
		modify func(*Config) *Config
		want   error
	}{
		{"nil", func(*Config) *Config { return nil }, ErrInvalidConfig},
		{"no name", func(c *Config) *Config { c.NodeName = ""; return c }, ErrInvalidConfig},
		{"no serf", func(c *Config) *Config { c.Serf = nil; return c }, ErrInvalidConfig},
		{"no memberlist", func(c *Config) *Config { c.Serf.MemberlistConfig = nil; return c }, ErrInvalidConfig},
		{"short key", func(c *Config) *Config { c.EncryptKey = make([]byte, 10); return c }, ErrInvalidConfig},
		{"negative retry", func(c *Config) *Config { c.RetryJoinInterval = -time.Second; return c }, ErrInvalidConfig},
		{"negative buffer", func(c *Config) *Config { c.EventBuffer = -1; return c }, ErrInvalidConfig},
		{"bad tags", func(c *Config) *Config { c.Tags.PeerPort = 70000; return c }, ErrInvalidTags},
		{"tags too large", func(c *Config) *Config {
			c.Tags.Labels = map[string]string{"x": strings.Repeat("y", 600)}
			return c
		}, ErrTagsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.modify(valid()))
			if c != nil {
				_ = c.Shutdown()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("New error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPrepareDefaultsAndCopies(t *testing.T) {
	in := DefaultLocalConfig()
	in.NodeName = "n"
	in.RetryJoinInterval, in.RetryJoinMax, in.EventBuffer = 0, 0, 0
	c, err := in.prepare()
	if err != nil {
		t.Fatal(err)
	}
	if c.RetryJoinInterval != defaultRetryJoinInterval || c.RetryJoinMax != defaultRetryJoinMax ||
		c.EventBuffer != defaultEventBuffer || c.Logger == nil {
		t.Fatalf("defaults not filled: %+v", c)
	}
	if c.Serf == in.Serf || c.Serf.MemberlistConfig == in.Serf.MemberlistConfig {
		t.Fatal("prepare did not copy the nested configs")
	}
}
