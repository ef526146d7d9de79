package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// BenchmarkHeldTransitions measures whether placement with holders is
// stable while a membership change is carried out (issue #3: the agent
// does not pass holders yet, because in the chaos suite the owners of a
// few slots swapped back and forth while the new owners started their
// containers one by one).
//
// For each join or leave of a history, r is the placement before and rn
// the one the event leads to (computed with r as holders). While the
// cluster carries rn out, each moved slot is held by its old owner only
// (the new copy is not up yet), by both (make-before-break), or by the
// new owner only (the old copy is stopped); a slot of a node that left is
// held by no one or by its new owner. Each sample draws such a mid-way
// state at random and recomputes: a stable placement gives rn again
// whatever the draw. Reported: the share of samples whose result differs
// from rn (changed-%), and the slots that moved against rn per sample
// (moved/sample). A perfect score is 0 and 0.
//
// `go test ./placement -run '^$' -bench HeldTransitions -benchtime 1x`
func BenchmarkHeldTransitions(b *testing.B) {
	uniform := func(n, s, r int) ([]Node, []Service) { return nodes(n), services(s, r) }
	for _, c := range []struct {
		name     string
		cluster  func(nodes, services, replicas int) ([]Node, []Service)
		nodes    int
		services int
		replicas int
		eps      float64
		samples  int
	}{
		{"5nodes-12slots", uniform, 5, 4, 3, 0, 200},
		{"20nodes-60slots", uniform, 20, 12, 5, 0, 100},
		{"20nodes-60slots-eps0.1", uniform, 20, 12, 5, 0.1, 100},
		{"1000nodes-10kslots", uniform, 1000, 1000, 10, 0, 4},
		{"mixed-10nodes-30slots", mixedCluster, 10, 10, 3, 0, 200},
		{"mixed-30nodes-120slots", mixedCluster, 30, 30, 4, 0, 100},
		{"mixed-30nodes-120slots-eps0.1", mixedCluster, 30, 30, 4, 0.1, 100},
		{"mixed-1000nodes-10kslots", mixedCluster, 1000, 1000, 10, 0, 2},
	} {
		b.Run(c.name, func(b *testing.B) {
			var changed, samples, movedSlots int
			for range b.N {
				ns, ss := c.cluster(c.nodes, c.services, c.replicas)
				ch, n, m := heldTransitions(ns, ss, Options{Epsilon: c.eps}, 10, c.samples)
				changed, samples, movedSlots = changed+ch, samples+n, movedSlots+m
			}
			b.ReportMetric(100*float64(changed)/float64(samples), "changed-%")
			b.ReportMetric(float64(movedSlots)/float64(samples), "moved/sample")
		})
	}
}

// heldTransitions runs events joins and leaves (alternating) from the
// placement of ns with holders, and per event draws samples mid-way
// holder states (see BenchmarkHeldTransitions). It returns the samples
// whose result differs from the event's target, the samples taken, and
// the slots moved against the target over all samples.
func heldTransitions(ns []Node, ss []Service, opts Options, events, samples int) (changed, taken, movedSlots int) {
	rng := rand.New(rand.NewPCG(1, 2))
	cur := slices.Clone(ns)
	r := Compute(cur, withHolders(ss, Compute(cur, ss, opts)), opts)
	for i := range events {
		var next []Node
		if i%2 == 0 {
			n := cur[(i*131)%len(cur)]
			n.Name = fmt.Sprint("new-", i)
			n.Filling = true
			next = append(slices.Clone(cur), n)
		} else {
			victim := (i * 379) % len(cur)
			next = slices.Delete(slices.Clone(cur), victim, victim+1)
		}
		rn := Compute(next, withHolders(ss, r), opts)
		for range samples {
			held := midway(rng, ss, r, rn, next)
			m := len(moved(rn, Compute(next, held, opts)))
			taken++
			movedSlots += m
			if m > 0 {
				changed++
			}
		}
		// The hand-offs are done: the new node stops filling, and the
		// target must be a fixed point without the flag too.
		next = doneFilling(next)
		if m := len(moved(rn, Compute(next, withHolders(ss, rn), opts))); m > 0 {
			changed, taken, movedSlots = changed+1, taken+1, movedSlots+m
		}
		cur, r = next, rn
	}
	return changed, taken, movedSlots
}

