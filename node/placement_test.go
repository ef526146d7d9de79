package node_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/testenv"
)

// placementCluster: node-1, node-2 in zone a; node-3..5 in zone b; node-5
// has a runtime that is not ready.
func placementCluster(t *testing.T) *testenv.Cluster {
	return testenv.New(t, testenv.Options{
		Nodes: 5,
		Configure: func(i int, c *node.Config) {
			zone := "b"
			if i < 2 {
				zone = "a"
			}
			c.Labels = map[string]string{"zone": zone}
		},
		Runtime: func(n *testenv.Node) runtime.Driver {
			f := runtime.NewFake()
			if n.Index == 4 {
				f.SetReady(errors.New("containerd: connection refused"))
			}
			return f
		},
	})
}

// waitSamePlacement waits until every running node answers the same
// placement with the expected number of placed and unplaceable slots.
func waitSamePlacement(t *testing.T, c *testenv.Cluster, placed, unplaceable int) api.Placement {
	t.Helper()
	var got api.Placement
	c.Eventually(30*time.Second, func() error {
		var first *api.Placement
		for _, n := range c.Running() {
			p, err := n.Client.Placement(context.Background(), "")
			if err != nil {
				return err
			}
			if len(p.Slots) != placed || len(p.Unplaceable) != unplaceable {
				return fmt.Errorf("%s: %d placed, %d unplaceable; want %d, %d", n.Name, len(p.Slots), len(p.Unplaceable), placed, unplaceable)
			}
			if first == nil {
				first = &p
			} else if !reflect.DeepEqual(p, *first) {
				return fmt.Errorf("%s disagrees:\n%+v\nvs\n%+v", n.Name, p, *first)
			}
		}
		got = *first
		return nil
	})
	return got
}

