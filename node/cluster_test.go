package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/testenv"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func web(name, image string, replicas int) spec.Spec {
	return spec.Spec{Name: name, Image: image, Replicas: replicas}
}

// waitSpec waits until every running node serves name with the image
// (or, with image "", until none serves it).
func waitSpec(t *testing.T, c *testenv.Cluster, name, image string, timeout time.Duration) {
	t.Helper()
	c.Eventually(timeout, func() error {
		for _, n := range c.Running() {
			s, err := n.Client.Service(context.Background(), name)
			switch {
			case image == "" && client.IsNotFound(err):
				continue
			case image == "" && err == nil:
				return fmt.Errorf("%s still has %s (version %s)", n.Name, name, s.Version)
			case err != nil:
				return fmt.Errorf("%s: %w", n.Name, err)
			case s.Image != image:
				return fmt.Errorf("%s has %s image %s, want %s", n.Name, name, s.Image, image)
			}
		}
		return nil
	})
}

func TestFiveNodesConvergeAndReplicateWrites(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 5})
	ctx := ctxT(t)

	nodes, err := c.Nodes[3].Client.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 5 {
		t.Fatalf("node-4 lists %d nodes, want 5: %+v", len(nodes), nodes)
	}
	for _, n := range nodes {
		if n.Status != "alive" || n.PeerID == "" || n.API == "" {
			t.Errorf("node %s: status %q peer %q api %q", n.Name, n.Status, n.PeerID, n.API)
		}
	}

	// A write on any node is visible on every node.
	for i, n := range c.Nodes {
		name := fmt.Sprintf("svc-%d", i)
		if _, err := n.Client.PutService(ctx, web(name, "demo:1", 2), ""); err != nil {
			t.Fatalf("put on %s: %v", n.Name, err)
		}
	}
	for i := range c.Nodes {
		waitSpec(t, c, fmt.Sprintf("svc-%d", i), "demo:1", 10*time.Second)
	}
	for _, n := range c.Nodes {
		list, err := n.Client.Services(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 5 {
			t.Errorf("%s lists %d services, want 5", n.Name, len(list))
		}
	}

	// Deletes replicate too.
	if _, err := c.Nodes[4].Client.DeleteService(ctx, "svc-0"); err != nil {
		t.Fatal(err)
	}
	waitSpec(t, c, "svc-0", "", 10*time.Second)
}

func TestPartitionedWritesConvergeToOneWinner(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 5})
	ctx := ctxT(t)
	left, right := c.Nodes[:3], c.Nodes[3:]

	// "doomed" exists everywhere before the partition.
	if _, err := left[0].Client.PutService(ctx, web("doomed", "old:1", 1), ""); err != nil {
		t.Fatal(err)
	}
	waitSpec(t, c, "doomed", "old:1", 10*time.Second)

	c.Partition([]int{0, 1, 2}, []int{3, 4})

	// Concurrent writes to the same service on both sides.
	if _, err := left[1].Client.PutService(ctx, web("contested", "left:1", 1), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := right[0].Client.PutService(ctx, web("contested", "right:1", 1), ""); err != nil {
		t.Fatal(err)
	}
	// An update on one side, then a later delete on the other: the delete
	// is newer and must win.
	if _, err := right[1].Client.PutService(ctx, web("doomed", "updated:2", 1), ""); err != nil {
		t.Fatal(err)
	}
	waitOn(t, c, right, "doomed", "updated:2")
	if _, err := left[2].Client.DeleteService(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}

	// While partitioned, each side keeps its own view.
	waitOn(t, c, left, "contested", "left:1")
	waitOn(t, c, right, "contested", "right:1")

	c.Heal()
	c.WaitMembers(60 * time.Second)

	// Every node ends with the same winner: the higher version.
	var winner api.Service
	c.Eventually(30*time.Second, func() error {
		var first *api.Service
		for _, n := range c.Nodes {
			s, err := n.Client.Service(ctx, "contested")
			if err != nil {
				return err
			}
			if first == nil {
				first = &s
			} else if s.Version != first.Version || s.Image != first.Image {
				return fmt.Errorf("%s has %s@%s, %s has %s@%s", c.Nodes[0].Name, first.Image, first.Version, n.Name, s.Image, s.Version)
			}
		}
		winner = *first
		return nil
	})
	if winner.Image != "left:1" && winner.Image != "right:1" {
		t.Fatalf("winner image %q is neither write", winner.Image)
	}
	waitSpec(t, c, "doomed", "", 30*time.Second)
}

// waitOn waits until each of nodes serves name with image.
func waitOn(t *testing.T, c *testenv.Cluster, nodes []*testenv.Node, name, image string) {
	t.Helper()
	c.Eventually(10*time.Second, func() error {
		for _, n := range nodes {
			s, err := n.Client.Service(context.Background(), name)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if s.Image != image {
				return fmt.Errorf("%s has %s, want %s", n.Name, s.Image, image)
			}
		}
		return nil
	})
}

func TestKillEveryNodeAndRestartKeepsAcknowledgedSpecs(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 3})
	ctx := ctxT(t)
	acked := map[string]string{}
	for i := range 12 {
		n := c.Nodes[i%3]
		name := fmt.Sprintf("keep-%d", i)
		img := fmt.Sprintf("img:%d", i)
		if _, err := n.Client.PutService(ctx, web(name, img, 1), ""); err != nil {
			t.Fatal(err)
		}
		acked[name] = img
	}
	// Crash every node at once, without waiting for replication: each
	// write is at least on the node that acknowledged it.
	for _, n := range c.Nodes {
		if err := n.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	// Restart with no seeds: the membership snapshot rejoins them.
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitMembers(60 * time.Second)
	for name, img := range acked {
		waitSpec(t, c, name, img, 30*time.Second)
	}
}

func TestRestartedNodeRejoinsWithoutSeeds(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 3})
	if err := c.Nodes[2].Stop(); err != nil {
		t.Fatal(err)
	}
	c.WaitMembers(30 * time.Second)
	if err := c.Nodes[2].Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitMembers(30 * time.Second)
}
