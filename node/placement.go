package node

import (
	"context"
	"errors"
	"net/http"
	"reflect"
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
// (alive and suspect members, their tags, live specs, and where replicas
// run now: the replica status view). placement is pure and deterministic,
// so nodes with the same view agree without talking. A suspect member
// keeps its slots until it is declared failed, so a slow probe does not
// move replicas.
//
// Holders. A slot stays where a replica of it runs while the placement's
// rules allow (placement's package doc, "Holders"): a node that leaves
// moves only its own slots. The holders of a slot are the nodes whose
// status lists a container of it that is not being stopped, whether they
// still own it or hand it off (Leaving): a slot handed off stays held by
// its old node until the new owner's copy is healthy, so the placement
// does not change while the hand-offs run. A slot a node owns but has no
// container of yet (pending) is not held: claims travel with a delay, and
// the placement of unheld slots does not depend on them.
//
// Filling. A node starts with the filling tag set: it keeps the slots
// whose containers it adopted at start (Replica.Adopted; of several
// adopted copies, the oldest) before any other holder (an agent restarted
// while its containers ran keeps them, though other nodes started copies
// meanwhile), and takes slots from others up to its fair share (a node
// that joined or came back empty). It publishes the containers it adopts
// before its first reconcile pass, which waits for a placement that
// counts them (publishAdopted). It clears the tag once it alone runs every slot it owns
// (checkFilling). Because the flag is a tag, every node sees it with the
// membership itself, and it does not change while the node starts the
// slots it takes.

// placementView is one computed placement and the inputs it came from.
type placementView struct {
	nodes    []placement.Node
	services []placement.Service
	result   *placement.Result
	owned    []placement.Slot // this node's slots
	// warm says the replica status view was warm when the inputs were
	// read: the holders include the peers' replicas.
	warm bool
	// version is the version of this node's own status document when
	// the inputs were read (0: none yet).
	version uint64
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

// placementLoop recomputes whenever membership, the specs or the replica
// status view change.
func (a *Agent) placementLoop(ctx context.Context) {
	fillDeadline := time.NewTimer(maxFilling)
	defer fillDeadline.Stop()
	// The channel of the next change is taken before each recompute reads
	// the view, so that a change during the recompute wakes the loop
	// again. Taken after it, a change in between was lost: a node that
	// published its adopted containers while its first placement was being
	// computed kept that placement, and its replica loop, which waits for
	// a placement that counts them, never started (one node alone has no
	// other change to come).
	status := a.replicas.status.watch()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.placement.kick:
		case <-status:
		case <-fillDeadline.C:
			a.fillingExpired.Store(true)
			a.checkFilling(a.placement.view.Load())
		}
		status = a.replicas.status.watch()
		a.recomputePlacement()
	}
}

// maxFilling bounds how long a node advertises that it is filling: a slot
// it owns that cannot start (its image is nowhere, say) must not keep it
// filling for ever. A variable for tests.
var maxFilling = 2 * time.Minute

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
			n.Filling = t.Filling
			if !t.RuntimeReady {
				n.Reason = "runtime not ready"
				if t.RuntimeReason != "" {
					n.Reason += ": " + t.RuntimeReason
				}
			}
		}
		nodes = append(nodes, n)
	}
	holders, adopted := a.holders()
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
			Holders:     holders[s.Name],
			Adopted:     adopted[s.Name],
		})
	}
	return nodes, services
}

// holders returns, per service and slot, the live nodes that run a
// container of it that is not being stopped (see "Holders" above), and
// the one of them whose container is the oldest of those their agents
// adopted when they started. When every agent restarts, copies that the
// last ones to stop started for the first ones are adopted too: the
// original is the oldest.
func (a *Agent) holders() (holders, adopted map[string]map[int][]string) {
	holders = make(map[string]map[int][]string)
	adopted = make(map[string]map[int][]string)
	oldest := make(map[slotKey]api.Replica)
	for _, r := range a.ReplicaStatus() {
		if r.Container == "" || r.State == "stopping" {
			continue
		}
		h := holders[r.Service]
		if h == nil {
			h = make(map[int][]string)
			holders[r.Service] = h
		}
		if !slices.Contains(h[r.Slot], r.Node) {
			h[r.Slot] = append(h[r.Slot], r.Node)
		}
		k := slotKey{r.Service, r.Slot}
		if o, ok := oldest[k]; r.Adopted && (!ok || olderCopy(r, o)) {
			oldest[k] = r
		}
	}
	for k, r := range oldest {
		if adopted[k.Service] == nil {
			adopted[k.Service] = make(map[int][]string)
		}
		adopted[k.Service][k.Slot] = []string{r.Node}
	}
	return holders, adopted
}