// BenchmarkHeldTransitionsRandom is BenchmarkHeldTransitions over many
// random small clusters (3 to 12 nodes of weights 0.5 to 3, 1 to 8
// services of 0 to 8 replicas, random ε): per cluster one join (filling)
// or one leave from a settled placement, and 10 mid-way holder states.
// changed-% is the share of mid-way computations that differ from the
// target; spread-% the same among clusters with a service of more
// replicas than nodes (spread relaxed), where most of them are.
//
// `go test ./placement -run '^$' -bench HeldTransitionsRandom -benchtime 1x`
func BenchmarkHeldTransitionsRandom(b *testing.B) {
	for range b.N {
		rng := rand.New(rand.NewPCG(7, 9))
		var samples, changed, spreadSamples, spreadChanged int
		for range 3000 {
			ns := make([]Node, 3+rng.IntN(10))
			for i := range ns {
				ns[i] = Node{Name: fmt.Sprint("n", i), OS: "linux", Arch: "amd64", Schedulable: true,
					Weight: []float64{1, 1, 2, 0.5, 3}[rng.IntN(5)]}
			}
			ss := make([]Service, 1+rng.IntN(8))
			spread := false
			for i := range ss {
				ss[i] = Service{Name: fmt.Sprint("s", i), Replicas: rng.IntN(9)}
				spread = spread || ss[i].Replicas > len(ns)-1
			}
			opts := Options{Epsilon: []float64{0, 0.1, 0.25, 0.5, 2}[rng.IntN(5)]}
			r := Compute(ns, ss, opts)
			for range 3 {
				r = Compute(ns, withHolders(ss, r), opts)
			}
			var next []Node
			if rng.IntN(2) == 0 {
				next = append(slices.Clone(ns), Node{Name: "joined", OS: "linux", Arch: "amd64", Schedulable: true,
					Filling: true, Weight: []float64{1, 2, 0.5}[rng.IntN(3)]})
			} else {
				i := rng.IntN(len(ns))
				next = slices.Delete(slices.Clone(ns), i, i+1)
			}
			target := Compute(next, withHolders(ss, r), opts)
			for range 10 {
				m := len(moved(target, Compute(next, midway(rng, ss, r, target, next), opts)))
				samples++
				if m > 0 {
					changed++
				}
				if spread {
					spreadSamples++
					if m > 0 {
						spreadChanged++
					}
				}
			}
		}
		b.ReportMetric(100*float64(changed)/float64(samples), "changed-%")
		b.ReportMetric(100*float64(spreadChanged)/float64(max(spreadSamples, 1)), "spread-%")
	}
}

// midway draws holders for a state between r (before an event) and
// target (after it) on the nodes next: each moved slot is held by its old
// owner, by both or by its new owner; a left node's slot by no one or its
// new owner.
func midway(rng *rand.Rand, ss []Service, r, target *Result, next []Node) []Service {
	before, after := owners(r), owners(target)
	alive := make(map[string]bool, len(next))
	for _, n := range next {
		alive[n.Name] = true
	}
	held := slices.Clone(ss)
	for si := range held {
		h := make(map[int][]string)
		for idx := range held[si].Replicas {
			slot := Slot{Service: held[si].Name, Index: idx}.String()
			old, nw := before[slot], after[slot]
			var hs []string
			switch {
			case old == nw || nw == "":
				hs = []string{old}
			case !alive[old]:
				if rng.IntN(2) == 0 {
					hs = []string{nw}
				}
			default:
				hs = [][]string{{old}, {old, nw}, {nw}}[rng.IntN(3)]
			}
			if hs = slices.DeleteFunc(hs, func(n string) bool { return n == "" || !alive[n] }); len(hs) > 0 {
				h[idx] = hs
			}
		}
		held[si].Holders = h
	}
	return held
}
