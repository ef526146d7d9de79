package node

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// dspec is a desired replica of service/slot with template version v.
func dspec(service string, slot int, v string) runtime.ReplicaSpec {
	return runtime.ReplicaSpec{ID: containerID(service, slot, v), Service: service, Slot: slot, Version: v, Image: "img:" + v}
}

// ctr is a container of service/slot, template v, in state st.
func ctr(service string, slot int, v string, st runtime.State, started time.Time) runtime.Replica {
	return runtime.Replica{ID: containerID(service, slot, v), Service: service, Slot: slot, Version: v, State: st, StartedAt: started}
}

// summary renders actions as "start web-0-v1", "stop web-0-v0" ...
func summary(acts []action) []string {
	out := []string{}
	for _, a := range acts {
		id := a.ID
		if a.Kind == actStart {
			id = a.Spec.ID
		}
		out = append(out, a.Kind.String()+" "+id)
	}
	return out
}

func healthyAll(cs ...runtime.Replica) map[string]bool {
	h := map[string]bool{}
	for _, c := range cs {
		h[c.ID] = c.State == runtime.StateRunning
	}
	return h
}

func TestReconcileTable(t *testing.T) {
	running := runtime.StateRunning
	tests := []struct {
		name string
		in   reconcileInput
		want []string
	}{
		{"nothing", reconcileInput{}, []string{}},
		{"start missing", reconcileInput{
			Desired: []runtime.ReplicaSpec{dspec("web", 0, "v1"), dspec("web", 1, "v1")}, Replicas: map[string]int{"web": 2},
		}, []string{"start web-0-v1", "start web-1-v1"}},
		{"converged: nothing to do", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v1")},
			Replicas: map[string]int{"web": 1},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0)},
			Healthy:  map[string]bool{"web-0-v1": true},
		}, []string{}},
		{"unhealthy current is left alone", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v1")},
			Replicas: map[string]int{"web": 1},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0)},
		}, []string{}},
		{"template change starts the new one first", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2")},
			Replicas: map[string]int{"web": 1},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0)},
			Healthy:  map[string]bool{"web-0-v1": true},
		}, []string{"start web-0-v2"}},
		{"old stays while the new one is not healthy", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2")},
			Replicas: map[string]int{"web": 1},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0), ctr("web", 0, "v2", running, t0)},
			Healthy:  map[string]bool{"web-0-v1": true},
		}, []string{}},
		{"old stops once the new one is healthy", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2")},
			Replicas: map[string]int{"web": 1},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0), ctr("web", 0, "v2", running, t0)},
			Healthy:  map[string]bool{"web-0-v1": true, "web-0-v2": true},
		}, []string{"stop web-0-v1"}},
		{"one replacement at a time per service", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2"), dspec("web", 1, "v2"), dspec("api", 0, "v2")},
			Replicas: map[string]int{"web": 2, "api": 1},
			Actual: []runtime.Replica{ctr("web", 0, "v1", running, t0), ctr("web", 1, "v1", running, t0),
				ctr("api", 0, "v1", running, t0)},
		}, []string{"start api-0-v2", "start web-0-v2"}},
		{"a busy replacement holds back the next one", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2"), dspec("web", 1, "v2")},
			Replicas: map[string]int{"web": 2},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0), ctr("web", 1, "v1", running, t0)},
			Busy:     map[slotKey]bool{{"web", 0}: true},
		}, []string{}},
		{"next replacement when the first is done", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2"), dspec("web", 1, "v2")},
			Replicas: map[string]int{"web": 2},
			Actual: []runtime.Replica{ctr("web", 0, "v1", running, t0), ctr("web", 0, "v2", running, t0),
				ctr("web", 1, "v1", running, t0)},
			Healthy: map[string]bool{"web-0-v2": true},
		}, []string{"stop web-0-v1"}},
		{"next replacement once the old one is gone", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2"), dspec("web", 1, "v2")},
			Replicas: map[string]int{"web": 2},
			Actual:   []runtime.Replica{ctr("web", 0, "v2", running, t0), ctr("web", 1, "v1", running, t0)},
			Healthy:  map[string]bool{"web-0-v2": true},
		}, []string{"start web-1-v2"}},
		{"a dead old container goes at once", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v2"), dspec("web", 1, "v2")},
			Replicas: map[string]int{"web": 2},
			Actual: []runtime.Replica{ctr("web", 0, "v1", running, t0), ctr("web", 0, "v2", running, t0),
				ctr("web", 1, "v1", runtime.StateExited, t0)},
		}, []string{"stop web-1-v1", "start web-1-v2"}},
		{"deleted, scaled down, unlabeled", reconcileInput{
			Replicas: map[string]int{"web": 1},
			Actual: []runtime.Replica{ctr("gone", 0, "v1", running, t0), ctr("web", 1, "v1", running, t0),
				{ID: "stray", State: running}},
		}, []string{"stop stray", "stop gone-0-v1", "stop web-1-v1"}},
		{"moved: kept until the new owner is healthy", reconcileInput{
			Now:      t0,
			Replicas: map[string]int{"web": 2},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0), ctr("web", 1, "v1", running, t0)},
			Handoff:  map[slotKey]bool{{"web", 0}: false, {"web", 1}: true},
			Slots: map[slotKey]slotState{{"web", 0}: {MovedAt: t0.Add(-handoffSettle)},
				{"web", 1}: {MovedAt: t0.Add(-handoffSettle)}},
		}, []string{"stop web-1-v1"}},
		{"moved slot without owner stops", reconcileInput{
			Replicas: map[string]int{"web": 1},
			Actual:   []runtime.Replica{ctr("web", 0, "v1", running, t0)},
		}, []string{"stop web-0-v1"}},
		{"busy slot untouched", reconcileInput{
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v1")},
			Replicas: map[string]int{"web": 1},
			Busy:     map[slotKey]bool{{"web", 0}: true},
		}, []string{}},
		{"backoff holds a start", reconcileInput{
			Now:      t0,
			Desired:  []runtime.ReplicaSpec{dspec("web", 0, "v1")},
			Replicas: map[string]int{"web": 1},
			Slots:    map[slotKey]slotState{{"web", 0}: {NotBefore: t0.Add(time.Second)}},
		}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summary(reconcile(tt.in).Actions)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("actions %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReconcileCrashBackoff(t *testing.T) {
	d := dspec("web", 0, "v1")
	in := reconcileInput{Now: t0, Desired: []runtime.ReplicaSpec{d}, Replicas: map[string]int{"web": 1}}
	crashed := ctr("web", 0, "v1", runtime.StateExited, t0.Add(-time.Minute))
	in.Actual = []runtime.Replica{crashed}

	// An agent that has just started (no memory of the slot) restarts a
	// container that exited while it was away at once.
	out := reconcile(in)
	if got := summary(out.Actions); !slices.Equal(got, []string{"restart web-0-v1"}) {
		t.Fatalf("first pass of an agent: actions %q, want a restart at once", got)
	}
	if st := out.Slots[slotKey{"web", 0}]; st.Restarts != 1 || !st.NotBefore.IsZero() {
		t.Fatalf("first pass of an agent: %+v", st)
	}
	// Any later crash backs off, starting at 1s.
	in.Slots = map[slotKey]slotState{{"web", 0}: {}}
	var wantRestarts int
	for i, wantDelay := range []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300} {
		wantDelay *= time.Second
		out := reconcile(in)
		if len(out.Actions) != 0 || !out.Wake.Equal(in.Now.Add(wantDelay)) {
			t.Fatalf("crash %d: actions %q, wake %v; want none and a wake after %v", i, summary(out.Actions), out.Wake.Sub(in.Now), wantDelay)
		}
		in.Slots = out.Slots
		in.Now = in.Now.Add(wantDelay - time.Millisecond)
		if out := reconcile(in); len(out.Actions) != 0 {
			t.Fatalf("crash %d: restarted before the backoff ended: %q", i, summary(out.Actions))
		}
		in.Now = in.Now.Add(time.Millisecond)
		out = reconcile(in)
		if got := summary(out.Actions); !slices.Equal(got, []string{"restart web-0-v1"}) {
			t.Fatalf("crash %d: actions %q after the backoff", i, got)
		}
		wantRestarts++
		if n := out.Slots[slotKey{"web", 0}].Restarts; n != wantRestarts {
			t.Fatalf("restarts = %d, want %d", n, wantRestarts)
		}
		in.Slots = out.Slots
		// The restarted container crashes again a little later.
		in.Now = in.Now.Add(time.Second)
		in.Actual = []runtime.Replica{ctr("web", 0, "v1", runtime.StateExited, in.Now.Add(-time.Millisecond))}
	}

	// A container that ran 10 minutes starts the backoff over.
	in.Actual = []runtime.Replica{ctr("web", 0, "v1", runtime.StateExited, in.Now.Add(-backoffReset))}
	if out := reconcile(in); !out.Wake.Equal(in.Now.Add(backoffInitial)) {
		t.Fatalf("after a long run: wake after %v, want %v", out.Wake.Sub(in.Now), backoffInitial)
	}
	// So does a healthy run of 10 minutes observed while running.
	in.Actual = []runtime.Replica{ctr("web", 0, "v1", runtime.StateRunning, in.Now.Add(-backoffReset))}
	in.Healthy = healthyAll(in.Actual...)
	if st := reconcile(in).Slots[slotKey{"web", 0}]; st.Backoff != 0 || st.Restarts != wantRestarts {
		t.Fatalf("after 10 min healthy: %+v", st)
	}
}

