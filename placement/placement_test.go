package placement

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// nodes returns n schedulable nodes named node-000, node-001...
func nodes(n int) []Node {
	out := make([]Node, n)
	for i := range out {
		out[i] = Node{Name: fmt.Sprintf("node-%03d", i), OS: "linux", Arch: "amd64", Schedulable: true}
	}
	return out
}

// services returns n services svc-000... of replicas each.
func services(n, replicas int) []Service {
	out := make([]Service, n)
	for i := range out {
		out[i] = Service{Name: fmt.Sprintf("svc-%03d", i), Replicas: replicas}
	}
	return out
}

// owners maps "svc/i" to the owner.
func owners(r *Result) map[string]string {
	m := make(map[string]string, len(r.Assignments))
	for _, a := range r.Assignments {
		m[a.Slot.String()] = a.Node
	}
	return m
}

// moved returns the slots owned in a whose owner differs in b.
func moved(a, b *Result) []string {
	ob := owners(b)
	var out []string
	for _, x := range a.Assignments {
		if ob[x.Slot.String()] != x.Node {
			out = append(out, x.Slot.String())
		}
	}
	return out
}

func loadOf(r *Result, node string) Load {
	for _, l := range r.Loads {
		if l.Node == node {
			return l
		}
	}
	return Load{}
}

