package node

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/placement"
	"github.com/shoalmesh/shoal/runtime"
)

// Failover standby: a member is suspect for most of the time it takes to
// declare it failed (with the fast gossip preset the suspicion lasts about
// 0.8 s of the 1.2 s), and creating a container (snapshot, runc task,
// network) takes about as long as that again. So while a member is suspect,
// each node computes placement as if the suspects were gone and prepares,
// without starting, the replicas it would take over (runtime.Preparer). If
// the member is declared failed, the slots become this node's, the reconcile
// pass starts them, and the driver only has to start the prepared task. If
// the member refutes the suspicion, the prepared containers are removed.
//
// Prepared containers are invisible to the rest of the agent: the reconcile
// pass drops them from what the runtime lists (no status, no probes, no load
// balancing), and a start of the same container ID finds and starts them.
// The standby loop removes every prepared container that no suspicion wants
// and no owned slot will start, including those an earlier run left behind.
// Prepares and removals take the slot's busy mark, like the reconcile
// pass's actions, so that the two never work on one slot at once.
//
// Speculative work yields to real work: while the reconcile pass has
// starts or stops under way on this node, or slots handed to it that it
// has not started yet, the standby prepares nothing new (when a partition
// heals every node hands slots over, and stale suspicions travel at the
// same time).
//
// The standby also prepares the hand-offs to this node (handoffPrepares):
// a slot that another node runs healthy and that moved here, which the
// pass starts only once the owner has settled. Those are not guesses, so
// they do not yield; a prepare whose slot moves away again is removed.
//
// The suspicion is memberlist's own (a probe and the indirect probes went
// unanswered), seen by every node through gossip; a member whose agent only
// closed its connections is not suspected any sooner. Host-network replicas
// are not prepared: their port is chosen at start.

// standbyPoll is how often the standby loop reads the members' states:
// memberlist has no event for a suspicion.
const standbyPoll = 100 * time.Millisecond

// standbySettle is how long a member must have been alive before a
// suspicion of it is acted on (see standbyGone).
const standbySettle = 10 * time.Second

// standbyMergeQuiet is how long after any member came back no suspicion
// is acted on (see standbyGone).
const standbyMergeQuiet = 2 * time.Second

// standbyConfirm is how long a member must have been suspect before its
// slots are prepared (see standbyState.confirmed): a fifth of the 0.8-1.2
// s that a suspicion lasts before the fast preset declares the member
// failed.
const standbyConfirm = 200 * time.Millisecond

// standbyMaxInFlight bounds concurrent prepares: they are speculative, so
// they should not crowd out the work of a node that is busy anyway.
const standbyMaxInFlight = 4

// standbyMetrics count what the standby does.
type standbyMetrics struct {
	prepares *prometheus.CounterVec
}

func newStandbyMetrics() *standbyMetrics {
	return &standbyMetrics{
		prepares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_replica_prepares_total",
			Help: "Replicas prepared for a suspected member's slots, by outcome: prepared, failed, started (a start used one), discarded."},
			[]string{"result"}),
	}
}

// standbyState is the standby loop's memory.
type standbyState struct {
	suspects string                          // sorted, comma-joined suspect names of the last computation
	view     *placementView                  // placement the last computation started from
	want     map[slotKey]runtime.ReplicaSpec // replicas to keep prepared
	// suspectSince is when each current suspect was first seen suspect.
	suspectSince map[string]time.Time
}

// standbyLoop prepares and removes containers as suspicions come and go,
// until ctx ends; it waits for its prepares and removals before returning.
func (a *Agent) standbyLoop(ctx context.Context) {
	prep, ok := a.cfg.Runtime.(runtime.Preparer)
	if !ok {
		return
	}
	var (
		wg    sync.WaitGroup
		slots = make(chan struct{}, standbyMaxInFlight)
		st    standbyState
	)
	defer wg.Wait()
	tick := time.NewTicker(standbyPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if *a.runtimeErr.Load() != "" || a.replicas.passes.Load() == 0 {
			continue // the reconcile pass has not listed the containers yet
		}
		a.standbyStep(ctx, prep, &st, &wg, slots)
	}
}