func TestReconcileHandoffTimeout(t *testing.T) {
	in := reconcileInput{
		Now: t0, Replicas: map[string]int{"web": 1},
		Actual:  []runtime.Replica{ctr("web", 0, "v1", runtime.StateRunning, t0)},
		Handoff: map[slotKey]bool{{"web", 0}: false},
	}
	out := reconcile(in)
	if len(out.Actions) != 0 || !out.Wake.Equal(t0.Add(handoffTimeout)) {
		t.Fatalf("actions %q wake %v", summary(out.Actions), out.Wake)
	}
	in.Slots, in.Now = out.Slots, t0.Add(handoffTimeout)
	if got := summary(reconcile(in).Actions); !slices.Equal(got, []string{"stop web-0-v1"}) {
		t.Fatalf("after the handoff timeout: %q", got)
	}
}

// A hand-off acts only once the slot has had its owner for
// handoffSettle: on the old owner's side (its stop) and on the new
// owner's (its start, when a healthy replica elsewhere covers the slot).
// Ownership that flips back within the window does nothing at all.
func TestReconcileHandoffSettles(t *testing.T) {
	running := runtime.StateRunning
	k := slotKey{"web", 0}
	old := reconcileInput{
		Now: t0, Replicas: map[string]int{"web": 1},
		Actual:  []runtime.Replica{ctr("web", 0, "v1", running, t0.Add(-time.Hour))},
		Healthy: map[string]bool{"web-0-v1": true},
		Handoff: map[slotKey]bool{k: true},
	}
	out := reconcile(old)
	if len(out.Actions) != 0 || !out.Wake.Equal(t0.Add(handoffSettle)) || !out.Slots[k].MovedAt.Equal(t0) {
		t.Fatalf("old owner, just moved: actions %q wake %v state %+v; want none, a wake at +%v", summary(out.Actions), out.Wake, out.Slots[k], handoffSettle)
	}
	old.Slots, old.Now = out.Slots, t0.Add(handoffSettle-time.Millisecond)
	if out := reconcile(old); len(out.Actions) != 0 {
		t.Fatalf("old owner stopped its copy before the owner settled: %q", summary(out.Actions))
	}
	old.Now = t0.Add(handoffSettle)
	if got := summary(reconcile(old).Actions); !slices.Equal(got, []string{"stop web-0-v1"}) {
		t.Fatalf("old owner after the settle: %q", got)
	}
	// The old owner owns it again within the window: its copy stays, and
	// a later move waits the whole window again.
	old.Now = t0.Add(handoffSettle / 2)
	again := old
	again.Desired, again.Handoff = []runtime.ReplicaSpec{dspec("web", 0, "v1")}, nil
	out = reconcile(again)
	if len(out.Actions) != 0 || !out.Slots[k].MovedAt.IsZero() {
		t.Fatalf("owned again: actions %q state %+v", summary(out.Actions), out.Slots[k])
	}
	old.Slots, old.Now = out.Slots, t0.Add(handoffSettle)
	if out := reconcile(old); len(out.Actions) != 0 || !out.Wake.Equal(old.Now.Add(handoffSettle)) {
		t.Fatalf("moved again: actions %q wake %v", summary(out.Actions), out.Wake)
	}
	// A dead copy goes at once, settled or not.
	dead := old
	dead.Slots, dead.Now = nil, t0
	dead.Actual = []runtime.Replica{ctr("web", 0, "v1", runtime.StateExited, t0.Add(-time.Hour))}
	if got := summary(reconcile(dead).Actions); !slices.Equal(got, []string{"stop web-0-v1"}) {
		t.Fatalf("dead copy of a moved slot: %q", got)
	}

	// The new owner: a covered slot waits; an uncovered one starts at once.
	nu := reconcileInput{
		Now: t0, Replicas: map[string]int{"web": 1},
		Desired: []runtime.ReplicaSpec{dspec("web", 0, "v1")},
		Covered: map[slotKey]bool{k: true},
	}
	out = reconcile(nu)
	if len(out.Actions) != 0 || !out.Wake.Equal(t0.Add(handoffSettle)) {
		t.Fatalf("new owner of a covered slot: actions %q wake %v", summary(out.Actions), out.Wake)
	}
	nu.Slots, nu.Now = out.Slots, t0.Add(handoffSettle)
	if got := summary(reconcile(nu).Actions); !slices.Equal(got, []string{"start web-0-v1"}) {
		t.Fatalf("new owner after the settle: %q", got)
	}
	// Lost and owned again within the window: the window starts over.
	lost := nu
	lost.Desired, lost.Now = nil, t0.Add(handoffSettle/2)
	out = reconcile(lost)
	nu.Slots, nu.Now = out.Slots, t0.Add(handoffSettle)
	if out := reconcile(nu); len(out.Actions) != 0 || !out.Wake.Equal(nu.Now.Add(handoffSettle)) {
		t.Fatalf("owned again: actions %q wake %v", summary(out.Actions), out.Wake)
	}
	nu.Covered, nu.Slots = nil, nil
	if got := summary(reconcile(nu).Actions); !slices.Equal(got, []string{"start web-0-v1"}) {
		t.Fatalf("uncovered slot (a failover): %q, want a start at once", got)
	}
}

