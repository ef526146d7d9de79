package node

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
)

// The reconcile logic is a pure function, in the manner of etcd's raft
// core: it takes what should run on this node, what runs, what the probes
// say and the per-slot memory of earlier passes, with the time as an
// argument, and returns the actions to take and the new memory. It does no
// I/O and reads no clock; replicas.go feeds it and performs its actions.
//
// The rules, per replica slot ("web/2"):
//
//   - An owned slot runs exactly one container, made from the service's
//     current template (image, command, env, ports, network, resources;
//     see templateVersion). A missing one is started.
//   - A template change replaces make-before-break: the new container
//     starts next to the old one, and the old one stops only once the new
//     one is healthy. Per service, one slot at a time is mid-replacement
//     on this node: the next starts once the last one's old container is
//     gone.
//   - A container that exited is restarted after a backoff that starts at
//     1s and doubles to 5 min; it starts over after a run of 10 min. A
//     failed start waits out the same backoff. A container found exited
//     by an agent that has no memory of its slot yet (it has just
//     started) is restarted at once.
//   - A slot that moved to another node is stopped here once the new
//     owner reports a healthy replica of it and does not hand it on
//     itself (make-before-break across nodes), or after handoffTimeout.
//     Slots of deleted services, slots scaled away, slots no node may
//     take, and containers without Shoal labels are stopped at once.
//   - A hand-off waits for its owner to be settled: the new owner starts
//     a slot that a healthy replica elsewhere covers, and the old owner
//     stops its copy, only once the slot has had its owner for
//     handoffSettle. A slot without a healthy replica anywhere (a failed
//     node's, a new one) starts at once.
//   - A handed-off copy also stays, up to spreadHold, while the service
//     would otherwise run on fewer nodes than the placement spreads it
//     over (Narrows), so that one node's crash cannot take every replica
//     of a service in the middle of its hand-offs.
//   - A stop that failed is tried again after a backoff that starts at 1s
//     and doubles to 30s.
//   - A container that the load balancers route to is told to stop only
//     once every member's balancer has dropped it (drainBeforeStop): the
//     status marks it "stopping" first, and the stop waits for every
//     member to take that status, at most drainTimeout, then for its
//     server to accept the connections queued on it, at most
//     acceptWaitTimeout.
//   - Anything else is left alone: a running container of the current
//     template is never touched, so an agent that restarts adopts its
//     containers with zero restarts.

// Backoff and handoff timings.
const (
	backoffInitial = time.Second
	backoffMax     = 5 * time.Minute
	// stopBackoffMax bounds the wait between tries of a stop that keeps
	// failing: a container that cannot be removed should not be retried
	// in a hot loop, nor be left for minutes once the cause is gone.
	stopBackoffMax = 30 * time.Second
	// backoffReset is how long a container must have run for its slot's
	// backoff to start over.
	backoffReset = 10 * time.Minute
	// handoffTimeout bounds how long a slot that moved elsewhere keeps its
	// old copy here while the new owner reports no healthy replica.
	handoffTimeout = 5 * time.Minute
	// handoffSettle is how long a slot must have had its owner, as this
	// node sees it, before a hand-off acts on it. When a partition heals
	// or several nodes join, the members come back over a few hundred
	// milliseconds, and each step can move slots: a node that acted at
	// once started containers that the next step took away again (on two
	// cores under load each start took 4-8 s, and held up the ones that
	// mattered), and two nodes that each saw the other as the owner
	// stopped both copies of a slot. Hand-offs are never urgent: the slot
	// runs healthy meanwhile. In the chaos runs the owners moved for
	// 200-750 ms after a heal (a member that must first refute a stale
	// suspicion of itself comes back last); 500 ms let a node start a
	// slot that the last of them took away.
	handoffSettle = time.Second
	// spreadHold bounds how long a slot handed off to a healthy owner
	// keeps its old copy here because the service would otherwise run on
	// fewer nodes than the placement spreads it over (Narrows). The chaos
	// suite's kill loop killed a node that, for 2 s, ran both replicas of
	// a service: one it had just been handed back, one it still covered
	// for a node that was restarting it; the third node had already let
	// its copy go, and the service had no endpoint for 1.7 s. The wait
	// ends when the other owners' replicas are healthy (seconds); the
	// bound is for an owner whose replica never gets healthy.
	spreadHold = 30 * time.Second
)

// slotKey names a replica slot.
type slotKey struct {
	Service string
	Slot    int
}

func (k slotKey) String() string { return k.Service + "/" + strconv.Itoa(k.Slot) }

// unlabeled is the slot key of containers without usable Shoal labels.
var unlabeled = slotKey{Slot: -1}

// compareSlots orders slots by service, then index.
func compareSlots(a, b slotKey) int {
	return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Slot, b.Slot))
}

