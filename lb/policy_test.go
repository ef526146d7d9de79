package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func testEndpoints(n int) []*endpoint {
	eps := make([]*endpoint, n)
	for i := range eps {
		eps[i] = newEndpoint(Endpoint{
			Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 8080),
			Node: fmt.Sprint("n", i), Slot: i,
		}, nil)
	}
	return eps
}

func TestLeastRequestAvoidsBusyAndSlowEndpoints(t *testing.T) {
	eps := testEndpoints(4)
	tb := newTable(Route{Policy: PolicyLeastRequest}, slices.Clone(eps))
	eps[0].active.Store(10) // busy
	for range 30 {
		eps[1].observe(300 * time.Millisecond) // slow
	}
	for _, e := range eps[2:] {
		e.observe(2 * time.Millisecond)
	}
	count := map[*endpoint]int{}
	for range 4000 {
		count[tb.pick(0, nil)]++
	}
	// P2C draws one of the 6 pairs: the slow endpoint (300 ms) loses every
	// one of its pairs, the busy one (11 x 5 ms, the floor) wins only against the
	// slow one (1 pair in 6), the idle fast ones win the rest.
	if count[eps[1]] != 0 {
		t.Errorf("slow endpoint got %d picks, want 0", count[eps[1]])
	}
	if c := count[eps[0]]; c < 4000/6/2 || c > 4000/6*3/2 {
		t.Errorf("busy endpoint got %d picks, want about %d (its pairs with the slow one)", c, 4000/6)
	}
	if count[eps[2]] < 1300 || count[eps[3]] < 1300 {
		t.Errorf("idle fast endpoints got %d and %d of 4000 picks, want about 1670 each", count[eps[2]], count[eps[3]])
	}
	// The slow endpoint's latency decays while it is not chosen, so it
	// gets tried again after a while.
	if got := eps[1].latency(time.Now().Add(time.Minute).UnixNano()); got != float64(latencyFloor) {
		t.Errorf("latency of an endpoint unchosen for a minute = %v, want the floor", time.Duration(got))
	}
}

func TestPickSkipsTriedAndEjected(t *testing.T) {
	for _, policy := range []string{PolicyLeastRequest, PolicyRoundRobin, PolicyMaglev} {
		t.Run(policy, func(t *testing.T) {
			eps := testEndpoints(5)
			tb := newTable(Route{Policy: policy}, slices.Clone(eps))
			now := time.Now()
			eps[0].fail(failRefused, now)
			eps[1].fail(failRefused, now)
			for i := range 500 {
				tried := []*endpoint{eps[2]}
				e := tb.pick(uint64(i)*0x9e3779b97f4a7c15, tried)
				if e == nil || e == eps[0] || e == eps[1] || e == eps[2] {
					t.Fatalf("pick %d = %v, want one of the two not ejected nor tried", i, e)
				}
			}
			// Everything ejected or tried but the ejected ones: panic mode
			// picks an ejected one rather than nothing.
			if e := tb.pick(7, []*endpoint{eps[2], eps[3], eps[4]}); e != eps[0] && e != eps[1] {
				t.Fatalf("panic-mode pick = %v, want an ejected endpoint", e)
			}
			if e := tb.pick(7, eps); e != nil {
				t.Fatalf("pick with every endpoint tried = %v, want nil", e)
			}
		})
	}
}

func TestRoundRobinTakesTurns(t *testing.T) {
	eps := testEndpoints(3)
	tb := newTable(Route{Policy: PolicyRoundRobin}, slices.Clone(eps))
	seen := map[*endpoint]int{}
	for range 30 {
		seen[tb.pick(0, nil)]++
	}
	for _, e := range eps {
		if seen[e] != 10 {
			t.Fatalf("round robin over 3 endpoints, 30 picks: %v", seen)
		}
	}
}