func TestSlotStateFailed(t *testing.T) {
	var s slotState
	for _, want := range []time.Duration{1, 2, 4, 8} {
		s = s.failed(t0)
		if got := s.NotBefore.Sub(t0); got != want*time.Second {
			t.Fatalf("failed start waits %v, want %v", got, want*time.Second)
		}
	}
}

func TestTemplateVersion(t *testing.T) {
	base := spec.Spec{Name: "web", Image: "demo:1", Replicas: 3, Env: map[string]string{"A": "1", "B": "2"},
		Ports: []spec.Port{{Published: 8080, Target: 80}}}
	v := templateVersion(base)
	same := []func(*spec.Spec){
		func(s *spec.Spec) { s.Replicas = 7 },
		func(s *spec.Spec) { s.Ports[0].Published = 9090 },
		func(s *spec.Spec) { s.Health = &spec.Health{HTTP: "/"} },
		func(s *spec.Spec) { s.Constraints = map[string]string{"zone": "a"} },
		func(s *spec.Spec) { s.Env = map[string]string{"B": "2", "A": "1"} },
	}
	changed := []func(*spec.Spec){
		func(s *spec.Spec) { s.Image = "demo:2" },
		func(s *spec.Spec) { s.Env["A"] = "x" },
		func(s *spec.Spec) { s.Command = []string{"x"} },
		func(s *spec.Spec) { s.Ports[0].Target = 81 },
		func(s *spec.Spec) { s.Network = "host" },
		func(s *spec.Spec) { s.Resources.CPUs = 1 },
		func(s *spec.Spec) { s.Resources.Memory = 1 << 20 },
	}
	clone := func() spec.Spec {
		s := base
		s.Env = maps.Clone(base.Env)
		s.Ports = slices.Clone(base.Ports)
		return s
	}
	for i, f := range same {
		s := clone()
		f(&s)
		if templateVersion(s) != v {
			t.Errorf("same[%d] changed the version", i)
		}
	}
	for i, f := range changed {
		s := clone()
		f(&s)
		if templateVersion(s) == v {
			t.Errorf("changed[%d] kept the version", i)
		}
	}
	rs := replicaSpec(base, 2, "node-1")
	if rs.ID != "web-2-"+v || rs.Version != v || rs.Env["SHOAL_SLOT"] != "2" || rs.Env["SHOAL_NODE"] != "node-1" ||
		rs.Env["SHOAL_SERVICE"] != "web" || rs.Env["A"] != "1" || !slices.Equal(rs.Ports, []int{80}) || rs.Network != "bridge" {
		t.Fatalf("replicaSpec = %+v", rs)
	}
}