// standbyStep runs one round: recompute what to prepare if the suspects
// or the placement changed, then start prepares and removals.
func (a *Agent) standbyStep(ctx context.Context, prep runtime.Preparer, st *standbyState, wg *sync.WaitGroup, slots chan struct{}) {
	view := a.placement.view.Load()
	members, now := a.cluster.Members(), time.Now()
	aliveSince := a.members.Load().aliveSince
	var gone []string
	if !a.cfg.NoStandby { // off: nothing is prepared, leftovers are still removed
		gone = standbyGone(view.nodes, members, aliveSince, now)
		gone = st.confirmed(gone, members, now)
	}
	key := strings.Join(gone, ",")
	if key != st.suspects || view != st.view {
		st.suspects, st.view = key, view
		st.want = a.standbyWant(view, gone)
		if len(st.want) > 0 {
			a.log.Debug("standby: preparing for suspects", "suspects", gone, "slots", len(st.want))
		}
	}
	owned := make(map[slotKey]bool, len(view.owned))
	for _, s := range view.owned {
		owned[slotKey{s.Service, s.Index}] = true
	}

	r := a.replicas
	r.mu.Lock()
	// A prepare under way is left to finish even if its slot is no longer
	// wanted (the round after removes it): cancelling one mid-way could
	// leave a container without its network for the pass to start.
	//
	// Nothing new is prepared while the pass has actions under way or
	// hand-offs to this node pending: they are real work, a prepare is a
	// guess, and after a heal stale suspicions come and go by the dozen.
	// Hand-offs to this node are real work, not a guess: prepared as
	// soon as the slot has had this owner for handoffPrepareAfter, they
	// are ready when the pass starts them after handoffSettle.
	var toPrepare []runtime.ReplicaSpec
	if membersSteady(members, aliveSince) {
		toPrepare = handoffPrepares(r.handoffsIn, r.slots, r.busy, r.local, r.prepared, r.staleLocked, now, cap(slots)-len(slots))
	}
	for _, rs := range toPrepare {
		r.busy[slotKey{rs.Service, rs.Slot}]++
	}
	handoffs := len(toPrepare)
	busyNode := r.inFlight.Load() > 0 || r.incoming.Load()
	for k, rs := range st.want {
		if busyNode {
			break
		}
		if r.busy[k] > 0 || r.local[k] || owned[k] || r.staleLocked(k) {
			continue // being worked on, running here already, or the pass starts it
		}
		if _, ok := r.prepared[rs.ID]; ok {
			continue
		}
		if len(toPrepare) >= cap(slots)-len(slots) {
			break
		}
		r.busy[k]++
		toPrepare = append(toPrepare, rs)
	}
	var (
		toDiscard []runtime.Replica
		specs     map[string]spec.Spec
	)
	for id, c := range r.prepared {
		k := keyOf(c)
		if w, ok := st.want[k]; (ok && w.ID == id) || r.busy[k] > 0 {
			continue
		}
		if owned[k] {
			// The pass starts it, if it is of the current template.
			if specs == nil {
				specs = a.liveSpecs()
			}
			if s, ok := specs[k.Service]; ok && replicaSpec(s, k.Slot, a.cfg.Name).ID == id {
				continue
			}
		}
		r.busy[k]++
		delete(r.prepared, id)
		toDiscard = append(toDiscard, c)
	}
	r.mu.Unlock()

	for i, rs := range toPrepare {
		why := "a suspect's slot"
		if i < handoffs {
			why = "a hand-off to this node"
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			a.prepareReplica(ctx, prep, rs, why)
		}()
	}
	for _, c := range toDiscard {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.discardPrepared(ctx, c)
		}()
	}
}

// handoffPrepareAfter is how long a slot handed to this node must have
// had it as owner before the standby prepares its replica. The pass starts
// a hand-off only after handoffSettle (1 s), because the owners can still
// move for a moment after a heal; preparing earlier moves most of a start's
// work (snapshot, runc task, network: 2-4 s on a loaded machine, against
// 0.1-0.6 s to start a prepared one) ahead of that wait. Only while the
// members are steady (membersSteady): after a 10 s partition one member of
// the other side came back a second after the rest, having first to refute
// its failure, and a node had meanwhile prepared two slots that it then
// lost to it, 5 s of work each on the loaded machine, thrown away.
const handoffPrepareAfter = 300 * time.Millisecond

