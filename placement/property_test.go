package placement

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// clusterKind selects what a generated cluster may contain.
type clusterKind int

const (
	// plain clusters have schedulable, unconstrained, unlimited nodes of
	// equal weight: only hashing, spread and the load bound act.
	plain clusterKind = iota
	// weighted is plain with random weights.
	weighted
	// full clusters use every feature: labels, platforms, capacity,
	// weights, unschedulable nodes, requests.
	full
)

func genNode(t *rapid.T, name string, kind clusterKind) Node {
	n := Node{Name: name, OS: "linux", Arch: "amd64", Schedulable: true}
	if kind >= weighted {
		n.Weight = rapid.SampledFrom([]float64{0, 1, 1, 2, 0.5, 3}).Draw(t, "weight")
	}
	if kind < full {
		return n
	}
	if zone := rapid.SampledFrom([]string{"", "a", "b", "c"}).Draw(t, "zone"); zone != "" {
		n.Labels = map[string]string{"zone": zone}
	}
	n.Arch = rapid.SampledFrom([]string{"amd64", "arm64", "ARM64", ""}).Draw(t, "arch")
	n.OS = rapid.SampledFrom([]string{"linux", "linux", ""}).Draw(t, "os")
	n.CPUs = rapid.SampledFrom([]float64{0, 0, 0.5, 1, 2, 4}).Draw(t, "cpus")
	n.Memory = rapid.SampledFrom([]int64{0, 0, 1 << 30, 2 << 30, 4 << 30}).Draw(t, "memory")
	if rapid.IntRange(0, 9).Draw(t, "down") == 0 {
		n.Schedulable = false
		n.Reason = "runtime not ready"
	}
	return n
}

func genService(t *rapid.T, name string, kind clusterKind) Service {
	s := Service{Name: name, Replicas: rapid.IntRange(0, 8).Draw(t, "replicas")}
	if kind < full {
		return s
	}
	if zone := rapid.SampledFrom([]string{"", "", "a", "b"}).Draw(t, "constraint"); zone != "" {
		s.Constraints = map[string]string{"zone": zone}
	}
	s.Platforms = rapid.SampledFrom([][]string{nil, nil, {"linux/amd64"}, {"linux/arm64/v8", "linux/amd64"}, {"linux"}}).Draw(t, "platforms")
	s.CPUs = rapid.SampledFrom([]float64{0, 0, 0.25, 0.5, 1}).Draw(t, "req-cpus")
	s.Memory = rapid.SampledFrom([]int64{0, 0, 256 << 20, 1 << 30}).Draw(t, "req-memory")
	return s
}

var nameGen = rapid.StringMatching(`[a-z]{1,3}[0-9]?`)

func genCluster(t *rapid.T, kind clusterKind, maxNodes int) ([]Node, []Service) {
	names := rapid.SliceOfNDistinct(nameGen, 0, maxNodes, rapid.ID[string]).Draw(t, "nodes")
	ns := make([]Node, len(names))
	for i, name := range names {
		ns[i] = genNode(t, name, kind)
	}
	svcNames := rapid.SliceOfNDistinct(nameGen, 0, 12, rapid.ID[string]).Draw(t, "services")
	ss := make([]Service, len(svcNames))
	for i, name := range svcNames {
		ss[i] = genService(t, name, kind)
	}
	return ns, ss
}

var kindGen = rapid.SampledFrom([]clusterKind{plain, weighted, full})

var epsGen = rapid.SampledFrom([]float64{0, 0.1, 0.25, 0.5, 2})

// eligibleCount reimplements the static checks independently.
func eligibleCount(ns []Node, s Service) int {
	c := 0
	for i := range ns {
		n := &ns[i]
		ok := n.Schedulable
		for k, v := range s.Constraints {
			if w, has := n.Labels[k]; !has || w != v {
				ok = false
			}
		}
		if len(nonEmpty(s.Platforms)) > 0 && !platformMatches(s.Platforms, n) {
			ok = false
		}
		if ok {
			c++
		}
	}
	return c
}

// eligibleWeight is the sum of the eligible nodes' weights.
func eligibleWeight(ns []Node, s Service) float64 {
	w := 0.0
	for i := range ns {
		if eligibleCount(ns[i:i+1], s) == 1 {
			w += max(ns[i].Weight, 0)
			if ns[i].Weight <= 0 {
				w++
			}
		}
	}
	return w
}

