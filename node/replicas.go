package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
)

// The replica loop runs the replicas this node owns. Each pass lists the
// containers the runtime holds (by their labels, so a restarted agent
// adopts what runs), builds the desired set from the owned slots and the
// specs, asks the pure reconcile (reconcile.go) what to do, and performs
// the actions concurrently, one at a time per slot: a slow image pull for
// one service does not hold up another. A pass runs when placement is
// recomputed (membership or specs changed), when an action ends, when a
// probe's verdict changes, when the runtime reports a container exit
// (drivers that implement stateNotifier), when a backoff or handoff wait
// ends, and every replicaResync regardless.
//
// Before its first pass the loop waits for the node to settle: placement
// computed, and, if the node has peers to join, a placement computed with
// their replica status, at least one other member alive and every peer it
// knew a member again (alive or known to be down), or joinGrace passed.
// Otherwise a restarted agent would see itself alone and start every slot
// of every service.

// Timings of the replica loop.
const (
	joinGrace    = 10 * time.Second
	listTimeout  = 30 * time.Second
	imageTimeout = 10 * time.Minute
	startTimeout = 2 * time.Minute
	stopTimeout  = 10 * time.Second // SIGTERM to SIGKILL
	maxErrorLen  = 1024
)

// replicaResync is the period of a pass regardless of events. A variable
// so that a test can show which events run a pass without it.
var replicaResync = 5 * time.Second

// stateNotifier is an optional Driver interface: a driver that learns of
// container state changes (a task exiting) offers them so the loop reacts
// at once instead of at the next resync. runtime.Fake implements it.
type stateNotifier interface {
	// Changed returns a channel that receives a value, coalesced, when a
	// container changes state on its own. It is never closed.
	Changed() <-chan struct{}
}

// replicaSet is the agent's replica machinery: the loop's memory, the
// probes and the status view.
//
// # Concurrency
//
// The loop goroutine runs passes one at a time; action and probe
// goroutines report back under mu and kick the loop. Logs streams run on
// their own goroutines, tracked by streams.
type replicaSet struct {
	kick    chan struct{} // buffered 1: a pass is wanted
	status  *statusView
	pusher  *statusPusher  // this node's status to the others (statusPushLoop)
	probes  *prober        // set by startReplicas
	actions sync.WaitGroup // action goroutines
	metrics *replicaMetrics
	passes  atomic.Int64 // reconcile passes run
	// handoffWaiting is set by a pass that keeps a container of a slot
	// that moved until its new owner reports it healthy.
	handoffWaiting atomic.Bool
	// inFlight counts the pass's actions under way (the standby's
	// prepares and removals are not counted).
	inFlight atomic.Int64
	// incoming is set by a pass that found owned slots another node runs
	// and this node has not started yet: hand-offs to this node.
	incoming atomic.Bool

	mu    sync.Mutex // guards all following fields
	slots map[slotKey]slotState
	busy  map[slotKey]int
	// prepared are the prepared containers (standby.go) by ID, as the
	// last pass listed them and the standby has changed them since;
	// local the slots with another container here.
	prepared map[string]runtime.Replica
	local    map[slotKey]bool
	lastErr  map[slotKey]string
	// handoffsIn are those hand-offs to this node (the last pass's), as
	// the replicas to start: the standby prepares them (handoffPrepares).
	handoffsIn map[slotKey]runtime.ReplicaSpec
	// stopping are the containers with a stop under way, by ID: the
	// status reports them as "stopping", not healthy, from the pass that
	// decided the stop until a pass lists the containers after it ended
	// (the value: 0 while under way, then done when it ended).
	stopping map[string]uint64
	// adopted are the containers the first pass of this agent found (by
	// ID; nil before it): they ran before it started. The status says
	// so, and placement keeps them here first while this node is filling
	// (placement.Service.Adopted).
	adopted map[string]bool
	// done counts the actions that have ended; doneAt maps a slot to
	// the count when its last action ended. A pass skips the slots whose
	// action ended while it listed the containers: its list may predate
	// the action's effect, and acting on it started a container that
	// already ran ("already exists") or stopped one twice.
	done   uint64
	doneAt map[slotKey]uint64
	// localAt is done when the pass that set local began its list: local
	// is not to be trusted for a slot whose action ended after (stale).
	localAt uint64
	streams sync.WaitGroup // logs streams; Add only while !closed
	closed  bool
}