func keyOf(r runtime.Replica) slotKey {
	if spec.ValidName(r.Service) != nil || r.Slot < 0 || r.Version == "" {
		return unlabeled
	}
	return slotKey{r.Service, r.Slot}
}

// slotState is what reconcile remembers about a slot between passes.
type slotState struct {
	// Restarts counts restarts after crashes (shown in the status).
	Restarts int
	// Backoff is the wait before the next start after a crash or a
	// failed start (0: backoffInitial).
	Backoff time.Duration
	// NotBefore holds off every start of the slot until then.
	NotBefore time.Time
	// CrashOf identifies the crash being waited out (container ID and
	// start time), so that one crash schedules one restart.
	CrashOf string
	// OwnedAt is when this node, owning the slot, first saw itself as its
	// owner (zero when it does not own it).
	OwnedAt time.Time
	// MovedAt is when a slot that this node holds a container of was
	// first seen owned by another node (zero while this node owns it).
	MovedAt time.Time
	// StopNotBefore holds off every stop of the slot's containers until
	// then, after a failed stop; StopBackoff is the wait after the next
	// failure (0: backoffInitial).
	StopNotBefore time.Time
	StopBackoff   time.Duration
}

// failed returns the state after a failed start at now: the next start
// waits the current backoff, which then doubles.
func (s slotState) failed(now time.Time) slotState {
	b := max(s.Backoff, backoffInitial)
	s.NotBefore = now.Add(b)
	s.Backoff = min(2*b, backoffMax)
	return s
}

// stopFailed returns the state after a failed stop at now: the next stop
// waits the current stop backoff, which then doubles.
func (s slotState) stopFailed(now time.Time) slotState {
	b := max(s.StopBackoff, backoffInitial)
	s.StopNotBefore = now.Add(b)
	s.StopBackoff = min(2*b, stopBackoffMax)
	return s
}

// stopped returns the state after a successful stop.
func (s slotState) stopped() slotState {
	s.StopNotBefore, s.StopBackoff = time.Time{}, 0
	return s
}

// reconcileInput is everything reconcile looks at.
type reconcileInput struct {
	Now time.Time
	// Desired are the slots this node owns, as the specs to run them.
	// Each has ID and Version set from the template (replicaSpec).
	Desired []runtime.ReplicaSpec
	// Replicas maps every live service to its replica count.
	Replicas map[string]int
	// Actual are the containers the runtime reports.
	Actual []runtime.Replica
	// Healthy says which containers pass their health check (a running
	// container of a service without one is healthy).
	Healthy map[string]bool
	// Handoff lists the in-range slots of live services that another node
	// owns; the value is whether that node reports a healthy replica.
	// An in-range slot neither desired nor here has no owner at all.
	Handoff map[slotKey]bool
	// Narrows lists the handed-off slots whose copy here the service
	// still needs for its spread (handoffState.narrows): it is kept up to
	// spreadHold after the slot moved.
	Narrows map[slotKey]bool
	// Covered lists the desired slots of which another live node runs a
	// healthy replica: a start of one of them is a hand-off, not a
	// failover, and waits for the owner to settle.
	Covered map[slotKey]bool
	// Busy slots have an action under way: reconcile leaves them alone
	// (but still counts them as mid-replacement).
	Busy map[slotKey]bool
	// Slots is the memory of the last pass (not modified).
	Slots map[slotKey]slotState
}

// actionKind is what an action does.
type actionKind int

const (
	actStart   actionKind = iota + 1 // start Spec
	actStop                          // stop and remove container ID
	actRestart                       // stop container ID, then start Spec
)

func (k actionKind) String() string {
	switch k {
	case actStart:
		return "start"
	case actStop:
		return "stop"
	case actRestart:
		return "restart"
	}
	return "action(" + strconv.Itoa(int(k)) + ")"
}

// action is one runtime operation reconcile asks for.
type action struct {
	Kind actionKind
	Slot slotKey
	// ID is the container to stop (actStop, actRestart).
	ID string
	// Spec is the replica to start (actStart, actRestart).
	Spec runtime.ReplicaSpec
	// Reason says why, for logs.
	Reason string
}

// reconcileOutput is reconcile's answer.
type reconcileOutput struct {
	Actions []action
	// Slots is the new memory: states of desired slots and of slots with
	// containers; the others are forgotten.
	Slots map[slotKey]slotState
	// Wake is when a pass should run again because a wait ends (zero:
	// nothing is waiting on time).
	Wake time.Time
}

