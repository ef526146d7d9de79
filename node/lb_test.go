package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/testenv"
)

// portHeld reports nil if a load balancer holds ap: a connection is
// refused (no endpoint) and the port cannot be bound.
func portHeld(ap netip.AddrPort) error {
	if conn, err := net.DialTimeout("tcp", ap.String(), time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("%s accepts a connection without a replica", ap)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	ln, err := net.Listen("tcp", ap.String())
	if err == nil {
		ln.Close()
		return fmt.Errorf("%s is free", ap)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	return nil
}

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
	// Node 0 holds the port (refusing connections: no replica yet); node
	// 1 says why it cannot, in ls and inspect.
	c.Eventually(10*time.Second, func() error {
		if err := portHeld(netip.AddrPortFrom(n0.Addr, 18090)); err != nil {
			return err
		}
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
	// Once the port is free, node 1 takes it too.
	held.Close()
	c.Eventually(15*time.Second, func() error {
		if err := portHeld(netip.AddrPortFrom(n1.Addr, 18090)); err != nil {
			return err
		}
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

// TestMeshDropsDeadNodeEndpoints runs a service on three in-process nodes
// with the fake runtime in host networking, and stands a real TCP server
// in for each replica on its endpoint. Every node's load balancer reaches
// all three; when a node crashes, the others stop routing to its endpoint
// on the membership event, although the endpoint itself still answers.
func TestMeshDropsDeadNodeEndpoints(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 3})
	ctx := context.Background()
	s := spec.Spec{Name: "echo", Image: "demo:1", Replicas: 3, Network: "host",
		Ports: []spec.Port{{Published: 18095, Target: 9000}}}
	if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	c.Eventually(30*time.Second, func() error {
		reps, err := c.Nodes[0].Client.Replicas(ctx, "echo")
		if err != nil {
			return err
		}
		for _, r := range reps {
			ep := r.Endpoints[9000]
			if !r.Healthy || ep == "" || ep != r.Endpoint {
				return fmt.Errorf("replica %d on %s: healthy=%v endpoints %v", r.Slot, r.Node, r.Healthy, r.Endpoints)
			}
			if served[ep] {
				continue
			}
			if _, err := newStandIn(t, ep, r.Node); err != nil {
				return fmt.Errorf("standing in for %s: %w", ep, err)
			}
			served[ep] = true
		}
		if len(served) != 3 {
			return fmt.Errorf("%d replicas", len(served))
		}
		return nil
	})
	ask := func(n *testenv.Node) (string, error) { return askNode(n, 18095) }
	reachesAll(c, 18095, 3)
	dead := c.Nodes[2]
	if err := dead.Kill(); err != nil {
		t.Fatal(err)
	}
	// Once the others see it fail, 60 connections in a row through each
	// survivor avoid it; every connection succeeds meanwhile (the new
	// owner's replica has no stand-in yet: its connects are refused and
	// retried elsewhere).
	for _, n := range c.Nodes[:2] {
		c.Eventually(30*time.Second, func() error {
			for range 60 {
				name, err := ask(n)
				if err != nil {
					t.Fatalf("through %s: %v", n.Name, err)
				}
				if name == dead.Name {
					return fmt.Errorf("%s still routes to the dead node", n.Name)
				}
			}
			return nil
		})
	}
	// The balancer's series are on the API's /metrics.
	var metrics string
	resp, err := http.Get("http://" + c.Nodes[0].Agent().APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics = string(b)
	for _, want := range []string{`shoal_lb_connections_total{endpoint="",port="18095",service="echo"}`, `shoal_lb_latency_seconds_bucket{endpoint=`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// askNode connects to a node's load balancer at a published port and
// returns the line the replica's stand-in answers: its node's name.
func askNode(n *testenv.Node, port int) (string, error) {
	conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(n.Addr, uint16(port)).String(), time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var name string
	_, err = fmt.Fscanln(conn, &name)
	return name, err
}

// reachesAll waits until every node's load balancer at port has reached
// the stand-ins of want nodes.
func reachesAll(c *testenv.Cluster, port, want int) {
	for _, n := range c.Nodes {
		seen := map[string]bool{}
		c.Eventually(10*time.Second, func() error {
			for range 30 {
				name, err := askNode(n, port)
				if err != nil {
					return err
				}
				seen[name] = true
			}
			if len(seen) != want {
				return fmt.Errorf("%s's load balancer reached %v", n.Name, seen)
			}
			return nil
		})
	}
}

// standIn is a real TCP server standing in for a replica on its
// endpoint: it answers each connection with the replica's node name, and
// counts the connections it accepts after the replica's stop began.
type standIn struct {
	ln      net.Listener
	stopped atomic.Bool
	late    atomic.Int64
}

func newStandIn(t *testing.T, ep, name string) (*standIn, error) {
	ln, err := net.Listen("tcp", ep)
	if err != nil {
		return nil, err
	}
	s := &standIn{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if s.stopped.Load() {
				s.late.Add(1)
			}
			go func() {
				fmt.Fprintln(conn, name)
				conn.Close()
			}()
		}
	}()
	return s, nil
}

// A replica that stops because it is no longer wanted (here: scaled
// away) is dropped by every node's load balancer before its container is
// told to stop: when the runtime's Stop is called, no node routes to it
// any more, and under a steady stream of new connections through every
// node none fails. (A connection picked just before the drain may still
// arrive after it: the stop then waits for the server to accept it,
// which TestDrainedStopWaitsForQueuedConnections shows; so the stand-ins
// count such arrivals for the log only.)
func TestPlannedStopsDrainFirst(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 3})
	ctx := context.Background()
	const port = 18096
	s := spec.Spec{Name: "echo", Image: "demo:1", Replicas: 3, Network: "host",
		Ports: []spec.Port{{Published: port, Target: 9000}}}
	if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		byID   = map[string]*standIn{}       // container -> its stand-in
		epOf   = map[string]netip.AddrPort{} // container -> its endpoint
		starts = map[string]int{}            // container -> stops begun
		routed []string                      // stops begun while a node still routed to the replica
	)
	c.Eventually(30*time.Second, func() error {
		reps, err := c.Nodes[0].Client.Replicas(ctx, "echo")
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reps {
			ep := r.Endpoints[9000]
			if !r.Healthy || ep == "" {
				return fmt.Errorf("replica %d on %s: healthy=%v endpoints %v", r.Slot, r.Node, r.Healthy, r.Endpoints)
			}
			if byID[r.Container] != nil {
				continue
			}
			si, err := newStandIn(t, ep, r.Node)
			if err != nil {
				return fmt.Errorf("standing in for %s: %w", ep, err)
			}
			byID[r.Container] = si
			epOf[r.Container] = netip.MustParseAddrPort(ep)
		}
		if len(byID) != 3 {
			return fmt.Errorf("%d replicas", len(byID))
		}
		return nil
	})
	for _, n := range c.Nodes {
		n.Runtime().(*runtime.Fake).SetStopHook(func(id string) {
			mu.Lock()
			defer mu.Unlock()
			si := byID[id]
			if si == nil {
				return
			}
			si.stopped.Store(true)
			starts[id]++
			for _, m := range c.Nodes {
				if slices.Contains(m.Agent().LBEndpoints(port), epOf[id]) {
					routed = append(routed, fmt.Sprintf("%s still routed to %s (%s)", m.Name, id, epOf[id]))
				}
			}
		})
	}
	ask := func(n *testenv.Node) (string, error) { return askNode(n, port) }
	reachesAll(c, port, 3) // every node's balancer routes to all three

	// A steady stream of new connections through every node, two at a
	// time each, while the service is scaled from 3 to 1.
	var (
		done         = make(chan struct{})
		wg           sync.WaitGroup
		okN, failed  atomic.Int64
		firstFailure atomic.Pointer[string]
	)
	for _, n := range c.Nodes {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-done:
						return
					default:
					}
					if _, err := ask(n); err != nil {
						msg := fmt.Sprintf("through %s: %v", n.Name, err)
						firstFailure.CompareAndSwap(nil, &msg)
						failed.Add(1)
						continue
					}
					okN.Add(1)
				}
			}()
		}
	}
	s.Replicas = 1
	if _, err := c.Nodes[1].Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(starts) != 2 {
			return fmt.Errorf("%d stops begun", len(starts))
		}
		return nil
	})
	// Connections go on after the stops, to the replica that stays.
	before := okN.Load()
	c.Eventually(10*time.Second, func() error {
		if k := okN.Load() - before; k < 300 {
			return fmt.Errorf("%d connections after the stops", k)
		}
		return nil
	})
	close(done)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, r := range routed {
		t.Errorf("when its stop began, %s", r)
	}
	late := 0
	for _, si := range byID {
		late += int(si.late.Load())
	}
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d connections failed; first: %s", f, f+okN.Load(), *firstFailure.Load())
	}
	t.Logf("%d connections, %d stops, %d connections arrived after a stop began", okN.Load(), len(starts), late)
}

