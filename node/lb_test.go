package node_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/testenv"
)

func TestPublishedPortsAreServedAndClashesReported(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 2})
	ctx := context.Background()
	n0, n1 := c.Nodes[0], c.Nodes[1]
	// A port another program holds on node 1.
	held, err := net.Listen("tcp", netip.AddrPortFrom(n1.Addr, 18090).String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 0, Ports: []spec.Port{{Published: 18090, Target: 80}}}
	if _, err := n0.Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	// Node 0 listens; node 1 says why it cannot, in ls and inspect.
	c.Eventually(10*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(n0.Addr, 18090).String(), time.Second)
		if err != nil {
			return err
		}
		conn.Close()
		got, err := n1.Client.Service(ctx, "web")
		if err != nil {
			return err
		}
		if len(got.Problems) != 1 || !strings.Contains(got.Problems[0], "address already in use") {
			return fmt.Errorf("node 1 reports problems %q", got.Problems)
		}
		list, err := n1.Client.Services(ctx)
		if err != nil || len(list) != 1 || !slices.Equal(list[0].Problems, got.Problems) {
			return fmt.Errorf("ls on node 1: %+v, %v", list, err)
		}
		return nil
	})
	// Another service on the same published port: 409, nothing stored.
	other := spec.Spec{Name: "other", Image: "demo:1", Ports: []spec.Port{{Published: 18090, Target: 81}}}
	_, err = n1.Client.PutService(ctx, other, "")
	if !client.IsConflict(err) || !strings.Contains(err.Error(), "published port 18090 is already used by service web") {
		t.Fatalf("second service on port 18090: %v, want 409 naming web", err)
	}
	if _, err := n1.Client.Service(ctx, "other"); !client.IsNotFound(err) {
		t.Fatalf("the refused service was stored: %v", err)
	}
	// Once the port is free, node 1 serves it too.
	held.Close()
	c.Eventually(15*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(n1.Addr, 18090).String(), time.Second)
		if err != nil {
			return err
		}
		conn.Close()
		got, err := n1.Client.Service(ctx, "web")
		if err != nil || len(got.Problems) != 0 {
			return fmt.Errorf("node 1 still reports %q (%v)", got.Problems, err)
		}
		return nil
	})
	// Deleted: every node closes the port.
	if _, err := n0.Client.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	c.Eventually(10*time.Second, func() error {
		for _, n := range c.Nodes {
			if conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(n.Addr, 18090).String(), time.Second); err == nil {
				conn.Close()
				return fmt.Errorf("%s still listens", n.Name)
			}
		}
		return nil
	})
}
