package node

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/placement"
)

// standbyGone names the placed nodes not alive now, except those that
// came (back) within standbySettle, and none within standbyMergeQuiet of
// any member coming back: a healed partition's stale suspicions are not
// acted on.
func TestStandbyGone(t *testing.T) {
	now := time.Now()
	placed := []placement.Node{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}, {Name: "e"}}
	members := []gossip.Member{
		{Name: "a", Status: gossip.StatusAlive},
		{Name: "b", Status: gossip.StatusSuspect}, // long a member: counted
		{Name: "c", Status: gossip.StatusFailed},  // failed since placement ran: counted
		{Name: "d", Status: gossip.StatusSuspect}, // just came back: not counted
		// e: gone from the list altogether: counted
	}
	old := now.Add(-time.Hour)
	since := map[string]time.Time{"a": old, "b": old, "c": old, "d": now.Add(-standbySettle / 2)}
	if got, want := standbyGone(placed, members, since, now), []string{"b", "c", "e"}; !slices.Equal(got, want) {
		t.Fatalf("gone = %v, want %v", got, want)
	}
	// Right after some member came back, no one is counted: the merged
	// view's stale suspicions are being refuted.
	since["d"] = now.Add(-standbyMergeQuiet / 2)
	if got := standbyGone(placed, members, since, now); len(got) != 0 {
		t.Fatalf("within the merge quiet time: gone = %v, want none", got)
	}
	since["d"] = now.Add(-standbyMergeQuiet)
	if got, want := standbyGone(placed, members, since, now), []string{"b", "c", "e"}; !slices.Equal(got, want) {
		t.Fatalf("after the merge quiet time: gone = %v, want %v", got, want)
	}
	// A member first seen (zero time: it joined) does not hold it off.
	since["f"] = time.Time{}
	if got, want := standbyGone(placed, members, since, now), []string{"b", "c", "e"}; !slices.Equal(got, want) {
		t.Fatalf("with a member first seen: gone = %v, want %v", got, want)
	}
	delete(since, "f")
	// A member alive in gossip that the agent's view has not seen come
	// back yet: the merge is under way, no one is counted.
	back := append(slices.Clone(members), gossip.Member{Name: "g", Status: gossip.StatusAlive})
	if got := standbyGone(placed, back, since, now); len(got) != 0 {
		t.Fatalf("with a member coming back: gone = %v, want none", got)
	}
	since["d"] = now.Add(-standbySettle / 2)
	since["d"] = now.Add(-standbySettle)
	if got, want := standbyGone(placed, members, since, now), []string{"b", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Fatalf("after the settle time: gone = %v, want %v", got, want)
	}
}

// A member's aliveSince is set when it comes back after a failure or a
// leave, kept while it stays alive, and zero for a member first seen.
func TestNextAliveSince(t *testing.T) {
	t0, t1 := time.Unix(1000, 0), time.Unix(2000, 0)
	m := func(name string, st gossip.Status) gossip.Member { return gossip.Member{Name: name, Status: st} }
	old := &memberView{
		list:       []gossip.Member{m("a", gossip.StatusAlive), m("b", gossip.StatusFailed), m("c", gossip.StatusLeft), m("d", gossip.StatusSuspect)},
		aliveSince: map[string]time.Time{"a": t0, "d": {}},
	}
	got := nextAliveSince(old, []gossip.Member{
		m("a", gossip.StatusAlive), m("b", gossip.StatusAlive), m("c", gossip.StatusAlive),
		m("d", gossip.StatusFailed), m("e", gossip.StatusAlive),
	}, t1)
	want := map[string]time.Time{"a": t0, "b": t1, "c": t1, "e": {}}
	if !maps.Equal(got, want) {
		t.Fatalf("aliveSince = %v, want %v", got, want)
	}
}

// A suspect counts once it has been suspect for standbyConfirm; a member
// failed or gone counts at once; a suspicion that ends is forgotten.
func TestStandbyConfirmed(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var st standbyState
	members := []gossip.Member{
		{Name: "a", Status: gossip.StatusSuspect},
		{Name: "b", Status: gossip.StatusFailed},
		{Name: "c", Status: gossip.StatusAlive},
	}
	if got, want := st.confirmed([]string{"a", "b"}, members, t0), []string{"b"}; !slices.Equal(got, want) {
		t.Fatalf("first seen: %v, want %v", got, want)
	}
	if got, want := st.confirmed([]string{"a", "b"}, members, t0.Add(standbyConfirm-time.Millisecond)), []string{"b"}; !slices.Equal(got, want) {
		t.Fatalf("just before the confirm time: %v, want %v", got, want)
	}
	if got, want := st.confirmed([]string{"a", "b"}, members, t0.Add(standbyConfirm)), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("after the confirm time: %v, want %v", got, want)
	}
	// a refutes; suspected again later, it waits the whole time again.
	members[0].Status = gossip.StatusAlive
	st.confirmed(nil, members, t0.Add(2*standbyConfirm))
	members[0].Status = gossip.StatusSuspect
	t1 := t0.Add(3 * standbyConfirm)
	if got := st.confirmed([]string{"a"}, members, t1); len(got) != 0 {
		t.Fatalf("suspected again: %v, want none yet", got)
	}
	if got := st.confirmed([]string{"a"}, members, t1.Add(standbyConfirm)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("suspected again, confirmed: %v", got)
	}
}

// Hand-offs are prepared only while no member is suspect or failed and
// the agent has seen every member that gossip shows alive; a member that
// left cleanly does not count.
func TestMembersSteady(t *testing.T) {
	since := map[string]time.Time{"a": {}, "b": {}}
	for name, tc := range map[string]struct {
		members []gossip.Member
		want    bool
	}{
		"all alive":          {[]gossip.Member{{Name: "a", Status: gossip.StatusAlive}, {Name: "b", Status: gossip.StatusAlive}}, true},
		"one left":           {[]gossip.Member{{Name: "a", Status: gossip.StatusAlive}, {Name: "c", Status: gossip.StatusLeft}}, true},
		"one suspect":        {[]gossip.Member{{Name: "a", Status: gossip.StatusAlive}, {Name: "b", Status: gossip.StatusSuspect}}, false},
		"one failed":         {[]gossip.Member{{Name: "a", Status: gossip.StatusAlive}, {Name: "c", Status: gossip.StatusFailed}}, false},
		"alive, not seen":    {[]gossip.Member{{Name: "a", Status: gossip.StatusAlive}, {Name: "c", Status: gossip.StatusAlive}}, false},
		"leaving, not alive": {[]gossip.Member{{Name: "a", Status: gossip.StatusAlive}, {Name: "c", Status: gossip.StatusLeaving}}, true},
	} {
		if got := membersSteady(tc.members, since); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}
