package placement

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Tiers of placement. A slot that no node can take under a tier's rules is
// retried under the next tier, after every slot has been tried in the
// current one.
const (
	// tierStrict enforces the load bound, spread (perNode) and capacity.
	tierStrict = iota
	// tierOverBound drops the load bound.
	tierOverBound
	// tierShared also drops spread: replicas of a service may share nodes.
	tierShared
	numTiers
)

// tierAny scans without any dynamic check: the slot's first choice.
const tierAny = -1

// Pseudo-tiers passed to the trace (Explain) for the holder phases.
const (
	// tierKept: the slot stays on a node that holds it (keep).
	tierKept = -2
	// tierFill: a node filling up took the slot (fill).
	tierFill = -3
)

// slotInfo is the per-computation state of one slot. A slot's id is its
// position in state.slots: slots are numbered by service name, then index.
type slotInfo struct {
	hash  uint64
	svc   int32
	node  int32 // owner, or -1
	next  int32 // next slot on the same node, or -1
	moved bool  // passed over its first choice
	// filled says a filling node took the slot (fill); a pull may give
	// it back to the holder that let it go (readmit).
	filled bool
	// relaxed says the ranked placement put it over a bound or beside
	// another replica of its service (tierOverBound, tierShared).
	relaxed bool
}

// hitem is a slot in the queue with its best candidate node and score.
type hitem struct {
	score float64
	slot  int32
	node  int32
}

// queue is a binary max-heap of hitems ordered by score, then by slot id.
type queue []hitem

func (q queue) before(i, j int) bool {
	if q[i].score != q[j].score {
		return q[i].score > q[j].score
	}
	return q[i].slot < q[j].slot
}

func (q queue) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(q) {
			return
		}
		c := l
		if r := l + 1; r < len(q) && q.before(r, l) {
			c = r
		}
		if !q.before(c, i) {
			return
		}
		q[i], q[c] = q[c], q[i]
		i = c
	}
}

