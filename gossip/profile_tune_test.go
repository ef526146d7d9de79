//go:build detectbench

package gossip

import (
	"errors"
	"testing"
	"time"
)

func TestTuneProfile(t *testing.T) {
	c, err := ProfileConfig("tune:fast,probe=300ms,timeout=150ms,gossip=50ms,susp=3,suspmax=2,indirect=2,gossipnodes=4,retransmit=5,awareness=4")
	if err != nil {
		t.Fatal(err)
	}
	ml := c.Serf.MemberlistConfig
	if ml.ProbeInterval != 300*time.Millisecond || ml.ProbeTimeout != 150*time.Millisecond ||
		ml.GossipInterval != 50*time.Millisecond || ml.SuspicionMult != 3 || ml.SuspicionMaxTimeoutMult != 2 ||
		ml.IndirectChecks != 2 || ml.GossipNodes != 4 || ml.RetransmitMult != 5 || ml.AwarenessMaxMultiplier != 4 {
		t.Fatalf("overrides not applied: %+v", ml)
	}
	if !ml.GossipVerifyIncoming || c.Serf.UserEventSizeLimit < MaxNoticeSize {
		t.Fatal("base preset's other values lost")
	}
	for _, bad := range []string{"tune:nope", "tune:lan,probe", "tune:lan,probe=-1s", "tune:lan,susp=x", "tune:lan,color=red"} {
		if _, err := ProfileConfig(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ProfileConfig(%q) error = %v, want ErrInvalidConfig", bad, err)
		}
	}
}
