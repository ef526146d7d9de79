package placement

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// withHolders returns a copy of ss whose Holders say that every slot is
// held by its owner in each of rs (several results: a hand-off under way).
func withHolders(ss []Service, rs ...*Result) []Service {
	out := slices.Clone(ss)
	idx := map[string]int{}
	for i := range out {
		out[i].Holders = map[int][]string{}
		idx[out[i].Name] = i
	}
	for _, r := range rs {
		for _, a := range r.Assignments {
			i, ok := idx[a.Service]
			if !ok {
				continue
			}
			if h := out[i].Holders; !slices.Contains(h[a.Index], a.Node) {
				h[a.Index] = append(h[a.Index], a.Node)
			}
		}
	}
	return out
}

// filling returns n with Filling set.
func filling(n Node) Node {
	n.Filling = true
	return n
}

// settle recomputes with the result as holders until nothing moves, and
// fails if that takes more than 3 computations.
func settle(t testingT, ns []Node, ss []Service, opts Options, r *Result) *Result {
	t.Helper()
	for range 3 {
		next := Compute(ns, withHolders(ss, r), opts)
		if len(moved(r, next)) == 0 && len(next.Assignments) == len(r.Assignments) {
			return next
		}
		r = next
	}
	t.Fatalf("no fixed point after 3 computations")
	return nil
}

func TestHoldersKeepASlotOffItsFirstChoice(t *testing.T) {
	ns := nodes(5) // none of them filling
	ss := services(1, 1)
	first, _ := Compute(ns, ss, Options{}).Owner("svc-000", 0)
	e0, err := Explain(ns, ss, Options{}, "svc-000", 0)
	if err != nil {
		t.Fatal(err)
	}
	holder := e0.Candidates[3].Node // ranked fourth
	ss[0].Holders = map[int][]string{0: {holder}}
	r := Compute(ns, ss, Options{})
	if got, _ := r.Owner("svc-000", 0); got != holder {
		t.Fatalf("owner %s, want the holder %s (first choice %s)", got, holder, first)
	}
	if r.Assignments[0].Rank != 3 {
		t.Errorf("rank %d, want 3", r.Assignments[0].Rank)
	}
	e, err := Explain(ns, ss, Options{}, "svc-000", 0)
	if err != nil {
		t.Fatal(err)
	}
	if e.Basis != BasisHeld || e.Node != holder || !slices.Equal(e.Holders, []string{holder}) {
		t.Fatalf("explanation: basis %q node %s holders %v", e.Basis, e.Node, e.Holders)
	}
	assertExplanationMatches(t, ns, ss, Options{}, e)
	if s := e.String(); !strings.Contains(s, "kept on its holder") || !strings.Contains(s, "held by: "+holder) {
		t.Errorf("explanation text:\n%s", s)
	}
}

func TestHoldersThatCannotHoldAreIgnored(t *testing.T) {
	ns := nodes(4)
	ns[3].Labels = map[string]string{"zone": "b"}
	ns[2].Schedulable = false
	ss := []Service{{Name: "web", Replicas: 2, Constraints: map[string]string{"zone": "a"}}}
	for i := range ns[:2] {
		ns[i].Labels = map[string]string{"zone": "a"}
	}
	want := Compute(ns, ss, Options{})
	ss[0].Holders = map[int][]string{
		-1: {"node-000"},
		2:  {"node-000"}, // out of range
		0:  {"nobody", "node-002", "node-003", ""},
		1:  nil,
	}
	got := Compute(ns, ss, Options{})
	if m := moved(want, got); len(m) > 0 || len(got.Assignments) != 2 {
		t.Fatalf("holders that cannot hold moved %v (%v)", m, owners(got))
	}
	e, err := Explain(ns, ss, Options{}, "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Holders) != 0 || e.Basis != BasisRanked {
		t.Errorf("explanation: holders %v basis %q", e.Holders, e.Basis)
	}
}