func newReplicaSet(self string) *replicaSet {
	return &replicaSet{
		kick:     make(chan struct{}, 1),
		status:   newStatusView(self),
		metrics:  newReplicaMetrics(),
		slots:    make(map[slotKey]slotState),
		busy:     make(map[slotKey]int),
		lastErr:  make(map[slotKey]string),
		prepared: make(map[string]runtime.Replica),
		local:    make(map[slotKey]bool),
		stopping: make(map[string]uint64),
		doneAt:   make(map[slotKey]uint64),
	}
}

// staleLocked reports whether an action on slot k ended after the last
// pass listed the containers, so that local (and that pass's view of the
// slot) may be out of date. r.mu must be held.
func (r *replicaSet) staleLocked(k slotKey) bool { return r.doneAt[k] > r.localAt }

// track registers a goroutine that must end before the replica loop
// returns; ok is false once the loop is shutting down.
func (r *replicaSet) track() (done func(), ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	r.streams.Add(1)
	return r.streams.Done, true
}

// replicaMetrics count what the replica loop does.
type replicaMetrics struct {
	actions *prometheus.CounterVec
	running prometheus.Gauge
}

func newReplicaMetrics() *replicaMetrics {
	return &replicaMetrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_replica_actions_total", Help: "Replica actions taken by this node, by action and result."},
			[]string{"action", "result"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_replicas_running", Help: "Running containers of this node's replicas."}),
	}
}

// kickReplicas asks for a reconcile pass; it never blocks.
func (a *Agent) kickReplicas() {
	select {
	case a.replicas.kick <- struct{}{}:
	default:
	}
}

// placementChanged is called after every placement recompute: owned
// slots or membership may have changed.
func (a *Agent) placementChanged() {
	a.kickReplicas()
	a.pruneStatus()
}

// registerReplicaRoutes adds the replica endpoints (ps, logs) to the API.
func (a *Agent) registerReplicaRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/replicas", a.getReplicas)
	mux.HandleFunc("GET /v1/logs/{service}", a.getLogs)
}

// startReplicas starts the goroutines that run this node's replicas
// (reconcile loop, probes, status publication); they stop when ctx ends
// and call wg.Done.
func (a *Agent) startReplicas(ctx context.Context, wg *sync.WaitGroup) {
	r := a.replicas
	a.metrics.reg.MustRegister(r.metrics.actions, r.metrics.running, a.standby.prepares)
	r.probes = newProber(a.cfg.Runtime, a.log, a.kickReplicas)
	a.registerStatusHandler()
	a.registerLogsHandler(ctx)
	hasSeeds := len(a.cfg.Join) > 0
	if known, _ := loadKnownPeers(a.cfg.DataDir); len(known) > 0 {
		a.startPeers = known
		hasSeeds = true
	}
	wg.Add(4)
	go func() { defer wg.Done(); a.replicaLoop(ctx, hasSeeds) }()
	go func() { defer wg.Done(); a.standbyLoop(ctx) }()
	go func() { defer wg.Done(); a.statusPushLoop(ctx) }()
	go func() { defer wg.Done(); a.statusPullLoop(ctx, hasSeeds) }()
}