func unlimited(ns []Node) bool {
	for _, n := range ns {
		if millicores(n.CPUs) > 0 || n.Memory > 0 {
			return false
		}
	}
	return true
}

// TestPropInvariants: every slot is assigned exactly once or unplaceable
// with a reason; constraints, platforms and capacity are never violated;
// replicas go to distinct nodes while there are enough eligible nodes
// (and evenly, at most ceil(replicas/eligible) per node, when fewer);
// with equal weights and without constraints or capacity, no node exceeds
// its bound.
func TestPropInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		kind := kindGen.Draw(t, "kind")
		ns, ss := genCluster(t, kind, 25)
		opts := Options{Epsilon: epsGen.Draw(t, "eps")}
		r := Compute(ns, ss, opts)
		assertInvariants(t, ns, ss, opts, r)
		if !unlimited(ns) {
			return
		}
		weightOf := map[string]float64{}
		for _, n := range ns {
			weightOf[n.Name] = n.Weight
			if n.Weight <= 0 {
				weightOf[n.Name] = 1
			}
		}
		for _, s := range ss {
			e, w := eligibleCount(ns, s), eligibleWeight(ns, s)
			if e == 0 {
				continue
			}
			per := map[string]int{}
			for _, a := range r.Assignments {
				if a.Service == s.Name {
					per[a.Node]++
				}
			}
			for n, c := range per {
				most := 1 // distinct nodes while enough eligible nodes
				if s.Replicas > e {
					most = max(1, int(math.Ceil(float64(s.Replicas)*weightOf[n]/w-1e-9)))
				}
				if c > most {
					t.Fatalf("%s holds %d of %d replicas of %s with %d eligible nodes", n, c, s.Replicas, s.Name, e)
				}
			}
		}
		// With weights, spread can force a light node over its bound (a
		// service with as many replicas as nodes puts one on each).
		if kind == plain {
			for _, l := range r.Loads {
				if l.Slots > l.Limit {
					t.Fatalf("%s has %d slots over its bound %d", l.Node, l.Slots, l.Limit)
				}
			}
		}
	})
}

// shuffled returns a copy of the input in another order, with label maps,
// constraint maps and platform lists rebuilt.
func shuffled(t *rapid.T, ns []Node, ss []Service) ([]Node, []Service) {
	ns2 := rapid.Permutation(ns).Draw(t, "node order")
	for i := range ns2 {
		ns2[i].Labels = copyMap(ns2[i].Labels)
	}
	ss2 := rapid.Permutation(ss).Draw(t, "service order")
	for i := range ss2 {
		ss2[i].Constraints = copyMap(ss2[i].Constraints)
		if len(ss2[i].Platforms) > 0 {
			ss2[i].Platforms = rapid.Permutation(ss2[i].Platforms).Draw(t, "platform order")
		}
	}
	return ns2, ss2
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestPropDeterminism: the result does not depend on the order of the
// inputs, on how maps were built, or on duplicated entries' order.
func TestPropDeterminism(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ns, ss := genCluster(t, full, 25)
		if len(ns) > 0 && rapid.Bool().Draw(t, "duplicate a node") {
			d := ns[0]
			d.Schedulable = !d.Schedulable
			ns = append(ns, d)
		}
		opts := Options{Epsilon: epsGen.Draw(t, "eps")}
		want := Compute(ns, ss, opts)
		ns2, ss2 := shuffled(t, ns, ss)
		if got := Compute(ns2, ss2, opts); !reflect.DeepEqual(got, want) {
			t.Fatalf("results differ after shuffling:\n%+v\n%+v", got, want)
		}
		if len(want.Assignments)+len(want.Unplaceable) == 0 {
			return
		}
		all := append(slotsOf(want.Assignments), unplacedSlots(want.Unplaceable)...)
		slot := rapid.SampledFrom(all).Draw(t, "slot")
		e1, err1 := Explain(ns, ss, opts, slot.Service, slot.Index)
		e2, err2 := Explain(ns2, ss2, opts, slot.Service, slot.Index)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(e1, e2) {
			t.Fatalf("explanations differ after shuffling: %v %v\n%v\n%v", err1, err2, e1, e2)
		}
	})
}

func slotsOf(as []Assignment) []Slot {
	out := make([]Slot, len(as))
	for i, a := range as {
		out[i] = a.Slot
	}
	return out
}

func unplacedSlots(us []Unplaced) []Slot {
	out := make([]Slot, len(us))
	for i, u := range us {
		out[i] = u.Slot
	}
	return out
}

