package placement

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// Benchmark sizes: 1,000 services x 10 replicas over 1,000 nodes.
const (
	benchNodes    = 1000
	benchServices = 1000
	benchReplicas = 10
)

// benchCluster is the uniform 10k slots / 1k nodes cluster.
func benchCluster() ([]Node, []Service) {
	return nodes(benchNodes), services(benchServices, benchReplicas)
}

// benchMixedCluster has weights 1 to 4, three zones, two architectures, CPU
// capacity, and services with constraints, platforms and requests.
func benchMixedCluster() ([]Node, []Service) {
	return mixedCluster(benchNodes, benchServices, benchReplicas)
}

// mixedCluster is benchMixedCluster at any size.
func mixedCluster(nodeCount, serviceCount, replicas int) ([]Node, []Service) {
	ns := nodes(nodeCount)
	for i := range ns {
		ns[i].Weight = float64(1 + i%4)
		ns[i].Labels = map[string]string{"zone": fmt.Sprint("z", i%3)}
		ns[i].CPUs = 64
		if i%5 == 0 {
			ns[i].Arch = "arm64"
		}
	}
	ss := services(serviceCount, replicas)
	for i := range ss {
		switch i % 10 {
		case 0:
			ss[i].Constraints = map[string]string{"zone": fmt.Sprint("z", i%3)}
		case 1:
			ss[i].Platforms = []string{"linux/amd64"}
		}
		ss[i].CPUs = 0.5
	}
	return ns, ss
}

func BenchmarkCompute10kSlots1kNodes(b *testing.B) {
	ns, ss := benchCluster()
	b.ReportAllocs()
	for b.Loop() {
		Compute(ns, ss, Options{})
	}
}

func BenchmarkCompute10kSlots1kNodesMixed(b *testing.B) {
	ns, ss := benchMixedCluster()
	b.ReportAllocs()
	for b.Loop() {
		Compute(ns, ss, Options{})
	}
}

// churnRatio is the number of slots a membership change moved, relative to
// the optimum.
func churnRatio(before, after *Result, optimum float64) float64 {
	return float64(len(moved(before, after))) / optimum
}

// leaveChurn removes each of k nodes in turn from the cluster and returns
// the mean and worst ratio of moved slots to the removed node's slots.
func leaveChurn(ns []Node, ss []Service, opts Options, k int) (mean, worst float64) {
	base := Compute(ns, ss, opts)
	for i := range k {
		victim := (i * 379) % len(ns)
		after := Compute(slices.Delete(slices.Clone(ns), victim, victim+1), ss, opts)
		r := churnRatio(base, after, float64(len(base.Owned(ns[victim].Name))))
		mean += r / float64(k)
		worst = max(worst, r)
	}
	return mean, worst
}

// joinChurn adds k new nodes in turn (one at a time, to the same cluster)
// and returns the mean and worst ratio of moved slots to slots/N.
func joinChurn(ns []Node, ss []Service, opts Options, k int) (mean, worst float64) {
	base := Compute(ns, ss, opts)
	for i := range k {
		after := Compute(append(slices.Clone(ns), Node{Name: fmt.Sprint("new-", i), Schedulable: true}), ss, opts)
		r := churnRatio(base, after, float64(len(base.Assignments))/float64(len(ns)+1))
		mean += r / float64(k)
		worst = max(worst, r)
	}
	return mean, worst
}

func BenchmarkRecomputeAfterJoin(b *testing.B) {
	ns, ss := benchCluster()
	joined := append(slices.Clone(ns), Node{Name: "new-node", Schedulable: true})
	b.ReportAllocs()
	for b.Loop() {
		Compute(joined, ss, Options{})
	}
	b.StopTimer()
	mean, worst := joinChurn(ns, ss, Options{}, 5)
	b.ReportMetric(mean, "churn/opt")
	b.ReportMetric(worst, "worst/opt")
}

func BenchmarkRecomputeAfterLeave(b *testing.B) {
	ns, ss := benchCluster()
	left := ns[1:]
	b.ReportAllocs()
	for b.Loop() {
		Compute(left, ss, Options{})
	}
	b.StopTimer()
	mean, worst := leaveChurn(ns, ss, Options{}, 5)
	b.ReportMetric(mean, "churn/opt")
	b.ReportMetric(worst, "worst/opt")
}