// replicaLoop runs reconcile passes until ctx ends, then waits for the
// actions, probes and logs streams under way.
func (a *Agent) replicaLoop(ctx context.Context, hasSeeds bool) {
	r := a.replicas
	defer func() {
		r.actions.Wait()
		r.probes.stop()
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		r.streams.Wait()
	}()
	var changed <-chan struct{}
	if n, ok := a.cfg.Runtime.(stateNotifier); ok {
		changed = n.Changed()
	}
	resync := time.NewTicker(replicaResync)
	defer resync.Stop()
	wakeTimer := time.NewTimer(time.Hour)
	wakeTimer.Stop()
	defer wakeTimer.Stop()

	start := time.Now()
	a.publishAdopted(ctx)
	settled := false
	for {
		if !settled {
			settled = a.replicasSettled(start, hasSeeds)
			if settled {
				a.log.Debug("replica loop starting")
			}
		}
		// A hand-off ends when the new owner's status says healthy: while
		// one waits, a change of the replica view runs a pass at once
		// rather than at the next resync. The channel is taken before the
		// pass so that a change during the pass is not missed.
		var statusChanged <-chan struct{}
		if settled {
			watch := r.status.watch()
			if wake := a.reconcilePass(ctx); !wake.IsZero() {
				wakeTimer.Reset(max(time.Until(wake), time.Millisecond))
			}
			if r.handoffWaiting.Load() {
				statusChanged = watch
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-changed:
		case <-statusChanged:
		case <-resync.C:
		case <-wakeTimer.C:
		}
	}
}

// publishAdopted lists the containers that run here before this agent
// does anything, records them as adopted, and publishes them as this
// node's replica status (not healthy yet, and Leaving: nothing is owned
// yet). So the placement this node and its peers compute before its first
// pass already counts them as held here: otherwise a node that restarts
// while its containers run would look empty, take other slots while
// filling, and start them beside its own.
func (a *Agent) publishAdopted(ctx context.Context) {
	drv := a.cfg.Runtime
	if drv == nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	listed, err := drv.List(lctx)
	cancel()
	if err != nil {
		a.log.Warn("listing containers at start failed", "err", err)
		return
	}
	actual, _ := splitPrepared(listed)
	r := a.replicas
	r.mu.Lock()
	r.adoptLocked(actual)
	r.mu.Unlock()
	if len(actual) > 0 {
		r.status.setLocal(a.localStatus(nil, actual, a.liveSpecs(), nil), time.Now())
	}
}

// adoptLocked records actual as the adopted containers, once: the first
// listing of this agent's run.
func (r *replicaSet) adoptLocked(actual []runtime.Replica) {
	if r.adopted != nil {
		return
	}
	r.adopted = make(map[string]bool, len(actual))
	for _, c := range actual {
		r.adopted[c.ID] = true
	}
}

// replicasSettled reports whether the node knows enough to reconcile.
func (a *Agent) replicasSettled(start time.Time, hasSeeds bool) bool {
	v := a.placement.view.Load()
	if len(v.nodes) == 0 {
		return false // placement not computed yet
	}
	// The status view's watchers (placementLoop) recompute when the
	// view turns warm and when this node's document changes; a changed
	// placement kicks this loop.
	if d, ok := a.replicas.status.local(); ok && v.version < d.Version {
		return false // computed before the adopted containers were published
	}
	if !hasSeeds {
		return true
	}
	// The placement depends on where the others' replicas run: wait for
	// one computed with their status (warm is also set after joinGrace,
	// whatever happens).
	if !v.warm {
		return false
	}
	if time.Since(start) >= joinGrace {
		return true
	}
	return a.cluster.NumAlive() > 1 && a.knownPeersBack()
}

// knownPeersBack reports whether every peer this node knew when it
// started (its saved list) is a member again, alive or known to be down.
// When every agent restarts at once, the first ones up would otherwise
// start copies of the slots of those not up yet, and, with placement
// keeping slots where they run, some copies would outlast the containers
// their agents adopt on return. joinGrace bounds the wait (a peer that
// is gone for good, or moved to another address).
func (a *Agent) knownPeersBack() bool {
	members := a.members.Load().list
	for _, addr := range a.startPeers {
		if !slices.ContainsFunc(members, func(m gossip.Member) bool {
			return m.Addr.IsValid() && memberAddr(m) == addr
		}) {
			return false
		}
	}
	return true
}

// liveSpecs decodes the live specs.
func (a *Agent) liveSpecs() map[string]spec.Spec {
	out := make(map[string]spec.Spec)
	for _, e := range a.store.List() {
		s, err := spec.Decode(e.Value)
		if err != nil {
			continue // placementInputs logs it
		}
		out[s.Name] = s
	}
	return out
}

// reconcilePass runs one pass and returns when the next one is due
// because a wait ends (zero: no timed wait).
func (a *Agent) reconcilePass(ctx context.Context) time.Time {
	r := a.replicas
	drv := a.cfg.Runtime
	if drv == nil {
		r.status.setLocal([]api.Replica{}, time.Now())
		return time.Time{}
	}
	if *a.runtimeErr.Load() != "" {
		return time.Time{} // not ready: keep everything as it is
	}
	defer r.passes.Add(1)
	t0 := time.Now()
	r.mu.Lock()
	listedAt := r.done
	r.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	listed, err := drv.List(lctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("listing containers failed", "err", err)
		}
		return time.Time{}
	}
	// Prepared containers are the standby's (standby.go): not replicas.
	actual, prepared := splitPrepared(listed)
	r.mu.Lock()
	for id, c := range r.prepared {
		if r.busy[keyOf(c)] > 0 {
			prepared[id] = c // being started: the list may be older
		}
	}
	for id, c := range prepared {
		if _, had := r.prepared[id]; !had && r.busy[keyOf(c)] > 0 {
			delete(prepared, id) // being prepared (it adds it) or removed
		}
	}
	r.prepared = prepared
	r.adoptLocked(actual) // if publishAdopted's listing failed
	r.local = make(map[slotKey]bool, len(actual))
	r.localAt = listedAt
	for _, c := range actual {
		r.local[keyOf(c)] = true
	}
	r.mu.Unlock()

	specs := a.liveSpecs()
	counts := make(map[string]int, len(specs))
	for name, s := range specs {
		counts[name] = s.Replicas
	}
	var desired []runtime.ReplicaSpec
	owned := make(map[slotKey]bool)
	for _, sl := range a.OwnedSlots() {
		s, ok := specs[sl.Service]
		if !ok || sl.Index >= s.Replicas {
			continue // placement is a step behind the store
		}
		desired = append(desired, replicaSpec(s, sl.Index, a.cfg.Name))
		owned[slotKey{sl.Service, sl.Index}] = true
	}

	healthy := make(map[string]bool, len(actual))
	for _, c := range actual {
		if c.State != runtime.StateRunning {
			continue
		}
		if s, ok := specs[c.Service]; ok && s.Health != nil {
			res, _ := r.probes.result(c.ID)
			healthy[c.ID] = res.Healthy
		} else {
			healthy[c.ID] = true
		}
	}

	listTook := time.Since(t0)
	res := a.Placement()
	ho := handoffs(a.cfg.Name, actual, healthy, owned, counts, res.Owner, a.ReplicaStatus)
	r.incoming.Store(len(ho.covered) > 0)
	handoffsIn := make(map[slotKey]runtime.ReplicaSpec, len(ho.covered))
	for _, d := range desired {
		if k := (slotKey{d.Service, d.Slot}); ho.covered[k] {
			handoffsIn[k] = d
		}
	}
	waiting := false
	for k, done := range ho.handoff {
		waiting = waiting || !done || ho.narrows[k]
	}
	r.handoffWaiting.Store(waiting)

	// The containers the load balancers route to: those the status
	// published last says are healthy and running.
	served := make(map[string]bool)
	if doc, ok := r.status.local(); ok {
		for _, rep := range doc.Replicas {
			if routable(rep) {
				served[rep.Container] = true
			}
		}
	}

	now := time.Now()
	r.mu.Lock()
	busy := make(map[slotKey]bool, len(r.busy))
	for k := range r.busy {
		busy[k] = true
	}
	for k, at := range r.doneAt {
		if at > listedAt {
			busy[k] = true // ended during the list: the next pass sees it
		} else {
			delete(r.doneAt, k)
		}
	}
	for id, at := range r.stopping {
		if at != 0 && at <= listedAt {
			delete(r.stopping, id) // the list is newer than the stop
		}
	}
	out := reconcile(reconcileInput{
		Now: now, Desired: desired, Replicas: counts, Actual: actual,
		Healthy: healthy, Handoff: ho.handoff, Narrows: ho.narrows, Covered: ho.covered, Busy: busy, Slots: r.slots,
	})
	r.slots = out.Slots
	r.handoffsIn = handoffsIn
	for k := range r.lastErr {
		if _, ok := out.Slots[k]; !ok {
			delete(r.lastErr, k)
		}
	}
	for _, act := range out.Actions {
		r.busy[act.Slot]++
		if act.Kind == actStop {
			r.stopping[act.ID] = 0
		}
	}
	r.inFlight.Add(int64(len(out.Actions)))
	r.mu.Unlock()

	running := 0
	for _, c := range actual {
		if c.State == runtime.StateRunning {
			running++
		}
	}
	r.metrics.running.Set(float64(running))
	r.probes.sync(ctx, probeTargets(actual, specs, a.cfg.AdvertiseAddr))
	r.status.setLocal(a.localStatus(desired, actual, specs, healthy), now)
	// The actions begin once the status says which containers stop: a
	// stop of a served one waits until the load balancers have that
	// status (drainBeforeStop).
	doc, _ := r.status.local()
	for _, act := range out.Actions {
		a.log.Debug("replica "+act.Kind.String()+" begins", "slot", act.Slot.String(), "container", act.ID+act.Spec.ID, "reason", act.Reason)
		r.actions.Add(1)
		drain := act.Kind == actStop && served[act.ID]
		var ports []int // where its server listens, inside its network namespace
		if drain {
			if i := slices.IndexFunc(actual, func(c runtime.Replica) bool { return c.ID == act.ID }); i >= 0 {
				ports = listenPorts(actual[i])
			}
		}
		go func() {
			defer r.actions.Done()
			if drain {
				a.drainBeforeStop(ctx, act, doc.Version, ports)
			}
			a.runAction(ctx, act)
		}()
	}
	a.log.Debug("reconcile pass", "took", time.Since(t0).Round(time.Microsecond), "list", listTook.Round(time.Microsecond),
		"actions", len(out.Actions), "busy", len(busy), "wake", out.Wake.Format("15:04:05.000"))
	return out.Wake
}

