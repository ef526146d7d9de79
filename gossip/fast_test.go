package gossip

import (
	"context"
	"reflect"
	"testing"
	"time"
)

// TestFastLANPreset checks DefaultFastLANConfig against its documentation
// (and BENCHMARKS.md, "Failure detection"): the listed memberlist values,
// and everything else as in DefaultLANConfig.
func TestFastLANPreset(t *testing.T) {
	if !reflect.DeepEqual(DefaultFastLANConfig(), mustProfile(t, "fast")) {
		t.Fatal(`ProfileConfig("fast") is not DefaultFastLANConfig()`)
	}
	c := mustProfile(t, "fast")
	ml := c.Serf.MemberlistConfig
	want := []struct {
		name      string
		got, want any
	}{
		{"ProbeInterval", ml.ProbeInterval, 200 * time.Millisecond},
		{"ProbeTimeout", ml.ProbeTimeout, 100 * time.Millisecond},
		{"SuspicionMult", ml.SuspicionMult, 4},
		{"GossipInterval", ml.GossipInterval, 100 * time.Millisecond},
		{"TCPTimeout", ml.TCPTimeout, time.Second},
		// Kept from the LAN preset, as documented.
		{"IndirectChecks", ml.IndirectChecks, 3},
		{"SuspicionMaxTimeoutMult", ml.SuspicionMaxTimeoutMult, 6},
		{"AwarenessMaxMultiplier", ml.AwarenessMaxMultiplier, 8},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %v, want %v", w.name, w.got, w.want)
		}
	}

	// Apart from those, the preset is DefaultLANConfig.
	lan := DefaultLANConfig()
	lml := *lan.Serf.MemberlistConfig
	lml.ProbeInterval, lml.ProbeTimeout = ml.ProbeInterval, ml.ProbeTimeout
	lml.SuspicionMult, lml.GossipInterval = ml.SuspicionMult, ml.GossipInterval
	lml.TCPTimeout = ml.TCPTimeout
	if !reflect.DeepEqual(*ml, lml) {
		t.Errorf("memberlist config differs from DefaultLANConfig beyond the documented fields:\n got %+v\nwant %+v", *ml, lml)
	}
	c.Serf.MemberlistConfig, lan.Serf.MemberlistConfig = nil, nil
	if c.Serf.ReconnectInterval != 500*time.Millisecond {
		t.Errorf("ReconnectInterval = %v, want 500ms", c.Serf.ReconnectInterval)
	}
	lan.Serf.ReconnectInterval = c.Serf.ReconnectInterval
	if !reflect.DeepEqual(c, lan) {
		t.Errorf("Config differs from DefaultLANConfig outside memberlist:\n got %+v\nwant %+v", c, lan)
	}
}

// mustProfile is ProfileConfig(name), which must succeed.
func mustProfile(t *testing.T, name string) *Config {
	t.Helper()
	c, err := ProfileConfig(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFastLANDetectsCrash: with the fast preset, a crashed member is seen
// suspect, then failed, by the others, and a live one is never declared
// failed meanwhile.
func TestFastLANDetectsCrash(t *testing.T) {
	t.Parallel()
	ip := testIP()
	var nodes []*testNode
	for _, name := range []string{"a", "b", "c", "d"} {
		cfg := DefaultFastLANConfig()
		cfg.NodeName = name
		cfg.Logger = discard
		cfg.Serf.MemberlistConfig.BindAddr = ip
		cfg.Serf.MemberlistConfig.BindPort = 0
		cfg.RetryJoinInterval, cfg.RetryJoinMax = 100*time.Millisecond, time.Second
		nodes = append(nodes, start(t, cfg))
	}
	for _, n := range nodes[1:] {
		if _, err := n.Join(context.Background(), []string{nodes[0].addr()}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, convergeTimeout, "4 alive", allAlive(nodes, 4))

	if err := nodes[3].Shutdown(); err != nil { // no Leave: a crash
		t.Fatal(err)
	}
	for _, n := range nodes[:3] {
		n.waitEvent(failTimeout, "fail of d", memberEvent(EventFail, "d"))
	}
	for _, n := range nodes[:3] {
		for _, other := range []string{"a", "b", "c"} {
			if n.hasEvent(memberEvent(EventFail, other)) {
				t.Errorf("%s saw live member %s fail", n.LocalMember().Name, other)
			}
		}
	}
}

// hasEvent reports whether the node has already received an event
// matching match.
func (n *testNode) hasEvent(match func(Event) bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range n.events {
		if match(ev) {
			return true
		}
	}
	return false
}