func TestEjectionBacksOff(t *testing.T) {
	e := testEndpoints(1)[0]
	now := time.Unix(1000, 0)
	if !e.fail(failRefused, now) {
		t.Fatal("a refused connect did not eject")
	}
	if e.available(now.Add(999 * time.Millisecond).UnixNano()) {
		t.Fatal("available before the first ejection (1 s) ended")
	}
	if !e.available(now.Add(time.Second).UnixNano()) {
		t.Fatal("still ejected after 1 s")
	}
	now = now.Add(time.Second)
	e.fail(failRefused, now)
	if e.available(now.Add(1999 * time.Millisecond).UnixNano()) {
		t.Fatal("second ejection shorter than 2 s")
	}
	// Timeouts eject after three in a row; a success resets the streak.
	e2 := testEndpoints(1)[0]
	e2.fail(failTimeout, now)
	e2.fail(failTimeout, now)
	e2.succeed()
	e2.fail(failTimeout, now)
	if !e2.available(now.UnixNano()) {
		t.Fatal("ejected after timeouts that were not in a row")
	}
	e2.fail(failTimeout, now)
	if !e2.fail(failTimeout, now) {
		t.Fatal("three timeouts in a row did not eject")
	}
	// 5xx: five in a row.
	e3 := testEndpoints(1)[0]
	for i := range 4 {
		if e3.fail(failServer, now) {
			t.Fatalf("ejected after %d 5xx", i+1)
		}
	}
	if !e3.fail(failServer, now) {
		t.Fatal("five 5xx in a row did not eject")
	}
}

// maglevOwners maps every table position to its endpoint's name. The
// table is the smallest prime size Maglev's rule allows (100 positions per
// name), smaller than the balancer's, to keep the property test fast.
func maglevOwners(names []string, size int) []string {
	m := maglevTable(names, size)
	out := make([]string, len(m))
	for i, e := range m {
		out[i] = names[e]
	}
	return out
}

func TestMaglevProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 40).Draw(t, "n")
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("%d@10.0.0.%d:8080", i, i)
		}
		size := 100*n + 1
		for !isPrime(size) {
			size++
		}
		owners := maglevOwners(names, size)
		m := len(owners)
		// Balance: every name owns m/n positions, give or take one.
		count := map[string]int{}
		for _, o := range owners {
			count[o]++
		}
		for _, name := range names {
			if c := count[name]; c < m/n-1 || c > m/n+1 {
				t.Fatalf("%s owns %d of %d positions, want %d±1", name, c, m, m/n)
			}
		}
		// Same table whatever the order of the names.
		shuffled := rapid.Permutation(names).Draw(t, "order")
		if !slices.Equal(owners, maglevOwners(shuffled, size)) {
			t.Fatal("the table depends on the order of the names")
		}
		if n < 2 {
			return
		}
		// Removing one name moves its own positions and few others: the
		// paper's bound is small; allow 10% of the table plus the
		// removed name's share.
		gone := rapid.IntRange(0, n-1).Draw(t, "gone")
		rest := slices.Delete(slices.Clone(names), gone, gone+1)
		after := maglevOwners(rest, size)
		moved := 0
		for i := range owners {
			if owners[i] != names[gone] && owners[i] != after[i] {
				moved++
			}
		}
		if moved > m/10 {
			t.Fatalf("removing 1 of %d names moved %d other positions of %d", n, moved, m)
		}
	})
}

func TestMaglevSameKeySameEndpoint(t *testing.T) {
	// Two tables built from the same endpoints in another order (two
	// nodes of the cluster) send every key to the same slot.
	a := testEndpoints(7)
	b := slices.Clone(a)
	slices.Reverse(b)
	ta := newTable(Route{Policy: PolicyMaglev}, a)
	tb := newTable(Route{Policy: PolicyMaglev}, b)
	for i := range 1000 {
		key := hashString(fmt.Sprint("client-", i))
		if x, y := ta.pick(key, nil), tb.pick(key, nil); x.Slot != y.Slot {
			t.Fatalf("key %d: slot %d on one node, %d on another", i, x.Slot, y.Slot)
		}
	}
}