// handoffState is what handoffs found.
type handoffState struct {
	// handoff lists the slots this node holds containers of but another
	// node owns, each with whether the owner reports a healthy replica
	// of it that it does not hand on in turn (Leaving): only then may
	// this node stop its copy. A Leaving replica does not count, so two
	// nodes that each see the other as the owner for a moment never both
	// stop.
	handoff map[slotKey]bool
	// narrows lists the handed-off slots whose copy here is, for now,
	// needed for the service's spread: this node runs no healthy replica
	// of the service that it keeps, and fewer nodes run one that they
	// keep than the placement spreads the service over. So a node
	// holding two replicas of a service for a moment (one it owns, one
	// it covers for a node that is restarting them) is not left as the
	// only node that serves it.
	narrows map[slotKey]bool
	// covered lists the owned slots without a container here that a
	// healthy replica on another node runs: hand-offs to this node.
	covered map[slotKey]bool
}

// handoffs looks at the slots that change hands (see handoffState).
// healthy says which of this node's containers are healthy. status is
// called at most once, and only when needed.
func handoffs(self string, actual []runtime.Replica, healthy map[string]bool, owned map[slotKey]bool, counts map[string]int,
	owner func(service string, slot int) (string, bool), status func() []api.Replica) handoffState {
	hs := handoffState{handoff: make(map[slotKey]bool), narrows: make(map[slotKey]bool), covered: make(map[slotKey]bool)}
	var (
		others map[slotKey][]api.Replica  // other nodes' healthy replicas by slot
		kept   map[string]map[string]bool // service -> other nodes with a healthy replica they keep
	)
	view := func(k slotKey) []api.Replica {
		if others == nil {
			others = make(map[slotKey][]api.Replica)
			kept = make(map[string]map[string]bool)
			for _, r := range status() {
				if r.Healthy && r.Node != self {
					rk := slotKey{r.Service, r.Slot}
					others[rk] = append(others[rk], r)
					if !r.Leaving {
						if kept[r.Service] == nil {
							kept[r.Service] = make(map[string]bool)
						}
						kept[r.Service][r.Node] = true
					}
				}
			}
		}
		return others[k]
	}
	// spread is the number of nodes the placement spreads service over.
	spread := func(service string) int {
		nodes := make(map[string]bool)
		for i := range counts[service] {
			if o, ok := owner(service, i); ok {
				nodes[o] = true
			}
		}
		return len(nodes)
	}
	keepsHere := make(map[string]bool) // services with a healthy owned replica here
	local := make(map[slotKey]bool, len(actual))
	for _, c := range actual {
		k := keyOf(c)
		local[k] = true
		if owned[k] && c.State == runtime.StateRunning && healthy[c.ID] {
			keepsHere[k.Service] = true
		}
	}
	for _, c := range actual {
		k := keyOf(c)
		if k == unlabeled || owned[k] || k.Slot >= counts[k.Service] {
			continue
		}
		o, ok := owner(k.Service, k.Slot)
		if !ok || o == self {
			continue
		}
		done := slices.ContainsFunc(view(k), func(r api.Replica) bool { return r.Node == o && !r.Leaving })
		hs.handoff[k] = done
		if done && !keepsHere[k.Service] && c.State == runtime.StateRunning && healthy[c.ID] &&
			len(kept[k.Service]) < spread(k.Service) {
			hs.narrows[k] = true
		}
	}
	for k := range owned {
		if !local[k] && len(view(k)) > 0 {
			hs.covered[k] = true
		}
	}
	return hs
}