// world is a generated reconcile scenario.
type world struct {
	desired  []runtime.ReplicaSpec
	replicas map[string]int
	actual   []runtime.Replica
	handoff  map[slotKey]bool
}

var services = []string{"a", "b", "c"}
var versions = []string{"v1", "v2", "v3"}

// genWorld draws services, the slots this node owns, and containers.
// With unknown, containers may be in state unknown.
func genWorld(t *rapid.T, withUnknown bool) world {
	w := world{replicas: map[string]int{}, handoff: map[slotKey]bool{}}
	for _, s := range services {
		if !rapid.Bool().Draw(t, "live-"+s) {
			continue
		}
		n := rapid.IntRange(0, 4).Draw(t, "replicas-"+s)
		w.replicas[s] = n
		v := rapid.SampledFrom(versions).Draw(t, "version-"+s)
		for i := range n {
			switch rapid.IntRange(0, 3).Draw(t, fmt.Sprintf("owner-%s%d", s, i)) {
			case 0, 1:
				w.desired = append(w.desired, dspec(s, i, v))
			case 2:
				w.handoff[slotKey{s, i}] = rapid.Bool().Draw(t, fmt.Sprintf("handed-%s%d", s, i))
			}
		}
	}
	states := []runtime.State{runtime.StateRunning, runtime.StateRunning, runtime.StateExited, runtime.StateCreated}
	if withUnknown {
		states = append(states, runtime.StateUnknown)
	}
	seen := map[string]bool{}
	for i := range rapid.IntRange(0, 12).Draw(t, "containers") {
		c := ctr(rapid.SampledFrom(services).Draw(t, fmt.Sprintf("c%d-svc", i)),
			rapid.IntRange(0, 5).Draw(t, fmt.Sprintf("c%d-slot", i)),
			rapid.SampledFrom(versions).Draw(t, fmt.Sprintf("c%d-ver", i)),
			rapid.SampledFrom(states).Draw(t, fmt.Sprintf("c%d-state", i)),
			t0.Add(-time.Duration(rapid.IntRange(0, 20).Draw(t, fmt.Sprintf("c%d-age", i)))*time.Minute))
		if rapid.IntRange(0, 9).Draw(t, fmt.Sprintf("c%d-unlabeled", i)) == 0 {
			c.Service, c.ID = "", fmt.Sprintf("stray-%d", i)
		}
		if !seen[c.ID] {
			seen[c.ID] = true
			w.actual = append(w.actual, c)
		}
	}
	return w
}

// curOf returns the current-template container of desired d in cs.
func curOf(cs []runtime.Replica, d runtime.ReplicaSpec) (runtime.Replica, bool) {
	for _, c := range cs {
		if c.ID == d.ID {
			return c, true
		}
	}
	return runtime.Replica{}, false
}

