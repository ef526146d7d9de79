package node_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/testenv"
)

// fakes returns the fake runtime of every node.
func fakes(c *testenv.Cluster) []*runtime.Fake {
	out := make([]*runtime.Fake, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Runtime().(*runtime.Fake)
	}
	return out
}

// running lists node n's running containers of service.
func running(t *testing.T, f *runtime.Fake, service string) []runtime.Replica {
	t.Helper()
	list, err := f.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []runtime.Replica
	for _, r := range list {
		if r.Service == service && r.State == runtime.StateRunning {
			out = append(out, r)
		}
	}
	return out
}

// runningOne returns the first of nodes that runs a replica of service.
func runningOne(t *testing.T, nodes []*testenv.Node, service string) *testenv.Node {
	t.Helper()
	for _, n := range nodes {
		if len(running(t, n.Runtime().(*runtime.Fake), service)) > 0 {
			return n
		}
	}
	t.Fatalf("none of %d nodes runs a replica of %s", len(nodes), service)
	return nil
}

// checkOwners checks that the running nodes run exactly the slots of
// service that placement gives them, one container each.
func checkOwners(t *testing.T, c *testenv.Cluster, service string, replicas int) error {
	total := 0
	for _, n := range c.Running() {
		a := n.Agent()
		if a == nil {
			return fmt.Errorf("%s is down", n.Name)
		}
		got := running(t, n.Runtime().(*runtime.Fake), service)
		total += len(got)
		for _, r := range got {
			if owner, ok := a.Placement().Owner(service, r.Slot); !ok || owner != n.Name {
				return fmt.Errorf("%s runs %s/%d, owned by %q", n.Name, service, r.Slot, owner)
			}
		}
	}
	if total != replicas {
		return fmt.Errorf("%d containers of %s run, want %d", total, service, replicas)
	}
	return nil
}

// checkView checks that every running node's GET /v1/replicas shows
// exactly replicas healthy replicas of service, on running nodes only.
func checkView(c *testenv.Cluster, service string, replicas int) error {
	live := map[string]bool{}
	for _, n := range c.Running() {
		live[n.Name] = true
	}
	for _, n := range c.Running() {
		reps, err := n.Client.Replicas(context.Background(), "")
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		healthy := 0
		for _, r := range reps {
			if !live[r.Node] {
				return fmt.Errorf("%s still shows %s/%d on %s", n.Name, r.Service, r.Slot, r.Node)
			}
			if r.Service == service && r.Healthy && r.State == "running" {
				healthy++
				if r.Endpoint == "" || r.Container == "" {
					return fmt.Errorf("%s: replica %+v lacks endpoint or container", n.Name, r)
				}
			}
		}
		if healthy != replicas || len(reps) != replicas {
			return fmt.Errorf("%s shows %d healthy of %d replicas, want %d", n.Name, healthy, len(reps), replicas)
		}
	}
	return nil
}

// One service on five nodes: the owners run it, the view agrees
// everywhere, logs come over the peer plane, a dead owner's slots move to
// the survivors, scaling and deletion follow.
func TestReplicasFollowPlacement(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 5})
	ctx := ctxT(t)
	put := func(n int) {
		t.Helper()
		s := spec.Spec{Name: "web", Image: "demo:1", Replicas: n, Ports: []spec.Port{{Published: 8080, Target: 80}}}
		if _, err := c.Running()[0].Client.PutService(ctx, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	put(3)
	c.Eventually(15*time.Second, func() error { return checkOwners(t, c, "web", 3) })
	c.Eventually(15*time.Second, func() error { return checkView(c, "web", 3) })

	// Logs of every replica, from a node that runs none of them if any.
	reader := c.Nodes[0]
	for _, n := range c.Nodes {
		if len(running(t, n.Runtime().(*runtime.Fake), "web")) == 0 {
			reader = n
			break
		}
	}
	var buf bytes.Buffer
	if err := reader.Client.Logs(ctx, "web", client.LogsOptions{Tail: 10}, &buf); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		for _, r := range running(t, n.Runtime().(*runtime.Fake), "web") {
			want := fmt.Sprintf("[web/%d@%s] started web/%d\n", r.Slot, n.Name, r.Slot)
			if !strings.Contains(buf.String(), want) {
				t.Errorf("logs from %s lack %q:\n%s", reader.Name, want, buf.String())
			}
		}
	}
	if err := reader.Client.Logs(ctx, "nope", client.LogsOptions{}, &buf); !client.IsNotFound(err) {
		t.Errorf("logs of a missing service: %v", err)
	}

	// Kill a node that owns a slot: the survivors take it over.
	victim := runningOne(t, c.Nodes[1:], "web")
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, func() error { return checkOwners(t, c, "web", 3) })
	c.Eventually(20*time.Second, func() error { return checkView(c, "web", 3) })

	put(5)
	c.Eventually(15*time.Second, func() error { return checkOwners(t, c, "web", 5) })
	put(2)
	c.Eventually(15*time.Second, func() error { return checkOwners(t, c, "web", 2) })
	c.Eventually(15*time.Second, func() error { return checkView(c, "web", 2) })

	if _, err := c.Nodes[0].Client.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	c.Eventually(15*time.Second, func() error { return checkOwners(t, c, "web", 0) })
	c.Eventually(15*time.Second, func() error { return checkView(c, "web", 0) })
}

