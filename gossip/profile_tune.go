//go:build detectbench

package gossip

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Builds tagged detectbench (scripts/bench-detection.sh builds one to try
// candidate presets in real agents) also accept profile names of the form
//
//	tune:BASE,key=value,...
//
// BASE is a preset name and each key overrides one memberlist setting:
// probe (ProbeInterval), timeout (ProbeTimeout), susp (SuspicionMult),
// suspmax (SuspicionMaxTimeoutMult), indirect (IndirectChecks), gossip
// (GossipInterval), gossipnodes (GossipNodes), retransmit (RetransmitMult),
// awareness (AwarenessMaxMultiplier). Release builds do not have this file.
func init() { tuneProfile = parseTuneProfile }

func parseTuneProfile(name string) (*Config, error) {
	spec, ok := strings.CutPrefix(name, "tune:")
	if !ok {
		return nil, nil
	}
	parts := strings.Split(spec, ",")
	c, err := ProfileConfig(parts[0])
	if err != nil {
		return nil, err
	}
	ml := c.Serf.MemberlistConfig
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%w: profile %q: %q is not key=value", ErrInvalidConfig, name, kv)
		}
		var d *time.Duration
		var n *int
		switch k {
		case "probe":
			d = &ml.ProbeInterval
		case "timeout":
			d = &ml.ProbeTimeout
		case "gossip":
			d = &ml.GossipInterval
		case "susp":
			n = &ml.SuspicionMult
		case "suspmax":
			n = &ml.SuspicionMaxTimeoutMult
		case "indirect":
			n = &ml.IndirectChecks
		case "gossipnodes":
			n = &ml.GossipNodes
		case "retransmit":
			n = &ml.RetransmitMult
		case "awareness":
			n = &ml.AwarenessMaxMultiplier
		default:
			return nil, fmt.Errorf("%w: profile %q: unknown key %q", ErrInvalidConfig, name, k)
		}
		var perr error
		if d != nil {
			*d, perr = time.ParseDuration(v)
			if perr == nil && *d <= 0 {
				perr = fmt.Errorf("not positive")
			}
		} else {
			*n, perr = strconv.Atoi(v)
			if perr == nil && *n < 0 {
				perr = fmt.Errorf("negative")
			}
		}
		if perr != nil {
			return nil, fmt.Errorf("%w: profile %q: %s=%q: %v", ErrInvalidConfig, name, k, v, perr)
		}
	}
	return c, nil
}