// One pass never breaks the safety rules, whatever the state.
func TestReconcileSafetyProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, true)
		healthy := map[string]bool{}
		for _, c := range w.actual {
			healthy[c.ID] = c.State == runtime.StateRunning && rapid.Bool().Draw(t, "healthy-"+c.ID)
		}
		busy := map[slotKey]bool{}
		for _, d := range w.desired {
			if rapid.IntRange(0, 4).Draw(t, "busy-"+d.ID) == 0 {
				busy[slotKey{d.Service, d.Slot}] = true
			}
		}
		// Some moved slots have been moved for the settle time, and some
		// desired ones have been owned that long; some are covered.
		slots := map[slotKey]slotState{}
		settledMove := map[slotKey]bool{}
		for k := range w.handoff {
			if settledMove[k] = rapid.Bool().Draw(t, "settled-move-"+k.String()); settledMove[k] {
				slots[k] = slotState{MovedAt: t0.Add(-handoffSettle)}
			}
		}
		// Some handed-off copies are still needed for their service's
		// spread (moved at most handoffSettle ago, well within spreadHold).
		narrows := map[slotKey]bool{}
		for k := range w.handoff {
			narrows[k] = rapid.Bool().Draw(t, "narrows-"+k.String())
		}
		covered := map[slotKey]bool{}
		settledOwn := map[slotKey]bool{}
		for _, d := range w.desired {
			k := slotKey{d.Service, d.Slot}
			covered[k] = rapid.Bool().Draw(t, "covered-"+d.ID)
			if settledOwn[k] = rapid.Bool().Draw(t, "settled-own-"+d.ID); settledOwn[k] {
				slots[k] = slotState{OwnedAt: t0.Add(-handoffSettle)}
			}
		}
		in := reconcileInput{Now: t0, Desired: w.desired, Replicas: w.replicas, Actual: w.actual,
			Healthy: healthy, Handoff: w.handoff, Narrows: narrows, Covered: covered, Busy: busy, Slots: slots}
		out := reconcile(in)
		if again := reconcile(in); !reflect.DeepEqual(out, again) {
			t.Fatalf("not deterministic")
		}

		desired := map[slotKey]runtime.ReplicaSpec{}
		for _, d := range w.desired {
			desired[slotKey{d.Service, d.Slot}] = d
		}
		byID := map[string]runtime.Replica{}
		for _, c := range w.actual {
			byID[c.ID] = c
		}
		replacingBefore := map[string]int{}
		for k, d := range desired {
			_, ok := curOf(w.actual, d)
			oldRunning := slices.ContainsFunc(w.actual, func(c runtime.Replica) bool {
				return keyOf(c) == k && c.Version != d.Version && c.State == runtime.StateRunning
			})
			if oldRunning && (ok || busy[k]) {
				replacingBefore[k.Service]++
			}
		}
		starts := map[slotKey]int{}
		replacementStarts := map[string]int{}
		for _, a := range out.Actions {
			if busy[a.Slot] {
				t.Fatalf("action on busy slot: %+v", a)
			}
			switch a.Kind {
			case actStart, actRestart:
				starts[a.Slot]++
				d, ok := desired[a.Slot]
				if !ok || !reflect.DeepEqual(a.Spec, d) {
					t.Fatalf("start of an undesired spec: %+v", a)
				}
				if _, exists := byID[a.Spec.ID]; exists && a.Kind == actStart {
					t.Fatalf("start of an existing container %s", a.Spec.ID)
				}
				if a.Kind == actStart && a.Reason == "missing" && covered[a.Slot] && !settledOwn[a.Slot] {
					t.Fatalf("hand-off start of %s before the owner settled", a.Slot)
				}
				if a.Kind == actRestart && (byID[a.ID].State == runtime.StateRunning || byID[a.ID].State == runtime.StateUnknown) {
					t.Fatalf("restart of a %s container", byID[a.ID].State)
				}
				if a.Kind == actStart && slices.ContainsFunc(w.actual, func(c runtime.Replica) bool {
					return keyOf(c) == a.Slot && c.State == runtime.StateRunning
				}) {
					replacementStarts[a.Slot.Service]++
					if replacingBefore[a.Slot.Service] > 0 {
						t.Fatalf("replacement of %s started while another slot is mid-replacement", a.Slot)
					}
				}
			case actStop:
				c := byID[a.ID]
				if c.State != runtime.StateRunning {
					continue // removing a dead container is always fine
				}
				if d, ok := desired[a.Slot]; ok {
					if c.ID == d.ID {
						t.Fatalf("stopped the current running container of an owned slot: %s", c.ID)
					}
					cur, ok := curOf(w.actual, d)
					if !ok || !healthy[cur.ID] {
						t.Fatalf("stopped %s before its replacement was healthy", c.ID)
					}
				} else if n, live := w.replicas[a.Slot.Service]; a.Slot != unlabeled && live && a.Slot.Slot < n {
					if handed, moved := w.handoff[a.Slot]; moved && !handed {
						t.Fatalf("stopped %s before the new owner was healthy", c.ID)
					} else if moved && !settledMove[a.Slot] {
						t.Fatalf("stopped %s before the owner settled", c.ID)
					} else if moved && narrows[a.Slot] {
						t.Fatalf("stopped %s while its service needs it for its spread", c.ID)
					}
				}
			}
		}
		for k, n := range starts {
			if n > 1 {
				t.Fatalf("%d starts for %s", n, k)
			}
		}
		for s, n := range replacementStarts {
			if n > 1 {
				t.Fatalf("%d replacements of %s started at once", n, s)
			}
		}
	})
}