// TestPropBalance: with equal weights and no constraints, max/mean is at
// most 1+ε plus one slot of rounding.
func TestPropBalance(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ns, ss := genCluster(t, plain, 25)
		eps := rapid.SampledFrom([]float64{0.1, 0.25, 0.5}).Draw(t, "eps")
		r := Compute(ns, ss, Options{Epsilon: eps})
		if len(r.Loads) == 0 || len(r.Assignments) == 0 {
			return
		}
		mean := float64(len(r.Assignments)) / float64(len(r.Loads))
		for _, l := range r.Loads {
			if float64(l.Slots) > (1+eps)*mean+1 {
				t.Fatalf("%s has %d slots, mean %.2f, ε %v", l.Node, l.Slots, mean, eps)
			}
		}
	})
}

// atBound reports whether some node's load reached its bound.
func atBound(r *Result) bool {
	for _, l := range r.Loads {
		if l.Slots >= l.Limit {
			return true
		}
	}
	return false
}

// checkChurn checks a membership change from before to after in which
// node changed is the node that left (it is in before) or joined (it is
// in after).
//
// Always: slots of the left node all move. When no node is at its bound in
// either result, the bound never acted, so the change can move only the
// changed node's slots plus, through spread, other slots of the services
// that had a replica on it or that have more replicas than the smaller
// cluster has nodes (their per-node share changes); with single-replica
// services, exactly the changed node's slots.
func checkChurn(t *rapid.T, ss []Service, smaller int, before, after *Result, changed string) {
	t.Helper()
	mv := moved(before, after)
	touched := map[string]bool{} // services with a replica on the node
	for _, s := range ss {
		if s.Replicas > smaller {
			touched[s.Name] = true
		}
	}
	onChanged := map[string]bool{}
	for _, r := range []*Result{before, after} {
		for _, a := range r.Assignments {
			if a.Node == changed {
				touched[a.Service] = true
				onChanged[a.Slot.String()] = true
			}
		}
	}
	for _, a := range before.Assignments {
		if a.Node == changed {
			if o, _ := after.Owner(a.Service, a.Index); o == changed {
				t.Fatalf("%s still on the node that left", a.Slot)
			}
		}
	}
	if atBound(before) || atBound(after) {
		return
	}
	single := true
	for _, a := range before.Assignments {
		if a.Index > 0 {
			single = false
		}
	}
	for _, s := range mv {
		svc, _, _ := cut(s)
		if !onChanged[s] && (single || !touched[svc]) {
			t.Fatalf("%s moved, unrelated to %s (moved %v)", s, changed, mv)
		}
	}
}

func cut(slot string) (string, string, bool) {
	for i := len(slot) - 1; i >= 0; i-- {
		if slot[i] == '/' {
			return slot[:i], slot[i+1:], true
		}
	}
	return slot, "", false
}

// TestPropLeaveJoin: one node leaves, or joins (checkChurn).
func TestPropLeaveJoin(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		kind := rapid.SampledFrom([]clusterKind{plain, weighted}).Draw(t, "kind")
		ns, ss := genCluster(t, kind, 25)
		if len(ns) < 2 {
			return
		}
		if rapid.Bool().Draw(t, "single replicas") {
			for i := range ss {
				ss[i].Replicas = min(ss[i].Replicas, 1)
			}
		}
		// Large ε values make "no node at its bound" frequent.
		opts := Options{Epsilon: rapid.SampledFrom([]float64{0.25, 1, 4, 20}).Draw(t, "eps")}
		full := Compute(ns, ss, opts)
		i := rapid.IntRange(0, len(ns)-1).Draw(t, "node")
		rest := slices.Delete(slices.Clone(ns), i, i+1)
		less := Compute(rest, ss, opts)
		checkChurn(t, ss, len(rest), full, less, ns[i].Name) // leave
		checkChurn(t, ss, len(rest), less, full, ns[i].Name) // join
		// (With weights, spread may force a light node over its bound.)
		if l := loadOf(full, ns[i].Name); kind == plain && l.Slots > l.Limit {
			t.Fatalf("joined node took %d slots over its bound %d", l.Slots, l.Limit)
		}
	})
}

