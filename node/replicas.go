package node

import (
	"context"
	"net/http"
	"sync"
)

// registerReplicaRoutes adds the replica endpoints (ps, logs) to the API.
func (a *Agent) registerReplicaRoutes(mux *http.ServeMux) {}

// startReplicas starts the goroutines that run this node's replicas
// (reconcile loop, probes, status publication); they stop when ctx ends
// and call wg.Done.
func (a *Agent) startReplicas(ctx context.Context, wg *sync.WaitGroup) {}