// After a partition heals, slots are held on both sides: each goes to one
// holder, the best-ranked one with room.
func TestHoldersOnBothSidesOfAHealedPartition(t *testing.T) {
	ns := nodes(5)
	ss := services(3, 3)
	left, right := ns[:3], ns[3:]
	rl, rr := Compute(left, ss, Options{}), Compute(right, ss, Options{})
	held := withHolders(ss, rl, rr)
	r := Compute(ns, held, Options{})
	assertInvariants(t, ns, held, Options{}, r)
	if len(r.Assignments) != 9 {
		t.Fatalf("%d slots placed, want 9", len(r.Assignments))
	}
	kept := 0
	for _, a := range r.Assignments {
		hs := held[slices.IndexFunc(held, func(s Service) bool { return s.Name == a.Service })].Holders[a.Index]
		if slices.Contains(hs, a.Node) {
			kept++
		}
	}
	// Each side ran all 9 slots; the bounds (2 or 3 per node) hold 9.
	if kept < 7 {
		t.Errorf("only %d of 9 slots stayed on one of their holders: %v", kept, owners(r))
	}
	assertPerNode(t, r, "svc-000", 1)
	if again := Compute(ns, withHolders(ss, r, rl, rr), Options{}); len(moved(r, again)) > 0 {
		t.Errorf("recomputing during the hand-offs moves %v", moved(r, again))
	}
}

// heldCluster is 100 nodes and 1,000 slots, settled with holders.
func heldCluster(t testingT) ([]Node, []Service, *Result) {
	ns, ss := nodes(100), services(100, 10)
	return ns, ss, settle(t, ns, ss, Options{}, Compute(ns, ss, Options{}))
}

func TestHoldersLeaveMovesOnlyTheLeftNodesSlots(t *testing.T) {
	ns, ss, r := heldCluster(t)
	for _, victim := range []int{0, 17, 99} {
		rest := slices.Delete(slices.Clone(ns), victim, victim+1)
		after := Compute(rest, withHolders(ss, r), Options{})
		mine := r.Owned(ns[victim].Name)
		var want []string
		for _, s := range mine {
			want = append(want, s.String())
		}
		got := moved(r, after)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s left: moved %d slots %v, want its %d", ns[victim].Name, len(got), got, len(want))
		}
		if again := Compute(rest, withHolders(ss, after, r), Options{}); len(moved(after, again)) > 0 {
			t.Errorf("recomputing during the hand-offs moves %v", moved(after, again))
		}
	}
}

func TestHoldersJoinTakesAboutAFairShare(t *testing.T) {
	ns, ss, r := heldCluster(t)
	joined := append(slices.Clone(ns), Node{Name: "new", Schedulable: true, Filling: true})
	after := Compute(joined, withHolders(ss, r), Options{})
	quota := int(math.Ceil(1000.0 / 101))
	got := loadOf(after, "new").Slots
	if got == 0 || got > quota {
		t.Fatalf("the new node took %d slots, want 1 to %d", got, quota)
	}
	mv := moved(r, after)
	limits := map[string]int{}
	for _, l := range after.Loads {
		limits[l.Node] = l.Limit
	}
	o := owners(after)
	for _, s := range mv {
		from := owners(r)[s]
		if o[s] != "new" && loadOf(r, from).Slots <= limits[from] {
			t.Errorf("%s moved %s -> %s, neither to the new node nor off a node over its bound", s, from, o[s])
		}
	}
	if len(mv) > quota {
		t.Errorf("a join moved %d slots, more than the new node's fair share %d", len(mv), quota)
	}
	svc, idx, _ := cut(mv[0])
	var i int
	fmt.Sscan(idx, &i)
	e, err := Explain(joined, withHolders(ss, r), Options{}, svc, i)
	if err != nil {
		t.Fatal(err)
	}
	if e.Basis != BasisFilled && e.Node == "new" {
		t.Errorf("a slot the new node took is explained as %q", e.Basis)
	}
	if again := Compute(joined, withHolders(ss, after, r), Options{}); len(moved(after, again)) > 0 {
		t.Errorf("recomputing during the hand-offs moves %v", moved(after, again))
	}
	if len(moved(after, Compute(joined, withHolders(ss, after), Options{}))) > 0 {
		t.Error("not a fixed point once the hand-offs are done")
	}
}