// TestPropHistory runs random histories of joins, leaves, failures (a node
// stays alive but becomes unschedulable), recoveries and service changes
// over full clusters, checking the invariants and Explain at every step.
func TestPropHistory(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ns, ss := genCluster(t, full, 15)
		opts := Options{Epsilon: epsGen.Draw(t, "eps")}
		next := 0
		steps := rapid.IntRange(1, 8).Draw(t, "steps")
		for step := 0; step < steps; step++ {
			switch op := rapid.IntRange(0, 4).Draw(t, "op"); {
			case op == 0 || len(ns) == 0: // join
				next++
				ns = append(ns, genNode(t, fmt.Sprintf("new%d", next), full))
			case op == 1: // leave
				i := rapid.IntRange(0, len(ns)-1).Draw(t, "leave")
				ns = slices.Delete(ns, i, i+1)
			case op == 2: // fail or recover
				i := rapid.IntRange(0, len(ns)-1).Draw(t, "flip")
				ns[i].Schedulable = !ns[i].Schedulable
			case op == 3 && len(ss) > 0: // scale
				i := rapid.IntRange(0, len(ss)-1).Draw(t, "scale")
				ss[i].Replicas = rapid.IntRange(0, 8).Draw(t, "replicas")
			default: // new service
				next++
				ss = append(ss, genService(t, fmt.Sprintf("svc%d", next), full))
			}
			r := Compute(ns, ss, opts)
			assertInvariants(t, ns, ss, opts, r)
			all := append(slotsOf(r.Assignments), unplacedSlots(r.Unplaceable)...)
			if len(all) == 0 {
				continue
			}
			slot := rapid.SampledFrom(all).Draw(t, "explain")
			e, err := Explain(ns, ss, opts, slot.Service, slot.Index)
			if err != nil {
				t.Fatalf("Explain(%s): %v", slot, err)
			}
			assertExplanationMatches(t, ns, ss, opts, e)
		}
	})
}

func TestPortableLog(t *testing.T) {
	// portableLog must agree with math.Log within 1 ulp over (0, 1),
	// including the values near 1 that decide the top of a ranking.
	check := func(x float64) {
		got, want := portableLog(x), math.Log(x)
		if got != want && math.Abs(got-want) > math.Abs(math.Nextafter(want, 0)-want) {
			t.Fatalf("portableLog(%v) = %v, math.Log = %v", x, got, want)
		}
	}
	for _, h := range []uint64{0, 1, 1 << 40, 1<<63 - 1, 1 << 63, math.MaxUint64 - 1, math.MaxUint64} {
		u, _ := unitInterval(h)
		check(u)
	}
	rapid.Check(t, func(t *rapid.T) {
		u, omu := unitInterval(rapid.Uint64().Draw(t, "h"))
		if !(u > 0 && u < 1) || u+omu != 1 {
			t.Fatalf("u = %v, 1-u = %v", u, omu)
		}
		check(u)
		// The pruning bound in best: w/(1-u) >= w/-ln(u).
		if sc := weightedScore(1, u); sc > 1/omu*(1+1e-9) {
			t.Fatalf("score %v above its bound %v", sc, 1/omu)
		}
	})
}

// TestLoadLimit: a bound is floor or ceil of the node's share f (or the
// fair share's ceiling when that is higher), at least 1, at most slots.
func TestLoadLimit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		slots := rapid.IntRange(1, 100000).Draw(t, "slots")
		eps := rapid.Float64Range(0.01, 3).Draw(t, "eps")
		total := rapid.Float64Range(1, 1000).Draw(t, "total weight")
		w := rapid.Float64Range(0.1, total).Draw(t, "w")
		l := float64(loadLimit(slots, eps, w, total, rapid.Uint64().Draw(t, "hash")))
		f := (1 + eps) * float64(slots) * w / total
		fair := math.Ceil(float64(slots)*w/total - 1e-9)
		if f >= float64(slots) {
			if l != float64(slots) {
				t.Fatalf("limit %v for f=%v >= slots %d", l, f, slots)
			}
			return
		}
		if l < max(1, math.Floor(f)) || l > max(1, math.Ceil(f), fair) {
			t.Fatalf("limit %v for f=%v fair=%v", l, f, fair)
		}
	})
}

// TestPropLimitsHoldSlots: the bounds add up to at least the slots.
func TestPropLimitsHoldSlots(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ns, ss := genCluster(t, weighted, 25)
		r := Compute(ns, ss, Options{Epsilon: epsGen.Draw(t, "eps")})
		sum := 0
		for _, l := range r.Loads {
			sum += l.Limit
		}
		if len(r.Loads) > 0 && sum < len(r.Assignments) {
			t.Fatalf("bounds add up to %d < %d slots", sum, len(r.Assignments))
		}
	})
}