// recomputePlacement computes placement from the current view and logs
// what this node gained or lost.
func (a *Agent) recomputePlacement() {
	warm := a.statusWarm()
	var version uint64
	if d, ok := a.replicas.status.local(); ok {
		version = d.Version
	}
	nodes, services := a.placementInputs()
	if old := a.placement.view.Load(); len(old.nodes) > 0 && old.warm == warm && old.version == version &&
		reflect.DeepEqual(old.nodes, nodes) && reflect.DeepEqual(old.services, services) {
		a.checkFilling(old)
		return // a status change that moved no holder
	}
	start := time.Now()
	res := placement.Compute(nodes, services, placement.Options{})
	a.metrics.placementSeconds.Observe(time.Since(start).Seconds())
	v := &placementView{nodes: nodes, services: services, result: res, owned: res.Owned(a.cfg.Name), warm: warm, version: version}
	old := a.placement.view.Swap(v)
	if gained, lost := slotDiff(old.owned, v.owned); len(gained)+len(lost) > 0 {
		a.log.Info("owned slots changed", "owned", len(v.owned), "gained", gained, "lost", lost)
	}
	if n := len(res.Unplaceable); n > 0 && len(res.Unplaceable) != len(old.result.Unplaceable) {
		a.log.Warn("unplaceable slots", "count", n, "first", res.Unplaceable[0].Slot.String(), "reason", res.Unplaceable[0].Reason)
	}
	a.placementChanged()
	a.checkFilling(v)
}

// statusWarm reports whether the replica status view has the peers'
// documents (or gave up waiting for them, see statusPullLoop).
func (a *Agent) statusWarm() bool {
	select {
	case <-a.replicas.status.warmed():
		return true
	default:
		return false
	}
}

// olderCopy reports whether replica a started before b. A copy without a
// start time (created, its start cut short) counts as the newest; ties go
// to the node name.
func olderCopy(a, b api.Replica) bool {
	switch {
	case a.StartedAt.IsZero() != b.StartedAt.IsZero():
		return b.StartedAt.IsZero()
	case !a.StartedAt.Equal(b.StartedAt):
		return a.StartedAt.Before(b.StartedAt)
	}
	return a.Node < b.Node
}

// checkFilling clears this node's filling tag once, in a warm view that
// counts its own replicas, it runs a healthy replica of every slot it
// owns that no other node holds (or it owns none).
func (a *Agent) checkFilling(v *placementView) {
	if !a.filling.Load() || a.cluster == nil {
		return
	}
	expired := a.fillingExpired.Load()
	if (!v.warm || v.version == 0) && !expired {
		return // the others' replicas, or this node's own, are not counted yet
	}
	mine := make(map[placement.Slot]bool)
	others := make(map[placement.Slot]bool)
	for _, r := range a.ReplicaStatus() {
		sl := placement.Slot{Service: r.Service, Index: r.Slot}
		switch {
		case r.Node == a.cfg.Name:
			if r.Healthy && r.State == "running" && !r.Leaving {
				mine[sl] = true
			}
		case r.Container != "" && r.State != "stopping":
			others[sl] = true
		}
	}
	for _, sl := range v.owned {
		if (!mine[sl] || others[sl]) && !expired {
			return
		}
	}
	if expired {
		a.log.Warn("still filling after the limit; advertising the end anyway", "limit", maxFilling)
	}
	a.filling.Store(false)
	if err := a.advertise(); err != nil {
		a.filling.Store(true)
		a.log.Error("advertising the end of filling failed", "err", err)
		return
	}
	a.log.Info("filled up: this node alone runs every slot it owns", "owned", len(v.owned))
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
