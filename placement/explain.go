package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Explanation says how one slot was placed: every node's score and rank for
// the slot, and why each node ranked above the owner was passed over.
type Explanation struct {
	// Slot is the explained slot.
	Slot Slot
	// Node is the owner, or "" if the slot is unplaceable.
	Node string
	// Rank is the owner's rank among the eligible nodes (0 = first choice),
	// or -1 if the slot is unplaceable: test Rank, not Node, since a node
	// name may be empty.
	Rank int
	// Reason is why the slot is unplaceable ("" if it is placed); the same
	// text as in Result.Unplaceable.
	Reason string
	// Relaxed is "" when the owner was chosen under every rule, otherwise
	// which rule was dropped because no eligible node could take the slot
	// under it: "load bound", or "load bound and spread" (replicas share a
	// node).
	Relaxed string
	// Holders are the eligible nodes the caller said hold the slot
	// (Service.Holders), by rank.
	Holders []string
	// Basis says how the owner was chosen: BasisRanked, BasisHeld or
	// BasisFilled.
	Basis string
	// Candidates holds every node: the eligible ones by rank, then the
	// ineligible ones by descending score.
	Candidates []Candidate
}

// Values of Explanation.Basis.
const (
	// BasisRanked: the best-ranked node that could take the slot under
	// the rules (Relaxed says which were dropped).
	BasisRanked = "ranked"
	// BasisHeld: the slot stays on a node that holds it.
	BasisHeld = "held"
	// BasisFilled: a filling node (it joined, or came back) took it: the
	// slot ranks that node first, or its holder had to let it go.
	BasisFilled = "filled"
)

// Candidate is one node as seen by one slot.
type Candidate struct {
	// Node is the node's name.
	Node string
	// Score is the weighted rendezvous score w / -ln(u) of the node for
	// this slot; higher is preferred.
	Score float64
	// Rank is the position among eligible nodes by score (0 = first
	// choice), or -1 for an ineligible node.
	Rank int
	// Eligible says the node passes the static checks (schedulable,
	// constraints, platform).
	Eligible bool
	// Chosen marks the owner.
	Chosen bool
	// Skipped says why the node was passed over: the failed static check
	// for an ineligible node ("label zone=eu != us", "not schedulable:
	// runtime not ready"), or for an eligible node ranked above the owner
	// the rule it failed when the slot was placed ("at load bound (13/13)",
	// "already holds 1 replica of web", "capacity: cpus 3.5+1 > 4"), or
	// that the slot stayed on its holder. Empty for the owner and for
	// nodes ranked below it.
	Skipped string
	// Slots and Limit are the node's load and load bound when the slot was
	// placed (Limit is 0 for a node that is not schedulable).
	Slots, Limit int
}

// Explain computes the same placement as Compute and returns how slot
// service/index was placed. It returns an error wrapping ErrUnknownService
// or ErrSlotOutOfRange if the slot does not exist. Explain is pure and safe
// for concurrent use; it costs one Compute and one more placement.
func Explain(nodes []Node, services []Service, opts Options, service string, index int) (*Explanation, error) {
	held := newState(nodes, services, opts) // the holders the caller gave
	services, _ = pinRelaxed(nodes, services, opts)
	st := newState(nodes, services, opts)
	si, ok := slices.BinarySearchFunc(st.svcs, service, func(s svcInfo, name string) int {
		return cmp.Compare(s.name, name)
	})
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownService, service)
	}
	sv := &st.svcs[si]
	if index < 0 || index >= sv.replicas {
		return nil, fmt.Errorf("%w: %s/%d (replicas %d)", ErrSlotOutOfRange, service, index, sv.replicas)
	}
	id := sv.firstSlot + int32(index)
	e := &Explanation{Slot: Slot{Service: service, Index: index}, Rank: -1}
	for _, n := range held.holdersOf(id) {
		e.Holders = append(e.Holders, held.nodes[n].name)
	}
	if len(sv.eligible) == 0 {
		st.snapshot(e, id, numTiers-1, -1)
		e.Reason = st.noEligibleReason(sv)
		return e, nil
	}
	st.traceSlot = id
	st.trace = func(tier int, node int32) { st.snapshot(e, id, tier, node) }
	st.place()
	if e.Rank < 0 {
		e.Reason = st.unplacedReason(sv)
	}
	return e, nil
}