// A replica whose node is stopping it shows as "stopping", not healthy,
// for as long as the stop takes, and then goes away: it is neither served
// nor counted meanwhile, whatever its container's state.
func TestReplicaStoppingState(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1})
	ctx := ctxT(t)
	n := c.Nodes[0]
	put := func(replicas int) {
		t.Helper()
		s := spec.Spec{Name: "web", Image: "demo:1", Replicas: replicas, Ports: []spec.Port{{Published: 8080, Target: 80}}}
		if _, err := n.Client.PutService(ctx, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	put(2)
	c.Eventually(15*time.Second, func() error { return checkView(c, "web", 2) })

	release := make(chan struct{})
	var held atomic.Int32
	f := n.Runtime().(*runtime.Fake)
	f.SetStopHook(func(string) {
		held.Add(1)
		<-release
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	put(1)
	c.Eventually(15*time.Second, func() error {
		reps, err := n.Client.Replicas(ctx, "web")
		if err != nil {
			return err
		}
		for _, r := range reps {
			if r.Slot == 1 {
				if r.State != "stopping" || r.Healthy {
					return fmt.Errorf("web/1 is %s (healthy %v), want stopping", r.State, r.Healthy)
				}
				return nil
			}
		}
		return fmt.Errorf("web/1 not in the view: %+v", reps)
	})
	// The status says stopping from the pass that decided the stop; the
	// stop itself runs on its own goroutine.
	c.Eventually(15*time.Second, func() error {
		if h := held.Load(); h != 1 {
			return fmt.Errorf("%d stops under way, want 1", h)
		}
		return nil
	})
	if got := running(t, f, "web"); len(got) != 2 {
		t.Fatalf("%d containers run while the stop is held, want 2 (the stop has not happened)", len(got))
	}
	unblock()
	c.Eventually(15*time.Second, func() error { return checkView(c, "web", 1) })
	if got := running(t, f, "web"); len(got) != 1 || got[0].Slot != 0 {
		t.Fatalf("after the stop: %+v, want web/0 only", got)
	}
}

// A pass that listed the containers before an action on a slot ended
// must not act on that slot from its old list: it started the container
// again ("already exists", a spurious error and backoff). Found in the
// chaos suite's logs, where a list took seconds under load.
func TestReplicaPassIgnoresOldList(t *testing.T) {
	defer node.SetReplicaResync(20 * time.Millisecond)()
	c := testenv.New(t, testenv.Options{Nodes: 1})
	ctx := ctxT(t)
	n := c.Nodes[0]
	f := n.Runtime().(*runtime.Fake)

	var startCalls atomic.Int32
	startIn, releaseStart := make(chan struct{}), make(chan struct{})
	f.SetStartError(func(runtime.ReplicaSpec) error {
		if startCalls.Add(1) == 1 {
			close(startIn)
			<-releaseStart
		}
		return nil
	})
	var armed atomic.Bool
	listIn, releaseList := make(chan struct{}), make(chan struct{})
	f.SetListHook(func() {
		if armed.CompareAndSwap(true, false) {
			close(listIn)
			<-releaseList
		}
	})
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 1}
	if _, err := n.Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	wait := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		}
	}
	wait(startIn, "the start")
	armed.Store(true) // the next pass lists while the start is under way
	wait(listIn, "a list during the start")
	close(releaseStart)
	a := n.Agent()
	c.Eventually(10*time.Second, func() error {
		if a.ActionsDone() < 1 {
			return fmt.Errorf("the start has not ended")
		}
		return nil
	})
	passes := a.Passes()
	close(releaseList) // the pass goes on with a list without the container
	c.Eventually(10*time.Second, func() error {
		if p := a.Passes(); p < passes+3 {
			return fmt.Errorf("%d passes since, want 3", p-passes)
		}
		return nil
	})
	if got := startCalls.Load(); got != 1 {
		t.Errorf("%d starts of web/0, want 1", got)
	}
	reps, err := n.Client.Replicas(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].State != "running" || reps[0].LastError != "" {
		t.Errorf("view %+v, want web/0 running without an error", reps)
	}
}

