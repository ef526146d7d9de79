package node

import (
	"context"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Test-only access to the replica loop, for the external tests.

// ReconcilePasses counts the reconcile passes the agent has run.
func (a *Agent) ReconcilePasses() int64 { return a.replicas.passes.Load() }

// StatusProto is the replica-status protocol ID.
const StatusProto = statusProto

// CallStatus sends raw bytes to another agent's status handler.
func (a *Agent) CallStatus(ctx context.Context, to *Agent, req []byte) ([]byte, error) {
	id, addr, err := peerOf(to.cluster.LocalMember())
	if err != nil {
		return nil, err
	}
	return a.host.Call(ctx, id, addr, statusProto, req)
}

// StandbyPrepares reads shoal_replica_prepares_total for one result.
func (a *Agent) StandbyPrepares(result string) float64 {
	return testutil.ToFloat64(a.standby.prepares.WithLabelValues(result))
}

// ActionsUnderWay reports whether the replica loop has actions under way.
func (a *Agent) ActionsUnderWay() bool { return a.replicas.inFlight.Load() > 0 }
