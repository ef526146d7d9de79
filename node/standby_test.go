package node_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/testenv"
)

// prepared lists a fake runtime's prepared containers.
func prepared(t *testing.T, f *runtime.Fake) []runtime.Replica {
	t.Helper()
	list, err := f.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(list, func(r runtime.Replica) bool { return r.State != runtime.StatePrepared })
}

// standbySetup runs "web" (3 replicas) on c and returns a node other than
// the first that runs one of them, and that replica.
func standbySetup(t *testing.T, c *testenv.Cluster) (*testenv.Node, runtime.Replica) {
	t.Helper()
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 3, Ports: []spec.Port{{Published: 8080, Target: 80}}}
	if _, err := c.Nodes[0].Client.PutService(ctxT(t), s, ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(15*time.Second, func() error { return checkOwners(t, c, "web", 3) })
	c.Eventually(15*time.Second, func() error { return checkView(c, "web", 3) })
	victim := runningOne(t, c.Nodes[1:], "web")
	return victim, running(t, victim.Runtime().(*runtime.Fake), "web")[0]
}

// While a crashed node is suspect, the node that will take over its slot
// prepares the replica, and once the node is declared failed it only
// starts the prepared container. Prepared containers never show as
// replicas, and none is left over.
func TestStandbyPreparesASuspectsSlots(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 4})
	victim, lost := standbySetup(t, c)
	// Operations before the kill (a slot may change hands while the
	// membership forms) are not the standby's.
	opsBefore := map[string]int{}
	for _, n := range c.Nodes {
		opsBefore[n.Name] = len(n.Runtime().(*runtime.Fake).Ops())
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, func() error { return checkOwners(t, c, "web", 3) })
	c.Eventually(15*time.Second, func() error { return checkView(c, "web", 3) })

	// The new owner of the lost slot (once every node agrees which) prepared
	// it, then started that.
	var owner *testenv.Node
	want := []string{"prepare prepared=false", "start prepared=true"}
	c.Eventually(15*time.Second, func() error {
		owner = nil
		names := map[string]bool{}
		for _, n := range c.Running() {
			o, _ := n.Agent().Placement().Owner("web", lost.Slot)
			names[o] = true
			if o == n.Name {
				owner = n
			}
		}
		if len(names) != 1 || owner == nil {
			return fmt.Errorf("the running nodes see web/%d owned by %v", lost.Slot, names)
		}
		var ops []string
		for _, op := range owner.Runtime().(*runtime.Fake).Ops()[opsBefore[owner.Name]:] {
			if op.ID == lost.ID {
				ops = append(ops, fmt.Sprintf("%s prepared=%v", op.Op, op.Prepared))
			}
		}
		if !slices.Equal(ops, want) {
			return fmt.Errorf("%s's operations on %s: %q, want %q", owner.Name, lost.ID, ops, want)
		}
		return nil
	})
	if got := owner.Agent().StandbyPrepares("started"); got != 1 {
		t.Errorf("%s counted %v prepared replicas started, want 1", owner.Name, got)
	}
	// Nothing stays prepared anywhere.
	c.Eventually(15*time.Second, func() error {
		for _, n := range c.Running() {
			if p := prepared(t, n.Runtime().(*runtime.Fake)); len(p) > 0 {
				return fmt.Errorf("%s still holds prepared %+v", n.Name, p)
			}
		}
		return nil
	})
}

// Speculative work yields to real work: while every survivor has a start
// under way (held by the runtime), a member's crash prepares nothing; its
// slot is started plainly by the new owner once the member is declared
// failed. The same cluster without the held starts prepares it
// (TestStandbyPreparesASuspectsSlots).
func TestStandbyYieldsToActionsUnderWay(t *testing.T) {
	release := make(chan struct{})
	held := map[string]*atomic.Int32{} // node -> starts of "slow" held there
	hold := func(node string) func(s runtime.ReplicaSpec) error {
		return func(s runtime.ReplicaSpec) error {
			if s.Service == "slow" {
				held[node].Add(1)
				<-release
			}
			return nil
		}
	}
	c := testenv.New(t, testenv.Options{Nodes: 4})
	defer close(release) // before the cluster stops (cleanups run after)
	ctx := ctxT(t)
	victim, lost := standbySetup(t, c)
	var survivors []*testenv.Node
	for _, n := range c.Nodes {
		if n != victim { // its agent must stop when killed: no held start
			survivors = append(survivors, n)
			held[n.Name] = new(atomic.Int32)
			n.Runtime().(*runtime.Fake).SetStartError(hold(n.Name))
		}
	}
	// One slot of "slow" per node: every survivor has a start under way.
	slow := spec.Spec{Name: "slow", Image: "demo:1", Replicas: 4}
	if _, err := c.Nodes[0].Client.PutService(ctx, slow, ""); err != nil {
		t.Fatal(err)
	}
	// (A start of "slow" held, not any action: a drained stop is under
	// way for a moment too.)
	c.Eventually(15*time.Second, func() error {
		for _, n := range survivors {
			if held[n.Name].Load() == 0 || !n.Agent().ActionsUnderWay() {
				return fmt.Errorf("%s has no start of slow under way yet", n.Name)
			}
		}
		return nil
	})
	opsBefore := map[string]int{}
	preparesBefore := map[string]float64{}
	for _, n := range survivors {
		opsBefore[n.Name] = len(n.Runtime().(*runtime.Fake).Ops())
		preparesBefore[n.Name] = n.Agent().StandbyPrepares("prepared")
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	// The lost slot runs again on a survivor, started without a prepare.
	c.Eventually(30*time.Second, func() error {
		for _, n := range c.Running() {
			for _, r := range running(t, n.Runtime().(*runtime.Fake), "web") {
				if r.Slot == lost.Slot {
					return nil
				}
			}
		}
		return fmt.Errorf("web/%d runs on no survivor", lost.Slot)
	})
	for _, n := range survivors {
		for _, op := range n.Runtime().(*runtime.Fake).Ops()[opsBefore[n.Name]:] {
			if op.Op == "prepare" || op.Prepared {
				t.Errorf("%s: %s of %s (prepared=%v) while a start was under way", n.Name, op.Op, op.ID, op.Prepared)
			}
		}
		if got := n.Agent().StandbyPrepares("prepared") - preparesBefore[n.Name]; got != 0 {
			t.Errorf("%s counted %v prepares", n.Name, got)
		}
	}
}

// Prepared containers left by an earlier run (the agent stopped during a
// suspicion): the one of an owned slot's current template is started, not
// recreated; the others are removed. Neither ever shows as a replica. The
// same with the standby turned off.
func TestStandbyAdoptsOrRemovesLeftoverPrepared(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("standby off %v", off), func(t *testing.T) { testLeftoverPrepared(t, off) })
	}
}