func TestPlacementIsTheSameOnEveryNode(t *testing.T) {
	c := placementCluster(t)
	ctx := ctxT(t)
	put := func(s spec.Spec) {
		t.Helper()
		if _, err := c.Nodes[2].Client.PutService(ctx, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	put(spec.Spec{Name: "web", Image: "demo:1", Replicas: 3})
	put(spec.Spec{Name: "api", Image: "demo:1", Replicas: 2, Constraints: map[string]string{"zone": "a"}})
	put(spec.Spec{Name: "huge", Image: "demo:1", Replicas: 2, Resources: spec.Resources{Memory: 1 << 50}})

	p := waitSamePlacement(t, c, 5, 2)
	owners := map[string][]string{}
	for _, s := range p.Slots {
		owners[s.Service] = append(owners[s.Service], s.Node)
		if s.Node == "node-5" {
			t.Errorf("%s/%d placed on node-5, whose runtime is not ready", s.Service, s.Slot)
		}
	}
	for svc, nodes := range owners {
		if len(slices.Compact(slices.Sorted(slices.Values(nodes)))) != len(nodes) {
			t.Errorf("%s replicas share a node: %v", svc, nodes)
		}
	}
	for _, n := range owners["api"] {
		if n != "node-1" && n != "node-2" {
			t.Errorf("api (zone=a) placed on %s", n)
		}
	}
	for _, u := range p.Unplaceable {
		if u.Service != "huge" || !strings.Contains(u.Reason, "memory") {
			t.Errorf("unplaceable %+v, want huge for lack of memory", u)
		}
	}

	// Each node knows the slots it owns, and together they own them all.
	var owned []string
	for _, n := range c.Nodes {
		for _, s := range n.Agent().OwnedSlots() {
			owned = append(owned, s.String()+"@"+n.Name)
		}
	}
	var want []string
	for _, s := range p.Slots {
		want = append(want, fmt.Sprintf("%s/%d@%s", s.Service, s.Slot, s.Node))
	}
	slices.Sort(owned)
	slices.Sort(want)
	if !slices.Equal(owned, want) {
		t.Errorf("owned slots %v, want %v", owned, want)
	}

	// Explain names the owner and says why node-5 was passed over.
	e, err := c.Nodes[0].Client.ExplainPlacement(ctx, "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ownerOf(p, "web", 0); e.Node != o || len(e.Candidates) != 5 {
		t.Errorf("explain web/0: owner %q (placement says %q), %d candidates", e.Node, o, len(e.Candidates))
	}
	for _, cd := range e.Candidates {
		if cd.Node == "node-5" && (cd.Eligible || !strings.Contains(cd.Skipped, "runtime not ready")) {
			t.Errorf("node-5 candidate %+v, want ineligible: runtime not ready", cd)
		}
	}
	if _, err := c.Nodes[0].Client.ExplainPlacement(ctx, "web", 3); err == nil {
		t.Error("explain of slot 3 of a 3-replica service succeeded")
	}

	// node-1 dies: api can only double up on node-2; every survivor agrees.
	if err := c.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	// node-1 is suspect first (it keeps its slots), then failed.
	c.Eventually(30*time.Second, func() error {
		for _, n := range c.Running() {
			for _, s := range n.Agent().Placement().Assignments {
				if s.Node == "node-1" {
					return fmt.Errorf("%s still places %s on node-1", n.Name, s.Slot)
				}
			}
		}
		return nil
	})
	p = waitSamePlacement(t, c, 5, 2)
	for _, s := range p.Slots {
		if s.Node == "node-1" {
			t.Errorf("%s/%d still on dead node-1", s.Service, s.Slot)
		}
		if s.Service == "api" && s.Node != "node-2" {
			t.Errorf("api/%d on %s, want node-2", s.Slot, s.Node)
		}
	}

	// node-5's runtime comes up: it becomes eligible everywhere.
	c.Nodes[4].Runtime().(*runtime.Fake).SetReady(nil)
	c.Eventually(30*time.Second, func() error {
		e, err := c.Nodes[1].Client.ExplainPlacement(ctx, "web", 0)
		if err != nil {
			return err
		}
		for _, cd := range e.Candidates {
			if cd.Node == "node-5" && !cd.Eligible {
				return fmt.Errorf("node-5 still ineligible: %s", cd.Skipped)
			}
		}
		return nil
	})
	waitSamePlacement(t, c, 5, 2)
}

func ownerOf(p api.Placement, svc string, slot int) (string, bool) {
	for _, s := range p.Slots {
		if s.Service == svc && s.Slot == slot {
			return s.Node, true
		}
	}
	return "", false
}

// With holders, a failed node's slots move and no other slot does; the
// node, back empty, takes slots up to its fair share (only those the
// others let go or that rank it first) and then clears its filling tag;
// an agent that crashed while its containers ran keeps them when it comes
// back, although the others started copies meanwhile.
func TestPlacementFollowsHolders(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 5})
	ctx := ctxT(t)
	services := []string{"a", "b", "c", "d"}
	const replicas = 4
	for _, name := range services {
		s := spec.Spec{Name: name, Image: "demo:1", Replicas: replicas}
		if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	settled := func() error { return settledFilled(t, c, services, replicas) }
	owners := func() map[string]string {
		out := map[string]string{}
		for _, a := range c.Running()[0].Agent().Placement().Assignments {
			out[a.Slot.String()] = a.Node
		}
		return out
	}
	busiest := func(except string) *testenv.Node {
		var best *testenv.Node
		most := -1
		for _, n := range c.Running() {
			if k := len(n.Agent().OwnedSlots()); n.Name != except && k > most {
				best, most = n, k
			}
		}
		return best
	}
	c.Eventually(30*time.Second, settled)

	// A node fails: only its slots move.
	victim := busiest("")
	before := owners()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, settled)
	after := owners()
	for slot, o := range before {
		if o != victim.Name && after[slot] != o {
			t.Errorf("%s moved from %s to %s, though only %s failed", slot, o, after[slot], victim.Name)
		}
	}

	// It comes back empty (its containers went with the machine): it
	// takes slots, no more than its fair share, and nothing else moves.
	f := victim.Runtime().(*runtime.Fake)
	list, err := f.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		if err := f.Stop(ctx, r.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := victim.Start(c.Nodes[(victim.Index+1)%len(c.Nodes)].GossipAddr()); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, settled)
	back := owners()
	took := 0
	for slot, o := range back {
		switch {
		case o == victim.Name:
			took++
		case after[slot] != o:
			t.Errorf("%s moved from %s to %s when %s came back", slot, after[slot], o, victim.Name)
		}
	}
	fair := (len(services)*replicas + len(c.Nodes) - 1) / len(c.Nodes)
	if took == 0 || took > fair {
		t.Errorf("%s came back and took %d slots, want 1 to %d", victim.Name, took, fair)
	}

	// An agent crashes, its containers keep running; the others start
	// copies of its slots. Back, it keeps its own and the copies stop.
	crashed := busiest("")
	ids := map[string]bool{}
	for _, s := range services {
		for _, r := range running(t, crashed.Runtime().(*runtime.Fake), s) {
			ids[r.ID] = true
		}
	}
	if err := crashed.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, func() error {
		for _, s := range services {
			total := 0
			for _, n := range c.Running() {
				total += len(running(t, n.Runtime().(*runtime.Fake), s))
			}
			if total != replicas {
				return fmt.Errorf("%d containers of %s run on the survivors, want %d: %s", total, s, replicas, whereRuns(t, c, s))
			}
		}
		return nil
	})
	if err := crashed.Start(c.Nodes[(crashed.Index+1)%len(c.Nodes)].GossipAddr()); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, settled)
	now := map[string]bool{}
	for _, s := range services {
		for _, r := range running(t, crashed.Runtime().(*runtime.Fake), s) {
			now[r.ID] = true
		}
	}
	for id := range ids {
		if !now[id] {
			t.Errorf("%s no longer runs %s after its agent came back", crashed.Name, id)
		}
	}
	if len(now) != len(ids) {
		t.Errorf("%s runs %d containers after its agent came back, %d before", crashed.Name, len(now), len(ids))
	}
}