// A node that comes back empty after its slots moved away takes back the
// slots that rank it first.
func TestHoldersNodeBackEmptyFillsUp(t *testing.T) {
	ns, ss := nodes(3), services(3, 2)
	r := settle(t, ns, ss, Options{}, Compute(ns, ss, Options{}))
	before := r.Owned("node-001")
	two := slices.Delete(slices.Clone(ns), 1, 2)
	r2 := settle(t, two, ss, Options{}, Compute(two, withHolders(ss, r), Options{}))
	ns[1].Filling = true
	back := Compute(ns, withHolders(ss, r2), Options{})
	if got := back.Owned("node-001"); !slices.Equal(got, before) {
		t.Errorf("node back empty owns %v, it owned %v (first choices)", got, before)
	}
}

// TestPropHoldersHistory runs random histories (joins, leaves, failures,
// scaling, new services) in which every computation is given the previous
// result as holders, on every kind of cluster, some nodes not reported:
// the invariants hold, Explain agrees, and the result is a fixed point
// within three computations.
func TestPropHoldersHistory(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		kind := kindGen.Draw(t, "kind")
		ns, ss := genCluster(t, kind, 15)
		for i := range ns {
			ns[i].Filling = rapid.IntRange(0, 4).Draw(t, "filling") == 0
		}
		opts := Options{Epsilon: epsGen.Draw(t, "eps")}
		r := Compute(ns, ss, opts)
		next := 0
		steps := rapid.IntRange(1, 6).Draw(t, "steps")
		for range steps {
			switch op := rapid.IntRange(0, 4).Draw(t, "op"); {
			case op == 0 || len(ns) == 0:
				next++
				n := genNode(t, fmt.Sprintf("new%d", next), kind)
				n.Filling = rapid.Bool().Draw(t, "filling")
				ns = append(ns, n)
			case op == 1:
				i := rapid.IntRange(0, len(ns)-1).Draw(t, "leave")
				ns = slices.Delete(ns, i, i+1)
			case op == 2:
				i := rapid.IntRange(0, len(ns)-1).Draw(t, "flip")
				ns[i].Schedulable = !ns[i].Schedulable
			case op == 3 && len(ss) > 0:
				i := rapid.IntRange(0, len(ss)-1).Draw(t, "scale")
				ss[i].Replicas = rapid.IntRange(0, 8).Draw(t, "replicas")
			default:
				next++
				ss = append(ss, genService(t, fmt.Sprintf("svc%d", next), kind))
			}
			held := withHolders(ss, r)
			r = Compute(ns, held, opts)
			assertInvariants(t, ns, held, opts, r)
			settle(t, ns, ss, opts, r)
			all := append(slotsOf(r.Assignments), unplacedSlots(r.Unplaceable)...)
			if len(all) == 0 {
				continue
			}
			slot := rapid.SampledFrom(all).Draw(t, "explain")
			e, err := Explain(ns, held, opts, slot.Service, slot.Index)
			if err != nil {
				t.Fatalf("Explain(%s): %v", slot, err)
			}
			assertExplanationMatches(t, ns, held, opts, e)
		}
	})
}

// TestPropHoldersDeterminism: the order of nodes, services and holder
// names does not matter.
func TestPropHoldersDeterminism(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ns, ss := genCluster(t, kindGen.Draw(t, "kind"), 12)
		opts := Options{Epsilon: epsGen.Draw(t, "eps")}
		var base *Result
		if len(ns) > 1 {
			base = Compute(ns[1:], ss, opts)
		} else {
			base = Compute(ns, ss, opts)
		}
		held := withHolders(ss, base, Compute(ns, ss, opts))
		want := Compute(ns, held, opts)
		pn, ps := shuffled(t, ns, held)
		for i := range ps {
			h := map[int][]string{}
			for k, v := range ps[i].Holders {
				v = slices.Clone(v)
				rand.Shuffle(len(v), func(a, b int) { v[a], v[b] = v[b], v[a] })
				h[k] = v
			}
			ps[i].Holders = h
		}
		got := Compute(pn, ps, opts)
		if !slices.Equal(got.Assignments, want.Assignments) || !slices.Equal(got.Loads, want.Loads) {
			t.Fatalf("result depends on the input order")
		}
	})
}

