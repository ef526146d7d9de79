package node

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalmesh/shoal/lb"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/node/store"
)

// lbResync is how often the routes are recomputed without a change, so
// that a published port that could not be bound is tried again.
const lbResync = 5 * time.Second

// lbState is the agent's side of its load balancer.
type lbState struct {
	kick chan struct{}
	// mu serializes updates: each reads the specs and the view inside
	// it, so the last one applied is never older than another.
	mu       sync.Mutex
	problems atomic.Pointer[map[string][]string] // service -> problems, from the last update
}

func newLBState() *lbState { return &lbState{kick: make(chan struct{}, 1)} }

// kickLB asks the balancer loop to recompute the routes.
func (a *Agent) kickLB() {
	select {
	case a.lbs.kick <- struct{}{}:
	default:
	}
}

// lbLoop keeps the load balancer serving every published port of every
// service, routed to the healthy replicas of live members: it recomputes
// the routes whenever the specs, the membership or the replica view
// change. A member that fails is dropped from the view on the membership
// event (statusMember), so its endpoints go with the next update.
//
// It opens the ports only once the replica view is warm (statusPullLoop):
// a node that (re)starts into a cluster has the specs from its store at
// once but no replica of its peers yet, and would answer 503 or reset
// every connection; a port still closed sends clients with several
// addresses to another node.
func (a *Agent) lbLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-a.replicas.status.warmed():
	}
	tick := time.NewTicker(lbResync)
	defer tick.Stop()
	for {
		changed := a.ReplicaChanges()
		a.updateLB()
		select {
		case <-ctx.Done():
			return
		case <-a.lbs.kick:
		case <-changed:
		case <-tick.C:
		}
	}
}

// syncLB updates the balancer now, rather than when lbLoop comes to it,
// unless the view is not warm yet (lbLoop has not opened the ports): a
// replica about to stop is dropped before it stops (drainBeforeStop).
func (a *Agent) syncLB() {
	select {
	case <-a.replicas.status.warmed():
		a.updateLB()
	default:
	}
}

// updateLB hands the current routes to the balancer and keeps its
// problems for the API.
func (a *Agent) updateLB() {
	a.lbs.mu.Lock()
	defer a.lbs.mu.Unlock()
	problems := a.lb.Update(routes(a.store.List(), a.ReplicaStatus()))
	byService := make(map[string][]string, len(problems))
	for _, p := range problems {
		byService[p.Service] = append(byService[p.Service],
			fmt.Sprintf("node %s cannot serve published port %d: %v", a.cfg.Name, p.Port, p.Err))
	}
	a.lbs.problems.Store(&byService)
}

// lbProblems returns this node's load-balancer problems of a service.
func (a *Agent) lbProblems(service string) []string {
	if m := a.lbs.problems.Load(); m != nil {
		return (*m)[service]
	}
	return nil
}

// routes turns the live specs and the replica view into the balancer's
// routes: one per published port, with the healthy replicas that expose
// it. The oldest write comes first, so that it keeps a port two services
// claim (the API refuses such a write, but two nodes may accept one each
// during a partition).
func routes(entries []store.Entry, replicas []api.Replica) []lb.Route {
	slices.SortFunc(entries, func(a, b store.Entry) int {
		return cmp.Or(a.Version.Compare(b.Version), cmp.Compare(a.Key, b.Key))
	})
	byService := make(map[string][]api.Replica)
	for _, r := range replicas {
		if routable(r) {
			byService[r.Service] = append(byService[r.Service], r)
		}
	}
	var out []lb.Route
	for _, e := range entries {
		if e.Deleted {
			continue
		}
		s, err := spec.Decode(e.Value) // as placement and reconcile read it
		if err != nil || len(s.Ports) == 0 {
			continue
		}
		for _, p := range s.Ports {
			r := lb.Route{Service: s.Name, Port: p.Published, Protocol: p.Protocol}
			if b := s.Balance; b != nil {
				r.Policy, r.HashOn, r.ProxyProtocol = b.Policy, b.HashOn, b.ProxyProtocol
			}
			for _, rep := range byService[s.Name] {
				addr, err := netip.ParseAddrPort(rep.Endpoints[p.Target])
				if err != nil {
					continue
				}
				r.Endpoints = append(r.Endpoints, lb.Endpoint{Addr: addr, Node: rep.Node, Slot: rep.Slot})
			}
			out = append(out, r)
		}
	}
	return out
}

// portOwner returns the live service other than name that publishes one
// of ports, and the port ("" when none does).
func (a *Agent) portOwner(name string, ports []spec.Port) (string, int) {
	for _, s := range a.liveSpecs() {
		if s.Name == name {
			continue
		}
		for _, p := range s.Ports {
			for _, q := range ports {
				if p.Published == q.Published {
					return s.Name, q.Published
				}
			}
		}
	}
	return "", 0
}