// heldHistory runs events alternating joins and leaves from a settled
// placement of ns, each computed with the previous result as holders; a
// node that joins is filling until its event is done (the agent clears
// the flag once the node alone runs its slots). It returns the mean and worst
// ratio to the optimum of the slots each join and each leave moved, the
// number of slots that a computation during the hand-offs (both the old
// and the new owners holding) placed differently, and max/mean load at the
// end.
func heldHistory(ns []Node, ss []Service, opts Options, events int) (jMean, jWorst, lMean, lWorst float64, handoff int, maxMean float64) {
	cur := slices.Clone(ns)
	r := Compute(cur, ss, opts)
	r = Compute(cur, withHolders(ss, r), opts)
	var jMoved, jOpt, lMoved, lOpt float64
	for i := range events {
		var next []Node
		var opt float64
		join := i%2 == 0
		if join {
			// A copy of an existing node (weight, labels, platform) under
			// a new name; the optimum is its weighted share.
			n := cur[(i*131)%len(cur)]
			n.Name = fmt.Sprint("new-", i)
			n.Filling = true
			next = append(slices.Clone(cur), n)
			opt = float64(len(r.Assignments)) * weightOf(n) / totalWeight(next)
		} else {
			victim := (i * 379) % len(cur)
			opt = float64(len(r.Owned(cur[victim].Name)))
			next = slices.Delete(slices.Clone(cur), victim, victim+1)
		}
		rn := Compute(next, withHolders(ss, r), opts)
		m := float64(len(moved(r, rn)))
		handoff += len(moved(rn, Compute(next, withHolders(ss, rn, r), opts)))
		if join {
			jMoved, jOpt, jWorst = jMoved+m, jOpt+opt, max(jWorst, m/opt)
		} else {
			lMoved, lOpt, lWorst = lMoved+m, lOpt+opt, max(lWorst, m/opt)
		}
		next = doneFilling(next)
		cur, r = next, rn
	}
	// Load relative to the weighted fair share.
	for _, n := range cur {
		share := float64(len(r.Assignments)) * weightOf(n) / totalWeight(cur)
		maxMean = max(maxMean, float64(loadOf(r, n.Name).Slots)/share)
	}
	return jMoved / jOpt, jWorst, lMoved / lOpt, lWorst, handoff, maxMean
}

// doneFilling returns ns with no node filling: the event's hand-offs are
// done.
func doneFilling(ns []Node) []Node {
	for i := range ns {
		ns[i].Filling = false
	}
	return ns
}

func weightOf(n Node) float64 {
	if n.Weight > 0 {
		return n.Weight
	}
	return 1
}

func totalWeight(ns []Node) float64 {
	w := 0.0
	for _, n := range ns {
		w += weightOf(n)
	}
	return w
}

// BenchmarkRecomputeHeldAfterJoin is BenchmarkRecomputeAfterJoin with the
// slots' current holders given and the new node filling. churn/opt and
// worst/opt are over the joins of a 20-event history.
func BenchmarkRecomputeHeldAfterJoin(b *testing.B) {
	ns, ss := benchCluster()
	held := withHolders(ss, Compute(ns, withHolders(ss, Compute(ns, ss, Options{})), Options{}))
	joined := append(slices.Clone(ns), Node{Name: "new-node", Schedulable: true, Filling: true})
	b.ReportAllocs()
	for b.Loop() {
		Compute(joined, held, Options{})
	}
	b.StopTimer()
	mean, worst, _, _, _, _ := heldHistory(ns, ss, Options{}, 20)
	b.ReportMetric(mean, "churn/opt")
	b.ReportMetric(worst, "worst/opt")
}

// BenchmarkRecomputeHeldAfterLeave: the same for a leave.
func BenchmarkRecomputeHeldAfterLeave(b *testing.B) {
	ns, ss := benchCluster()
	held := withHolders(ss, Compute(ns, withHolders(ss, Compute(ns, ss, Options{})), Options{}))
	b.ReportAllocs()
	for b.Loop() {
		Compute(ns[1:], held, Options{})
	}
	b.StopTimer()
	_, _, mean, worst, _, _ := heldHistory(ns, ss, Options{}, 20)
	b.ReportMetric(mean, "churn/opt")
	b.ReportMetric(worst, "worst/opt")
}