func TestComputeTable(t *testing.T) {
	zoned := func(name, zone string) Node {
		return Node{Name: name, OS: "linux", Arch: "amd64", Schedulable: true, Labels: map[string]string{"zone": zone}}
	}
	tests := []struct {
		name     string
		nodes    []Node
		services []Service
		// want maps a slot to its owner, or to "!" + a substring of its
		// unplaceable reason.
		want map[string]string
		// check runs extra assertions.
		check func(t *testing.T, r *Result)
	}{
		{
			name:     "no nodes",
			services: []Service{{Name: "web", Replicas: 2}},
			want:     map[string]string{"web/0": "!no eligible node: no nodes", "web/1": "!no eligible node: no nodes"},
		},
		{
			name:  "no services",
			nodes: nodes(3),
			want:  map[string]string{},
			check: func(t *testing.T, r *Result) { assertLen(t, "loads", len(r.Loads), 3) },
		},
		{
			name:     "zero and negative replicas",
			nodes:    nodes(2),
			services: []Service{{Name: "a", Replicas: 0}, {Name: "b", Replicas: -3}},
			want:     map[string]string{},
		},
		{
			name:     "single node takes everything",
			nodes:    nodes(1),
			services: []Service{{Name: "web", Replicas: 3}},
			want:     map[string]string{"web/0": "node-000", "web/1": "node-000", "web/2": "node-000"},
		},
		{
			name: "label constraint",
			nodes: []Node{
				zoned("a", "eu"), zoned("b", "us"), zoned("c", "eu"),
				{Name: "d", OS: "linux", Schedulable: true},
			},
			services: []Service{{Name: "web", Replicas: 2, Constraints: map[string]string{"zone": "eu"}}},
			check: func(t *testing.T, r *Result) {
				assertLen(t, "assignments", len(r.Assignments), 2)
				got := []string{r.Assignments[0].Node, r.Assignments[1].Node}
				slices.Sort(got)
				if !slices.Equal(got, []string{"a", "c"}) {
					t.Errorf("owners = %v, want the eu nodes a and c, one replica each", got)
				}
			},
		},
		{
			name:     "label constraint matches nothing",
			nodes:    []Node{zoned("a", "us"), zoned("b", "us"), {Name: "c", Schedulable: false, Reason: "runtime not ready"}},
			services: []Service{{Name: "web", Replicas: 1, Constraints: map[string]string{"zone": "eu"}}},
			want:     map[string]string{"web/0": "!no eligible node: label zone=eu (2 nodes), not schedulable: runtime not ready (1 node)"},
		},
		{
			name: "platform",
			nodes: []Node{
				{Name: "x86", OS: "linux", Arch: "amd64", Schedulable: true},
				{Name: "arm", OS: "Linux", Arch: "ARM64", Schedulable: true},
				{Name: "unknown", Schedulable: true},
			},
			services: []Service{
				{Name: "armonly", Replicas: 2, Platforms: []string{"linux/arm64/v8", ""}},
				{Name: "anyarch", Replicas: 1, Platforms: []string{"linux"}},
				{Name: "windows", Replicas: 1, Platforms: []string{"windows/amd64"}},
			},
			want: map[string]string{
				"armonly/0": "arm", "armonly/1": "arm",
				"windows/0": "!no eligible node: platform [windows/amd64] (3 nodes)",
			},
			check: func(t *testing.T, r *Result) {
				if o, _ := r.Owner("anyarch", 0); o != "x86" && o != "arm" {
					t.Errorf("anyarch/0 on %q, want a linux node", o)
				}
			},
		},
		{
			name:     "not schedulable nodes are skipped",
			nodes:    []Node{{Name: "a", Schedulable: false, Reason: "draining"}, {Name: "b", Schedulable: true}},
			services: []Service{{Name: "web", Replicas: 2}},
			want:     map[string]string{"web/0": "b", "web/1": "b"},
			check:    func(t *testing.T, r *Result) { assertLen(t, "loads", len(r.Loads), 1) },
		},
		{
			name:     "request larger than every node",
			nodes:    []Node{{Name: "a", CPUs: 2, Schedulable: true}, {Name: "b", CPUs: 1, Schedulable: true}},
			services: []Service{{Name: "big", Replicas: 1, CPUs: 4, Memory: 1 << 30}},
			want: map[string]string{"big/0": "!insufficient capacity: each replica requests cpus=4 memory=1Gi, " +
				"more than any eligible node (of 2) has in total"},
		},
		{
			name:     "capacity fills up",
			nodes:    []Node{{Name: "a", Memory: 3 << 30, Schedulable: true}, {Name: "b", Memory: 2 << 30, Schedulable: true}},
			services: []Service{{Name: "db", Replicas: 6, Memory: 1 << 30}},
			check: func(t *testing.T, r *Result) {
				assertLen(t, "assignments", len(r.Assignments), 5)
				assertLen(t, "unplaceable", len(r.Unplaceable), 1)
				if !strings.Contains(r.Unplaceable[0].Reason, "no eligible node (of 2) has that much left") {
					t.Errorf("reason = %q", r.Unplaceable[0].Reason)
				}
				if la, lb := loadOf(r, "a"), loadOf(r, "b"); la.Memory != 3<<30 || lb.Memory != 2<<30 {
					t.Errorf("memory used a=%d b=%d, want both full", la.Memory, lb.Memory)
				}
			},
		},
		{
			name: "cpu accounted in millicores",
			// In float64, 0.1 + 0.2 > 0.3.
			nodes:    []Node{{Name: "a", CPUs: 0.3, Schedulable: true}},
			services: []Service{{Name: "x", Replicas: 1, CPUs: 0.1}, {Name: "y", Replicas: 1, CPUs: 0.2}},
			want:     map[string]string{"x/0": "a", "y/0": "a"},
			check: func(t *testing.T, r *Result) {
				if l := loadOf(r, "a"); l.CPUs != 0.3 {
					t.Errorf("cpus used %v, want 0.3", l.CPUs)
				}
			},
		},
		{
			name:     "spread when enough nodes",
			nodes:    nodes(3),
			services: []Service{{Name: "web", Replicas: 3}},
			check:    func(t *testing.T, r *Result) { assertPerNode(t, r, "web", 1) },
		},
		{
			name:     "replicas double up evenly when too few nodes",
			nodes:    nodes(3),
			services: []Service{{Name: "web", Replicas: 7}},
			check:    func(t *testing.T, r *Result) { assertPerNode(t, r, "web", 3) },
		},
		{
			name:     "duplicate names are resolved",
			nodes:    []Node{{Name: "a", Schedulable: true}, {Name: "a", Schedulable: false}},
			services: []Service{{Name: "web", Replicas: 1}, {Name: "web", Replicas: 2}},
			check: func(t *testing.T, r *Result) {
				// The canonical copies sort first: a not schedulable
				// (false < true), web with 1 replica.
				assertLen(t, "unplaceable", len(r.Unplaceable), 1)
				assertLen(t, "assignments", len(r.Assignments), 0)
				assertLen(t, "loads", len(r.Loads), 0)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Compute(tt.nodes, tt.services, Options{})
			assertInvariants(t, tt.nodes, tt.services, Options{}, r)
			for slot, want := range tt.want {
				svc, idx := splitSlot(t, slot)
				owner, ok := r.Owner(svc, idx)
				if reason, bad := strings.CutPrefix(want, "!"); bad {
					if ok {
						t.Errorf("%s on %s, want unplaceable", slot, owner)
					}
					if got := unplacedReason(r, svc, idx); !strings.Contains(got, reason) {
						t.Errorf("%s reason = %q, want it to contain %q", slot, got, reason)
					}
					continue
				}
				if owner != want {
					t.Errorf("%s on %q, want %q", slot, owner, want)
				}
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func assertLen(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Errorf("len(%s) = %d, want %d", what, got, want)
	}
}

func assertPerNode(t *testing.T, r *Result, service string, most int) {
	t.Helper()
	per := map[string]int{}
	for _, a := range r.Assignments {
		if a.Service == service {
			per[a.Node]++
		}
	}
	for n, c := range per {
		if c > most {
			t.Errorf("%s holds %d replicas of %s, want at most %d (%v)", n, c, service, most, per)
		}
	}
}

func splitSlot(t *testing.T, s string) (string, int) {
	t.Helper()
	svc, idx, _ := strings.Cut(s, "/")
	var i int
	if _, err := fmt.Sscan(idx, &i); err != nil {
		t.Fatalf("bad slot %q", s)
	}
	return svc, i
}

func unplacedReason(r *Result, service string, index int) string {
	for _, u := range r.Unplaceable {
		if u.Service == service && u.Index == index {
			return u.Reason
		}
	}
	return ""
}

func TestOwnerOwned(t *testing.T) {
	r := Compute(nodes(4), []Service{{Name: "a", Replicas: 3}, {Name: "b", Replicas: 2}, {Name: "c", Replicas: 1}}, Options{})
	for _, a := range r.Assignments {
		if o, ok := r.Owner(a.Service, a.Index); !ok || o != a.Node {
			t.Errorf("Owner(%s) = %q, %v; want %q", a.Slot, o, ok, a.Node)
		}
	}
	for _, missing := range []Slot{{"a", 3}, {"a", -1}, {"0", 0}, {"bb", 0}, {"zzz", 0}} {
		if o, ok := r.Owner(missing.Service, missing.Index); ok {
			t.Errorf("Owner(%s) = %q, want not found", missing, o)
		}
	}
	total := 0
	for _, l := range r.Loads {
		owned := r.Owned(l.Node)
		total += len(owned)
		if len(owned) != l.Slots {
			t.Errorf("Owned(%s) has %d slots, Loads says %d", l.Node, len(owned), l.Slots)
		}
		for _, s := range owned {
			if o, _ := r.Owner(s.Service, s.Index); o != l.Node {
				t.Errorf("Owned(%s) lists %s, owned by %s", l.Node, s, o)
			}
		}
	}
	if total != 6 {
		t.Errorf("Owned adds up to %d slots, want 6", total)
	}
	if got := r.Owned("nobody"); got != nil {
		t.Errorf("Owned(nobody) = %v", got)
	}
	if got := (Slot{"web", 12}).String(); got != "web/12" {
		t.Errorf("String() = %q", got)
	}
}

func TestComputeDoesNotModifyInput(t *testing.T) {
	ns := []Node{
		{Name: "b", Labels: map[string]string{"zone": "a"}, Schedulable: true},
		{Name: "a", Labels: map[string]string{"zone": "a"}, Schedulable: true, Weight: -1},
	}
	ss := []Service{{Name: "web", Replicas: 2, Platforms: []string{"Linux/AMD64"}, Constraints: map[string]string{"zone": "a"}}}
	nc := []Node{ns[0], ns[1]}
	nc[0].Labels = map[string]string{"zone": "a"}
	nc[1].Labels = map[string]string{"zone": "a"}
	sc := []Service{ss[0]}
	sc[0].Platforms = slices.Clone(ss[0].Platforms)
	sc[0].Constraints = map[string]string{"zone": "a"}
	Compute(ns, ss, Options{})
	if !reflect.DeepEqual(ns, nc) || !reflect.DeepEqual(ss, sc) {
		t.Errorf("Compute modified its input:\n%+v\n%+v", ns, ss)
	}
}

func TestBoundHolds(t *testing.T) {
	for _, eps := range []float64{0.1, 0.25, 1} {
		t.Run(fmt.Sprint(eps), func(t *testing.T) {
			r := Compute(nodes(50), services(100, 5), Options{Epsilon: eps})
			mean := 500.0 / 50
			for _, l := range r.Loads {
				if l.Slots > l.Limit {
					t.Errorf("%s has %d slots over its limit %d", l.Node, l.Slots, l.Limit)
				}
				if ceil := int(math.Ceil((1 + eps) * mean)); l.Limit > ceil || l.Limit < int(mean) {
					t.Errorf("%s limit %d outside [%v, %d]", l.Node, l.Limit, mean, ceil)
				}
			}
		})
	}
}

func TestEpsilonDefaults(t *testing.T) {
	want := Compute(nodes(20), services(30, 3), Options{Epsilon: DefaultEpsilon})
	for _, eps := range []float64{0, -1, math.NaN()} {
		if got := Compute(nodes(20), services(30, 3), Options{Epsilon: eps}); !reflect.DeepEqual(got, want) {
			t.Errorf("Epsilon %v differs from the default", eps)
		}
	}
	// +Inf: no bound; every slot of a single-replica service (no spread
	// either) gets its first choice.
	r := Compute(nodes(20), services(90, 1), Options{Epsilon: math.Inf(1)})
	for _, a := range r.Assignments {
		if a.Rank != 0 {
			t.Errorf("%s has rank %d without a bound", a.Slot, a.Rank)
		}
	}
}

func TestWeightsAreProportional(t *testing.T) {
	ns := nodes(40)
	for i := range ns {
		ns[i].Weight = float64(1 + i%2) // half the nodes weigh 2
	}
	// A huge ε disables the bound and single replicas need no spread, so
	// this measures the hashing alone.
	r := Compute(ns, services(4000, 1), Options{Epsilon: 1000})
	var light, heavy int
	for i, l := range r.Loads {
		if i%2 == 0 {
			light += l.Slots
		} else {
			heavy += l.Slots
		}
	}
	if ratio := float64(heavy) / float64(light); ratio < 1.85 || ratio > 2.15 {
		t.Errorf("weight 2 nodes got %.3f x the slots of weight 1 nodes, want ~2", ratio)
	}
	// With the default bound the heavy nodes' limits are twice as high.
	r = Compute(ns, services(400, 10), Options{})
	if l0, l1 := r.Loads[0].Limit, r.Loads[1].Limit; l1 < 2*l0-1 || l1 > 2*l0+1 {
		t.Errorf("limits %d (w=1) and %d (w=2)", l0, l1)
	}
}

func TestEqualWeightsMatchUniform(t *testing.T) {
	// Equal weights take the fast integer path; giving every node weight
	// 3 must not change anything, and a tiny weight change elsewhere
	// should not reshuffle the cluster.
	ns := nodes(30)
	base := Compute(ns, services(20, 4), Options{})
	for i := range ns {
		ns[i].Weight = 3
	}
	if got := Compute(ns, services(20, 4), Options{}); !reflect.DeepEqual(got.Assignments, base.Assignments) {
		t.Errorf("uniform weight 3 changed the placement")
	}
	ns[0].Weight = 3.0000001
	got := Compute(ns, services(20, 4), Options{})
	if m := moved(base, got); len(m) > 2 {
		t.Errorf("an insignificant weight change moved %d slots: %v", len(m), m)
	}
}

func TestExplainErrors(t *testing.T) {
	ns, ss := nodes(3), []Service{{Name: "web", Replicas: 2}}
	tests := []struct {
		service string
		index   int
		want    error
	}{
		{"db", 0, ErrUnknownService},
		{"web", 2, ErrSlotOutOfRange},
		{"web", -1, ErrSlotOutOfRange},
	}
	for _, tt := range tests {
		e, err := Explain(ns, ss, Options{}, tt.service, tt.index)
		if !errors.Is(err, tt.want) || e != nil {
			t.Errorf("Explain(%s/%d) = %v, %v; want %v", tt.service, tt.index, e, err, tt.want)
		}
	}
}

func TestExplainReasons(t *testing.T) {
	zone := func(z string) map[string]string { return map[string]string{"zone": z} }
	tests := []struct {
		name     string
		nodes    []Node
		services []Service
		slot     Slot
		// pick, if set, chooses the slot from the Compute result.
		pick func(r *Result) Slot
		// skipped maps node names to a substring of their Skipped text.
		skipped map[string]string
		owner   string
		relaxed string
		reason  string
	}{
		{
			name: "static checks",
			nodes: []Node{
				{Name: "ok", OS: "linux", Arch: "amd64", Labels: zone("a"), Schedulable: true},
				{Name: "wrongzone", OS: "linux", Arch: "amd64", Labels: zone("b"), Schedulable: true},
				{Name: "nozone", OS: "linux", Arch: "amd64", Schedulable: true},
				{Name: "arm", OS: "linux", Arch: "arm64", Labels: zone("a"), Schedulable: true},
				{Name: "down", Schedulable: false, Reason: "runtime not ready"},
			},
			services: []Service{{Name: "web", Replicas: 1, Constraints: zone("a"), Platforms: []string{"linux/amd64"}}},
			slot:     Slot{"web", 0},
			owner:    "ok",
			skipped: map[string]string{
				"wrongzone": "label zone=a != b",
				"nozone":    "label zone=a: node has no zone label",
				"arm":       "platform linux/arm64 not in [linux/amd64]",
				"down":      "not schedulable: runtime not ready",
			},
		},
		{
			name:     "spread",
			nodes:    nodes(2),
			services: []Service{{Name: "web", Replicas: 2}},
			slot:     Slot{"web", 1},
			// Whichever replica was placed second skipped the other's
			// node; checked generically below.
		},
		{
			name:     "capacity",
			nodes:    []Node{{Name: "small", CPUs: 1, Schedulable: true}},
			services: []Service{{Name: "a", Replicas: 2, CPUs: 0.75}},
			// One of the two replicas is placed, the other is not.
			pick:    func(r *Result) Slot { return r.Unplaceable[0].Slot },
			reason:  "no eligible node (of 1) has that much left",
			skipped: map[string]string{"small": "capacity: cpus 0.75+0.75 > 1"},
		},
		{
			name:     "no eligible node",
			nodes:    []Node{{Name: "a", Labels: zone("b"), Schedulable: true}},
			services: []Service{{Name: "web", Replicas: 1, Constraints: zone("a")}},
			slot:     Slot{"web", 0},
			reason:   "no eligible node: label zone=a (1 node)",
			skipped:  map[string]string{"a": "label zone=a != b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.pick != nil {
				tt.slot = tt.pick(Compute(tt.nodes, tt.services, Options{}))
			}
			e, err := Explain(tt.nodes, tt.services, Options{}, tt.slot.Service, tt.slot.Index)
			if err != nil {
				t.Fatal(err)
			}
			assertExplanationMatches(t, tt.nodes, tt.services, Options{}, e)
			if tt.owner != "" && e.Node != tt.owner {
				t.Errorf("owner %q, want %q", e.Node, tt.owner)
			}
			if e.Relaxed != tt.relaxed {
				t.Errorf("relaxed %q, want %q", e.Relaxed, tt.relaxed)
			}
			if !strings.Contains(e.Reason, tt.reason) || (tt.reason == "") != (e.Reason == "") {
				t.Errorf("reason %q, want %q", e.Reason, tt.reason)
			}
			for _, c := range e.Candidates {
				if want, ok := tt.skipped[c.Node]; ok && !strings.Contains(c.Skipped, want) {
					t.Errorf("%s skipped %q, want %q", c.Node, c.Skipped, want)
				}
			}
			if out := e.String(); !strings.Contains(out, e.Slot.String()) || strings.Count(out, "\n") != len(e.Candidates)+2 {
				t.Errorf("String() =\n%s", out)
			}
		})
	}
}

func TestExplainRelaxed(t *testing.T) {
	tests := []struct {
		name     string
		nodes    []Node
		services []Service
		relaxed  string
		// wantRelaxed is how many of the service's slots must say so.
		wantRelaxed int
	}{
		{
			// Only one node may run web: its bound (2 or 3 of the 4
			// slots) cannot hold, the rest goes over it.
			name: "bound",
			nodes: []Node{
				{Name: "only", Labels: map[string]string{"zone": "a"}, Schedulable: true},
				{Name: "other", Schedulable: true},
			},
			services:    []Service{{Name: "web", Replicas: 4, Constraints: map[string]string{"zone": "a"}}},
			relaxed:     "load bound",
			wantRelaxed: -1, // 4 - the bound of "only"
		},
		{
			// Two nodes with room for one replica each when spread, but
			// memory for 2 replicas only on the big one.
			name: "spread",
			nodes: []Node{
				{Name: "big", Memory: 2 << 30, Schedulable: true},
				{Name: "small", Memory: 1 << 30, Schedulable: true},
				{Name: "tiny", Memory: 1 << 20, Schedulable: true},
			},
			services:    []Service{{Name: "db", Replicas: 3, Memory: 1 << 30}},
			relaxed:     "load bound and spread",
			wantRelaxed: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := tt.services[0]
			if tt.wantRelaxed < 0 {
				tt.wantRelaxed = svc.Replicas - loadOf(Compute(tt.nodes, tt.services, Options{}), "only").Limit
			}
			got := 0
			for i := range svc.Replicas {
				e, err := Explain(tt.nodes, tt.services, Options{}, svc.Name, i)
				if err != nil {
					t.Fatal(err)
				}
				assertExplanationMatches(t, tt.nodes, tt.services, Options{}, e)
				switch e.Relaxed {
				case tt.relaxed:
					got++
				case "":
				default:
					t.Errorf("%s relaxed %q", e.Slot, e.Relaxed)
				}
			}
			if got != tt.wantRelaxed {
				t.Errorf("%d slots relaxed %q, want %d", got, tt.relaxed, tt.wantRelaxed)
			}
		})
	}
}

func TestExplainAtBound(t *testing.T) {
	// Find a slot that spilled past a node at its bound, and check the
	// explanation says so.
	ns, ss := nodes(10), services(40, 5)
	r := Compute(ns, ss, Options{Epsilon: 0.1})
	for _, a := range r.Assignments {
		if a.Rank == 0 {
			continue
		}
		e, err := Explain(ns, ss, Options{Epsilon: 0.1}, a.Service, a.Index)
		if err != nil {
			t.Fatal(err)
		}
		assertExplanationMatches(t, ns, ss, Options{Epsilon: 0.1}, e)
		if !strings.HasPrefix(e.Candidates[0].Skipped, "at load bound (") &&
			!strings.HasPrefix(e.Candidates[0].Skipped, "already holds 1 replica of "+a.Service) {
			t.Errorf("first choice of %s skipped for %q", a.Slot, e.Candidates[0].Skipped)
		}
		return
	}
	t.Fatal("no slot spilled; the test needs a tighter bound")
}

// assertExplanationMatches checks an explanation against Compute.
func assertExplanationMatches(t testingT, ns []Node, ss []Service, opts Options, e *Explanation) {
	t.Helper()
	r := Compute(ns, ss, opts)
	owner, ok := r.Owner(e.Slot.Service, e.Slot.Index)
	if owner != e.Node || ok != (e.Rank >= 0) {
		t.Fatalf("Explain says %s is on %q, Compute says %q", e.Slot, e.Node, owner)
	}
	if !ok && e.Reason != unplacedReason(r, e.Slot.Service, e.Slot.Index) {
		t.Errorf("Explain reason %q, Compute reason %q", e.Reason, unplacedReason(r, e.Slot.Service, e.Slot.Index))
	}
	for _, a := range r.Assignments {
		if a.Slot == e.Slot && a.Rank != e.Rank {
			t.Errorf("Explain rank %d, Compute rank %d", e.Rank, a.Rank)
		}
	}
	names := map[string]bool{}
	chosen := 0
	for i, c := range e.Candidates {
		names[c.Node] = true
		if c.Chosen {
			chosen++
		}
		switch {
		case !c.Eligible && (c.Rank != -1 || c.Skipped == ""):
			t.Errorf("ineligible %s: rank %d, skipped %q", c.Node, c.Rank, c.Skipped)
		case c.Eligible && c.Rank != i:
			t.Errorf("%s at position %d has rank %d", c.Node, i, c.Rank)
		case c.Eligible && (e.Rank < 0 || c.Rank < e.Rank) && c.Skipped == "":
			t.Errorf("%s ranked above the owner without a reason", c.Node)
		case c.Eligible && e.Rank >= 0 && c.Rank >= e.Rank && c.Skipped != "":
			t.Errorf("%s ranked at or below the owner has reason %q", c.Node, c.Skipped)
		}
		if i > 0 && c.Eligible && e.Candidates[i-1].Score < c.Score {
			t.Errorf("candidates not sorted by score at %d", i)
		}
	}
	if want := min(1, e.Rank+1); chosen != want {
		t.Errorf("%d candidates chosen, want %d", chosen, want)
	}
	for _, n := range ns {
		if !names[n.Name] {
			t.Errorf("node %s missing from candidates", n.Name)
		}
	}
}

// assertInvariants checks what must hold for every input.
func assertInvariants(t testingT, ns []Node, ss []Service, opts Options, r *Result) {
	t.Helper()
	byNode := map[string]*Node{}
	for i := range ns {
		if _, dup := byNode[ns[i].Name]; !dup {
			byNode[ns[i].Name] = &ns[i]
		}
	}
	bySvc := map[string]*Service{}
	total := 0
	dupNode, dupSvc := map[string]bool{}, map[string]bool{}
	for i := range ns {
		if byNode[ns[i].Name] != &ns[i] {
			dupNode[ns[i].Name] = true
		}
	}
	for i := range ss {
		if _, dup := bySvc[ss[i].Name]; !dup {
			bySvc[ss[i].Name] = &ss[i]
		} else {
			dupSvc[ss[i].Name] = true
		}
	}
	for _, s := range bySvc {
		total += max(s.Replicas, 0)
	}
	if dupFree(ns, ss) {
		if got := len(r.Assignments) + len(r.Unplaceable); got != total {
			t.Fatalf("%d slots accounted for, want %d", got, total)
		}
	}
	seen := map[Slot]bool{}
	load := map[string]int{}
	cpu := map[string]float64{}
	mem := map[string]float64{}
	for i, a := range r.Assignments {
		if seen[a.Slot] {
			t.Fatalf("slot %s assigned twice", a.Slot)
		}
		seen[a.Slot] = true
		if i > 0 {
			p := r.Assignments[i-1]
			if p.Service > a.Service || (p.Service == a.Service && p.Index >= a.Index) {
				t.Fatalf("assignments not sorted at %d", i)
			}
		}
		s, n := bySvc[a.Service], byNode[a.Node]
		if s == nil || n == nil || a.Index < 0 {
			t.Fatalf("assignment %+v names an unknown slot or node", a)
		}
		if dupNode[a.Node] || dupSvc[a.Service] {
			// Compute kept one of the copies; skip the checks on
			// this name (dupNode makes the node's totals unreliable).
			continue
		}
		if a.Index >= s.Replicas {
			t.Fatalf("assignment %+v names an unknown slot", a)
		}
		if !n.Schedulable {
			t.Fatalf("%s placed on unschedulable %s", a.Slot, a.Node)
		}
		for k, v := range s.Constraints {
			if n.Labels[k] != v {
				t.Fatalf("%s placed on %s violates %s=%s", a.Slot, a.Node, k, v)
			}
		}
		if len(nonEmpty(s.Platforms)) > 0 && !platformMatches(s.Platforms, n) {
			t.Fatalf("%s placed on %s/%s node %s, platforms %v", a.Slot, n.OS, n.Arch, a.Node, s.Platforms)
		}
		load[a.Node]++
		cpu[a.Node] += float64(millicores(s.CPUs))
		mem[a.Node] += float64(max(s.Memory, 0))
	}
	for _, u := range r.Unplaceable {
		if seen[u.Slot] {
			t.Fatalf("slot %s both assigned and unplaceable", u.Slot)
		}
		seen[u.Slot] = true
		if u.Reason == "" {
			t.Fatalf("slot %s unplaceable without a reason", u.Slot)
		}
	}
	for _, l := range r.Loads {
		n := byNode[l.Node]
		if dupNode[l.Node] || len(dupSvc) > 0 {
			continue
		}
		if l.Slots != load[l.Node] {
			t.Fatalf("Loads says %s has %d slots, assignments say %d", l.Node, l.Slots, load[l.Node])
		}
		if c := millicores(n.CPUs); c > 0 && cpu[l.Node] > float64(c) {
			t.Fatalf("%s: cpu requests %v > capacity %v", l.Node, cpu[l.Node]/1000, n.CPUs)
		}
		if n.Memory > 0 && mem[l.Node] > float64(n.Memory) {
			t.Fatalf("%s: memory requests %.0f > capacity %d", l.Node, mem[l.Node], n.Memory)
		}
	}
}

// testingT is the part of testing.TB and *rapid.T the checks use.
type testingT interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
}

func dupFree(ns []Node, ss []Service) bool {
	names := map[string]bool{}
	for _, n := range ns {
		if names[n.Name] {
			return false
		}
		names[n.Name] = true
	}
	svcs := map[string]bool{}
	for _, s := range ss {
		if svcs[s.Name] {
			return false
		}
		svcs[s.Name] = true
	}
	return true
}

func nonEmpty(ps []string) []string {
	var out []string
	for _, p := range ps {
		if strings.TrimSpace(p) != "" {
			out = append(out, p)
		}
	}
	return out
}

// platformMatches is an independent reimplementation of the platform rule.
func platformMatches(ps []string, n *Node) bool {
	for _, p := range nonEmpty(ps) {
		parts := strings.Split(strings.ToLower(strings.TrimSpace(p)), "/")
		if n.OS != "" && strings.EqualFold(parts[0], n.OS) && (len(parts) == 1 || parts[1] == "" || strings.EqualFold(parts[1], n.Arch)) {
			return true
		}
	}
	return false
}