// A drained stop also waits for the replica's server to accept the
// connections already queued on it (the runtime counts them): SIGTERM
// would make it close its listener and reset them.
func TestDrainedStopWaitsForQueuedConnections(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1})
	ctx := context.Background()
	n := c.Nodes[0]
	f := n.Runtime().(*runtime.Fake)
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 2, Network: "host",
		Ports: []spec.Port{{Published: 18097, Target: 9000}}}
	if _, err := n.Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, func() error {
		reps, err := n.Client.Replicas(ctx, "web")
		if err != nil {
			return err
		}
		if len(reps) != 2 || !reps[0].Healthy || !reps[1].Healthy {
			return fmt.Errorf("replicas: %+v", reps)
		}
		return nil
	})
	var (
		mu      sync.Mutex
		polled  = map[string]int{} // container -> Queued calls while connections wait
		ports   = map[string][]int{}
		stopped = map[string]bool{}
		release = make(chan struct{})
	)
	f.SetQueued(func(id string, p []int) int {
		select {
		case <-release:
			return 0
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		polled[id]++
		ports[id] = p
		return 3
	})
	f.SetStopHook(func(id string) {
		mu.Lock()
		defer mu.Unlock()
		stopped[id] = true
	})
	s.Replicas = 1
	if _, err := n.Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	var victim string
	c.Eventually(30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for id, k := range polled {
			if k >= 3 {
				victim = id
				return nil
			}
		}
		return fmt.Errorf("queues polled %v", polled)
	})
	mu.Lock()
	if stopped[victim] {
		t.Errorf("%s stopped while its queue held connections", victim)
	}
	if p := ports[victim]; len(p) == 0 {
		t.Errorf("queues of %s read at no port", victim)
	}
	mu.Unlock()
	close(release)
	c.Eventually(30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !stopped[victim] {
			return fmt.Errorf("%s not stopped after its queue emptied", victim)
		}
		return nil
	})
}
