package placement

import (
	"cmp"
	"math"
	"slices"
)

// The holder phases run before the ranked placement when the caller says
// where slots are now (Service.Holders, Node.Reported). See the package
// doc, "Holders".

// keep places each held slot on its best holder that fits under every rule
// (load bound, spread, capacity). Pairs (slot, holder) are taken with those
// of filling holders that brought the slot back first (Service.Adopted),
// then in descending order of score, so a node over its bound keeps the
// slots that rank it highest and lets the weakest go. It records the slots
// each node let go (shed) and returns the slots of todo it did not place.
func (st *state) keep(todo []int32) []int32 {
	type pair struct {
		score      float64
		slot, node int32
	}
	var pairs []pair
	for _, id := range todo {
		for _, n := range st.holdersOf(id) {
			pairs = append(pairs, pair{st.score(id, n), id, n})
		}
	}
	st.shed = make(map[int32][]int32)
	if len(pairs) == 0 {
		return todo
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		return cmp.Or(compareBool(st.broughtBack(b.slot, b.node), st.broughtBack(a.slot, a.node)),
			cmp.Compare(b.score, a.score), cmp.Compare(a.slot, b.slot), cmp.Compare(a.node, b.node))
	})
	for _, p := range pairs {
		sl := &st.slots[p.slot]
		if sl.node >= 0 {
			continue
		}
		if st.fits(&st.svcs[sl.svc], p.node, tierStrict) {
			st.assign(p.slot, p.node, tierKept)
			sl.moved = true // rank computed by result: a holder need not be first
			continue
		}
		st.shed[p.node] = append(st.shed[p.node], p.slot)
	}
	return st.unplaced(todo)
}

// fill lets the filling nodes (Node.Filling: joined, or came back) take
// slots up to their quota, the fair share's ceiling (their bound, see
// setLimits). That a node fills is part of the input, not inferred from
// what it holds: the result must not change while the node starts the
// slots it is given one by one (an earlier rule, "a node that holds no
// slot fills", stopped filling at the first one; BenchmarkHeldTransitions).
//
//  1. the slots that a holder over its bound let go in keep, each to its
//     best-ranked filling node with room (slots held by no one are left
//     to the ranked placement);
//  2. then the slots that rank a filling node first, taken from their
//     holders, in descending order of score. A holder over its bound that
//     loses a slot this way gets back the strongest slot it let go
//     (readmit), so that it keeps exactly its strongest slots at its
//     bound: the result is then also what keep computes while the
//     hand-off runs, with both nodes holding the slot.
//
// Step 1 comes first because those slots move anyway: on a join, the
// slots that nodes over their new bound let go fill the new node before
// it takes others, so the join moves about one fair share in all.
func (st *state) fill(todo []int32) []int32 {
	st.quota = make([]int32, len(st.nodes))
	type pull struct {
		score      float64
		slot, node int32
	}
	var (
		top   []int32 // each slot's first choice, computed once
		tops  []float64
		pulls []pull
	)
	filling := false
	for _, n := range st.sched {
		if st.nodes[n].filling && st.load[n] < st.limit[n] {
			st.quota[n] = st.limit[n]
			filling = true
		}
	}
	if !filling {
		return todo
	}
	top = make([]int32, len(st.slots))
	tops = make([]float64, len(st.slots))
	for id := range st.slots {
		top[id] = -1
		if len(st.svcs[st.slots[id].svc].eligible) > 0 {
			top[id], tops[id] = st.best(int32(id), tierAny, false, 0, 0)
		}
	}
	st.top, st.fcLoad = top, make([]int32, len(st.nodes)) // top also serves result's ranks
	for id := range st.slots {
		if n := st.slots[id].node; n >= 0 && top[id] == n {
			st.fcLoad[n]++
		}
	}
	// A slot given back by readmit may be one to pull: go on until nothing
	// changes, so that the result is already what the next computation,
	// with the hand-offs done, finds. Each pull puts a slot on its first
	// choice, where it stays, so this ends.
	pulled := false
	for first := true; ; first = false {
		todo = st.unplaced(todo) // readmit may have placed some
		if !first && !pulled {
			return todo
		}
		pulled = false
		// Only slots that are held somewhere: the others (new, or whose
		// holders left) are placed by ranking, which does not depend on
		// which nodes fill, so that every node computes the same for them
		// before anyone holds them.
		var displaced, free []int32
		for _, id := range todo {
			if len(st.holdersOf(id)) > 0 {
				displaced = append(displaced, id)
			} else {
				free = append(free, id)
			}
		}
		if len(displaced) > 0 {
			st.q = make(queue, 0, len(displaced))
			todo = append(free, st.run(tierFill, displaced)...)
		}
		pulls = pulls[:0]
		for id := range st.slots {
			sl := &st.slots[id]
			t := top[id]
			if sl.node < 0 || t < 0 || t == sl.node || st.quota[t] == 0 || st.broughtBack(int32(id), sl.node) {
				continue // a filling node keeps what it brought back
			}
			pulls = append(pulls, pull{tops[id], int32(id), t})
		}
		slices.SortFunc(pulls, func(a, b pull) int {
			return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.slot, b.slot))
		})
		for _, p := range pulls {
			sl := &st.slots[p.slot]
			sv := &st.svcs[sl.svc]
			if !st.fitsPull(sv, p.node, p.score) {
				continue
			}
			from, filled, moved := sl.node, sl.filled, sl.moved
			st.unassign(p.slot)
			st.assign(p.slot, p.node, tierFill)
			sl.moved = true
			// The holder may take back a slot it let go, possibly from
			// this node: the pull must leave the node within its bound
			// once that is done.
			back, backFrom, idx := st.readmit(from, top)
			if st.load[p.node] > st.limit[p.node] {
				st.undoReadmit(from, back, backFrom, idx)
				st.unassign(p.slot)
				st.assign(p.slot, from, tierKept)
				sl.filled, sl.moved = filled, moved
				continue
			}
			pulled = true
		}
	}
}