// membersSteady reports whether no member is suspect or failed, and the
// agent has seen every member that gossip shows alive come (back): then
// the owners are not about to move again. A member that left cleanly does
// not count.
func membersSteady(members []gossip.Member, aliveSince map[string]time.Time) bool {
	for _, m := range members {
		switch {
		case m.Status == gossip.StatusSuspect || m.Status == gossip.StatusFailed:
			return false
		case m.Alive():
			if _, known := aliveSince[m.Name]; !known {
				return false
			}
		}
	}
	return true
}

// handoffPrepares picks, in slot order, at most max of the hand-offs to
// this node to prepare now: bridge-network ones (a host-network replica's
// port is chosen at start) that have had this owner for
// handoffPrepareAfter, are not busy, have no container here, prepared or
// not, and had no action end since the pass that listed them (stale: the
// container it started may be there now; preparing it failed with
// "already exists").
func handoffPrepares(in map[slotKey]runtime.ReplicaSpec, slots map[slotKey]slotState, busy map[slotKey]int,
	local map[slotKey]bool, prepared map[string]runtime.Replica, stale func(slotKey) bool, now time.Time, max int) []runtime.ReplicaSpec {
	var out []runtime.ReplicaSpec
	for _, k := range slices.SortedFunc(maps.Keys(in), compareSlots) {
		rs := in[k]
		owned := slots[k].OwnedAt
		switch {
		case len(out) >= max:
			return out
		case rs.Network == spec.NetworkHost, owned.IsZero(), now.Sub(owned) < handoffPrepareAfter:
		case busy[k] > 0 || local[k] || stale(k):
		default:
			if _, ok := prepared[rs.ID]; !ok {
				out = append(out, rs)
			}
		}
	}
	return out
}

// standbyGone lists, sorted, the placed nodes that are no longer alive in
// members: suspects, and members declared failed or gone since placement
// was last computed (so that a prepared replica is kept through the moment
// its slot changes owner).
//
// A member that came (back) less than standbySettle ago is never counted:
// when a partition heals, the members of the other side come back while
// stale suspicions of them still travel and are refuted, and preparing for
// those would load every node at the moment it has real work to do. Nor is
// any member counted within standbyMergeQuiet of some member coming back:
// the other side's view, merged in, suspects the members of this side it
// had declared failed until each refutes, a few hundred milliseconds later.
// In one chaos run that made three nodes prepare seven replicas right after
// a heal. (A member that restarts comes back alone, seconds before the
// next failure of a kill loop; the window is short enough to miss it.)
func standbyGone(placed []placement.Node, members []gossip.Member, aliveSince map[string]time.Time, now time.Time) []string {
	for _, since := range aliveSince {
		if !since.IsZero() && now.Sub(since) < standbyMergeQuiet {
			return nil
		}
	}
	for _, m := range members {
		if _, known := aliveSince[m.Name]; m.Alive() && !known {
			// Alive in gossip, not yet in the agent's view: it is coming
			// back right now, and the merged view's stale suspicions come
			// with it, before the agent has seen the join.
			return nil
		}
	}
	alive := make(map[string]bool, len(members))
	for _, m := range members {
		if m.Status == gossip.StatusAlive {
			alive[m.Name] = true
		}
	}
	var gone []string
	for _, n := range placed {
		if since, ok := aliveSince[n.Name]; ok && now.Sub(since) < standbySettle {
			continue
		}
		if !alive[n.Name] {
			gone = append(gone, n.Name)
		}
	}
	slices.Sort(gone)
	return gone
}

// confirmed drops from gone the suspects first seen suspect less than
// standbyConfirm ago (members failed or gone stay), and keeps
// st.suspectSince up to date. When a partition heals, the other side's
// gossip reaches a node a moment before the merge that brings its members
// back: in one chaos run a node saw its one peer suspect for those 50 ms
// and prepared four replicas that no one needed, on a loaded machine, at
// the moment of the hand-offs.
func (st *standbyState) confirmed(gone []string, members []gossip.Member, now time.Time) []string {
	if st.suspectSince == nil {
		st.suspectSince = make(map[string]time.Time)
	}
	suspect := make(map[string]bool)
	for _, m := range members {
		if m.Status == gossip.StatusSuspect {
			suspect[m.Name] = true
			if _, ok := st.suspectSince[m.Name]; !ok {
				st.suspectSince[m.Name] = now
			}
		}
	}
	for name := range st.suspectSince {
		if !suspect[name] {
			delete(st.suspectSince, name)
		}
	}
	return slices.DeleteFunc(gone, func(name string) bool {
		return suspect[name] && now.Sub(st.suspectSince[name]) < standbyConfirm
	})
}