// drainTimeout bounds how long a stop waits for the other members to
// take the status that says the container stops (drainBeforeStop). A
// member that does not answer holds the stop up this long.
const drainTimeout = 2 * time.Second

// acceptWaitTimeout bounds how long a drained stop then waits for the
// container's server to accept the connections queued on it.
const acceptWaitTimeout = time.Second

// acceptPoll is how often that wait looks at the queues.
const acceptPoll = 5 * time.Millisecond

// listenPorts are the ports r's server listens on in its network
// namespace: the container ports in bridge mode, the host ports in host
// mode (both sides of HostPorts: the other side listens on nothing
// there).
func listenPorts(r runtime.Replica) []int {
	var out []int
	for cp, hp := range r.HostPorts {
		out = append(out, cp, hp)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// drainBeforeStop waits, before act stops a container that the load
// balancers route to, until none routes new connections to it: this
// node's balancer drops it at once, and each other member before it
// answers the push of the status, of version, that marks the container
// stopping (or a newer one). A member that fails meanwhile is not waited
// for; one that does not answer, at most drainTimeout.
//
// Stopped at once, the container closes its listener while the others
// still route to it for the few milliseconds the push takes: a
// connection the kernel had queued but the server had not accepted is
// reset, after the balancer had forwarded the client's first bytes (too
// late to try another endpoint). Kubernetes leaves this race to a
// preStop sleep, Nomad to a shutdown_delay; here the status push already
// tells when every member has the news.
//
// Then it waits, at most acceptWaitTimeout, until the connections routed
// to the container before are accepted by its server (the runtime tells,
// when it can: runtime.AcceptQueuer): a server that closes its listener
// on SIGTERM resets those still queued. (In a chaos run, five agents
// under -race on two cores, a connection routed before a drain ended was
// reset 200 ms after it: most likely still queued on a starved server.)
func (a *Agent) drainBeforeStop(ctx context.Context, act action, version uint64, ports []int) {
	a.syncLB()
	wctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	t0 := time.Now()
	behind := a.replicas.pusher.delivered(wctx, version, func(name string) bool { return !a.statusMember(name) })
	if behind != nil && ctx.Err() == nil {
		a.log.Warn("stopping a replica before every member has its status", "slot", act.Slot.String(),
			"container", act.ID, "waited", time.Since(t0).Round(time.Millisecond), "behind", behind)
	}
	routed := time.Since(t0)
	queued := a.waitAccepted(ctx, act.ID, ports)
	a.log.Debug("replica drained", "slot", act.Slot.String(), "container", act.ID,
		"took", time.Since(t0).Round(time.Microsecond), "routes", routed.Round(time.Microsecond), "queued", queued)
}

// waitAccepted waits until no connection is queued on container id's
// listening sockets at ports, at most acceptWaitTimeout, and returns how
// many were queued when it began (-1: the runtime cannot tell).
func (a *Agent) waitAccepted(ctx context.Context, id string, ports []int) int {
	q, ok := a.cfg.Runtime.(runtime.AcceptQueuer)
	if !ok || len(ports) == 0 {
		return -1
	}
	ctx, cancel := context.WithTimeout(ctx, acceptWaitTimeout)
	defer cancel()
	first := -1
	for {
		n, err := q.Queued(ctx, id, ports)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Debug("cannot read a replica's accept queues", "container", id, "err", err)
			}
			return first
		}
		if first < 0 {
			first = n
		}
		if n == 0 {
			return first
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				a.log.Warn("stopping a replica with connections its server has not accepted", "container", id, "queued", n)
			}
			return first
		case <-time.After(acceptPoll):
		}
	}
}

