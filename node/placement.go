package node

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/placement"
)

// Every node computes the owner of every replica slot from its own view
// (alive and suspect members, live specs). placement is pure and
// deterministic, so nodes with the same view agree without talking.
// A suspect member keeps its slots until it is declared failed, so a slow
// probe does not move replicas.

// placementView is one computed placement and the inputs it came from.
type placementView struct {
	nodes    []placement.Node
	services []placement.Service
	result   *placement.Result
	owned    []placement.Slot // this node's slots
}

// placementState is the agent's current placement.
type placementState struct {
	view atomic.Pointer[placementView]
	kick chan struct{} // buffered 1: recompute requested
}

func newPlacementState() *placementState {
	p := &placementState{kick: make(chan struct{}, 1)}
	p.view.Store(&placementView{result: &placement.Result{}})
	return p
}

// kickPlacement asks for a recompute; it never blocks.
func (a *Agent) kickPlacement() {
	a.kickLB() // specs or membership changed: routes too
	select {
	case a.placement.kick <- struct{}{}:
	default:
	}
}

// placementLoop recomputes whenever membership or the specs change.
func (a *Agent) placementLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.placement.kick:
			a.recomputePlacement()
		}
	}
}

// placementInputs converts this node's view to placement's input.
func (a *Agent) placementInputs() ([]placement.Node, []placement.Service) {
	var nodes []placement.Node
	for _, m := range a.members.Load().list {
		if m.Status != gossip.StatusAlive && m.Status != gossip.StatusSuspect {
			continue
		}
		n := placement.Node{Name: m.Name}
		if m.TagsErr != nil {
			n.Reason = "bad tags: " + m.TagsErr.Error()
		} else {
			t := m.Tags
			n.Labels, n.Arch, n.OS = t.Labels, t.Arch, t.OS
			n.CPUs, n.Memory, n.Weight = t.CPUs, t.Memory, t.CPUs
			n.Schedulable = t.RuntimeReady
			if !t.RuntimeReady {
				n.Reason = "runtime not ready"
				if t.RuntimeReason != "" {
					n.Reason += ": " + t.RuntimeReason
				}
			}
		}
		nodes = append(nodes, n)
	}
	var services []placement.Service
	for _, e := range a.store.List() {
		s, err := spec.Decode(e.Value)
		if err != nil {
			a.log.Error("stored spec does not decode; not placing it", "service", e.Key, "err", err)
			continue
		}
		services = append(services, placement.Service{
			Name:        s.Name,
			Replicas:    s.Replicas,
			Constraints: s.Constraints,
			CPUs:        s.Resources.CPUs,
			Memory:      int64(s.Resources.Memory),
		})
	}
	return nodes, services
}

// recomputePlacement computes placement from the current view and logs
// what this node gained or lost.
func (a *Agent) recomputePlacement() {
	nodes, services := a.placementInputs()
	start := time.Now()
	res := placement.Compute(nodes, services, placement.Options{})
	a.metrics.placementSeconds.Observe(time.Since(start).Seconds())
	v := &placementView{nodes: nodes, services: services, result: res, owned: res.Owned(a.cfg.Name)}
	old := a.placement.view.Swap(v)
	if gained, lost := slotDiff(old.owned, v.owned); len(gained)+len(lost) > 0 {
		a.log.Info("owned slots changed", "owned", len(v.owned), "gained", gained, "lost", lost)
	}
	if n := len(res.Unplaceable); n > 0 && len(res.Unplaceable) != len(old.result.Unplaceable) {
		a.log.Warn("unplaceable slots", "count", n, "first", res.Unplaceable[0].Slot.String(), "reason", res.Unplaceable[0].Reason)
	}
	a.placementChanged()
}

// slotDiff lists the slots in b but not a (gained) and in a but not b.
func slotDiff(a, b []placement.Slot) (gained, lost []string) {
	for _, s := range b {
		if !slices.Contains(a, s) {
			gained = append(gained, s.String())
		}
	}
	for _, s := range a {
		if !slices.Contains(b, s) {
			lost = append(lost, s.String())
		}
	}
	return gained, lost
}

// Placement is this node's current placement result.
func (a *Agent) Placement() *placement.Result { return a.placement.view.Load().result }

// OwnedSlots are the replica slots this node owns now.
func (a *Agent) OwnedSlots() []placement.Slot {
	return slices.Clone(a.placement.view.Load().owned)
}

// getPlacement serves GET /v1/placement[?service=NAME][&node=NAME].
func (a *Agent) getPlacement(w http.ResponseWriter, r *http.Request) {
	svc, nodeName := r.URL.Query().Get("service"), r.URL.Query().Get("node")
	res := a.Placement()
	out := api.Placement{Slots: []api.PlacedSlot{}, Unplaceable: []api.UnplacedSlot{}}
	for _, s := range res.Assignments {
		if (svc == "" || s.Service == svc) && (nodeName == "" || s.Node == nodeName) {
			out.Slots = append(out.Slots, api.PlacedSlot{Service: s.Service, Slot: s.Index, Node: s.Node})
		}
	}
	if nodeName == "" {
		for _, s := range res.Unplaceable {
			if svc == "" || s.Service == svc {
				out.Unplaceable = append(out.Unplaceable, api.UnplacedSlot{Service: s.Service, Slot: s.Index, Reason: s.Reason})
			}
		}
	}
	if svc != "" && len(out.Slots) == 0 && len(out.Unplaceable) == 0 {
		if _, ok := a.store.Get(svc); !ok {
			writeError(w, http.StatusNotFound, "service \""+svc+"\" not found")
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// explainPlacement serves GET /v1/placement/{service}/{slot}.
func (a *Agent) explainPlacement(w http.ResponseWriter, r *http.Request) {
	svc := r.PathValue("service")
	slot, err := strconv.Atoi(r.PathValue("slot"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "slot must be a number, got "+strconv.Quote(r.PathValue("slot")))
		return
	}
	v := a.placement.view.Load()
	e, err := placement.Explain(v.nodes, v.services, placement.Options{}, svc, slot)
	switch {
	case errors.Is(err, placement.ErrUnknownService):
		writeError(w, http.StatusNotFound, "service \""+svc+"\" not found")
		return
	case errors.Is(err, placement.ErrSlotOutOfRange):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := api.Explanation{Service: svc, Slot: slot, Node: e.Node, Reason: e.Reason, Relaxed: e.Relaxed, Candidates: []api.Candidate{}}
	for _, c := range e.Candidates {
		out.Candidates = append(out.Candidates, api.Candidate{
			Node: c.Node, Score: c.Score, Rank: c.Rank, Eligible: c.Eligible,
			Chosen: c.Chosen, Skipped: c.Skipped, Slots: c.Slots, Limit: c.Limit,
		})
	}
	writeJSON(w, http.StatusOK, out)
}