// apply performs actions on a model runtime.
func apply(actual []runtime.Replica, acts []action, now time.Time) []runtime.Replica {
	m := map[string]runtime.Replica{}
	for _, c := range actual {
		m[c.ID] = c
	}
	for _, a := range acts {
		switch a.Kind {
		case actStop:
			delete(m, a.ID)
		case actRestart:
			delete(m, a.ID)
			fallthrough
		case actStart:
			s := a.Spec
			m[s.ID] = runtime.Replica{ID: s.ID, Service: s.Service, Slot: s.Slot, Version: s.Version, State: runtime.StateRunning, StartedAt: now}
		}
	}
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b runtime.Replica) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Repeated passes over a model runtime converge to exactly the desired
// containers, then do nothing; and once a slot's new container is
// healthy, no other container of the slot runs after the pass.
func TestReconcileConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, false)
		// Every moved slot's new owner eventually reports healthy.
		for k := range w.handoff {
			w.handoff[k] = true
		}
		now := t0
		actual := w.actual
		slots := map[slotKey]slotState{}
		converged := false
		for pass := 0; pass < 40; pass++ {
			healthy := healthyAll(actual...)
			out := reconcile(reconcileInput{Now: now, Desired: w.desired, Replicas: w.replicas, Actual: actual,
				Healthy: healthy, Handoff: w.handoff, Slots: slots})
			if len(out.Actions) == 0 && out.Wake.IsZero() {
				converged = true
				break
			}
			slots = out.Slots
			actual = apply(actual, out.Actions, now)
			for _, d := range w.desired {
				cur, ok := curOf(actual, d)
				if !ok || !healthy[cur.ID] {
					continue
				}
				for _, c := range actual {
					if keyOf(c) == (slotKey{d.Service, d.Slot}) && c.ID != d.ID && c.State == runtime.StateRunning {
						t.Fatalf("pass %d: %s still runs next to the healthy %s", pass, c.ID, d.ID)
					}
				}
			}
			now = now.Add(6 * time.Minute) // past every backoff and handoff wait
		}
		if !converged {
			t.Fatalf("no fixed point after 40 passes; actual %v", actual)
		}
		var got, want []string
		for _, c := range actual {
			if c.State != runtime.StateRunning {
				t.Fatalf("converged with %s %s", c.ID, c.State)
			}
			got = append(got, c.ID)
		}
		for _, d := range w.desired {
			want = append(want, d.ID)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("converged to %v, want %v", got, want)
		}
	})
}

// A converged node is left alone: adoption after an agent restart.
func TestReconcileConvergedIsNoop(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, false)
		var actual []runtime.Replica
		for _, d := range w.desired {
			actual = append(actual, ctr(d.Service, d.Slot, d.Version, runtime.StateRunning,
				t0.Add(-time.Duration(rapid.IntRange(0, 100).Draw(t, "age-"+d.ID))*time.Minute)))
		}
		out := reconcile(reconcileInput{Now: t0, Desired: w.desired, Replicas: w.replicas, Actual: actual,
			Healthy: healthyAll(actual...), Handoff: w.handoff})
		if len(out.Actions) != 0 || !out.Wake.IsZero() {
			t.Fatalf("actions on a converged node: %q (wake %v)", summary(out.Actions), out.Wake)
		}
	})
}

// handoffs: a moved slot may be stopped here only when its owner reports
// a healthy replica that it keeps (not Leaving); an owned slot without a
// container here is covered when any other node runs it healthy.
func TestHandoffs(t *testing.T) {
	running := runtime.StateRunning
	owners := map[slotKey]string{{"web", 0}: "b", {"web", 1}: "b", {"web", 2}: "b", {"web", 3}: "b",
		{"web", 4}: "self", {"web", 5}: "self", {"web", 6}: "self", {"web", 7}: "self"}
	owner := func(service string, slot int) (string, bool) {
		o, ok := owners[slotKey{service, slot}]
		return o, ok
	}
	actual := []runtime.Replica{
		ctr("web", 0, "v1", running, t0), // b runs it healthy and keeps it
		ctr("web", 1, "v1", running, t0), // b runs it healthy but hands it on
		ctr("web", 2, "v1", running, t0), // b's is not healthy yet
		ctr("web", 3, "v1", running, t0), // only c runs it
		ctr("web", 7, "v1", running, t0), // owned and here
	}
	owned := map[slotKey]bool{{"web", 4}: true, {"web", 5}: true, {"web", 6}: true, {"web", 7}: true}
	status := []api.Replica{
		{Service: "web", Slot: 0, Node: "b", Healthy: true},
		{Service: "web", Slot: 1, Node: "b", Healthy: true, Leaving: true},
		{Service: "web", Slot: 2, Node: "b"},
		{Service: "web", Slot: 3, Node: "c", Healthy: true},
		{Service: "web", Slot: 4, Node: "c", Healthy: true, Leaving: true}, // the old owner, handing it here
		{Service: "web", Slot: 5, Node: "c"},                               // not healthy: no cover
		{Service: "web", Slot: 6, Node: "self", Healthy: true},             // this node's own document
		{Service: "web", Slot: 7, Node: "c", Healthy: true},                // here already
	}
	calls := 0
	ho := handoffs("self", actual, healthyAll(actual...), owned, map[string]int{"web": 8}, owner,
		func() []api.Replica { calls++; return status })
	handoff, covered := ho.handoff, ho.covered
	if len(ho.narrows) != 0 {
		t.Errorf("narrows = %v for a node that keeps a replica of the service", ho.narrows)
	}
	wantHandoff := map[slotKey]bool{{"web", 0}: true, {"web", 1}: false, {"web", 2}: false, {"web", 3}: false}
	if !maps.Equal(handoff, wantHandoff) {
		t.Errorf("handoff = %v, want %v", handoff, wantHandoff)
	}
	if want := map[slotKey]bool{{"web", 4}: true}; !maps.Equal(covered, want) {
		t.Errorf("covered = %v, want %v", covered, want)
	}
	if calls != 1 {
		t.Errorf("status read %d times, want once", calls)
	}
	// Nothing moved and everything here: the status is not read at all.
	calls = 0
	handoffs("self", actual[4:], healthyAll(actual[4:]...), map[slotKey]bool{{"web", 7}: true}, map[string]int{"web": 8}, owner,
		func() []api.Replica { calls++; return status })
	if calls != 0 {
		t.Errorf("status read %d times for a node with nothing to hand off", calls)
	}
}

