package node

import (
	"context"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"

	nodepeer "github.com/shoalmesh/shoal/node/peer"
)

// Test-only access to the agent's internals, for the external tests.

// LBEndpoints are the addresses the agent's load balancer routes a
// published port to now.
func (a *Agent) LBEndpoints(port int) []netip.AddrPort { return a.lb.Endpoints(port) }

// PeerHost is the agent's peer-plane host.
func (a *Agent) PeerHost() *nodepeer.Host { return a.host }

// DroppedNotices and DroppedPeerMessages read the drop counters.
func (a *Agent) DroppedNotices() float64      { return testutil.ToFloat64(a.metrics.droppedNotices) }
func (a *Agent) DroppedPeerMessages() float64 { return testutil.ToFloat64(a.metrics.droppedPeer) }

// StateProto is the state-sync protocol ID.
const StateProto = stateProto

// CallState sends raw bytes to another agent's state-sync handler.
func (a *Agent) CallState(ctx context.Context, to *Agent, req []byte) ([]byte, error) {
	m := to.cluster.LocalMember()
	id, addr, err := peerOf(m)
	if err != nil {
		return nil, err
	}
	_ = peer.ID(id)
	return a.host.Call(ctx, id, addr, stateProto, req)
}

// SetReplicaResync sets the replica loop's resync period for agents started
// afterwards and returns a func that restores it. Not for parallel tests.
func SetReplicaResync(d time.Duration) (restore func()) {
	old := replicaResync
	replicaResync = d
	return func() { replicaResync = old }
}

// PeerImageBytes is how many bytes of image content this agent served to
// peers (0 without peer images).
func (a *Agent) PeerImageBytes() uint64 {
	p := a.images.Load()
	if p == nil {
		return 0
	}
	return p.handler.Stats().Bytes
}

// SetStatusPullInterval sets the period of status anti-entropy for agents
// started afterwards and returns a func that restores it. Not for parallel
// tests.
func SetStatusPullInterval(d time.Duration) (restore func()) {
	old := statusPullInterval
	statusPullInterval = d
	return func() { statusPullInterval = old }
}

// PlainImageRequests counts the blob requests the plain image listener
// served (0 without one).
func (a *Agent) PlainImageRequests() uint64 {
	p := a.images.Load()
	if p == nil || p.plain == nil {
		return 0
	}
	return p.plain.Stats().Served
}

// ActionsDone is how many reconcile actions have ended; Passes how many
// reconcile passes have run.
func (a *Agent) ActionsDone() uint64 {
	a.replicas.mu.Lock()
	defer a.replicas.mu.Unlock()
	return a.replicas.done
}
func (a *Agent) Passes() int64 { return a.replicas.passes.Load() }

// SetMaxFilling sets how long a node may advertise that it is filling,
// and returns a func that restores it. Only for agents started after.
func SetMaxFilling(d time.Duration) (restore func()) {
	old := maxFilling
	maxFilling = d
	return func() { maxFilling = old }
}
