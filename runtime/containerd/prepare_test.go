package containerd_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"

	"github.com/shoalmesh/shoal/runtime"
)

// A prepared replica has its container, task and network but runs no
// process; Start of the same spec only starts it (same address and host
// port). A prepared replica is removed by Stop like any other, and one of
// another version in the way of a Start is replaced.
func TestPreparedReplica(t *testing.T) {
	e := newEnv(t)
	e.importImage(t, "shoal-test:1")
	ctx := context.Background()
	spec := runtime.ReplicaSpec{ID: "web-0-v1", Service: "web", Slot: 0, Version: "v1", Image: "shoal-test:1", Network: "bridge", Ports: []int{80}}
	t.Cleanup(func() {
		for _, id := range []string{"web-0-v1", "web-1-v1", "web-2-v1"} {
			_ = e.d.Stop(ctx, id, time.Second)
		}
	})

	p, err := e.d.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	hp := p.HostPorts[80]
	if p.State != runtime.StatePrepared || !e.cfg.Subnet.Contains(p.IP) || hp == 0 || !p.StartedAt.IsZero() {
		t.Fatalf("Prepare = %+v", p)
	}
	listed, ok := e.replica(t, spec.ID)
	if !ok || listed.State != runtime.StatePrepared || listed.IP != p.IP || listed.HostPorts[80] != hp {
		t.Fatalf("List = %+v (found %v), want it prepared at %s", listed, ok, p.IP)
	}
	c, err := e.client.LoadContainer(e.nsctx(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(e.nsctx(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(e.nsctx()); err != nil || st.Status != ctd.Created {
		t.Fatalf("task status %+v, %v; want created", st, err)
	}
	// Nothing listens: the process has not started.
	if conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(p.IP, 80).String(), time.Second); err == nil {
		conn.Close()
		t.Fatal("a prepared replica accepts connections")
	}

	r, err := e.d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start of the prepared replica: %v", err)
	}
	if r.State != runtime.StateRunning || r.IP != p.IP || r.HostPorts[80] != hp || r.StartedAt.IsZero() {
		t.Fatalf("Start = %+v, want the prepared one (%s, host port %d) running", r, p.IP, hp)
	}
	waitHello(t, fmt.Sprintf("http://127.0.0.1:%d/", hp))
	if listed, ok := e.replica(t, spec.ID); !ok || listed.State != runtime.StateRunning || !listed.StartedAt.Equal(r.StartedAt) {
		t.Fatalf("List after Start = %+v", listed)
	}
	// A second Start of a running replica is refused and touches nothing.
	if _, err := e.d.Start(ctx, spec); err == nil {
		t.Fatal("Start of a running replica's ID succeeded")
	}
	if listed, ok := e.replica(t, spec.ID); !ok || listed.State != runtime.StateRunning || !listed.StartedAt.Equal(r.StartedAt) {
		t.Fatalf("List after a refused Start = %+v, want it running since %v", listed, r.StartedAt)
	}
	waitHello(t, fmt.Sprintf("http://127.0.0.1:%d/", hp))

	// Stop removes a prepared replica with its network.
	other := spec
	other.ID, other.Slot = "web-1-v1", 1
	p1, err := e.d.Prepare(ctx, other)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if err := e.d.Stop(ctx, other.ID, 10*time.Second); err != nil {
		t.Fatalf("Stop of a prepared replica: %v", err)
	}
	assertGone(t, e, other.ID, p1.IP, p1.HostPorts[80], 1)

	// A prepared replica of another version is replaced by a Start.
	old := spec
	old.ID, old.Slot = "web-2-v1", 2
	if _, err := e.d.Prepare(ctx, old); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	newer := old
	newer.Version = "v2"
	r2, err := e.d.Start(ctx, newer)
	if err != nil {
		t.Fatalf("Start over a prepared replica of another version: %v", err)
	}
	if r2.State != runtime.StateRunning || r2.Version != "v2" {
		t.Fatalf("Start = %+v, want v2 running", r2)
	}
	if listed, ok := e.replica(t, old.ID); !ok || listed.Version != "v2" || listed.State != runtime.StateRunning {
		t.Fatalf("List = %+v, want v2 running", listed)
	}
	waitHello(t, fmt.Sprintf("http://127.0.0.1:%d/", r2.HostPorts[80]))
}

// A prepare cut short at each of its steps (the agent killed there, so no
// cleanup ran) leaves a container that a Start replaces with a working
// replica, and that a Stop removes with everything it holds: no IP
// allocation, firewall rule, network namespace pin or veth stays behind.
func TestPrepareCutShortAtEachStep(t *testing.T) {
	e := newEnv(t)
	e.importImage(t, "shoal-test:1")
	ctx := context.Background()
	for i, step := range []string{"container", "task", "netns", "network"} {
		t.Run(step, func(t *testing.T) {
			spec := runtime.ReplicaSpec{ID: fmt.Sprintf("cut-%d-v1", i), Service: "cut", Slot: i, Version: "v1",
				Image: "shoal-test:1", Network: "bridge", Ports: []int{80}}
			t.Cleanup(func() { _ = e.d.Stop(ctx, spec.ID, time.Second) })
			cut := func() (hostPort int, leaked []string) {
				t.Helper()
				e.d.CrashAfter(step)
				_, err := e.d.Prepare(ctx, spec)
				e.d.CrashAfter("")
				if err == nil {
					t.Fatalf("Prepare cut after %s succeeded", step)
				}
				listed, ok := e.replica(t, spec.ID)
				if !ok {
					t.Fatalf("the container of a prepare cut after %s is not listed", step)
				}
				if listed.State == runtime.StateRunning {
					t.Fatalf("a prepare cut after %s lists as running: %+v", step, listed)
				}
				return listed.HostPorts[80], e.ipamFiles(t)
			}

			// The pass starts the slot: the leftover is replaced.
			hp, leaked := cut()
			if step == "network" && len(leaked) != 1 {
				t.Fatalf("IP allocations after a prepare cut after the network: %v, want 1", leaked)
			}
			r, err := e.d.Start(ctx, spec)
			if err != nil {
				t.Fatalf("Start over a prepare cut after %s: %v", step, err)
			}
			if r.State != runtime.StateRunning || !e.cfg.Subnet.Contains(r.IP) || r.HostPorts[80] == 0 {
				t.Fatalf("Start = %+v", r)
			}
			waitHello(t, fmt.Sprintf("http://127.0.0.1:%d/", r.HostPorts[80]))
			if got := e.ipamFiles(t); len(got) != 1 || got[0] != r.IP.String() {
				t.Errorf("IP allocations %v, want only the running replica's %s", got, r.IP)
			}
			if err := e.d.Stop(ctx, spec.ID, time.Second); err != nil {
				t.Fatal(err)
			}
			assertGone(t, e, spec.ID, r.IP, r.HostPorts[80], 0)

			// The standby discards it: Stop alone cleans up.
			hp, leaked = cut()
			if err := e.d.Stop(ctx, spec.ID, 10*time.Second); err != nil {
				t.Fatalf("Stop of a prepare cut after %s: %v", step, err)
			}
			var ip netip.Addr
			if len(leaked) == 1 {
				ip = netip.MustParseAddr(leaked[0])
			}
			assertGone(t, e, spec.ID, ip, hp, 0)
			if got := e.ipamFiles(t); len(got) != 0 {
				t.Errorf("IP allocations left: %v", got)
			}
		})
	}
}