// A followed log stream from another node delivers new lines as they are
// written, and ends when the client goes away.
func TestReplicaLogsFollow(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 2})
	ctx := ctxT(t)
	if _, err := c.Nodes[0].Client.PutService(ctx, spec.Spec{Name: "web", Image: "demo:1", Replicas: 1}, ""); err != nil {
		t.Fatal(err)
	}
	var owner, reader *testenv.Node
	c.Eventually(15*time.Second, func() error {
		for i, n := range c.Nodes {
			if len(running(t, n.Runtime().(*runtime.Fake), "web")) == 1 {
				owner, reader = n, c.Nodes[1-i]
				return nil
			}
		}
		return fmt.Errorf("web not running")
	})
	c.Eventually(10*time.Second, func() error {
		reps, err := reader.Client.Replicas(ctx, "web")
		if err != nil || len(reps) != 1 || reps[0].Node != owner.Name {
			return fmt.Errorf("reader's view: %+v, %v", reps, err)
		}
		return nil
	})
	id := running(t, owner.Runtime().(*runtime.Fake), "web")[0].ID

	// Malformed status messages are refused and counted; so is a status
	// pushed on another node's behalf.
	before := owner.Agent().DroppedPeerMessages()
	forged := fmt.Sprintf(`{"op":"push","from":"x","doc":{"node":%q,"version":1,"replicas":[]}}`, owner.Name)
	for _, msg := range []string{`{"op":"push"}`, `not json`, forged} {
		if _, err := reader.Agent().CallStatus(ctx, owner.Agent(), []byte(msg)); err == nil {
			t.Errorf("status message %s accepted", msg)
		}
	}
	if got := owner.Agent().DroppedPeerMessages() - before; got != 3 {
		t.Errorf("dropped %v status messages, want 3", got)
	}

	w := &lineWriter{lines: make(chan string, 100)}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reader.Client.Logs(fctx, "web", client.LogsOptions{Tail: 1, Follow: true}, w) }()
	want := fmt.Sprintf("[web/0@%s] ", owner.Name)
	expect := func(line string) {
		t.Helper()
		select {
		case got := <-w.lines:
			if got != want+line {
				t.Fatalf("line %q, want %q", got, want+line)
			}
		case err := <-done:
			t.Fatalf("stream ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("no line %q after 10s", line)
		}
	}
	expect("started web/0")
	for i := range 3 {
		line := fmt.Sprintf("hello %d", i)
		owner.Runtime().(*runtime.Fake).AppendLog(id, line)
		expect(line)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil || fctx.Err() == nil {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after cancel")
	}
}

// lineWriter splits what it is written into lines on a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// A template change replaces replicas one at a time, each old one
// stopping only after its replacement is healthy.
func TestReplicaRollingUpdate(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1})
	ctx := ctxT(t)
	f := c.Nodes[0].Runtime().(*runtime.Fake)
	var v2Healthy atomic.Bool
	var v2Probes atomic.Int32
	f.SetExecResult(func(id string, cmd []string) int {
		if r, ok := f.Container(id); ok && r.Image == "demo:2" {
			v2Probes.Add(1)
			if !v2Healthy.Load() {
				return 1
			}
		}
		return 0
	})
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 3,
		Health: &spec.Health{Exec: []string{"check"}, Interval: spec.Duration(time.Second)}}
	if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	images := func() (v1, v2 int) {
		for _, r := range running(t, f, "web") {
			if r.Image == "demo:1" {
				v1++
			} else {
				v2++
			}
		}
		return v1, v2
	}
	c.Eventually(15*time.Second, func() error {
		reps, err := c.Nodes[0].Client.Replicas(ctx, "web")
		if err != nil {
			return err
		}
		healthy := 0
		for _, r := range reps {
			if r.Healthy {
				healthy++
			}
		}
		if healthy != 3 {
			return fmt.Errorf("%d healthy: %+v", healthy, reps)
		}
		return nil
	})
	before := len(f.Ops())

	s.Image = "demo:2"
	if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	// The first new replica starts and fails its probes: nothing else moves.
	c.Eventually(15*time.Second, func() error {
		if n := v2Probes.Load(); n < 3 {
			return fmt.Errorf("%d probes of the new replica", n)
		}
		return nil
	})
	if v1, v2 := images(); v1 != 3 || v2 != 1 {
		t.Fatalf("while the new replica is unhealthy: %d old and %d new run, want 3 and 1", v1, v2)
	}
	reps, err := c.Nodes[0].Client.Replicas(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(reps, func(r api.Replica) bool { return r.Image == "demo:2" && r.State == "starting" && !r.Healthy }) {
		t.Fatalf("no starting new replica in %+v", reps)
	}

	v2Healthy.Store(true)
	c.Eventually(20*time.Second, func() error {
		if v1, v2 := images(); v1 != 0 || v2 != 3 {
			return fmt.Errorf("%d old and %d new run", v1, v2)
		}
		return nil
	})

	// Replay the operations: at no point are two slots mid-replacement,
	// and every old replica stops after its slot's new one started.
	live := map[string]bool{}
	newStarted := map[string]bool{} // slot prefix -> new started, old not yet stopped
	for _, op := range f.Ops()[before:] {
		slot := op.ID[:strings.LastIndexByte(op.ID, '-')]
		switch op.Op {
		case "start":
			live[op.ID] = true
			newStarted[slot] = true
			if len(newStarted) > 1 {
				t.Fatalf("two slots mid-replacement at %s: %v", op.ID, newStarted)
			}
		case "stop":
			if !newStarted[slot] {
				t.Fatalf("%s stopped before its replacement started", op.ID)
			}
			delete(newStarted, slot)
			delete(live, op.ID)
		}
	}
	if len(live) != 3 || len(newStarted) != 0 {
		t.Fatalf("after the update: new %v, pending %v", live, newStarted)
	}
}