// snapshot fills e from the state at the moment slot id is placed on node
// (or given up, node -1) under tier.
func (st *state) snapshot(e *Explanation, id int32, tier int, node int32) {
	sv := &st.svcs[st.slots[id].svc]
	held := tier == tierKept || st.keepingHeld
	e.Node, e.Rank, e.Relaxed, e.Basis = "", -1, "", BasisRanked
	switch {
	case node < 0:
		e.Basis = ""
	case held:
		e.Basis = BasisHeld
	case tier == tierFill:
		e.Basis = BasisFilled
	}
	type cand struct {
		Candidate
		id  int32
		key float64
	}
	cands := make([]cand, len(st.nodes))
	for i := range st.nodes {
		n := int32(i)
		_, detail := staticCheck(sv, &st.nodes[i])
		cands[i] = cand{
			Candidate: Candidate{
				Node:     st.nodes[i].name,
				Score:    st.displayScore(id, n),
				Rank:     -1,
				Eligible: detail == "",
				Skipped:  detail,
				Slots:    int(st.load[i]),
				Limit:    int(st.limit[i]),
			},
			id:  n,
			key: st.score(id, n),
		}
		if !st.nodes[i].schedulable {
			cands[i].Limit = 0
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.Eligible != b.Eligible {
			return compareBool(b.Eligible, a.Eligible)
		}
		if a.Eligible && a.key != b.key {
			return cmp.Compare(b.key, a.key)
		}
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.id, b.id))
	})
	above := true
	for i := range cands {
		c := &cands[i]
		if !c.Eligible {
			continue
		}
		c.Rank = i
		switch {
		case c.id == node:
			c.Chosen = true
			above = false
			e.Node, e.Rank = c.Node, i
		case above && held:
			c.Skipped = "not a holder: the slot stays on its holder"
		case above:
			c.Skipped = st.skipReason(sv, c.id, tier)
		}
	}
	switch {
	case node < 0 || tier == tierStrict || tier == tierKept || tier == tierFill:
	case tier == tierOverBound:
		e.Relaxed = "load bound"
	default:
		e.Relaxed = "load bound and spread"
	}
	e.Candidates = make([]Candidate, len(cands))
	for i := range cands {
		e.Candidates[i] = cands[i].Candidate
	}
}

// skipReason says which rule of tier node n fails for one more slot of sv.
func (st *state) skipReason(sv *svcInfo, n int32, tier int) string {
	if tier == tierFill && st.quota[n] == 0 {
		return "not filling up (only a node that has just joined or come back takes slots from others)"
	}
	if tier == tierFill && st.load[n]-st.fcLoad[n] >= st.quota[n] { // as fits counts it
		return "filled up (" + strconv.Itoa(int(st.load[n]-st.fcLoad[n])) + "/" + strconv.Itoa(int(st.quota[n])) +
			", not counting the slots here that rank it first)"
	}
	if (tier == tierStrict || tier == tierFill) && st.load[n] >= st.limit[n] {
		return "at load bound (" + strconv.Itoa(int(st.load[n])) + "/" + strconv.Itoa(int(st.limit[n])) + ")"
	}
	if h, most := st.held(sv, n), st.perNode(sv, n); tier <= tierOverBound && h >= most {
		s := "already holds " + plural(h, "replica") + " of " + sv.name
		if most > 1 {
			s += " (at most " + strconv.Itoa(most) + " here)"
		}
		return s
	}
	nd := &st.nodes[n]
	if !room(st.cpuUsed[n], sv.cpu, nd.cpuCap) {
		return "capacity: cpus " + formatCPU(st.cpuUsed[n]) + "+" + formatCPU(sv.cpu) + " > " + formatCPU(nd.cpuCap)
	}
	if !room(st.memUsed[n], sv.mem, nd.memCap) {
		return "capacity: memory " + formatBytes(st.memUsed[n]) + "+" + formatBytes(sv.mem) + " > " + formatBytes(nd.memCap)
	}
	return "" // not reached: every node ranked above the owner failed a rule
}

// basisNote is the part of the first line of String that says the basis.
func basisNote(basis string) string {
	switch basis {
	case BasisHeld:
		return "; kept on its holder"
	case BasisFilled:
		return "; taken by a node filling up"
	}
	return ""
}

// String formats the explanation as a table, one line per node, for
// `shoal placement SERVICE --slot I --explain`.
func (e *Explanation) String() string {
	var b strings.Builder
	switch {
	case e.Rank < 0:
		fmt.Fprintf(&b, "%s: unplaceable: %s\n", e.Slot, e.Reason)
	case e.Relaxed != "":
		fmt.Fprintf(&b, "%s -> %s (rank %d; relaxed: %s%s)\n", e.Slot, e.Node, e.Rank, e.Relaxed, basisNote(e.Basis))
	default:
		fmt.Fprintf(&b, "%s -> %s (rank %d%s)\n", e.Slot, e.Node, e.Rank, basisNote(e.Basis))
	}
	if len(e.Holders) > 0 {
		fmt.Fprintf(&b, "held by: %s\n", strings.Join(e.Holders, ", "))
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RANK\tNODE\tSCORE\tSLOTS\tSTATUS")
	for _, c := range e.Candidates {
		rank := "-"
		if c.Rank >= 0 {
			rank = strconv.Itoa(c.Rank)
		}
		slots := "-"
		if c.Limit > 0 {
			slots = strconv.Itoa(c.Slots) + "/" + strconv.Itoa(c.Limit)
		}
		status := ""
		switch {
		case c.Chosen:
			status = "chosen"
		case !c.Eligible:
			status = "ineligible: " + c.Skipped
		case c.Skipped != "":
			status = "skipped: " + c.Skipped
		}
		fmt.Fprintf(tw, "%s\t%s\t%.4g\t%s\t%s\n", rank, c.Node, c.Score, slots, status)
	}
	tw.Flush()
	// The padding before an empty status leaves trailing spaces.
	lines := strings.Split(b.String(), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n")
}