// fitsPull reports whether filling node n can pull a slot of sv that
// ranks it first with score. Pulls are taken in descending order of score,
// and of the slots n holds that rank it first only those that score
// higher count against the quota: the others are later pulls that n
// started already, so a computation while n starts its slots one by one
// pulls the same ones.
func (st *state) fitsPull(sv *svcInfo, n int32, score float64) bool {
	load := st.load[n] - st.fcLoad[n]
	for id := st.head[n]; id >= 0; id = st.slots[id].next {
		if st.top[id] == n && st.score(id, n) > score {
			load++
		}
	}
	if load >= st.quota[n] {
		return false
	}
	// Spread and capacity as in the strict tier.
	if st.held(sv, n) >= st.perNode(sv, n) {
		return false
	}
	nd := &st.nodes[n]
	return room(st.cpuUsed[n], sv.cpu, nd.cpuCap) && room(st.memUsed[n], sv.mem, nd.memCap)
}

// readmit gives node n, which a pull just left with room, back the
// strongest slot it let go in keep that fits again and that no other
// holder kept, taking it from the filling node that got it (unless that
// node is the slot's first choice). Without this, a node over its bound
// that loses a slot to a pull would end below its bound, and the next
// computation, while the hand-offs run and n still holds the slot it let
// go, would keep that slot on n: a second move.
//
// It returns the slot it gave back (-1 if none), the node it took it from
// (-1 if none) and its index in n's shed list, so that undoReadmit can
// reverse it.
func (st *state) readmit(n int32, top []int32) (slot, from int32, idx int) {
	for i, id := range st.shed[n] {
		sl := &st.slots[id]
		if sl.node == n || (sl.node >= 0 && (!sl.filled || sl.node == top[id])) {
			continue // back already, kept by another holder, or on its first choice
		}
		prev := sl.node
		if prev >= 0 {
			st.unassign(id)
		}
		if !st.fits(&st.svcs[sl.svc], n, tierStrict) {
			if prev >= 0 {
				st.assign(id, prev, tierFill)
			}
			continue
		}
		st.assign(id, n, tierKept)
		st.shed[n] = slices.Delete(st.shed[n], i, i+1)
		return id, prev, i
	}
	return -1, -1, -1
}

// undoReadmit reverses readmit(n) that returned slot, from and idx.
func (st *state) undoReadmit(n, slot, from int32, idx int) {
	if slot < 0 {
		return
	}
	st.unassign(slot)
	if from >= 0 {
		st.assign(slot, from, tierFill)
	}
	st.shed[n] = slices.Insert(st.shed[n], idx, slot)
}

// keepRelaxed places each slot of todo that has holders on its best holder
// that fits under tier, before the ranked placement of that tier: a slot
// placed over a bound stays where it is.
func (st *state) keepRelaxed(tier int, todo []int32) []int32 {
	placed := false
	for _, id := range todo {
		sl := &st.slots[id]
		for _, n := range st.holdersOf(id) {
			if st.fits(&st.svcs[sl.svc], n, tier) {
				st.keepingHeld = true
				st.assign(id, n, tier)
				st.keepingHeld = false
				sl.moved = true
				placed = true
				break
			}
		}
	}
	if !placed {
		return todo
	}
	return st.unplaced(todo)
}

// unplaced returns the slots of ids that have no owner, reusing ids.
func (st *state) unplaced(ids []int32) []int32 {
	return slices.DeleteFunc(ids, func(id int32) bool { return st.slots[id].node >= 0 })
}

// fairCeil is a node's fair share of slots, rounded up (at least 1).
func fairCeil(slots int, w, totalWeight float64) int32 {
	f := math.Ceil(float64(float64(slots)*w/totalWeight) - 1e-9)
	if !(f < float64(slots)) {
		return int32(max(slots, 1))
	}
	return int32(max(f, 1))
}