// A crashed replica comes back after a doubling backoff, its restarts are
// counted, and an agent restart adopts the running replica.
func TestReplicaCrashRestartAndAdoption(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1})
	ctx := ctxT(t)
	n := c.Nodes[0]
	f := n.Runtime().(*runtime.Fake)
	if _, err := n.Client.PutService(ctx, spec.Spec{Name: "web", Image: "demo:1", Replicas: 1}, ""); err != nil {
		t.Fatal(err)
	}
	var id string
	c.Eventually(15*time.Second, func() error {
		rs := running(t, f, "web")
		if len(rs) != 1 {
			return fmt.Errorf("%d running", len(rs))
		}
		id = rs[0].ID
		return nil
	})
	waitRestarts := func(want int) api.Replica {
		t.Helper()
		var rep api.Replica
		c.Eventually(15*time.Second, func() error {
			reps, err := n.Client.Replicas(ctx, "web")
			if err != nil || len(reps) != 1 {
				return fmt.Errorf("replicas %+v, %v", reps, err)
			}
			rep = reps[0]
			if rep.State != "running" || rep.Restarts != want {
				return fmt.Errorf("replica %+v, want running with %d restarts", rep, want)
			}
			return nil
		})
		return rep
	}
	for i, wantBackoff := range []time.Duration{time.Second, 2 * time.Second} {
		crashed := time.Now()
		f.Crash(id, 137)
		waitRestarts(i + 1)
		ops := f.Ops()
		last := ops[len(ops)-1]
		if last.Op != "start" || last.ID != id {
			t.Fatalf("last op %+v, want a start of %s", last, id)
		}
		if d := last.At.Sub(crashed); d < wantBackoff {
			t.Fatalf("crash %d restarted after %v, want at least %v", i+1, d, wantBackoff)
		}
	}

	// Adoption: restart the agent; the replica keeps running untouched.
	starts, ops := f.Starts(), len(f.Ops())
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(15*time.Second, func() error {
		if p := n.Agent().ReconcilePasses(); p < 3 {
			return fmt.Errorf("%d passes", p)
		}
		reps, err := n.Client.Replicas(ctx, "web")
		if err != nil || len(reps) != 1 || reps[0].Container != id || !reps[0].Healthy {
			return fmt.Errorf("replicas %+v, %v", reps, err)
		}
		return nil
	})
	if f.Starts() != starts || len(f.Ops()) != ops {
		t.Fatalf("agent restart touched containers: ops %+v", f.Ops()[ops:])
	}
}