// whereRuns says, for a failure message, which slots of service each
// running node runs, and whom each node's placement makes their owner.
func whereRuns(t *testing.T, c *testenv.Cluster, service string) string {
	var b strings.Builder
	for _, n := range c.Running() {
		fmt.Fprintf(&b, "%s runs", n.Name)
		for _, r := range running(t, n.Runtime().(*runtime.Fake), service) {
			o, _ := n.Agent().Placement().Owner(service, r.Slot)
			fmt.Fprintf(&b, " %s/%d (owner %s)", service, r.Slot, o)
		}
		b.WriteString("; ")
	}
	return b.String()
}

// A node that cannot start a slot it owns stays filling, but not for
// ever: after the limit it advertises the end anyway.
func TestFillingEndsAfterTheLimit(t *testing.T) {
	defer node.SetMaxFilling(3 * time.Second)()
	c := testenv.New(t, testenv.Options{Nodes: 3})
	ctx := ctxT(t)
	broken := c.Nodes[2]
	if err := broken.Kill(); err != nil {
		t.Fatal(err)
	}
	f := broken.Runtime().(*runtime.Fake)
	f.SetStartError(func(runtime.ReplicaSpec) error { return errors.New("image not found") })
	if _, err := c.Nodes[0].Client.PutService(ctx, spec.Spec{Name: "web", Image: "demo:1", Replicas: 3}, ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, func() error { return checkOwners(t, c, "web", 3) })
	started := time.Now()
	if err := broken.Start(c.Nodes[0].GossipAddr()); err != nil {
		t.Fatal(err)
	}
	filling := func() (bool, error) {
		nodes, err := c.Nodes[0].Client.Nodes(ctx)
		if err != nil {
			return false, err
		}
		for _, n := range nodes {
			if n.Name == broken.Name {
				return n.Filling, nil
			}
		}
		return false, fmt.Errorf("%s not a member", broken.Name)
	}
	// It owns a slot (it fills up to its share: one of three) that it
	// cannot start, so it stays filling until the limit.
	c.Eventually(10*time.Second, func() error {
		if len(broken.Agent().OwnedSlots()) == 0 {
			return fmt.Errorf("%s owns no slot", broken.Name)
		}
		if ok, err := filling(); err != nil || !ok {
			return fmt.Errorf("%s not seen filling (%v)", broken.Name, err)
		}
		return nil
	})
	c.Eventually(20*time.Second, func() error {
		if ok, err := filling(); err != nil || ok {
			return fmt.Errorf("%s still filling (%v)", broken.Name, err)
		}
		return nil
	})
	if d := time.Since(started); d < 3*time.Second {
		t.Errorf("filling ended %v after the start, before the 3s limit", d)
	}
}

// Every agent is stopped (gracefully) and started again, one after the
// other, while their containers run: every container is adopted and none
// is replaced. The first agents up see slots whose holders are not back
// yet, and every agent is filling when it starts.
func TestRestartEveryAgentKeepsContainers(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 4})
	ctx := ctxT(t)
	services := []string{"a", "b", "c"}
	for _, name := range services {
		if _, err := c.Nodes[0].Client.PutService(ctx, spec.Spec{Name: name, Image: "demo:1", Replicas: 3}, ""); err != nil {
			t.Fatal(err)
		}
	}
	settled := func() error { return settledFilled(t, c, services, 3) }
	ids := func() map[string]string {
		out := map[string]string{}
		for _, n := range c.Nodes {
			for _, s := range services {
				for _, r := range running(t, n.Runtime().(*runtime.Fake), s) {
					out[r.ID] = n.Name
				}
			}
		}
		return out
	}
	c.Eventually(30*time.Second, settled)
	before := ids()
	for _, n := range c.Nodes {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range c.Nodes {
		if err := n.Start(c.Nodes[(i+1)%len(c.Nodes)].GossipAddr()); err != nil {
			t.Fatal(err)
		}
	}
	c.Eventually(60*time.Second, settled)
	after := ids()
	for id, node := range before {
		if after[id] != node {
			t.Errorf("container %s of %s was replaced after the restart", id, node)
		}
	}
	if len(after) != len(before) {
		t.Errorf("%d containers run after the restart, %d before", len(after), len(before))
	}
}

// settledFilled checks that the running nodes run exactly the slots of
// services that placement gives them and that none sees a node filling.
func settledFilled(t *testing.T, c *testenv.Cluster, services []string, replicas int) error {
	for _, s := range services {
		if err := checkOwners(t, c, s, replicas); err != nil {
			return err
		}
	}
	for _, n := range c.Running() {
		nodes, err := n.Client.Nodes(context.Background())
		if err != nil {
			return err
		}
		for _, m := range nodes {
			if m.Filling && m.Status == "alive" {
				return fmt.Errorf("%s sees %s filling", n.Name, m.Name)
			}
		}
	}
	return nil
}
