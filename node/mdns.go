package node

import (
	"context"
	"net/netip"
	"time"

	"github.com/shoalmesh/shoal/gossip/mdns"
)

// mdnsJoinTimeout bounds one join through a node found by mDNS; the
// discoverer tries the next one, or browses again, after it.
const mdnsJoinTimeout = 2 * time.Second

// splitJoin separates Config.Join into seed addresses and whether it asks
// for mDNS discovery (JoinMDNS).
func splitJoin(join []string) (seeds []string, useMDNS bool) {
	for _, j := range join {
		if j == JoinMDNS {
			useMDNS = true
			continue
		}
		seeds = append(seeds, j)
	}
	return seeds, useMDNS
}

// newMDNS builds zero-conf discovery for --join mdns: this node's record
// (gossip address, name, peer ID, key ID) advertised on the interface of
// BindAddr, and joins through the nodes found while alone. Needs the
// cluster and the peer host.
func (a *Agent) newMDNS() (*mdns.Discoverer, error) {
	return mdns.New(mdns.Config{
		Self: mdns.Record{
			Node:   a.cfg.Name,
			Gossip: netip.AddrPortFrom(a.cfg.AdvertiseAddr, uint16(a.cluster.LocalMember().Port)),
			PeerID: a.host.ID(),
		},
		Keys: a.cluster.Keys(),
		Bind: a.cfg.BindAddr,
		Join: func(ctx context.Context, addrs []string) (int, error) {
			jctx, cancel := context.WithTimeout(ctx, mdnsJoinTimeout)
			defer cancel()
			n, err := a.cluster.Join(jctx, addrs)
			if err == nil {
				a.syncSome(ctx, 3)
			}
			return n, err
		},
		Joined: func() bool { return a.cluster.NumAlive() > 1 },
		Logger: a.log,
	})
}