// BenchmarkLoadBalance reports max/mean slots per node at 10k slots / 1k
// nodes for two values of ε, and the share of slots that did not get their
// first choice.
func BenchmarkLoadBalance(b *testing.B) {
	for _, eps := range []float64{0.25, 0.1} {
		b.Run(fmt.Sprint("eps=", eps), func(b *testing.B) {
			ns, ss := benchCluster()
			var r *Result
			for b.Loop() {
				r = Compute(ns, ss, Options{Epsilon: eps})
			}
			maxLoad, spilled := 0, 0
			for _, l := range r.Loads {
				maxLoad = max(maxLoad, l.Slots)
			}
			for _, a := range r.Assignments {
				if a.Rank > 0 {
					spilled++
				}
			}
			b.ReportMetric(float64(maxLoad)/(float64(len(r.Assignments))/float64(len(r.Loads))), "max/mean")
			b.ReportMetric(float64(spilled)/float64(len(r.Assignments)), "spilled/slot")
		})
	}
}

// TestChurnReport prints churn relative to the optimum at 10k slots / 1k
// nodes: single joins and leaves, and a sequence of 30 leaves (which
// crosses the points where rounded bounds change). It runs only with -v:
//
//	go test ./placement -run TestChurnReport -v
func TestChurnReport(t *testing.T) {
	if !testing.Verbose() || testing.Short() {
		t.Skip("report; run with -v")
	}
	ns, ss := benchCluster()
	for _, eps := range []float64{0.25, 0.1, 0.5, 1} {
		opts := Options{Epsilon: eps}
		jm, jw := joinChurn(ns, ss, opts, 5)
		lm, lw := leaveChurn(ns, ss, opts, 5)
		// A history: 30 nodes leave one after the other.
		cur := slices.Clone(ns)
		r := Compute(cur, ss, opts)
		movedTotal, optTotal := 0, 0
		for i := range 30 {
			victim := (i * 379) % len(cur)
			next := slices.Delete(slices.Clone(cur), victim, victim+1)
			rn := Compute(next, ss, opts)
			movedTotal += len(moved(r, rn))
			optTotal += len(r.Owned(cur[victim].Name))
			cur, r = next, rn
		}
		t.Logf("ε=%.2f  join: mean %.3f worst %.3f x optimal | leave: mean %.3f worst %.3f x optimal | 30 leaves in a row: %.3f x optimal",
			eps, jm, jw, lm, lw, float64(movedTotal)/float64(optTotal))
	}
	// With holders given, every node reported.
	for _, c := range []struct {
		name   string
		ns, ss func() ([]Node, []Service)
	}{{"uniform", benchCluster, nil}, {"mixed", benchMixedCluster, nil}} {
		ns, ss := c.ns()
		for _, eps := range []float64{0.25, 0.1} {
			jm, jw, lm, lw, ho, mm := heldHistory(ns, ss, Options{Epsilon: eps}, 60)
			t.Logf("with holders, %s, ε=%.2f, 30 joins and 30 leaves alternating: join mean %.3f worst %.3f x optimal | leave mean %.3f worst %.3f x optimal | hand-off recomputations moved %d slots | max load / weighted fair share %.2f",
				c.name, eps, jm, jw, lm, lw, ho, mm)
		}
	}
}

// TestLoadHistogram prints the histogram of slots per node at 10k slots /
// 1k nodes for ε = 0.25, 0.1, 0.5 and 1. It runs only with -v.
func TestLoadHistogram(t *testing.T) {
	if !testing.Verbose() || testing.Short() {
		t.Skip("report; run with -v")
	}
	ns, ss := benchCluster()
	for _, eps := range []float64{0.25, 0.1, 0.5, 1} {
		r := Compute(ns, ss, Options{Epsilon: eps})
		hist := map[int]int{}
		maxLoad := 0
		for _, l := range r.Loads {
			hist[l.Slots]++
			maxLoad = max(maxLoad, l.Slots)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "ε=%.2f: max/mean %.2f (bound ceil(%.1f) = %d)\n", eps,
			float64(maxLoad)/10, (1+eps)*10, int(math.Ceil((1+eps)*10-1e-9)))
		for slots := 0; slots <= maxLoad; slots++ {
			if hist[slots] > 0 {
				fmt.Fprintf(&b, "  %2d slots: %4d nodes %s\n", slots, hist[slots], strings.Repeat("#", (hist[slots]+4)/5))
			}
		}
		t.Log("\n" + b.String())
	}
}