// Make-before-break ends on the new owner's status, not on a timer: with
// the periodic pass turned off, the node that covered a dead node's slot
// stops its copy as soon as the node is back and reports the slot
// healthy. (Before, the copy ran until the next periodic pass, up to
// replicaResync later, with two replicas of the slot serving.)
func TestHandoffEndsOnNewOwnersStatus(t *testing.T) {
	t.Cleanup(node.SetReplicaResync(time.Hour))
	c := testenv.New(t, testenv.Options{Nodes: 3})
	ctx := ctxT(t)
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 3}
	if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, func() error { return checkOwners(t, c, "web", 3) })
	victim := c.Nodes[2]
	if len(running(t, victim.Runtime().(*runtime.Fake), "web")) != 1 {
		t.Fatalf("%s runs %d replicas, want 1", victim.Name, len(running(t, victim.Runtime().(*runtime.Fake), "web")))
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	// The survivors cover the slot: three copies among two nodes.
	c.Eventually(20*time.Second, func() error { return checkOwners(t, c, "web", 3) })
	covered := 0
	for _, n := range c.Running() {
		covered += len(running(t, n.Runtime().(*runtime.Fake), "web"))
	}
	if covered != 3 {
		t.Fatalf("%d copies on the survivors, want 3", covered)
	}

	if err := victim.Start(c.Nodes[0].GossipAddr()); err != nil {
		t.Fatal(err)
	}
	// Until then the covering copy shows as leaving: its node no longer
	// owns the slot (the new owner waits handoffSettle, 1 s, to start it).
	c.Eventually(20*time.Second, func() error {
		reps, err := c.Nodes[0].Client.Replicas(ctx, "web")
		if err != nil {
			return err
		}
		for _, r := range reps {
			if r.Leaving {
				if owner, _ := c.Nodes[0].Agent().Placement().Owner("web", r.Slot); owner == r.Node {
					return fmt.Errorf("%s/%d on its owner %s shows as leaving", r.Service, r.Slot, r.Node)
				}
				return nil
			}
		}
		return fmt.Errorf("no replica shows as leaving: %+v", reps)
	})
	// Back to one per node: the survivor that covered the slot stopped
	// its copy, which only a pass run by the status change can do here.
	c.Eventually(20*time.Second, func() error {
		for _, n := range c.Nodes {
			if got := len(running(t, n.Runtime().(*runtime.Fake), "web")); got != 1 {
				return fmt.Errorf("%s runs %d replicas of web, want 1", n.Name, got)
			}
		}
		return checkOwners(t, c, "web", 3)
	})
}

// After a partition heals, the nodes push their replica status to the
// members they see join, so the duplicates the two sides started end as
// soon as the owners are known healthy: here with no periodic pass and no
// status anti-entropy, only those pushes can tell the nodes.
func TestDuplicatesEndAfterHealWithoutAntiEntropy(t *testing.T) {
	t.Cleanup(node.SetReplicaResync(time.Hour))
	t.Cleanup(node.SetStatusPullInterval(time.Hour))
	c := testenv.New(t, testenv.Options{Nodes: 3})
	ctx := ctxT(t)
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 3}
	if _, err := c.Nodes[0].Client.PutService(ctx, s, ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, func() error { return checkOwners(t, c, "web", 3) })

	// Alone, node 0 runs every slot; the other side covers node 0's.
	c.Partition([]int{0}, []int{1, 2})
	c.Eventually(30*time.Second, func() error {
		if got := len(running(t, fakes(c)[0], "web")); got != 3 {
			return fmt.Errorf("isolated node runs %d replicas, want 3", got)
		}
		other := len(running(t, fakes(c)[1], "web")) + len(running(t, fakes(c)[2], "web"))
		if other != 3 {
			return fmt.Errorf("the other side runs %d replicas, want 3", other)
		}
		return nil
	})

	c.Heal()
	c.Eventually(30*time.Second, func() error {
		for i, f := range fakes(c) {
			if got := len(running(t, f, "web")); got != 1 {
				return fmt.Errorf("%s runs %d replicas of web, want 1", c.Nodes[i].Name, got)
			}
		}
		return checkOwners(t, c, "web", 3)
	})
}