// runAction performs one action, records its outcome and kicks the loop.
func (a *Agent) runAction(ctx context.Context, act action) {
	r := a.replicas
	var err error
	switch act.Kind {
	case actStop:
		err = a.stopContainer(ctx, act.ID)
	case actStart:
		err = a.startContainer(ctx, act.Spec)
	case actRestart:
		if err = a.stopContainer(ctx, act.ID); err == nil {
			err = a.startContainer(ctx, act.Spec)
		}
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	r.metrics.actions.WithLabelValues(act.Kind.String(), result).Inc()

	r.mu.Lock()
	if r.busy[act.Slot]--; r.busy[act.Slot] <= 0 {
		delete(r.busy, act.Slot)
	}
	r.done++
	r.doneAt[act.Slot] = r.done
	if _, ok := r.stopping[act.ID]; ok && act.Kind == actStop {
		r.stopping[act.ID] = r.done
	}
	r.inFlight.Add(-1)
	switch {
	case err != nil && ctx.Err() == nil:
		msg := err.Error()
		if len(msg) > maxErrorLen {
			msg = msg[:maxErrorLen]
		}
		r.lastErr[act.Slot] = msg
		if act.Kind == actStop {
			r.slots[act.Slot] = r.slots[act.Slot].stopFailed(time.Now())
		} else {
			r.slots[act.Slot] = r.slots[act.Slot].failed(time.Now())
		}
	case err == nil && act.Kind == actStop:
		if st, ok := r.slots[act.Slot]; ok {
			r.slots[act.Slot] = st.stopped()
		}
	case err == nil:
		delete(r.lastErr, act.Slot)
	}
	r.mu.Unlock()

	switch {
	case err != nil && ctx.Err() == nil:
		a.log.Warn("replica "+act.Kind.String()+" failed", "slot", act.Slot.String(), "container", act.ID+act.Spec.ID, "reason", act.Reason, "err", err)
	case err == nil:
		a.log.Info("replica "+act.Kind.String(), "slot", act.Slot.String(), "container", act.ID+act.Spec.ID, "reason", act.Reason)
	}
	a.kickReplicas()
}

// startContainer makes the image available and starts the replica. In
// host mode it picks the replica's port and passes it as $PORT.
func (a *Agent) startContainer(ctx context.Context, s runtime.ReplicaSpec) error {
	drv := a.cfg.Runtime
	ictx, cancel := context.WithTimeout(ctx, imageTimeout)
	_, err := drv.EnsureImage(ictx, s.Image)
	cancel()
	if err != nil {
		return fmt.Errorf("image %s: %w", s.Image, err)
	}
	if s.Network == spec.NetworkHost && len(s.Ports) > 0 {
		p, err := freePort(a.cfg.BindAddr)
		if err != nil {
			return fmt.Errorf("picking a host port: %w", err)
		}
		s.Ports = []int{p}
		s.Env = maps.Clone(s.Env)
		s.Env["PORT"] = strconv.Itoa(p)
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	r := a.replicas
	r.mu.Lock()
	_, prepared := r.prepared[s.ID]
	r.mu.Unlock()
	if _, err := drv.Start(sctx, s); err != nil {
		return fmt.Errorf("start %s: %w", s.ID, err)
	}
	if prepared {
		r.mu.Lock()
		delete(r.prepared, s.ID)
		r.mu.Unlock()
		a.standby.prepares.WithLabelValues("started").Inc()
	}
	return nil
}

// stopContainer stops and removes a container.
func (a *Agent) stopContainer(ctx context.Context, id string) error {
	sctx, cancel := context.WithTimeout(ctx, stopTimeout+30*time.Second)
	defer cancel()
	if err := a.cfg.Runtime.Stop(sctx, id, stopTimeout); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	return nil
}

// freePort asks the kernel for a free TCP port on ip.
func freePort(ip netip.Addr) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// localStatus is this node's status document: every container it holds,
// and the owned slots that have none yet (pending).
func (a *Agent) localStatus(desired []runtime.ReplicaSpec, actual []runtime.Replica, specs map[string]spec.Spec, healthy map[string]bool) []api.Replica {
	r := a.replicas
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []api.Replica{}
	has := make(map[slotKey]bool)
	owned := make(map[slotKey]bool, len(desired))
	for _, d := range desired {
		owned[slotKey{d.Service, d.Slot}] = true
	}
	for _, c := range actual {
		k := keyOf(c)
		if k == unlabeled {
			continue
		}
		has[k] = true
		rep := api.Replica{
			Service: c.Service, Slot: c.Slot, Node: a.cfg.Name, Container: c.ID,
			Version: c.Version, Image: c.Image, StartedAt: c.StartedAt.UTC(),
			Restarts: r.slots[k].Restarts, LastError: r.lastErr[k],
			Leaving: !owned[k], Adopted: r.adopted[c.ID],
		}
		s, known := specs[c.Service]
		if known {
			rep.Endpoint = endpointOf(s, c, a.cfg.AdvertiseAddr)
			rep.Endpoints = endpointsOf(s, c, a.cfg.AdvertiseAddr)
		}
		_, stopping := r.stopping[c.ID]
		switch {
		case stopping:
			// Being stopped: no longer served, whatever its task's state
			// (SIGTERM sent, or exited and being removed).
			rep.State = "stopping"
		case c.State == runtime.StateRunning:
			rep.Healthy = healthy[c.ID]
			rep.State = "running"
			if known && s.Health != nil {
				pr, _ := r.probes.result(c.ID)
				switch {
				case !pr.Passed:
					rep.State = "starting"
				case !pr.Healthy:
					rep.State = "unhealthy"
				}
				if pr.LastErr != "" && !pr.Healthy {
					rep.LastError = pr.LastErr
				}
			}
		case c.State == runtime.StateUnknown:
			rep.State = "unknown"
		default:
			rep.State = "failed"
			rep.LastError = "exited with code " + strconv.Itoa(c.ExitCode)
		}
		if len(rep.LastError) > maxErrorLen {
			rep.LastError = rep.LastError[:maxErrorLen]
		}
		out = append(out, rep)
	}
	for _, d := range desired {
		k := slotKey{d.Service, d.Slot}
		if has[k] {
			continue
		}
		out = append(out, api.Replica{
			Service: d.Service, Slot: d.Slot, Node: a.cfg.Name, Version: d.Version, Image: d.Image,
			State: "pending", Restarts: r.slots[k].Restarts, LastError: r.lastErr[k],
		})
	}
	slices.SortFunc(out, func(x, y api.Replica) int {
		return cmp.Or(cmp.Compare(x.Service, y.Service), cmp.Compare(x.Slot, y.Slot), cmp.Compare(x.Container, y.Container))
	})
	return out
}