// TestReconcileStopBackoff: a stop that failed is not asked for again
// until its backoff has passed (the chaos suite saw a stop that failed
// every 35 ms for minutes), for a moved slot, a scaled-down one and a
// container without labels alike; the backoff doubles up to
// stopBackoffMax and a successful stop clears it.
func TestReconcileStopBackoff(t *testing.T) {
	running := runtime.StateRunning
	moved := ctr("web", 0, "v1", running, t0)
	scaled := ctr("web", 3, "v1", running, t0)
	stray := runtime.Replica{ID: "stray", Service: "", Slot: -1, State: running}
	failedAt := slotState{}.stopFailed(t0)
	in := reconcileInput{
		Now:      t0.Add(500 * time.Millisecond),
		Replicas: map[string]int{"web": 2},
		Actual:   []runtime.Replica{moved, scaled, stray},
		Healthy:  healthyAll(moved, scaled),
		Handoff:  map[slotKey]bool{{"web", 0}: true},
		Slots: map[slotKey]slotState{
			{"web", 0}: {MovedAt: t0.Add(-time.Minute), StopNotBefore: failedAt.StopNotBefore, StopBackoff: failedAt.StopBackoff},
			{"web", 3}: failedAt,
			unlabeled:  failedAt,
		},
	}
	out := reconcile(in)
	if got := summary(out.Actions); len(got) != 0 {
		t.Fatalf("within the backoff: %v, want no stop", got)
	}
	if want := t0.Add(backoffInitial); !out.Wake.Equal(want) {
		t.Errorf("Wake = %v, want the end of the backoff %v", out.Wake, want)
	}
	for k, st := range out.Slots {
		if !st.StopNotBefore.Equal(failedAt.StopNotBefore) {
			t.Errorf("slot %v lost its stop backoff: %+v", k, st)
		}
	}
	in.Now = t0.Add(backoffInitial)
	in.Slots = out.Slots
	want := []string{"stop stray", "stop web-0-v1", "stop web-3-v1"}
	if got := summary(reconcile(in).Actions); !reflect.DeepEqual(got, want) {
		t.Errorf("after the backoff: %v, want %v", got, want)
	}

	var s slotState
	for _, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		s = s.stopFailed(t0)
		if got := s.StopNotBefore.Sub(t0); got != want*time.Second {
			t.Fatalf("failed stop waits %v, want %v", got, want*time.Second)
		}
	}
	if s = s.stopped(); !s.StopNotBefore.IsZero() || s.StopBackoff != 0 {
		t.Errorf("after a successful stop: %+v", s)
	}
	if !s.NotBefore.IsZero() || s.Backoff != 0 {
		t.Errorf("stop backoff touched the start backoff: %+v", s)
	}
}