// reconcile compares the desired slots with the containers and returns
// the actions that move the node toward the desired state. It is pure and
// deterministic: the same input always gives the same output, in the same
// order (slots sorted by service and index).
func reconcile(in reconcileInput) reconcileOutput {
	out := reconcileOutput{Slots: make(map[slotKey]slotState)}
	wake := func(t time.Time) {
		if out.Wake.IsZero() || t.Before(out.Wake) {
			out.Wake = t
		}
	}
	running := func(r runtime.Replica) bool { return r.State == runtime.StateRunning }
	healthy := func(r runtime.Replica) bool { return running(r) && in.Healthy[r.ID] }

	bySlot := make(map[slotKey][]runtime.Replica)
	for _, r := range in.Actual {
		k := keyOf(r)
		bySlot[k] = append(bySlot[k], r)
	}
	desired := make(map[slotKey]runtime.ReplicaSpec, len(in.Desired))
	for _, d := range in.Desired {
		desired[slotKey{d.Service, d.Slot}] = d
	}

	// stop asks for a stop of r unless an earlier stop of the slot failed
	// and its backoff has not passed.
	stop := func(k slotKey, r runtime.Replica, reason string) {
		if t := in.Slots[k].StopNotBefore; in.Now.Before(t) {
			wake(t)
			return
		}
		out.Actions = append(out.Actions, action{Kind: actStop, Slot: k, ID: r.ID, Reason: reason})
	}

	// Containers without labels are not ours to keep.
	if len(bySlot[unlabeled]) > 0 {
		out.Slots[unlabeled] = in.Slots[unlabeled]
		if !in.Busy[unlabeled] {
			for _, r := range bySlot[unlabeled] {
				stop(unlabeled, r, "container without shoal labels")
			}
		}
	}

	// current splits a slot's containers into the one of template d (if
	// any) and the others.
	current := func(k slotKey, d runtime.ReplicaSpec) (cur *runtime.Replica, old []runtime.Replica) {
		for _, r := range bySlot[k] {
			if r.Version == d.Version && cur == nil {
				cur = &r
			} else {
				old = append(old, r)
			}
		}
		return cur, old
	}

	// Slots of each service that are mid-replacement: from the start of
	// the new container (busy, or present) until no old one runs.
	replacing := make(map[string]int)
	for k, d := range desired {
		cur, old := current(k, d)
		if slices.ContainsFunc(old, running) && (cur != nil || in.Busy[k]) {
			replacing[k.Service]++
		}
	}

	keys := slices.Collect(maps.Keys(desired))
	for k := range bySlot {
		if _, ok := desired[k]; !ok && k != unlabeled {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareSlots)

	for _, k := range keys {
		st := in.Slots[k]
		d, owned := desired[k]
		if owned {
			st.MovedAt = time.Time{}
			if st.OwnedAt.IsZero() {
				st.OwnedAt = in.Now
			}
		} else {
			st.OwnedAt = time.Time{}
		}
		if in.Busy[k] {
			out.Slots[k] = st
			continue
		}
		if !owned {
			out.Slots[k] = reconcileLost(in, k, bySlot[k], st, stop, wake)
			continue
		}
		cur, old := current(k, d)
		for _, r := range old {
			switch {
			case !running(r):
				stop(k, r, "old template, not running")
			case cur != nil && healthy(*cur):
				stop(k, r, "replaced by a healthy "+cur.ID)
			}
		}
		switch {
		case cur == nil:
			if in.Now.Before(st.NotBefore) {
				wake(st.NotBefore)
				break
			}
			if slices.ContainsFunc(old, running) {
				if replacing[k.Service] > 0 {
					break // another slot of the service is being replaced
				}
				replacing[k.Service]++
				out.Actions = append(out.Actions, action{Kind: actStart, Slot: k, Spec: d, Reason: "new template " + d.Version})
				break
			}
			if settled := st.OwnedAt.Add(handoffSettle); in.Covered[k] && in.Now.Before(settled) {
				wake(settled) // a hand-off to this node: let the owner settle
				break
			}
			out.Actions = append(out.Actions, action{Kind: actStart, Slot: k, Spec: d, Reason: "missing"})
		case running(*cur):
			if healthy(*cur) && !cur.StartedAt.IsZero() && in.Now.Sub(cur.StartedAt) >= backoffReset {
				st.Backoff, st.CrashOf = 0, ""
			}
		case cur.State == runtime.StateUnknown:
			// The runtime cannot tell; leave it until it can.
		default: // exited, or created and never started
			crash := cur.ID + "@" + cur.StartedAt.UTC().Format(time.RFC3339Nano)
			if _, seen := in.Slots[k]; !seen {
				// No memory of the slot: the agent has just started, and
				// the container exited while no agent watched (the
				// machine or the agent crashed). Nothing to back off from.
				st.CrashOf = crash
			}
			if st.CrashOf != crash {
				b := st.Backoff
				if b == 0 || (!cur.StartedAt.IsZero() && in.Now.Sub(cur.StartedAt) >= backoffReset) {
					b = backoffInitial
				}
				st.CrashOf = crash
				st.NotBefore = in.Now.Add(b)
				st.Backoff = min(2*b, backoffMax)
				wake(st.NotBefore)
				break
			}
			if in.Now.Before(st.NotBefore) {
				wake(st.NotBefore)
				break
			}
			st.Restarts++
			out.Actions = append(out.Actions, action{Kind: actRestart, Slot: k, ID: cur.ID, Spec: d,
				Reason: "exited with code " + strconv.Itoa(cur.ExitCode)})
		}
		out.Slots[k] = st
	}
	return out
}

// reconcileLost handles a slot this node does not own but has containers
// of; it returns the slot's new state.
func reconcileLost(in reconcileInput, k slotKey, here []runtime.Replica, st slotState,
	stop func(slotKey, runtime.Replica, string), wake func(time.Time)) slotState {
	n, live := in.Replicas[k.Service]
	handedOff, moved := in.Handoff[k]
	if moved && st.MovedAt.IsZero() {
		st.MovedAt = in.Now
	}
	settled := st.MovedAt.Add(handoffSettle)
	var reason string
	switch {
	case !live:
		reason = "service deleted"
	case k.Slot >= n:
		reason = "scaled down"
	case !moved:
		reason = "slot has no owner"
	case handedOff && in.Now.Before(settled):
		wake(settled) // this node might own it again in a moment
	case handedOff && in.Narrows[k] && in.Now.Before(st.MovedAt.Add(spreadHold)):
		wake(st.MovedAt.Add(spreadHold)) // the service's other owners are not all up yet
	case handedOff:
		reason = "new owner runs it"
	case !in.Now.Before(st.MovedAt.Add(handoffTimeout)):
		reason = "new owner not healthy after " + handoffTimeout.String()
	default:
		wake(st.MovedAt.Add(handoffTimeout))
	}
	for _, r := range here {
		switch {
		case reason != "":
			stop(k, r, reason)
		case r.State != runtime.StateRunning:
			stop(k, r, "moved to another node, not running")
		}
	}
	return st
}

// templateVersion is the version of a service's container template: a
// hash of the fields that shape a container (image, command, env, network,
// target ports, resources). Changing anything else (replicas, published
// ports, health, constraints) keeps the version, so no container churns.
func templateVersion(s spec.Spec) string {
	targets := make([]int, len(s.Ports))
	for i, p := range s.Ports {
		targets[i] = p.Target
	}
	b, _ := json.Marshal(struct {
		Image   string            `json:"i"`
		Command []string          `json:"c,omitempty"`
		Env     map[string]string `json:"e,omitempty"` // json sorts map keys
		Network string            `json:"n,omitempty"`
		Ports   []int             `json:"p,omitempty"`
		CPUs    float64           `json:"cpu,omitempty"`
		Memory  int64             `json:"mem,omitempty"`
	}{runImage(s), s.Command, s.Env, s.Network, targets, s.Resources.CPUs, int64(s.Resources.Memory)})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4])
}