// TestPropHoldersLeave: from a settled placement, a node leaves. Apart
// from the slots taken by filling nodes, the leave moves the left node's
// slots and, for each of them at most, one slot that it displaced: when
// every node that may take it is at its bound, it goes over the bound of
// one, is pinned there (see pinRelaxed), and that node's weakest slot
// moves. Slots of services with more replicas than nodes are left out:
// their per-node share changes with the cluster's weight.
func TestPropHoldersLeave(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ns, ss := genCluster(t, rapid.SampledFrom([]clusterKind{plain, weighted}).Draw(t, "kind"), 20)
		if len(ns) < 2 {
			return
		}
		opts := Options{Epsilon: epsGen.Draw(t, "eps")}
		r := settle(t, ns, ss, opts, Compute(ns, ss, opts))
		i := rapid.IntRange(0, len(ns)-1).Draw(t, "leave")
		rest := slices.Delete(slices.Clone(ns), i, i+1)
		after := Compute(rest, withHolders(ss, r), opts)
		left := len(r.Owned(ns[i].Name))
		shared := map[string]bool{}
		for _, s := range ss {
			shared[s.Name] = s.Replicas > len(rest)
		}
		var other []string
		for _, s := range moved(r, after) {
			if svc, _, _ := cut(s); owners(r)[s] == ns[i].Name || shared[svc] {
				continue
			}
			if e := explainSlot(t, rest, withHolders(ss, r), opts, s); e.Basis != BasisFilled {
				other = append(other, s)
			}
		}
		if len(other) > left {
			t.Fatalf("%s left with %d slots; %d others moved: %v", ns[i].Name, left, len(other), other)
		}
	})
}

func explainSlot(t *rapid.T, ns []Node, ss []Service, opts Options, slot string) *Explanation {
	svc, idx, _ := cut(slot)
	var i int
	fmt.Sscan(idx, &i)
	e, err := Explain(ns, ss, opts, svc, i)
	if err != nil {
		t.Fatalf("Explain(%s): %v", slot, err)
	}
	return e
}

// A filling node keeps a slot it brought back (its copy ran when it
// restarted) before any other holder, even a better-ranked filling one
// that started its copy meanwhile; without the flag, or for a copy it did
// not bring back, the better-ranked holder keeps the slot.
func TestHoldersFillingNodeKeepsWhatItBroughtBack(t *testing.T) {
	ns := nodes(5)
	ss := services(1, 1)
	e, err := Explain(ns, ss, Options{}, "svc-000", 0)
	if err != nil {
		t.Fatal(err)
	}
	best, back := e.Candidates[0].Node, e.Candidates[3].Node
	idx := func(name string) int {
		return slices.IndexFunc(ns, func(n Node) bool { return n.Name == name })
	}
	for _, tt := range []struct {
		name               string
		fillBack, fillBest bool
		adopted            []string
		want               string
	}{
		{"brought back, filling", true, true, []string{back}, back},
		{"brought back, not filling", false, true, []string{back}, best},
		{"not brought back", true, true, nil, best},
		{"both brought back", true, true, []string{back, best}, best},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := slices.Clone(ns)
			ns[idx(back)].Filling, ns[idx(best)].Filling = tt.fillBack, tt.fillBest
			ss := services(1, 1)
			ss[0].Holders = map[int][]string{0: {best, back}}
			ss[0].Adopted = map[int][]string{0: tt.adopted}
			r := Compute(ns, ss, Options{})
			if got, _ := r.Owner("svc-000", 0); got != tt.want {
				t.Errorf("owner %s, want %s", got, tt.want)
			}
			e, err := Explain(ns, ss, Options{}, "svc-000", 0)
			if err != nil {
				t.Fatal(err)
			}
			assertExplanationMatches(t, ns, ss, Options{}, e)
		})
	}
}