// TestHandoffsKeepSpread: a copy handed off to a healthy owner stays while
// the service would otherwise run on fewer nodes than the placement
// spreads it over. The chaos suite's case: api has 2 replicas; a node
// restarting (a) owns api/0 again but its replica is not healthy yet; b
// covers api/0 for it and has just been handed back api/1, which this
// node covered. Stopping here would leave b the only node serving api.
func TestHandoffsKeepSpread(t *testing.T) {
	running := runtime.StateRunning
	owners := map[slotKey]string{{"api", 0}: "a", {"api", 1}: "b", {"web", 0}: "b", {"web", 1}: "self"}
	owner := func(service string, slot int) (string, bool) {
		o, ok := owners[slotKey{service, slot}]
		return o, ok
	}
	counts := map[string]int{"api": 2, "web": 2}
	api1 := ctr("api", 1, "v1", running, t0)
	web0 := ctr("web", 0, "v1", running, t0)
	web1 := ctr("web", 1, "v1", running, t0)
	actual := []runtime.Replica{api1, web0, web1}
	owned := map[slotKey]bool{{"web", 1}: true}
	status := func(aHealthy bool) func() []api.Replica {
		return func() []api.Replica {
			return []api.Replica{
				{Service: "api", Slot: 0, Node: "a", Healthy: aHealthy},
				{Service: "api", Slot: 0, Node: "b", Healthy: true, Leaving: true},
				{Service: "api", Slot: 1, Node: "b", Healthy: true},
				{Service: "web", Slot: 0, Node: "b", Healthy: true},
			}
		}
	}
	ho := handoffs("self", actual, healthyAll(actual...), owned, counts, owner, status(false))
	// web/0: this node keeps web/1, so its copy of web/0 is not needed.
	if want := map[slotKey]bool{{"api", 1}: true, {"web", 0}: true}; !maps.Equal(ho.handoff, want) {
		t.Fatalf("handoff = %v, want %v", ho.handoff, want)
	}
	if want := map[slotKey]bool{{"api", 1}: true}; !maps.Equal(ho.narrows, want) {
		t.Errorf("a not healthy yet: narrows = %v, want %v", ho.narrows, want)
	}
	if ho = handoffs("self", actual, healthyAll(actual...), owned, counts, owner, status(true)); len(ho.narrows) != 0 {
		t.Errorf("a healthy: narrows = %v, want none", ho.narrows)
	}
	// A copy that is not healthy serves nobody: no reason to keep it.
	if ho = handoffs("self", actual, map[string]bool{}, owned, counts, owner, status(false)); len(ho.narrows) != 0 {
		t.Errorf("copy here not healthy: narrows = %v, want none", ho.narrows)
	}

	// reconcile keeps the copy until spreadHold after the move, and stops
	// it at once when it is not needed.
	in := reconcileInput{
		Now: t0.Add(5 * time.Second), Replicas: counts, Actual: []runtime.Replica{api1},
		Healthy: healthyAll(api1), Handoff: map[slotKey]bool{{"api", 1}: true},
		Narrows: map[slotKey]bool{{"api", 1}: true},
		Slots:   map[slotKey]slotState{{"api", 1}: {MovedAt: t0}},
	}
	out := reconcile(in)
	if got := summary(out.Actions); len(got) != 0 {
		t.Errorf("needed for the spread: %v, want nothing", got)
	}
	if want := t0.Add(spreadHold); !out.Wake.Equal(want) {
		t.Errorf("Wake = %v, want %v", out.Wake, want)
	}
	in.Now = t0.Add(spreadHold)
	if got, want := summary(reconcile(in).Actions), []string{"stop api-1-v1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after spreadHold: %v, want %v", got, want)
	}
	in.Now, in.Narrows = t0.Add(5*time.Second), nil
	if got, want := summary(reconcile(in).Actions), []string{"stop api-1-v1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("not needed: %v, want %v", got, want)
	}
}

// The standby prepares a hand-off to this node once the slot has had
// this owner for handoffPrepareAfter, unless it is host-network, busy,
// here already or prepared, and no more than the free prepare slots.
func TestHandoffPrepares(t *testing.T) {
	now := time.Unix(1000, 0)
	rs := func(svc string, slot int, network string) runtime.ReplicaSpec {
		return runtime.ReplicaSpec{ID: fmt.Sprintf("%s-%d-v1", svc, slot), Service: svc, Slot: slot, Version: "v1", Network: network}
	}
	in := map[slotKey]runtime.ReplicaSpec{
		{"api", 0}: rs("api", 0, "bridge"), // ready
		{"api", 1}: rs("api", 1, "bridge"), // owned too recently
		{"web", 0}: rs("web", 0, "host"),   // host network
		{"web", 1}: rs("web", 1, "bridge"), // busy
		{"web", 2}: rs("web", 2, "bridge"), // a container here
		{"web", 3}: rs("web", 3, "bridge"), // prepared already
		{"web", 4}: rs("web", 4, "bridge"), // ready
		{"web", 5}: rs("web", 5, "bridge"), // no memory of the slot yet
		{"web", 6}: rs("web", 6, "bridge"), // an action ended since the list
	}
	long := slotState{OwnedAt: now.Add(-handoffPrepareAfter)}
	slots := map[slotKey]slotState{
		{"api", 0}: long, {"api", 1}: {OwnedAt: now.Add(-handoffPrepareAfter + time.Millisecond)},
		{"web", 0}: long, {"web", 1}: long, {"web", 2}: long, {"web", 3}: long, {"web", 4}: long, {"web", 6}: long,
	}
	stale := func(k slotKey) bool { return k == slotKey{"web", 6} }
	busy := map[slotKey]int{{"web", 1}: 1}
	local := map[slotKey]bool{{"web", 2}: true}
	prepared := map[string]runtime.Replica{"web-3-v1": {ID: "web-3-v1", Service: "web", Slot: 3, Version: "v1", State: runtime.StatePrepared}}
	ids := func(l []runtime.ReplicaSpec) []string {
		var out []string
		for _, r := range l {
			out = append(out, r.ID)
		}
		return out
	}
	if got, want := ids(handoffPrepares(in, slots, busy, local, prepared, stale, now, 4)), []string{"api-0-v1", "web-4-v1"}; !slices.Equal(got, want) {
		t.Errorf("prepares %v, want %v", got, want)
	}
	if got, want := ids(handoffPrepares(in, slots, busy, local, prepared, stale, now, 1)), []string{"api-0-v1"}; !slices.Equal(got, want) {
		t.Errorf("with one free prepare slot: %v, want %v", got, want)
	}
	if got := handoffPrepares(in, slots, busy, local, prepared, stale, now, 0); len(got) != 0 {
		t.Errorf("with no free prepare slot: %v", ids(got))
	}
}