func (q queue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.before(i, p) {
			return
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (q queue) init() {
	for i := len(q)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

func (q *queue) push(it hitem) {
	*q = append(*q, it)
	q.up(len(*q) - 1)
}

func (q *queue) pop() hitem {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	*q = h[:last]
	q.down(0)
	return top
}

// state is one computation. It is created and used by a single call.
type state struct {
	nodes   []nodeInfo
	svcs    []svcInfo
	slots   []slotInfo
	nodeH   []uint64
	weight  []float64
	uniform bool // all schedulable nodes have the same weight

	sched       []int32 // schedulable node ids
	eps         float64 // normalized Options.Epsilon
	placeable   int     // slots of services with eligible nodes
	totalWeight float64 // Σ weights of schedulable nodes

	limit, load      []int32
	cpuUsed, memUsed []int64
	head             []int32 // first slot on each node, or -1

	q queue

	// Holder phases (keep, fill); see the package doc, "Holders". They
	// run only if some slot has holders: keep and fill act on held slots
	// alone, so reports without holders change nothing.
	// holders are, per slot id, the eligible nodes that hold the slot now,
	// by descending score (Service.Holders); nil without holders.
	holders [][]int32
	// brought are, per slot id, the filling holders that brought it back
	// (Service.Adopted); nil if none.
	brought [][]int32
	shed    map[int32][]int32 // node -> held slots it let go in keep, strongest first
	quota   []int32           // slots a filling node takes at most
	// top is each slot's first choice (-1: none) once fill ran (nil
	// otherwise), and fcLoad per node the slots it owns that rank it
	// first.
	top    []int32
	fcLoad []int32

	// trace, when set, is called when slot traceSlot is placed (node >= 0)
	// or given up (node -1); Explain uses it.
	traceSlot int32
	trace     func(tier int, node int32)
	// keepingHeld is set while keepRelaxed places a slot on its holder.
	keepingHeld bool
}

// Compute places every replica slot of services on nodes. It is a pure
// function: the result depends only on the contents of nodes, services and
// opts (not their order), and it does no I/O. Compute does not modify its
// arguments and is safe for concurrent use. See the package documentation
// for the algorithm.
func Compute(nodes []Node, services []Service, opts Options) *Result {
	_, st := pinRelaxed(nodes, services, opts)
	return st.result()
}

// maxPinRounds bounds the computations pinRelaxed makes.
const maxPinRounds = 4

// pinRelaxed computes the placement and, with holders, makes it one that
// does not change while it is carried out when a rule had to be relaxed.
// A slot that the ranked placement could place only over a bound or
// beside another replica of its service (spread forces it onto a full
// node, say) takes room from slots that ranked higher there; once its new
// owner holds it, keep places it before them, and they go elsewhere. So
// such a slot is placed first from the start: it is pinned as if its new
// owner held it, and the placement computed again (each round pins more;
// at most maxPinRounds). It returns the services with the pins as holders
// and the placed state.
func pinRelaxed(nodes []Node, services []Service, opts Options) ([]Service, *state) {
	for round := 1; ; round++ {
		st := newState(nodes, services, opts)
		st.place()
		if st.holders == nil || round == maxPinRounds {
			return services, st
		}
		var pins []Assignment
		for i := range st.svcs {
			sv := &st.svcs[i]
			for j := range sv.replicas {
				id := sv.firstSlot + int32(j)
				sl := &st.slots[id]
				if sl.relaxed && !slices.Contains(st.holdersOf(id), sl.node) {
					pins = append(pins, Assignment{Slot: Slot{Service: sv.name, Index: j}, Node: st.nodes[sl.node].name})
				}
			}
		}
		if len(pins) == 0 {
			return services, st
		}
		services = withPins(services, pins)
	}
}

// withPins returns a copy of services in which each pinned node is also a
// holder of its slot.
func withPins(services []Service, pins []Assignment) []Service {
	out := slices.Clone(services)
	for _, p := range pins {
		for i := range out {
			if out[i].Name != p.Service {
				continue
			}
			h := make(map[int][]string, len(out[i].Holders)+1)
			for k, v := range out[i].Holders {
				h[k] = v
			}
			h[p.Index] = append(slices.Clip(h[p.Index]), p.Node)
			out[i].Holders = h
		}
	}
	return out
}

func newState(nodes []Node, services []Service, opts Options) *state {
	st := &state{traceSlot: -1}

	// Nodes: normalized, sorted by name, duplicates resolved canonically.
	st.nodes = make([]nodeInfo, 0, len(nodes))
	for i := range nodes {
		st.nodes = append(st.nodes, normalizeNode(&nodes[i]))
	}
	slices.SortFunc(st.nodes, func(a, b nodeInfo) int { return compareNodes(&a, &b) })
	st.nodes = slices.CompactFunc(st.nodes, func(a, b nodeInfo) bool { return a.name == b.name })

	n := len(st.nodes)
	st.nodeH = make([]uint64, n)
	st.weight = make([]float64, n)
	st.limit = make([]int32, n)
	st.load = make([]int32, n)
	st.cpuUsed = make([]int64, n)
	st.memUsed = make([]int64, n)
	st.head = make([]int32, n)
	for i := range st.head {
		st.head[i] = -1
	}
	st.uniform = true
	for i := range st.nodes {
		nd := &st.nodes[i]
		st.nodeH[i] = hashString(nd.name)
		st.weight[i] = nd.weight
		if nd.schedulable {
			if len(st.sched) > 0 && nd.weight != st.weight[st.sched[0]] {
				st.uniform = false
			}
			st.sched = append(st.sched, int32(i))
			st.totalWeight += nd.weight
		}
	}

	// Services: normalized, sorted, deduplicated; static eligibility.
	st.svcs = make([]svcInfo, 0, len(services))
	for i := range services {
		st.svcs = append(st.svcs, normalizeService(&services[i]))
	}
	slices.SortFunc(st.svcs, func(a, b svcInfo) int { return compareServices(&a, &b) })
	st.svcs = slices.CompactFunc(st.svcs, func(a, b svcInfo) bool { return a.name == b.name })

	totalSlots, placeable := 0, 0
	for i := range st.svcs {
		sv := &st.svcs[i]
		sv.firstSlot = int32(totalSlots)
		totalSlots += sv.replicas
		if sv.replicas == 0 {
			continue
		}
		if len(sv.constraints) == 0 && len(sv.platforms) == 0 {
			sv.eligible = st.sched // shared, read-only
		} else {
			for _, id := range st.sched {
				if eligible(sv, &st.nodes[id]) {
					sv.eligible = append(sv.eligible, id)
				}
			}
		}
		if len(sv.eligible) == 0 {
			continue
		}
		placeable += sv.replicas
		sv.perNode = (sv.replicas + len(sv.eligible) - 1) / len(sv.eligible)
		for _, id := range sv.eligible {
			sv.weight += st.weight[id]
		}
		if sv.replicas >= denseCountMin {
			sv.count = make([]int32, n)
		} else {
			sv.held = make([]int32, 0, sv.replicas)
		}
	}

	st.slots = make([]slotInfo, totalSlots)
	for i := range st.svcs {
		sv := &st.svcs[i]
		for j := 0; j < sv.replicas; j++ {
			st.slots[int(sv.firstSlot)+j] = slotInfo{hash: slotHash(sv.hash, j), svc: int32(i), node: -1, next: -1}
		}
	}

	st.placeable = placeable
	st.eps = opts.Epsilon
	if !(st.eps > 0) {
		st.eps = DefaultEpsilon
	}
	st.resolveHolders()
	st.setLimits()
	return st
}

// resolveHolders turns the services' holder names into node ids, keeping
// the nodes that may hold the slot, sorted by descending score.
func (st *state) resolveHolders() {
	for i := range st.svcs {
		sv := &st.svcs[i]
		if len(sv.eligible) == 0 {
			continue
		}
		for _, h := range sv.holders {
			id := sv.firstSlot + int32(h.index)
			var ids []int32
			for _, name := range h.nodes {
				n, ok := slices.BinarySearchFunc(st.nodes, name, func(nd nodeInfo, name string) int {
					return cmp.Compare(nd.name, name)
				})
				if !ok {
					continue
				}
				if _, ok := slices.BinarySearch(sv.eligible, int32(n)); ok {
					ids = append(ids, int32(n))
				}
			}
			if len(ids) == 0 {
				continue
			}
			slices.SortFunc(ids, func(a, b int32) int {
				return cmp.Or(cmp.Compare(st.score(id, b), st.score(id, a)), cmp.Compare(a, b))
			})
			if st.holders == nil {
				st.holders = make([][]int32, len(st.slots))
			}
			st.holders[id] = ids
		}
		// Filling holders that brought the slot back keep it first.
		for _, a := range sv.adopted {
			id := sv.firstSlot + int32(a.index)
			for _, n := range st.holdersOf(id) {
				if st.nodes[n].filling && slices.Contains(a.nodes, st.nodes[n].name) {
					if st.brought == nil {
						st.brought = make([][]int32, len(st.slots))
					}
					st.brought[id] = append(st.brought[id], n)
				}
			}
		}
	}
}

// broughtBack reports whether filling node n brought slot id back (see
// Service.Adopted).
func (st *state) broughtBack(id, n int32) bool {
	return st.brought != nil && slices.Contains(st.brought[id], n)
}

// setLimits sets every schedulable node's load bound.
//
// A node's share is f = (1+ε) x slots x w / Σw. Its bound is f rounded
// down or up by a per-node offset θ in [0, 1) fixed by the node's name:
// floor(f + θ), so up with probability frac(f). Rounding every f up (the
// usual bound of consistent hashing with bounded loads) makes the bounds
// of all nodes step at once when f crosses an integer as nodes join or
// leave, moving a slot off or onto every full node in one event; with the
// offsets, about f nodes' bounds step by one per join or leave instead
// (see the package doc, "Load bounds"). A bound is never above ceil(f) or
// the number of slots, and never below the fair share's ceiling, so the
// bounds always hold every slot.
//
// With holders, a filling node's bound is its fair share's ceiling, or
// the number of slots it holds if that is more (up to the bound): it
// takes no more than its share from others, keeps what it brought back,
// and the slots it is given all fit under the bound whichever of them it
// holds yet (see the package doc, "Holders").
func (st *state) setLimits() {
	var held []int32
	for _, id := range st.sched {
		st.limit[id] = loadLimit(st.placeable, st.eps, st.weight[id], st.totalWeight, st.nodeH[id])
		if !st.nodes[id].filling || st.holders == nil {
			continue
		}
		if held == nil {
			held = make([]int32, len(st.nodes))
			for _, hs := range st.holders {
				for _, n := range hs {
					held[n]++
				}
			}
		}
		fair := fairCeil(st.placeable, st.weight[id], st.totalWeight)
		st.limit[id] = min(st.limit[id], max(fair, held[id]))
	}
}

// loadLimit is one node's bound, see setLimits.
func loadLimit(slots int, eps, w, totalWeight float64, nodeHash uint64) int32 {
	f := float64(float64((1+eps)*float64(slots)) * w / totalWeight)
	if !(f < float64(slots)) { // also true for NaN and +Inf
		return int32(max(slots, 1))
	}
	theta := float64(float64(mix(nodeHash^limitSalt)>>11) * (1.0 / (1 << 53)))
	fair := math.Ceil(float64(float64(slots)*w/totalWeight) - 1e-9)
	return int32(max(int(math.Floor(f+theta)), int(fair), 1))
}

// limitSalt separates the per-node rounding offsets from slot scores.
const limitSalt = 0x6c696d6974 // "limit"

// place runs the tiers over every slot whose service has eligible nodes.
func (st *state) place() {
	todo := make([]int32, 0, len(st.slots))
	for id := range st.slots {
		if len(st.svcs[st.slots[id].svc].eligible) > 0 {
			todo = append(todo, int32(id))
		}
	}
	if st.holders != nil {
		todo = st.keep(todo)
		todo = st.fill(todo)
	}
	st.q = make(queue, 0, len(todo))
	for tier := tierStrict; tier < numTiers && len(todo) > 0; tier++ {
		if tier > tierStrict && st.holders != nil {
			todo = st.keepRelaxed(tier, todo)
		}
		todo = st.run(tier, todo)
		if tier == tierStrict && st.holders == nil {
			// With holders, an exchange would move a slot its holder
			// may keep, and a computation while the exchange is carried
			// out would undo it: the slot is placed over a bound instead.
			todo = st.augment(todo)
		}
	}
	if st.trace != nil && slices.Contains(todo, st.traceSlot) {
		st.trace(numTiers-1, -1)
	}
}

// run places the slots in ids under the rules of tier, greedily in
// descending order of the score of each slot's best remaining candidate,
// and returns the slots it could not place.
func (st *state) run(tier int, ids []int32) (deferred []int32) {
	first := tier
	if tier == tierStrict {
		first = tierAny // rank 0 candidates; checked when popped
	}
	q := st.q[:0]
	for _, id := range ids {
		if n, sc := st.best(id, first, false, 0, 0); n >= 0 {
			q = append(q, hitem{sc, id, n})
		} else {
			deferred = append(deferred, id)
		}
	}
	q.init()
	for len(q) > 0 {
		it := q.pop()
		sl := &st.slots[it.slot]
		sv := &st.svcs[sl.svc]
		if st.fits(sv, it.node, tier) {
			st.assign(it.slot, it.node, tier)
			continue
		}
		sl.moved = true
		n, sc := st.best(it.slot, tier, true, it.score, it.node)
		if n < 0 {
			deferred = append(deferred, it.slot)
			continue
		}
		q.push(hitem{sc, it.slot, n})
	}
	st.q = q
	return deferred
}

// fits reports whether node n can take one more slot of sv under tier.
func (st *state) fits(sv *svcInfo, n int32, tier int) bool {
	if tier == tierAny {
		return true
	}
	if tier == tierStrict && st.load[n] >= st.limit[n] {
		return false
	}
	// A filling node takes the slots others let go up to its quota,
	// not counting the slots it holds that rank it first: those are
	// pulls (fill), which come after and fill the rest of the quota. So
	// a computation while the node starts its slots gives the same.
	if tier == tierFill && (st.load[n]-st.fcLoad[n] >= st.quota[n] || st.load[n] >= st.limit[n]) {
		return false
	}
	if tier <= tierOverBound && st.held(sv, n) >= st.perNode(sv, n) {
		return false
	}
	nd := &st.nodes[n]
	return room(st.cpuUsed[n], sv.cpu, nd.cpuCap) && room(st.memUsed[n], sv.mem, nd.memCap)
}

// room reports whether req fits in capacity (0 = not limited) of which used
// is taken, without overflowing: used <= capacity always holds.
func room(used, req, capacity int64) bool { return capacity == 0 || req <= capacity-used }

// satAdd adds non-negative a and b, saturating at math.MaxInt64.
func satAdd(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// held returns how many slots of sv node n owns.
func (st *state) held(sv *svcInfo, n int32) int {
	if sv.count != nil {
		return int(sv.count[n])
	}
	c := 0
	for _, h := range sv.held {
		if h == n {
			c++
		}
	}
	return c
}

// perNode returns how many replicas of sv node n may hold before spread
// is relaxed: 1 while sv has at least as many eligible nodes as replicas,
// otherwise the node's weighted share ceil(replicas x w / Σw eligible).
func (st *state) perNode(sv *svcInfo, n int32) int {
	if sv.perNode <= 1 || st.uniform {
		return sv.perNode
	}
	share := float64(float64(sv.replicas)*st.weight[n]) / sv.weight
	return max(1, int(math.Ceil(share-1e-9)))
}

func (st *state) assign(id, n int32, tier int) {
	sl := &st.slots[id]
	sv := &st.svcs[sl.svc]
	if st.trace != nil && id == st.traceSlot {
		st.trace(tier, n) // before the state changes
	}
	sl.node = n
	sl.filled = tier == tierFill
	sl.relaxed = tier == tierOverBound || tier == tierShared
	if tier == tierFill {
		sl.moved = true // rank computed by result: it may be any filling node
	}
	sl.next = st.head[n]
	st.head[n] = id
	st.load[n]++
	if st.top != nil && st.top[id] == n {
		st.fcLoad[n]++
	}
	st.cpuUsed[n] = satAdd(st.cpuUsed[n], sv.cpu)
	st.memUsed[n] = satAdd(st.memUsed[n], sv.mem)
	if sv.count != nil {
		sv.count[n]++
	} else {
		sv.held = append(sv.held, n)
	}
}

// unassign undoes assign.
func (st *state) unassign(id int32) {
	sl := &st.slots[id]
	sv := &st.svcs[sl.svc]
	n := sl.node
	for p := &st.head[n]; *p >= 0; p = &st.slots[*p].next {
		if *p == id {
			*p = sl.next
			break
		}
	}
	sl.node, sl.next = -1, -1
	st.load[n]--
	if st.top != nil && st.top[id] == n {
		st.fcLoad[n]--
	}
	st.cpuUsed[n] -= sv.cpu
	st.memUsed[n] -= sv.mem
	if sv.count != nil {
		sv.count[n]--
	} else if i := slices.Index(sv.held, n); i >= 0 {
		sv.held = slices.Delete(sv.held, i, i+1)
	}
}

// augment tries to place each slot that the strict tier could not by one
// exchange that keeps every rule: the slot takes a node at its bound whose
// weakest-scoring slot of another service moves to a node with room. Greedy
// placement misses such exchanges when spread leaves a service only full
// nodes (three nodes, a three-replica service and two single ones that
// both took the same node). Nodes are tried in the slot's ranking order,
// their slots by ascending score, so the result is canonical. It returns
// the slots it could not place.
func (st *state) augment(ids []int32) (deferred []int32) {
	var nodes, holders []int32
	for _, id := range ids {
		sv := &st.svcs[st.slots[id].svc]
		nodes = st.ranking(id, nodes[:0])
		placed := false
		for _, y := range nodes {
			if st.held(sv, y) >= st.perNode(sv, y) {
				continue
			}
			// Earlier exchanges may have made room for the slot.
			if st.fits(sv, y, tierStrict) {
				st.assign(id, y, tierStrict)
				placed = true
				break
			}
			holders = holders[:0]
			for h := st.head[y]; h >= 0; h = st.slots[h].next {
				if st.slots[h].svc != st.slots[id].svc {
					holders = append(holders, h)
				}
			}
			slices.SortFunc(holders, func(a, b int32) int {
				return cmp.Or(cmp.Compare(st.score(a, y), st.score(b, y)), cmp.Compare(a, b))
			})
			for _, t := range holders {
				tsv := &st.svcs[st.slots[t].svc]
				nd := &st.nodes[y]
				// Used stays exact on a node with a capacity (it never
				// exceeds it), so the subtraction is safe there.
				if !room(st.cpuUsed[y]-tsv.cpu, sv.cpu, nd.cpuCap) || !room(st.memUsed[y]-tsv.mem, sv.mem, nd.memCap) {
					continue
				}
				z, _ := st.best(t, tierStrict, false, 0, 0)
				if z < 0 || z == y {
					continue
				}
				st.unassign(t)
				st.assign(id, y, tierStrict)
				st.slots[id].moved = true
				st.slots[t].moved = true
				st.assign(t, z, tierStrict)
				placed = true
				break
			}
			if placed {
				break
			}
		}
		if !placed {
			deferred = append(deferred, id)
		}
	}
	return deferred
}

// ranking appends the eligible nodes of slot id to buf, best first.
func (st *state) ranking(id int32, buf []int32) []int32 {
	buf = append(buf, st.svcs[st.slots[id].svc].eligible...)
	slices.SortFunc(buf, func(a, b int32) int {
		return cmp.Or(cmp.Compare(st.score(id, b), st.score(id, a)), cmp.Compare(a, b))
	})
	return buf
}

// best returns the slot's highest-scoring eligible node that fits under
// tier, and its score; with thr set, only among nodes ranked strictly below
// (thrScore, thrNode). It returns -1 if there is none. Ties in score go to
// the lower node id (name order).
//
// Dynamic checks run only for a node that would beat the best so far, so a
// scan costs one hash per eligible node and few checks.
func (st *state) best(id int32, tier int, thr bool, thrScore float64, thrNode int32) (int32, float64) {
	sl := &st.slots[id]
	sv := &st.svcs[sl.svc]
	bestNode := int32(-1)
	if st.uniform {
		var bestKey uint64
		thrKey := uint64(thrScore)
		for _, n := range sv.eligible {
			k := uniformKey(pairHash(st.nodeH[n], sl.hash))
			if thr && (k > thrKey || (k == thrKey && n <= thrNode)) {
				continue
			}
			if bestNode >= 0 && k <= bestKey {
				continue
			}
			if !st.fits(sv, n, tier) {
				continue
			}
			bestNode, bestKey = n, k
		}
		return bestNode, float64(bestKey)
	}
	var bestScore float64
	for _, n := range sv.eligible {
		u, omu := unitInterval(pairHash(st.nodeH[n], sl.hash))
		w := st.weight[n]
		// -ln(u) >= 1-u, so w/(1-u) bounds the score from above; the
		// slack covers rounding. Most nodes are skipped without a log.
		if bestNode >= 0 && w/omu*(1+1e-9) < bestScore {
			continue
		}
		sc := weightedScore(w, u)
		if thr && (sc > thrScore || (sc == thrScore && n <= thrNode)) {
			continue
		}
		if bestNode >= 0 && sc <= bestScore {
			continue
		}
		if !st.fits(sv, n, tier) {
			continue
		}
		bestNode, bestScore = n, sc
	}
	return bestNode, bestScore
}

// score returns the scan key of node n for slot id, as best compares it.
func (st *state) score(id, n int32) float64 {
	h := pairHash(st.nodeH[n], st.slots[id].hash)
	if st.uniform {
		return float64(uniformKey(h))
	}
	u, _ := unitInterval(h)
	return weightedScore(st.weight[n], u)
}

// displayScore is the weighted rendezvous score w/-ln(u) of node n for slot
// id, comparable across modes (in uniform mode it orders nodes like score).
func (st *state) displayScore(id, n int32) float64 {
	u, _ := unitInterval(pairHash(st.nodeH[n], st.slots[id].hash))
	return weightedScore(st.weight[n], u)
}

// rank returns the number of eligible nodes of the slot's service ranked
// above node n.
func (st *state) rank(id, n int32) int {
	if st.top != nil && st.top[id] == n {
		return 0 // fill found every slot's first choice
	}
	sv := &st.svcs[st.slots[id].svc]
	r := 0
	if st.uniform { // the scan of score without its conversions
		h := st.slots[id].hash
		k := uniformKey(pairHash(st.nodeH[n], h))
		for _, m := range sv.eligible {
			if km := uniformKey(pairHash(st.nodeH[m], h)); km > k || (km == k && m < n) {
				r++
			}
		}
		return r
	}
	sc := st.score(id, n)
	for _, m := range sv.eligible {
		if s := st.score(id, m); s > sc || (s == sc && m < n) {
			r++
		}
	}
	return r
}

func (st *state) result() *Result {
	r := &Result{}
	unplaced := 0
	for id := range st.slots {
		if st.slots[id].node < 0 {
			unplaced++
		}
	}
	r.Assignments = make([]Assignment, 0, len(st.slots)-unplaced)
	if unplaced > 0 {
		r.Unplaceable = make([]Unplaced, 0, unplaced)
	}
	for i := range st.svcs {
		sv := &st.svcs[i]
		for j := 0; j < sv.replicas; j++ {
			id := sv.firstSlot + int32(j)
			sl := &st.slots[id]
			slot := Slot{Service: sv.name, Index: j}
			if sl.node < 0 {
				r.Unplaceable = append(r.Unplaceable, Unplaced{slot, st.unplacedReason(sv)})
				continue
			}
			a := Assignment{Slot: slot, Node: st.nodes[sl.node].name}
			if sl.moved {
				a.Rank = st.rank(id, sl.node)
			}
			r.Assignments = append(r.Assignments, a)
		}
	}
	for i := range st.nodes {
		if !st.nodes[i].schedulable {
			continue
		}
		r.Loads = append(r.Loads, Load{
			Node:   st.nodes[i].name,
			Slots:  int(st.load[i]),
			Limit:  int(st.limit[i]),
			CPUs:   float64(st.cpuUsed[i]) / 1000,
			Memory: st.memUsed[i],
		})
	}
	return r
}

// unplacedReason explains why a slot of sv was not placed.
func (st *state) unplacedReason(sv *svcInfo) string {
	if len(sv.eligible) == 0 {
		return st.noEligibleReason(sv)
	}
	req := requestString(sv)
	for _, n := range sv.eligible {
		nd := &st.nodes[n]
		if room(0, sv.cpu, nd.cpuCap) && room(0, sv.mem, nd.memCap) {
			return "insufficient capacity: each replica requests " + req +
				", no eligible node (of " + strconv.Itoa(len(sv.eligible)) + ") has that much left"
		}
	}
	return "insufficient capacity: each replica requests " + req +
		", more than any eligible node (of " + strconv.Itoa(len(sv.eligible)) + ") has in total"
}

// noEligibleReason groups the nodes by the check that excluded them.
func (st *state) noEligibleReason(sv *svcInfo) string {
	if len(st.nodes) == 0 {
		return "no eligible node: no nodes"
	}
	type group struct {
		category string
		nodes    int
	}
	var groups []group
	for i := range st.nodes {
		c, _ := staticCheck(sv, &st.nodes[i])
		if j := slices.IndexFunc(groups, func(g group) bool { return g.category == c }); j >= 0 {
			groups[j].nodes++
		} else {
			groups = append(groups, group{c, 1})
		}
	}
	slices.SortFunc(groups, func(a, b group) int {
		if a.nodes != b.nodes {
			return b.nodes - a.nodes
		}
		return strings.Compare(a.category, b.category)
	})
	const maxGroups = 4
	var b strings.Builder
	b.WriteString("no eligible node: ")
	for i, g := range groups {
		if i == maxGroups {
			b.WriteString(", ... (" + strconv.Itoa(len(groups)-maxGroups) + " more)")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(g.category + " (" + plural(g.nodes, "node") + ")")
	}
	return b.String()
}

func requestString(sv *svcInfo) string {
	return "cpus=" + formatCPU(sv.cpu) + " memory=" + formatBytes(sv.mem)
}

func plural(n int, noun string) string {
	s := strconv.Itoa(n) + " " + noun
	if n != 1 {
		s += "s"
	}
	return s
}

// holdersOf returns the holders of slot id (nil if none).
func (st *state) holdersOf(id int32) []int32 {
	if st.holders == nil {
		return nil
	}
	return st.holders[id]
}