// runImage is the reference replicas of s run: the image pinned to its
// digest when the spec holds one ("demo:1@sha256:..."). A spec without a
// digest keeps the plain reference, and so the template version it had
// before digests were pinned.
func runImage(s spec.Spec) string {
	if s.ImageDigest == "" {
		return s.Image
	}
	return s.Image + "@" + s.ImageDigest
}

// containerID is the deterministic ID of a replica: service, slot and
// template version ("web-2-1a2b3c4d"), so two versions of a slot can
// coexist during a replacement and a restarted agent finds the same ID.
func containerID(service string, slot int, version string) string {
	return service + "-" + strconv.Itoa(slot) + "-" + version
}

// replicaSpec builds what the runtime runs for slot of s on node.
func replicaSpec(s spec.Spec, slot int, node string) runtime.ReplicaSpec {
	v := templateVersion(s)
	env := make(map[string]string, len(s.Env)+3)
	maps.Copy(env, s.Env)
	env["SHOAL_SERVICE"] = s.Name
	env["SHOAL_SLOT"] = strconv.Itoa(slot)
	env["SHOAL_NODE"] = node
	ports := make([]int, len(s.Ports))
	for i, p := range s.Ports {
		ports[i] = p.Target
	}
	network := s.Network
	if network == "" {
		network = spec.NetworkBridge
	}
	return runtime.ReplicaSpec{
		ID:      containerID(s.Name, slot, v),
		Service: s.Name,
		Slot:    slot,
		Version: v,
		Image:   runImage(s),
		Command: slices.Clone(s.Command),
		Env:     env,
		Network: network,
		Ports:   ports,
		CPUs:    s.Resources.CPUs,
		Memory:  int64(s.Resources.Memory),
	}
}