// standbyWant computes placement without the gone nodes and returns the
// replicas this node would gain, by slot (bridge network only).
func (a *Agent) standbyWant(view *placementView, gone []string) map[slotKey]runtime.ReplicaSpec {
	if len(gone) == 0 || len(view.nodes) == 0 {
		return nil
	}
	nodes := slices.DeleteFunc(slices.Clone(view.nodes), func(n placement.Node) bool {
		_, found := slices.BinarySearch(gone, n.Name)
		return found
	})
	res := placement.Compute(nodes, view.services, placement.Options{})
	specs := a.liveSpecs()
	want := make(map[slotKey]runtime.ReplicaSpec)
	for _, sl := range res.Owned(a.cfg.Name) {
		if slices.Contains(view.owned, sl) {
			continue
		}
		s, ok := specs[sl.Service]
		if !ok || sl.Index >= s.Replicas || s.Network == spec.NetworkHost {
			continue
		}
		want[slotKey{sl.Service, sl.Index}] = replicaSpec(s, sl.Index, a.cfg.Name)
	}
	return want
}

// prepareReplica prepares rs (for why) and releases its slot's busy mark.
func (a *Agent) prepareReplica(ctx context.Context, prep runtime.Preparer, rs runtime.ReplicaSpec, why string) {
	r := a.replicas
	k := slotKey{rs.Service, rs.Slot}
	ictx, cancel := context.WithTimeout(ctx, imageTimeout)
	_, err := a.cfg.Runtime.EnsureImage(ictx, rs.Image)
	cancel()
	var c runtime.Replica
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, startTimeout)
		c, err = prep.Prepare(sctx, rs)
		cancel()
	}
	r.mu.Lock()
	if err == nil {
		r.prepared[rs.ID] = c
	}
	r.releaseLocked(k)
	r.mu.Unlock()
	switch {
	case err == nil:
		a.standby.prepares.WithLabelValues("prepared").Inc()
		a.log.Info("replica prepared for "+why, "slot", k.String(), "container", rs.ID)
	case ctx.Err() == nil: // not the agent stopping
		a.standby.prepares.WithLabelValues("failed").Inc()
		a.log.Warn("preparing a replica failed", "slot", k.String(), "container", rs.ID, "err", err)
	}
	a.kickReplicas() // the slot may have become this node's meanwhile
}

// discardPrepared removes a prepared container no one wants any more.
func (a *Agent) discardPrepared(ctx context.Context, c runtime.Replica) {
	r := a.replicas
	err := a.stopContainer(ctx, c.ID)
	r.mu.Lock()
	r.releaseLocked(keyOf(c))
	if err != nil {
		r.prepared[c.ID] = c // try again next round
	}
	r.mu.Unlock()
	switch {
	case err == nil:
		a.standby.prepares.WithLabelValues("discarded").Inc()
		a.log.Info("prepared replica removed: its slot stays elsewhere", "slot", keyOf(c).String(), "container", c.ID)
	case ctx.Err() == nil:
		a.log.Warn("removing a prepared replica failed", "container", c.ID, "err", err)
	}
	a.kickReplicas()
}

// releaseLocked drops one busy mark of slot k. r.mu must be held.
func (r *replicaSet) releaseLocked(k slotKey) {
	if r.busy[k]--; r.busy[k] <= 0 {
		delete(r.busy, k)
	}
}

// splitPrepared separates prepared containers from the others.
func splitPrepared(list []runtime.Replica) (others []runtime.Replica, prepared map[string]runtime.Replica) {
	prepared = make(map[string]runtime.Replica)
	for _, c := range list {
		if c.State == runtime.StatePrepared {
			prepared[c.ID] = c
		} else {
			others = append(others, c)
		}
	}
	return others, prepared
}