func testLeftoverPrepared(t *testing.T, standbyOff bool) {
	c := testenv.New(t, testenv.Options{Nodes: 1, Configure: func(_ int, cfg *node.Config) { cfg.NoStandby = standbyOff }})
	ctx := ctxT(t)
	n := c.Nodes[0]
	f := n.Runtime().(*runtime.Fake)
	if _, err := n.Client.PutService(ctx, spec.Spec{Name: "web", Image: "demo:1", Replicas: 1}, ""); err != nil {
		t.Fatal(err)
	}
	var rep runtime.Replica
	c.Eventually(15*time.Second, func() error {
		rs := running(t, f, "web")
		if len(rs) != 1 {
			return fmt.Errorf("%d running", len(rs))
		}
		rep = rs[0]
		return nil
	})
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(ctx, rep.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	own := runtime.ReplicaSpec{ID: rep.ID, Service: "web", Slot: 0, Version: rep.Version, Image: rep.Image}
	stale := []runtime.ReplicaSpec{
		{ID: "web-0-0ldversion", Service: "web", Slot: 0, Version: "0ldversion", Image: rep.Image},    // owned slot, old template
		{ID: "web-3-" + rep.Version, Service: "web", Slot: 3, Version: rep.Version, Image: rep.Image}, // slot scaled away
		{ID: "gone-0-abc", Service: "gone", Slot: 0, Version: "abc", Image: rep.Image},                // no such service
	}
	for _, rs := range append([]runtime.ReplicaSpec{own}, stale...) {
		if _, err := f.Prepare(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	ops := len(f.Ops())
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(15*time.Second, func() error {
		if p := prepared(t, f); len(p) > 0 {
			return fmt.Errorf("still prepared: %+v", p)
		}
		reps, err := n.Client.Replicas(ctx, "")
		if err != nil {
			return err
		}
		if len(reps) != 1 || reps[0].Container != rep.ID || reps[0].State != "running" {
			return fmt.Errorf("replicas %+v, want %s running", reps, rep.ID)
		}
		return nil
	})
	var got []string
	for _, op := range f.Ops()[ops:] {
		got = append(got, fmt.Sprintf("%s %s prepared=%v", op.Op, op.ID, op.Prepared))
	}
	want := []string{"start " + rep.ID + " prepared=true"}
	for _, rs := range stale {
		want = append(want, "stop "+rs.ID+" prepared=false")
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("operations after the restart:\n%q\nwant\n%q", got, want)
	}
	if got := n.Agent().StandbyPrepares("discarded"); got != float64(len(stale)) {
		t.Errorf("counted %v prepared replicas discarded, want %d", got, len(stale))
	}
}

// A slot that moves to another node while its replica runs healthy is a
// hand-off: the new owner prepares it while it settles, and the pass then
// starts the prepared container.
func TestHandoffStartsPreparedReplica(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 2, Configure: func(i int, cfg *node.Config) {
		cfg.Labels = map[string]string{"n": strconv.Itoa(i)}
	}})
	ctx := ctxT(t)
	put := func(on int) {
		t.Helper()
		s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 1, Ports: []spec.Port{{Published: 8080, Target: 80}},
			Constraints: map[string]string{"n": strconv.Itoa(on)}}
		if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	runsOn := func(i int) error {
		for j, n := range c.Nodes {
			if got := running(t, n.Runtime().(*runtime.Fake), "web"); (j == i) != (len(got) == 1) || len(got) > 1 {
				return fmt.Errorf("%s runs %d replicas of web", n.Name, len(got))
			}
		}
		return checkView(c, "web", 1)
	}
	put(0)
	c.Eventually(15*time.Second, func() error { return runsOn(0) })
	f := c.Nodes[1].Runtime().(*runtime.Fake)
	opsBefore := len(f.Ops())
	put(1)
	c.Eventually(15*time.Second, func() error { return runsOn(1) })
	var ops []string
	for _, op := range f.Ops()[opsBefore:] {
		ops = append(ops, fmt.Sprintf("%s %s prepared=%v", op.Op, op.ID, op.Prepared))
	}
	if len(ops) != 2 || !strings.HasPrefix(ops[0], "prepare web-0-") || !strings.HasPrefix(ops[1], "start web-0-") || !strings.HasSuffix(ops[1], "prepared=true") {
		t.Errorf("the new owner's runtime saw %q, want a prepare of web/0, then a start of the prepared container", ops)
	}
}
