package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/node/store"
	"github.com/shoalmesh/shoal/runtime/demo"
	"github.com/shoalmesh/shoal/testenv"
	"github.com/shoalmesh/shoal/testenv/hosts"
)

// TestChaos is the chaos suite of issue #6: one 5-host `shoal dev`
// cluster (real agents in network namespaces, a private containerd, real
// containers of the demo image, real HTTP over real sockets) goes
// through five scenarios in order, each starting from a settled cluster:
//
//   - kill_loop: for 3 minutes a host is killed (SIGKILL of its agent and
//     its containers) every 15 s and started again 10 s later, under HTTP
//     load of 100 requests/s spread over every host's load balancer and
//     every published port. Asserted: at least 99.9% of the requests
//     succeed, every kill is restored within 30 s, and the replica counts
//     are exact at the end. Measured and reported: each kill's restore
//     time (target 3 s).
//   - partitions: 3|2 for 10 s and for 60 s, with writes on both sides
//     (new services, a scale, a conflicting write of one service), then
//     heal. Asserted: identical specs everywhere (the last acknowledged
//     write of every service) and exact replica counts within 60 s.
//     Measured: the time to each (target 10 s).
//   - restart_all: every agent stopped, then every agent started. Asserted:
//     every acknowledged write is on every node as soon as its API
//     answers, and the cluster settles.
//   - restart_agent: one agent restarted cleanly (SIGTERM), another killed
//     alone (SIGKILL, its containers keep running). Asserted: its
//     containers are adopted: same IDs and same processes, same start
//     times, zero restarts.
//   - pause: a host's agent paused (SIGSTOP) for 20 s, then resumed.
//     Asserted: once converged, no slot runs twice anywhere (in every
//     node's view and in containerd), counts exact, and that stays so.
//
// "Exact replica counts" means: every live node's API reports, for each
// service, exactly its count of replicas, one per slot, all running and
// healthy, on live nodes only, and no replica of anything else; the
// nodes' views agree; and the containers that actually run in containerd
// (every host's namespace) are exactly those of the view. A replica its
// node is stopping (state "stopping") is not counted, as kubectl does not
// count a terminating pod, but its task must have exited. Each scenario
// starts only once every stop has also ended (the container, its task and
// its network removed), and the partitions report when that was.
//
// The HTTP client of the load is a real client with several addresses:
// request k goes to host k mod 5 at published port 8080, 8081 or 8082 (the
// http, tcp and tcp services), open loop (one goroutine per request, 5 s
// timeout). A host the test killed is down the way a crashed machine is,
// and a client that knows several addresses (Go's net.Dialer with several
// A records, browsers) falls over to the next address when a connect
// fails; the client's DialContext does exactly that: it tries the chosen
// host, then, on a connect error, the other hosts in order. Each request
// has its own connection, so that every host's load balancer gets its
// share (a kept-alive connection that fell over to another host would
// stay with it), and a request fails if it errors in the end or its
// status is not 200. Requests in flight through a host, or to its
// replicas over an L4 port, at the instant it is killed are lost: that is
// what the 0.1% allows.
//
// Speed targets are benchmarks' business: restore and convergence times
// are logged (and appended to the file $SHOAL_CHAOS_REPORT names) and
// asserted only against generous bounds, so that a loaded 2-core CI
// machine does not make the suite flaky; correctness (success rate, exact
// counts, acknowledged writes, adoption, no duplicates) is asserted
// strictly. $SHOAL_CHAOS_LOGS, when set, names a directory the hosts' logs
// are copied to at the end.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos suite takes several minutes")
	}
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "ip", "iptables", "nsenter", "containerd", "runc", "ctr")
	start := time.Now()
	c := newChaos(t)
	t.Run("kill_loop", c.killLoop)
	t.Run("partitions", c.partitions)
	t.Run("restart_all", c.restartAll)
	t.Run("restart_agent", c.restartAgent)
	t.Run("pause", c.pause)
	verdict := "passed"
	if t.Failed() {
		verdict = "FAILED"
	}
	c.reportf(t, "chaos suite: %s in %.0fs", verdict, time.Since(start).Seconds())
}

// Scenario parameters (issue #6 item 5).
const (
	chaosHosts        = 5
	chaosKillEvery    = 15 * time.Second
	chaosDownFor      = 10 * time.Second
	chaosKillLoopFor  = 3 * time.Minute
	chaosRate         = 100 // requests per second
	chaosMinSuccess   = 0.999
	chaosPauseFor     = 20 * time.Second
	chaosStableFor    = 15 * time.Second // how long "no duplicates" is watched after a pause
	chaosRequestLimit = 5 * time.Second
)

// Generous bounds: what is asserted, well above the targets, for loaded
// CI machines.
const (
	chaosRestoreBound  = 30 * time.Second // a kill restored (target 3 s)
	chaosHealBound     = 60 * time.Second // converged after a heal (target 10 s)
	chaosSettleBound   = 3 * time.Minute  // settled before a scenario or after a restart
	chaosMembersBound  = 2 * time.Minute  // membership complete
	chaosDetectBound   = time.Minute      // a fault seen by the others
	chaosRestorePoll   = 20 * time.Millisecond
	chaosConvergePoll  = 50 * time.Millisecond
	chaosAPITimeout    = 5 * time.Second
	chaosWriteTimeout  = 30 * time.Second
	chaosMaxErrLogged  = 10
	chaosReadRetry     = 30 * time.Second
	chaosMaxFailures   = 1000
	chaosMaxAnnotated  = 40 // failures of a scenario listed each with its time
	chaosLogTailBytes  = 128 << 10
	chaosPublishedHTTP = 8080
)

// chaosPorts are the published ports the load goes to.
var chaosPorts = []int{8080, 8081, 8082}

// chaos is the suite's shared cluster.
type chaos struct {
	s       *hosts.State
	clients []*client.Client
	names   []string // host names, fixed
	addrs   []string // host IPs, fixed

	// broken names the scenario after which the cluster did not settle;
	// the later ones fail at once.
	broken string

	mu    sync.Mutex
	acked map[string]api.Service // the newest acknowledged write per service (Deleted for a delete)
}

// chaosHealth is the services' health check.
func chaosHealth() *spec.Health {
	return &spec.Health{HTTP: "/healthz", Interval: spec.Duration(time.Second), Timeout: spec.Duration(500 * time.Millisecond)}
}

// chaosService is a demo-image service with count replicas publishing
// port (target 8080) with protocol ("" is tcp).
func chaosService(name string, count, port int, protocol string) spec.Spec {
	return spec.Spec{Name: name, Image: "shoal-demo:latest", Replicas: count, Health: chaosHealth(),
		Ports: []spec.Port{{Published: port, Target: demo.Port, Protocol: protocol}}}
}

// newChaos brings the cluster up: 5 hosts, the demo image on each, the
// three services of the failover benchmark, settled.
func newChaos(t *testing.T) *chaos {
	bin := shoalBinary(t)
	ctx := context.Background()
	s, err := hosts.Up(ctx, hosts.Options{Nodes: chaosHosts, Dir: filepath.Join(t.TempDir(), "dev"), Binary: bin,
		AgentArgs: strings.Fields(os.Getenv("SHOAL_CHAOS_AGENT_ARGS"))})
	if err != nil {
		t.Fatal(err)
	}
	c := &chaos{s: s, acked: make(map[string]api.Service)}
	t.Cleanup(func() {
		if err := s.Down(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// Runs before Down (cleanups run last in, first out).
	t.Cleanup(func() { c.saveLogs(t) })
	for _, h := range s.Hosts {
		cl, err := client.New(h.API, s.Token)
		if err != nil {
			t.Fatal(err)
		}
		c.clients = append(c.clients, cl)
		c.names = append(c.names, h.Name)
		c.addrs = append(c.addrs, h.Addr.String())
	}
	if err := s.WaitMembers(ctx, chaosMembersBound); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "demo.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.WriteArchive(f, demo.Options{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for i, h := range s.Hosts {
		// The default client gives up after 30 s; an import on a busy
		// machine may take longer.
		cl, err := client.New(h.API, s.Token, client.WithHTTPClient(&http.Client{}))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		_, err = cl.LoadImage(lctx, f)
		cancel()
		f.Close()
		if err != nil {
			t.Fatalf("loading the demo image on %s: %v", c.names[i], err)
		}
	}
	c.put(t, 0, chaosService("web", 3, chaosPublishedHTTP, "http"))
	c.put(t, 1, chaosService("api", 2, 8081, ""))
	c.put(t, 2, chaosService("jobs", 4, 8082, ""))
	c.settle(t, "setup")
	return c
}

// --- scenario (a): the kill loop ---

// killRecord is one kill of the loop.
type killRecord struct {
	host    string
	detect  time.Duration // the observer reports the host not alive (0: not seen)
	restore time.Duration // every slot running and healthy on the other hosts
	err     error         // not restored within chaosRestoreBound
}

func (c *chaos) killLoop(t *testing.T) {
	c.settle(t, "before the kill loop")
	ctx := context.Background()
	ld := c.startLoad()
	defer ld.finish()
	var kills []killRecord
	var events []chaosEvent
	start := time.Now()
	for k := 0; k < int(chaosKillLoopFor/chaosKillEvery); k++ {
		chaosWaitUntil(start.Add(time.Duration(k) * chaosKillEvery))
		victim := (k + 1) % chaosHosts
		// Neither this victim nor the last one (started 5 s ago).
		observer := (victim + 2) % chaosHosts
		t0 := time.Now()
		events = append(events, chaosEvent{t0, "kill " + c.names[victim]})
		if err := c.s.Kill(ctx, victim); err != nil {
			t.Fatalf("kill %s: %v", c.names[victim], err)
		}
		rec := c.measureRestore(observer, victim, t0)
		kills = append(kills, rec)
		msg := fmt.Sprintf("chaos kill %d: %s at %s (observer %s): detect %s, restore %s", k+1, rec.host,
			t0.UTC().Format("15:04:05.000"), c.names[observer], chaosSecs(rec.detect), chaosSecs(rec.restore))
		if rec.err != nil {
			msg += fmt.Sprintf(": NOT RESTORED within %v: %v", chaosRestoreBound, rec.err)
			t.Errorf("kill %d of %s not restored within %v: %v", k+1, rec.host, chaosRestoreBound, rec.err)
		}
		c.reportf(t, "%s", msg)
		chaosWaitUntil(t0.Add(chaosDownFor))
		events = append(events, chaosEvent{time.Now(), "start " + c.names[victim]})
		if err := c.s.Start(ctx, victim); err != nil {
			t.Fatalf("start %s: %v", c.names[victim], err)
		}
	}
	chaosWaitUntil(start.Add(chaosKillLoopFor))
	ok, failed, errs := ld.finish()
	restores := make([]time.Duration, 0, len(kills))
	detects := make([]time.Duration, 0, len(kills))
	for _, r := range kills {
		if r.err == nil {
			restores = append(restores, r.restore)
		}
		if r.detect > 0 {
			detects = append(detects, r.detect)
		}
	}
	total := ok + failed
	c.reportf(t, "chaos kill loop: %d kills, restore p50 %s max %s (target 3 s), detect p50 %s max %s, %d/%d requests ok (%s), %s",
		len(kills), chaosSecs(chaosQuantile(restores, 0.5)), chaosSecs(chaosQuantile(restores, 1)),
		chaosSecs(chaosQuantile(detects, 0.5)), chaosSecs(chaosQuantile(detects, 1)), ok, total, chaosPct(ok, total), ld.latency())
	c.logFailures(t, ld, errs, events)
	if total == 0 || float64(ok) < chaosMinSuccess*float64(total) {
		t.Errorf("%d of %d requests failed (%s ok), want at least %.1f%% ok", failed, total, chaosPct(ok, total), 100*chaosMinSuccess)
	}
	d, err := c.converge(chaosSettleBound)
	if err != nil {
		c.broken = "the kill loop"
		t.Fatalf("replica counts not exact %v after the kill loop: %v", d, err)
	}
	c.reportf(t, "chaos kill loop: exact replica counts %s after the end of the loop", chaosSecs(d))
}

// measureRestore polls the observer until every slot of every service
// runs healthy on a host other than the victim, from t0 (the kill).
func (c *chaos) measureRestore(observer, victim int, t0 time.Time) killRecord {
	rec := killRecord{host: c.names[victim]}
	counts := c.counts()
	tick := time.NewTicker(chaosRestorePoll)
	defer tick.Stop()
	var last error
	for {
		if rec.detect == 0 {
			if nodes, err := c.nodes(observer); err == nil {
				for _, n := range nodes {
					if n.Name == rec.host && n.Status != "alive" {
						rec.detect = time.Since(t0)
					}
				}
			}
		}
		reps, err := c.replicas(observer)
		if err == nil {
			err = chaosRestoredErr(reps, counts, rec.host)
		}
		if err == nil {
			rec.restore = time.Since(t0)
			return rec
		}
		last = err
		if time.Since(t0) > chaosRestoreBound {
			rec.restore, rec.err = time.Since(t0), last
			return rec
		}
		<-tick.C
	}
}

// chaosRestoredErr says which slot does not run healthy on a host other
// than down (nil: every slot of counts does).
func chaosRestoredErr(reps []api.Replica, counts map[string]int, down string) error {
	have := make(map[string]bool)
	for _, r := range reps {
		if r.Node != down && r.State == "running" && r.Healthy {
			have[r.Service+"/"+strconv.Itoa(r.Slot)] = true
		}
	}
	for _, svc := range chaosSorted(counts) {
		for slot := range counts[svc] {
			if !have[svc+"/"+strconv.Itoa(slot)] {
				return fmt.Errorf("%s/%d does not run healthy on a live host (%s)", svc, slot, chaosSlotReplicas(reps, svc, slot))
			}
		}
	}
	return nil
}

// chaosSlotReplicas describes what a view holds of one slot: node, state,
// health and last error of each replica.
func chaosSlotReplicas(reps []api.Replica, svc string, slot int) string {
	var out []string
	for _, r := range reps {
		if r.Service == svc && r.Slot == slot {
			d := fmt.Sprintf("%s %s healthy=%v", r.Node, r.State, r.Healthy)
			if r.LastError != "" {
				d += " last error: " + r.LastError
			}
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return "no replica in the view"
	}
	return strings.Join(out, "; ")
}

// --- scenario (b): partitions ---

func (c *chaos) partitions(t *testing.T) {
	t.Run("10s", func(t *testing.T) {
		c.partition(t, 10*time.Second,
			func(t *testing.T) { // side A: hosts 1-3
				c.put(t, 0, chaosService("p10a", 1, 8090, ""))
				c.putHealthTimeout(t, 1, "web", 600*time.Millisecond)
			},
			func(t *testing.T) { // side B: hosts 4-5, after side A's writes
				c.put(t, 3, chaosService("p10b", 1, 8091, ""))
				c.scale(t, 4, "api", 3)
				c.putHealthTimeout(t, 3, "web", 700*time.Millisecond) // conflicts with side A's
			})
	})
	t.Run("60s", func(t *testing.T) {
		c.partition(t, 60*time.Second,
			func(t *testing.T) {
				c.put(t, 2, chaosService("p60a", 1, 8092, ""))
				c.del(t, 0, "p10b") // written on the other side in the 10 s partition
				c.putHealthTimeout(t, 1, "web", 900*time.Millisecond)
			},
			func(t *testing.T) {
				c.put(t, 4, chaosService("p60b", 1, 8093, ""))
				c.scale(t, 3, "jobs", 3)
				c.putHealthTimeout(t, 4, "web", 800*time.Millisecond)
			})
	})
}

// partition cuts hosts 1-3 from hosts 4-5 for dur, runs writesA and then
// writesB once each side sees the other down, heals, and measures the
// convergence.
func (c *chaos) partition(t *testing.T, dur time.Duration, writesA, writesB func(*testing.T)) {
	c.settle(t, "before the partition")
	ctx := context.Background()
	sides := [][]int{{0, 1, 2}, {3, 4}}
	side := func(i int) int {
		if slices.Contains(sides[0], i) {
			return 0
		}
		return 1
	}
	ld := c.startLoad()
	defer ld.finish()
	t0 := time.Now()
	if err := c.s.Partition(sides...); err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			_ = c.s.Heal()
		}
	}()
	err := c.s.WaitView(ctx, chaosDetectBound, func(i, j int) string {
		if side(i) == side(j) {
			return "alive"
		}
		return ""
	})
	if err != nil {
		t.Fatalf("partition not seen: %v", err)
	}
	detect := time.Since(t0)
	writesA(t)
	writesB(t)
	// Each side keeps serving: it runs every slot of the specs it has.
	sideDone := make([]time.Duration, len(sides))
	tick := time.NewTicker(chaosConvergePoll)
	for time.Now().Before(t0.Add(dur)) && slices.Contains(sideDone, 0) {
		for g, members := range sides {
			if sideDone[g] == 0 && c.sideServes(members) == nil {
				sideDone[g] = time.Since(t0)
			}
		}
		<-tick.C
	}
	tick.Stop()
	chaosWaitUntil(t0.Add(dur))
	tHeal := time.Now()
	if err := c.s.Heal(); err != nil {
		t.Fatal(err)
	}
	healed = true
	var specsAt time.Duration
	d, err := chaosPoll(chaosHealBound, chaosConvergePoll, func() error {
		if specsAt == 0 {
			if err := c.specsEverywhere(c.up()); err != nil {
				return err
			}
			specsAt = time.Since(tHeal)
		}
		return c.converged(c.up())
	})
	var stopsAt time.Duration
	if err == nil {
		// The stops of the duplicates go on after their tasks exited
		// (deleting the task, releasing the network): when they end.
		_, err = chaosPoll(chaosHealBound, chaosConvergePoll, func() error { return c.stopsDone(c.up()) })
		stopsAt = time.Since(tHeal)
	}
	ok, failed, errs := ld.finish()
	served := func(g int) string {
		if sideDone[g] == 0 {
			return "not within the partition"
		}
		return chaosSecs(sideDone[g])
	}
	c.reportf(t, "chaos partition %v: each side saw the other down in %s; side A ran all its slots in %s, side B in %s; "+
		"after heal: identical specs in %s, exact replica counts in %s (target 10 s), every stop ended in %s; %d/%d requests ok (%s), %s",
		dur, chaosSecs(detect), served(0), served(1), chaosSecs(specsAt), chaosSecs(d), chaosSecs(stopsAt), ok, ok+failed, chaosPct(ok, ok+failed), ld.latency())
	c.logFailures(t, ld, errs, []chaosEvent{{t0, "partition"}, {tHeal, "heal"}})
	if err != nil {
		c.broken = fmt.Sprintf("the %v partition", dur)
		t.Fatalf("not converged %v after the heal: %v", chaosHealBound, err)
	}
}

// sideServes checks that the hosts of one side run every slot of the
// specs the first of them holds, healthy, on the side's hosts.
func (c *chaos) sideServes(members []int) error {
	ctx, cancel := context.WithTimeout(context.Background(), chaosAPITimeout)
	defer cancel()
	svcs, err := c.clients[members[0]].Services(ctx)
	if err != nil {
		return err
	}
	counts := make(map[string]int)
	for _, sv := range svcs {
		counts[sv.Name] = sv.Replicas
	}
	reps, err := c.replicas(members[0])
	if err != nil {
		return err
	}
	var mine []api.Replica
	for _, r := range reps {
		if slices.ContainsFunc(members, func(i int) bool { return c.names[i] == r.Node }) {
			mine = append(mine, r)
		}
	}
	return chaosRestoredErr(mine, counts, "")
}

// --- scenario (c): restart every node ---

func (c *chaos) restartAll(t *testing.T) {
	c.settle(t, "before restarting every node")
	ctx := context.Background()
	before := c.allTasks(t)
	// Every agent gets SIGTERM at once, then each is waited for.
	for i := range c.s.Hosts {
		if pid := c.s.Hosts[i].PID; pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	for i := range c.s.Hosts {
		if err := c.s.Stop(i); err != nil {
			t.Fatalf("stop %s: %v", c.names[i], err)
		}
	}
	t0 := time.Now()
	for i := range c.s.Hosts {
		if err := c.s.Start(ctx, i); err != nil {
			t.Fatalf("start %s: %v", c.names[i], err)
		}
		// Every acknowledged write is there as soon as the API
		// answers, before a sync could bring it back from elsewhere.
		svcs, err := chaosRetry(func() ([]api.Service, error) { return c.services(i) })
		if err != nil {
			t.Fatal(err)
		}
		if err := chaosSpecsErr(c.names[i], svcs, c.expected()); err != nil {
			t.Errorf("right after restarting every node: %v", err)
		}
	}
	if err := c.s.WaitMembers(ctx, chaosMembersBound); err != nil {
		c.broken = "restarting every node"
		t.Fatal(err)
	}
	d, err := c.converge(chaosSettleBound)
	if err != nil {
		c.broken = "restarting every node"
		t.Fatalf("not settled %v after restarting every node: %v", d, err)
	}
	after := c.allTasks(t)
	kept, gone := chaosCompareTasks(before, after)
	c.reportf(t, "chaos restart every node: %d acknowledged specs on every node; exact replica counts %s after the starts; "+
		"%d of %d containers kept running (same process), %d replaced or moved",
		len(c.expected()), chaosSecs(time.Since(t0)), kept, kept+len(gone), len(gone))
}

// --- scenario (d): restart one agent ---

func (c *chaos) restartAgent(t *testing.T) {
	t.Run("sigterm", func(t *testing.T) {
		c.adoption(t, 0, "SIGTERM", func(i int) error { return c.s.Stop(i) })
	})
	t.Run("sigkill", func(t *testing.T) {
		// The agent alone dies, as in a crash of the agent: its
		// containers keep running (hosts.Kill would kill them too).
		c.adoption(t, 1, "SIGKILL", func(i int) error {
			if err := syscall.Kill(c.s.Hosts[i].PID, syscall.SIGKILL); err != nil {
				return err
			}
			_, err := chaosPoll(30*time.Second, 20*time.Millisecond, func() error {
				if c.s.Alive(i) {
					return errors.New("agent still alive")
				}
				return nil
			})
			return err
		})
	})
}

// adoption stops the agent of the host with the rank-th most replicas
// with stop, starts it again, and checks that it adopted its containers:
// same IDs, same processes, same start times, zero restarts.
func (c *chaos) adoption(t *testing.T, rank int, how string, stop func(int) error) {
	c.settle(t, "before restarting an agent")
	ctx := context.Background()
	beforeReps, err := chaosRetry(func() ([]api.Replica, error) { return c.replicas(0) })
	if err != nil {
		t.Fatal(err)
	}
	v := c.busiest(beforeReps, rank)
	name := c.names[v]
	before := make(map[string]api.Replica)
	for _, r := range beforeReps {
		if r.Node == name {
			before[r.Container] = r
		}
	}
	beforeTasks, err := chaosRetry(func() (map[string]chaosTask, error) { return c.tasks(v) })
	if err != nil {
		t.Fatal(err)
	}
	if len(before) == 0 {
		t.Fatalf("%s runs no replica: nothing to adopt", name)
	}
	ld := c.startLoad()
	defer ld.finish()
	if err := stop(v); err != nil {
		t.Fatalf("%s of %s's agent: %v", how, name, err)
	}
	if err := c.s.WaitMembers(ctx, chaosDetectBound); err != nil {
		t.Fatalf("%s's agent not seen gone: %v", name, err)
	}
	t0 := time.Now()
	if err := c.s.Start(ctx, v); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	if err := c.s.WaitMembers(ctx, chaosMembersBound); err != nil {
		c.broken = "restarting " + name
		t.Fatal(err)
	}
	d, err := c.converge(chaosSettleBound)
	if err != nil {
		c.broken = "restarting " + name
		t.Fatalf("not settled %v after restarting %s: %v", d, name, err)
	}
	settled := time.Since(t0)
	ok, failed, errs := ld.finish()
	afterTasks, err := chaosRetry(func() (map[string]chaosTask, error) { return c.tasks(v) })
	if err != nil {
		t.Fatal(err)
	}
	adopted := 0
	for id, r := range before {
		bt, at := beforeTasks[id], afterTasks[id]
		switch {
		case at.status != "RUNNING":
			t.Errorf("%s's container %s (%s/%d) was not adopted: its task is %q after the restart", name, id, r.Service, r.Slot, at.status)
		case at.pid != bt.pid:
			t.Errorf("%s's container %s (%s/%d) was restarted: pid %d before, %d after", name, id, r.Service, r.Slot, bt.pid, at.pid)
		default:
			adopted++
		}
	}
	for id, at := range afterTasks {
		if _, ok := before[id]; !ok && at.status == "RUNNING" {
			t.Errorf("%s runs a new container %s after the restart", name, id)
		}
	}
	// Every node reports them unchanged: same start, no restart.
	for i := range c.s.Hosts {
		reps, err := chaosRetry(func() ([]api.Replica, error) { return c.replicas(i) })
		if err != nil {
			t.Errorf("%s: %v", c.names[i], err)
			continue
		}
		seen := 0
		for _, r := range reps {
			if r.Node != name {
				continue
			}
			b, ok := before[r.Container]
			switch {
			case !ok:
				t.Errorf("%s reports a new replica %s/%d on %s: container %s", c.names[i], r.Service, r.Slot, name, r.Container)
			case !r.StartedAt.Equal(b.StartedAt) || r.Restarts != 0:
				t.Errorf("%s reports %s/%d on %s started at %v with %d restarts, want %v and 0",
					c.names[i], r.Service, r.Slot, name, r.StartedAt, r.Restarts, b.StartedAt)
			default:
				seen++
			}
		}
		if seen != len(before) {
			t.Errorf("%s reports %d of the %d replicas %s had", c.names[i], seen, len(before), name)
		}
	}
	c.reportf(t, "chaos restart agent (%s) %s: %d of %d containers adopted (same ID and process), exact replica counts %s after the start; %d/%d requests ok (%s), %s",
		how, name, adopted, len(before), chaosSecs(settled), ok, ok+failed, chaosPct(ok, ok+failed), ld.latency())
	c.logFailures(t, ld, errs, nil)
}

// --- scenario (e): pause ---

func (c *chaos) pause(t *testing.T) {
	c.settle(t, "before the pause")
	reps, err := chaosRetry(func() ([]api.Replica, error) { return c.replicas(0) })
	if err != nil {
		t.Fatal(err)
	}
	// The host with the most replicas: the others take over the most.
	v := c.busiest(reps, 0)
	name := c.names[v]
	beforeTasks, err := chaosRetry(func() (map[string]chaosTask, error) { return c.tasks(v) })
	if err != nil {
		t.Fatal(err)
	}
	counts := c.counts()
	// A paused host accepts connections and never answers: no client can
	// tell it from a slow one, so the load leaves it out while paused.
	ld := c.startLoad()
	defer ld.finish()
	ld.exclude.Store(int64(v) + 1)
	t0 := time.Now()
	if err := c.s.Pause(v); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = c.s.Resume(v)
		}
	}()
	// While it is paused the others run its slots.
	observer := (v + 2) % chaosHosts
	restored, restErr := chaosPoll(chaosPauseFor, chaosRestorePoll, func() error {
		reps, err := c.replicas(observer)
		if err != nil {
			return err
		}
		return chaosRestoredErr(reps, counts, name)
	})
	chaosWaitUntil(t0.Add(chaosPauseFor))
	if err := c.s.Resume(v); err != nil {
		t.Fatal(err)
	}
	resumed = true
	tR := time.Now()
	ld.exclude.Store(0)
	if err := c.s.WaitMembers(context.Background(), chaosMembersBound); err != nil {
		c.broken = "the pause"
		t.Fatal(err)
	}
	if _, err := c.converge(chaosSettleBound); err != nil {
		c.broken = "the pause"
		t.Fatalf("not converged %v after resuming %s: %v", time.Since(tR), name, err)
	}
	converged := time.Since(tR)
	// No duplicate appears afterwards either.
	dups, samples := 0, 0
	tick := time.NewTicker(250 * time.Millisecond)
	for end := time.Now().Add(chaosStableFor); time.Now().Before(end); {
		<-tick.C
		if err := c.duplicates(); err != nil {
			if !errors.Is(err, errChaosDuplicate) {
				continue // an API call failed: no verdict
			}
			dups++
			t.Errorf("after the pause: %v", err)
		}
		samples++
	}
	tick.Stop()
	if d, err := c.converge(chaosSettleBound); err != nil {
		t.Errorf("after the pause, not converged again %v later: %v", d, err)
	}
	ok, failed, errs := ld.finish()
	afterTasks, err := chaosRetry(func() (map[string]chaosTask, error) { return c.tasks(v) })
	if err != nil {
		t.Fatal(err)
	}
	kept, gone := chaosCompareTasks(map[string]map[string]chaosTask{name: beforeTasks}, map[string]map[string]chaosTask{name: afterTasks})
	restoredMsg := chaosSecs(restored)
	if restErr != nil {
		restoredMsg = "not within the pause (" + restErr.Error() + ")"
	}
	c.reportf(t, "chaos pause %s %v: its slots ran elsewhere in %s; after resume: exact replica counts in %s, no duplicate in %d checks over %v (%d seen); "+
		"%d of %d of its containers kept running; %d/%d requests ok (%s), %s",
		name, chaosPauseFor, restoredMsg, chaosSecs(converged), samples, chaosStableFor, dups,
		kept, kept+len(gone), ok, ok+failed, chaosPct(ok, ok+failed), ld.latency())
	c.logFailures(t, ld, errs, nil)
}

// busiest returns the host with the rank-th most replicas in a view
// (0: the most; ties go to the lower host).
func (c *chaos) busiest(reps []api.Replica, rank int) int {
	n := make([]int, len(c.names))
	for _, r := range reps {
		if i := slices.Index(c.names, r.Node); i >= 0 {
			n[i]++
		}
	}
	order := make([]int, len(c.names))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(n[b], n[a]) })
	return order[rank]
}

// --- writes ---

// put writes sp through host i and records the acknowledged write.
func (c *chaos) put(t *testing.T, i int, sp spec.Spec) api.Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chaosWriteTimeout)
	defer cancel()
	out, err := c.clients[i].PutService(ctx, sp, "")
	if err != nil {
		t.Fatalf("put %s through %s: %v", sp.Name, c.names[i], err)
	}
	c.ack(t, out)
	return out
}

// del deletes a service through host i and records the acknowledged
// tombstone.
func (c *chaos) del(t *testing.T, i int, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chaosWriteTimeout)
	defer cancel()
	out, err := c.clients[i].DeleteService(ctx, name)
	if err != nil {
		t.Fatalf("delete %s through %s: %v", name, c.names[i], err)
	}
	out.Deleted = true
	c.ack(t, out)
}

// scale writes the last acknowledged spec of name with count replicas.
func (c *chaos) scale(t *testing.T, i int, name string, count int) {
	t.Helper()
	sp := c.ackedSpec(t, name)
	sp.Replicas = count
	c.put(t, i, sp)
}

// putHealthTimeout writes the last acknowledged spec of name with another
// health timeout: a change that does not replace containers.
func (c *chaos) putHealthTimeout(t *testing.T, i int, name string, d time.Duration) {
	t.Helper()
	sp := c.ackedSpec(t, name)
	h := *sp.Health
	h.Timeout = spec.Duration(d)
	sp.Health = &h
	c.put(t, i, sp)
}

func (c *chaos) ackedSpec(t *testing.T, name string) spec.Spec {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.acked[name]
	if !ok || a.Deleted {
		t.Fatalf("no acknowledged spec of %s", name)
	}
	b, _ := json.Marshal(a.Spec)
	var sp spec.Spec
	if err := json.Unmarshal(b, &sp); err != nil {
		t.Fatal(err)
	}
	return sp
}

// ack records an acknowledged write; the newest version of a service
// wins, as it does in the store (last writer wins).
func (c *chaos) ack(t *testing.T, out api.Service) {
	t.Helper()
	v, err := store.ParseVersion(out.Version)
	if err != nil {
		t.Fatalf("acknowledged write of %s: %v", out.Name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.acked[out.Name]; ok {
		cv, _ := store.ParseVersion(cur.Version)
		if cv.Compare(v) >= 0 {
			return
		}
	}
	c.acked[out.Name] = out
}

// expected returns the live services as the acknowledged writes leave
// them.
func (c *chaos) expected() map[string]api.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]api.Service)
	for n, a := range c.acked {
		if !a.Deleted {
			out[n] = a
		}
	}
	return out
}

// counts returns the expected replica count of every live service.
func (c *chaos) counts() map[string]int {
	out := make(map[string]int)
	for n, a := range c.expected() {
		out[n] = a.Replicas
	}
	return out
}

// --- checks ---

// errChaosDuplicate marks a slot that runs twice.
var errChaosDuplicate = errors.New("duplicate")

// up returns the hosts whose agent runs and is not paused.
func (c *chaos) up() []int {
	var out []int
	for i := range c.s.Hosts {
		if c.s.Alive(i) && !c.s.Hosts[i].Paused {
			out = append(out, i)
		}
	}
	return out
}

func (c *chaos) replicas(i int) ([]api.Replica, error) {
	ctx, cancel := context.WithTimeout(context.Background(), chaosAPITimeout)
	defer cancel()
	reps, err := c.clients[i].Replicas(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.names[i], err)
	}
	return reps, nil
}

func (c *chaos) nodes(i int) ([]api.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), chaosAPITimeout)
	defer cancel()
	return c.clients[i].Nodes(ctx)
}

// specsErr compares host i's services with the acknowledged writes.
func (c *chaos) specsErr(i int) error {
	svcs, err := c.services(i)
	if err != nil {
		return err
	}
	return chaosSpecsErr(c.names[i], svcs, c.expected())
}

func (c *chaos) services(i int) ([]api.Service, error) {
	ctx, cancel := context.WithTimeout(context.Background(), chaosAPITimeout)
	defer cancel()
	svcs, err := c.clients[i].Services(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.names[i], err)
	}
	return svcs, nil
}

// chaosSpecsErr compares the services a node lists with the expected
// ones: the same names, versions and specs.
func chaosSpecsErr(node string, got []api.Service, want map[string]api.Service) error {
	seen := make(map[string]bool)
	for _, g := range got {
		seen[g.Name] = true
		w, ok := want[g.Name]
		if !ok {
			return fmt.Errorf("%s has service %s (version %s), which the acknowledged writes deleted or never made", node, g.Name, g.Version)
		}
		if g.Version != w.Version {
			return fmt.Errorf("%s has %s at version %s, want the acknowledged %s", node, g.Name, g.Version, w.Version)
		}
		gb, _ := json.Marshal(g.Spec)
		wb, _ := json.Marshal(w.Spec)
		if string(gb) != string(wb) {
			return fmt.Errorf("%s has %s as %s, want the acknowledged %s", node, g.Name, gb, wb)
		}
	}
	for _, n := range chaosSorted(want) {
		if !seen[n] {
			return fmt.Errorf("%s lacks service %s (acknowledged at version %s)", node, n, want[n].Version)
		}
	}
	return nil
}

// specsEverywhere checks every given host's services.
func (c *chaos) specsEverywhere(live []int) error {
	for _, i := range live {
		if err := c.specsErr(i); err != nil {
			return err
		}
	}
	return nil
}

// converged checks the given hosts (every running one): each has the
// acknowledged specs and a view with exactly the replica counts, the
// views agree, and containerd runs exactly the view's containers. A
// replica that its node is stopping does not count (as kubectl does not
// count a terminating pod), but its task must have exited: until then
// containerd runs a container the fingerprint lacks. stopsDone checks
// that the stops have ended too.
//
// Every host is asked at once, so that the check sees one moment of the
// cluster, and so that a poll takes as long as the slowest answer, not
// the sum of fifteen (under a heal's load that sum reached seconds, and
// it is the measurement's resolution).
func (c *chaos) converged(live []int) error {
	n := len(c.s.Hosts)
	var (
		svcs  = make([][]api.Service, n)
		reps  = make([][]api.Replica, n)
		tasks = make([]map[string]chaosTask, n)
		errs  = make([]error, 3*n)
		wg    sync.WaitGroup
	)
	for _, i := range live {
		wg.Add(2)
		go func() { defer wg.Done(); svcs[i], errs[3*i] = c.services(i) }()
		go func() { defer wg.Done(); reps[i], errs[3*i+1] = c.replicas(i) }()
	}
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); tasks[i], errs[3*i+2] = c.tasks(i) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	want := c.expected()
	for _, i := range live {
		if err := chaosSpecsErr(c.names[i], svcs[i], want); err != nil {
			return err
		}
	}
	counts := c.counts()
	liveNames := make(map[string]bool)
	for _, i := range live {
		liveNames[c.names[i]] = true
	}
	var first []string
	for k, i := range live {
		if err := chaosExactErr(reps[i], counts, liveNames); err != nil {
			return fmt.Errorf("%s's view: %w", c.names[i], err)
		}
		fp := chaosFingerprint(reps[i])
		if k == 0 {
			first = fp
		} else if !slices.Equal(fp, first) {
			return fmt.Errorf("%s's view %v differs from %s's %v", c.names[i], fp, c.names[live[0]], first)
		}
	}
	// What actually runs, on every host, is the view.
	var running []string
	for i, ts := range tasks {
		for id, tk := range ts {
			if tk.status == "RUNNING" {
				running = append(running, c.names[i]+":"+id)
			}
		}
	}
	slices.Sort(running)
	if !slices.Equal(running, first) {
		return fmt.Errorf("containerd runs %v, the view has %v", running, first)
	}
	return nil
}

// converge polls until converged holds on every running host, and
// returns how long it took.
func (c *chaos) converge(timeout time.Duration) (time.Duration, error) {
	return chaosPoll(timeout, chaosConvergePoll, func() error { return c.converged(c.up()) })
}

// stopsDone checks that no running host's view has a replica that is
// being stopped: every stop has removed its container (a stop that never
// ends, as a network that cannot be released once did, fails here).
func (c *chaos) stopsDone(live []int) error {
	for _, i := range live {
		reps, err := c.replicas(i)
		if err != nil {
			return err
		}
		for _, r := range reps {
			if r.State == "stopping" {
				msg := fmt.Sprintf("%s's view: %s/%d on %s is still stopping", c.names[i], r.Service, r.Slot, r.Node)
				if r.LastError != "" {
					msg += ", last error: " + r.LastError
				}
				return errors.New(msg)
			}
		}
	}
	return nil
}

// settle waits until the cluster is settled: every host runs and is seen
// alive by every other, and the replica counts are exact.
func (c *chaos) settle(t *testing.T, what string) {
	t.Helper()
	if c.broken != "" {
		t.Fatalf("the cluster did not settle after %s", c.broken)
	}
	ctx := context.Background()
	for i := range c.s.Hosts {
		if !c.s.Alive(i) {
			if err := c.s.Start(ctx, i); err != nil {
				c.broken = what
				t.Fatal(err)
			}
		}
	}
	if err := c.s.WaitMembers(ctx, chaosMembersBound); err != nil {
		c.broken = what
		t.Fatalf("%s: %v", what, err)
	}
	d, err := chaosPoll(chaosSettleBound, chaosConvergePoll, func() error {
		if err := c.converged(c.up()); err != nil {
			return err
		}
		return c.stopsDone(c.up())
	})
	if err != nil {
		c.broken = what
		t.Fatalf("%s: not settled after %v: %v", what, d, err)
	}
	t.Logf("%s: settled in %s", what, chaosSecs(d))
}

// duplicates reports a slot that runs twice in any running host's view
// or in containerd (wrapping errChaosDuplicate), or why it could not
// tell.
func (c *chaos) duplicates() error {
	for _, i := range c.up() {
		reps, err := c.replicas(i)
		if err != nil {
			return err
		}
		seen := make(map[string]string)
		for _, r := range reps {
			if r.State == "stopping" {
				continue // containerd's tasks below show whether it still runs
			}
			k := r.Service + "/" + strconv.Itoa(r.Slot)
			if prev, ok := seen[k]; ok {
				return fmt.Errorf("%w: %s's view has %s on %s and on %s", errChaosDuplicate, c.names[i], k, prev, r.Node)
			}
			seen[k] = r.Node
		}
	}
	seen := make(map[string]string)
	for i := range c.s.Hosts {
		ts, err := c.tasks(i)
		if err != nil {
			return err
		}
		for id, tk := range ts {
			svc, slot, ok := chaosSlotOf(id)
			if !ok || tk.status != "RUNNING" {
				continue
			}
			k := svc + "/" + strconv.Itoa(slot)
			if prev, ok := seen[k]; ok {
				return fmt.Errorf("%w: containerd runs %s on %s and on %s", errChaosDuplicate, k, prev, c.names[i])
			}
			seen[k] = c.names[i]
		}
	}
	return nil
}

// chaosExactErr checks one view against the counts: exactly one replica
// per slot, running and healthy, on a live node, and nothing else.
func chaosExactErr(reps []api.Replica, counts map[string]int, live map[string]bool) error {
	per := make(map[string][]string)
	for _, r := range reps {
		if r.State == "stopping" {
			continue // neither served nor counted; converged checks its task
		}
		n, ok := counts[r.Service]
		k := r.Service + "/" + strconv.Itoa(r.Slot)
		switch {
		case !ok:
			return fmt.Errorf("replica %s on %s of a service that should not run", k, r.Node)
		case r.Slot < 0 || r.Slot >= n:
			return fmt.Errorf("replica %s on %s beyond the %d replicas", k, r.Node, n)
		case !live[r.Node]:
			return fmt.Errorf("replica %s on %s, which is down", k, r.Node)
		case r.State != "running" || !r.Healthy:
			msg := fmt.Sprintf("replica %s on %s is %s (healthy %v)", k, r.Node, r.State, r.Healthy)
			if r.LastError != "" {
				msg += ", last error: " + r.LastError
			}
			return errors.New(msg)
		}
		per[k] = append(per[k], r.Node)
	}
	for _, svc := range chaosSorted(counts) {
		for slot := range counts[svc] {
			k := svc + "/" + strconv.Itoa(slot)
			switch nodes := per[k]; len(nodes) {
			case 1:
			case 0:
				return fmt.Errorf("no replica of %s", k)
			default:
				slices.Sort(nodes)
				return fmt.Errorf("%w: %s runs on %v", errChaosDuplicate, k, nodes)
			}
		}
	}
	return nil
}

// chaosFingerprint is a view as sorted "node:container" strings, without
// the replicas being stopped.
func chaosFingerprint(reps []api.Replica) []string {
	out := make([]string, 0, len(reps))
	for _, r := range reps {
		if r.State == "stopping" {
			continue
		}
		out = append(out, r.Node+":"+r.Container)
	}
	slices.Sort(out)
	return out
}

// chaosSlotOf parses a container ID made by the agent
// ("<service>-<slot>-<template version>").
func chaosSlotOf(id string) (string, int, bool) {
	rest, _, ok := chaosCutLast(id, "-")
	if !ok {
		return "", 0, false
	}
	svc, slot, ok := chaosCutLast(rest, "-")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.Atoi(slot)
	return svc, n, err == nil && svc != ""
}

func chaosCutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// chaosTask is a containerd task as ctr lists it.
type chaosTask struct {
	pid    int
	status string // RUNNING, STOPPED, ...
}

// tasks lists the containerd tasks of host i's namespace.
func (c *chaos) tasks(i int) (map[string]chaosTask, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.s.Containerd, "--namespace", "shoal-"+c.names[i],
		"tasks", "ls").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ctr tasks ls (%s): %v: %s", c.names[i], err, strings.TrimSpace(string(out)))
	}
	ts := make(map[string]chaosTask)
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		pid, _ := strconv.Atoi(f[1])
		ts[f[0]] = chaosTask{pid: pid, status: f[2]}
	}
	return ts, nil
}

// allTasks lists the tasks of every host, by host name.
func (c *chaos) allTasks(t *testing.T) map[string]map[string]chaosTask {
	t.Helper()
	out := make(map[string]map[string]chaosTask)
	for i := range c.s.Hosts {
		ts, err := chaosRetry(func() (map[string]chaosTask, error) { return c.tasks(i) })
		if err != nil {
			t.Fatal(err)
		}
		out[c.names[i]] = ts
	}
	return out
}

// chaosCompareTasks counts the running tasks of before that still run
// with the same process after, and lists the others.
func chaosCompareTasks(before, after map[string]map[string]chaosTask) (kept int, gone []string) {
	for h, ts := range before {
		for id, b := range ts {
			if b.status != "RUNNING" {
				continue
			}
			if a, ok := after[h][id]; ok && a.status == "RUNNING" && a.pid == b.pid {
				kept++
			} else {
				gone = append(gone, h+":"+id)
			}
		}
	}
	slices.Sort(gone)
	return kept, gone
}

// --- load ---

// chaosLoad is the open-loop HTTP load over every host's load balancer.
type chaosLoad struct {
	addrs   []string
	names   []string
	hc      *http.Client
	start   time.Time
	exclude atomic.Int64 // 1 + the index of a host left out (0: none)

	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string       // the first chaosMaxErrLogged failures
	kinds      map[string]int // failures by "host:port kind"
	fails      []chaosFailure // the first chaosMaxFailures failures
	latencies  []time.Duration

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// startLoad sends chaosRate requests per second until finish: request k
// to host k mod 5 at published port chaosPorts[k mod 3].
func (c *chaos) startLoad() *chaosLoad {
	l := &chaosLoad{addrs: c.addrs, names: c.names, start: time.Now(), kinds: make(map[string]int),
		stop: make(chan struct{}), done: make(chan struct{})}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = l.dial
	// A connection per request: each request goes to its host first.
	// Kept alive, a connection that fell over to another host would
	// stay pooled under the first host's address and keep its traffic
	// away from that host's load balancer once it is back.
	tr.DisableKeepAlives = true
	l.hc = &http.Client{Timeout: chaosRequestLimit, Transport: tr}
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(time.Second / chaosRate)
		defer tick.Stop()
		// Open loop: each tick sends what is due by the clock, so a
		// late tick (a busy machine) does not lower the rate.
		for k := 0; ; {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			due := int(time.Since(l.start) * chaosRate / time.Second)
			k = max(k, due-chaosRate) // a backlog beyond a second is dropped
			for ; k < due; k++ {
				h := k % len(l.addrs)
				if h == int(l.exclude.Load())-1 {
					h = (h + 1) % len(l.addrs)
				}
				port := chaosPorts[k%len(chaosPorts)]
				wg.Add(1)
				go func() {
					defer wg.Done()
					l.one(h, port)
				}()
			}
		}
	}()
	return l
}

// one sends one request.
func (l *chaosLoad) one(h, port int) {
	url := "http://" + net.JoinHostPort(l.addrs[h], strconv.Itoa(port)) + "/"
	t0 := time.Now()
	resp, err := l.hc.Get(url)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
	}
	if err == nil {
		d := time.Since(t0)
		l.ok.Add(1)
		l.mu.Lock()
		l.latencies = append(l.latencies, d)
		l.mu.Unlock()
		return
	}
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < chaosMaxErrLogged {
		l.errs = append(l.errs, fmt.Sprintf("+%.2fs %s (%s): %v", time.Since(l.start).Seconds(), url, l.names[h], err))
	}
	kind := chaosErrKind(err)
	l.kinds[fmt.Sprintf("%s:%d %s", l.names[h], port, kind)]++
	if len(l.fails) < chaosMaxFailures {
		l.fails = append(l.fails, chaosFailure{at: time.Now(), host: l.names[h], port: port, kind: kind})
	}
	l.mu.Unlock()
}

// chaosFailure is one failed request.
type chaosFailure struct {
	at   time.Time // when it failed
	host string    // the host it was sent to first
	port int
	kind string
}

// chaosEvent is something the test did to a host.
type chaosEvent struct {
	at   time.Time
	what string // "kill host-2"
}

// failuresAround lists the failures, each with the last event before it.
func (l *chaosLoad) failuresAround(events []chaosEvent) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.fails))
	for _, f := range l.fails {
		line := fmt.Sprintf("+%.2fs (%s) %s:%d %s", f.at.Sub(l.start).Seconds(), f.at.UTC().Format("15:04:05.000"), f.host, f.port, f.kind)
		for i := len(events) - 1; i >= 0; i-- {
			if !events[i].at.After(f.at) {
				line += fmt.Sprintf(", %.2fs after %s", f.at.Sub(events[i].at).Seconds(), events[i].what)
				break
			}
		}
		out = append(out, line)
	}
	return out
}

// chaosErrKind classifies a failed request.
func chaosErrKind(err error) string {
	msg := err.Error()
	for _, k := range []struct{ sub, kind string }{
		{"status ", ""}, {"connection reset", "reset"}, {"connection refused", "refused"},
		{"Client.Timeout", "timeout"}, {"i/o timeout", "timeout"}, {"EOF", "EOF"},
	} {
		if i := strings.Index(msg, k.sub); i >= 0 {
			if k.kind == "" {
				return strings.TrimSpace(msg[i:])
			}
			return k.kind
		}
	}
	return "other"
}

// latency returns the p50, p99 and maximum latency of the requests that
// succeeded, as text.
func (l *chaosLoad) latency() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/1e6) }
	return fmt.Sprintf("latency p50 %s p99 %s max %s", ms(chaosQuantile(l.latencies, 0.5)),
		ms(chaosQuantile(l.latencies, 0.99)), ms(chaosQuantile(l.latencies, 1)))
}

// summary lists the failures by host, port and kind, most first.
func (l *chaosLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := chaosSorted(l.kinds)
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(l.kinds[b], l.kinds[a]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s x%d", k, l.kinds[k])
	}
	return strings.Join(parts, ", ")
}

// dial connects to the chosen host, or, when that fails, to the other
// hosts in order, as a client with several addresses for one name does.
func (l *chaosLoad) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	first := max(slices.Index(l.addrs, host), 0)
	d := net.Dialer{Timeout: time.Second}
	var errs []error
	for k := range l.addrs {
		h := (first + k) % len(l.addrs)
		if k > 0 && h == int(l.exclude.Load())-1 {
			continue
		}
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(l.addrs[h], port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// finish stops the load, waits for the requests under way, and returns
// the counts and the first errors. It may be called more than once.
func (l *chaosLoad) finish() (ok, failed int64, errs []string) {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	l.hc.CloseIdleConnections()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed.Load(), slices.Clone(l.errs)
}

// --- reporting and logs ---

// logFailures logs the first failed requests of a load and reports the
// failures by host, port and kind, and the first ones each with its time
// (to find it in the hosts' logs) and the last of events before it.
func (c *chaos) logFailures(t *testing.T, l *chaosLoad, errs []string, events []chaosEvent) {
	t.Helper()
	for _, e := range errs {
		t.Logf("failed request: %s", e)
	}
	if sum := l.summary(); sum != "" {
		c.reportf(t, "chaos %s: failed requests by host, port and kind: %s", t.Name(), sum)
	}
	for i, f := range l.failuresAround(events) {
		if i == chaosMaxAnnotated {
			break
		}
		c.reportf(t, "chaos %s: failed request %s", t.Name(), f)
	}
}

// reportf logs a line and appends it to $SHOAL_CHAOS_REPORT, if set.
func (c *chaos) reportf(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	if p := os.Getenv("SHOAL_CHAOS_REPORT"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Errorf("SHOAL_CHAOS_REPORT: %v", err)
			return
		}
		_, err = fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Errorf("SHOAL_CHAOS_REPORT: %v", err)
		}
	}
}

// saveLogs prints the tail of every host's log (and containerd's) when
// the test failed, and copies the logs to $SHOAL_CHAOS_LOGS, if set.
func (c *chaos) saveLogs(t *testing.T) {
	logs := []string{filepath.Join(c.s.Dir, "containerd.log")}
	for _, h := range c.s.Hosts {
		logs = append(logs, h.Log)
	}
	if dir := os.Getenv("SHOAL_CHAOS_LOGS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Errorf("SHOAL_CHAOS_LOGS: %v", err)
		}
		for _, p := range logs {
			if b, err := os.ReadFile(p); err == nil {
				_ = os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644)
			}
		}
	}
	if !t.Failed() {
		return
	}
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Logf("%s: %v", p, err)
			continue
		}
		cut := ""
		if len(b) > chaosLogTailBytes {
			b = b[len(b)-chaosLogTailBytes:]
			cut = fmt.Sprintf(" (last %d KiB)", chaosLogTailBytes>>10)
		}
		t.Logf("%s%s:\n%s", filepath.Base(p), cut, b)
	}
}

// --- small helpers ---

// chaosRetry calls read until it succeeds or chaosReadRetry passes: for
// one-shot reads (an API call, ctr) that a loaded machine may time out.
// Only the read is retried, never a verdict on what it returned.
func chaosRetry[T any](read func() (T, error)) (T, error) {
	var out T
	_, err := chaosPoll(chaosReadRetry, 250*time.Millisecond, func() error {
		var err error
		out, err = read()
		return err
	})
	return out, err
}

// chaosPoll calls cond every interval until it returns nil or timeout
// passes, and returns how long that took and cond's last error.
func chaosPoll(timeout, interval time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), err
		}
		<-tick.C
	}
}

// chaosWaitUntil waits, on a timer, until t.
func chaosWaitUntil(t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	<-tm.C
}

func chaosQuantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[int(q*float64(len(d)-1)+0.5)]
}

func chaosSecs(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func chaosPct(ok, total int64) string {
	if total == 0 {
		return "no requests"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(ok)/float64(total))
}

func chaosSorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare)
	return keys
}

// TestChaosCheckers tests the suite's verdicts on hand-made views (no
// root needed): what counts as exact, restored, and the same specs.
func TestChaosCheckers(t *testing.T) {
	rep := func(svc string, slot int, node, state string, healthy bool) api.Replica {
		return api.Replica{Service: svc, Slot: slot, Node: node, Container: fmt.Sprintf("%s-%d-0a1b2c3d", svc, slot),
			State: state, Healthy: healthy}
	}
	counts := map[string]int{"web": 2, "api": 1}
	live := map[string]bool{"host-1": true, "host-2": true}
	good := []api.Replica{rep("api", 0, "host-1", "running", true), rep("web", 0, "host-1", "running", true), rep("web", 1, "host-2", "running", true)}
	if err := chaosExactErr(good, counts, live); err != nil {
		t.Errorf("exact view: %v", err)
	}
	for name, tc := range map[string]struct {
		reps []api.Replica
		want string
	}{
		"duplicate":   {append(slices.Clone(good), rep("web", 1, "host-1", "running", true)), "web/1 runs on [host-1 host-2]"},
		"missing":     {good[1:], "no replica of api/0"},
		"unhealthy":   {append(good[:2:2], rep("web", 1, "host-2", "starting", false)), "web/1 on host-2 is starting"},
		"down node":   {append(good[:2:2], rep("web", 1, "host-3", "running", true)), "host-3, which is down"},
		"beyond":      {append(slices.Clone(good), rep("web", 2, "host-2", "running", true)), "beyond the 2 replicas"},
		"not a spec":  {append(slices.Clone(good), rep("old", 0, "host-2", "running", true)), "service that should not run"},
		"pending dup": {append(slices.Clone(good), rep("web", 0, "host-2", "pending", false)), "web/0 on host-2 is pending"},
		"stopping":    {append(good[:2:2], rep("web", 1, "host-2", "stopping", false)), "no replica of web/1"},
	} {
		err := chaosExactErr(tc.reps, counts, live)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
	// A replica being stopped is not counted, and not in the fingerprint
	// (so containerd must not run it).
	leaving := append(slices.Clone(good), rep("web", 1, "host-1", "stopping", false))
	if err := chaosExactErr(leaving, counts, live); err != nil {
		t.Errorf("a stopping duplicate counts: %v", err)
	}
	if fp, want := chaosFingerprint(leaving), chaosFingerprint(good); !slices.Equal(fp, want) {
		t.Errorf("fingerprint with a stopping replica %v, want %v", fp, want)
	}
	if err := chaosExactErr(append(slices.Clone(good), rep("web", 1, "host-1", "running", true)), counts, live); !errors.Is(err, errChaosDuplicate) {
		t.Errorf("a duplicate is not errChaosDuplicate: %v", err)
	}

	// Restored: every slot healthy somewhere but on the down host.
	if err := chaosRestoredErr(good, counts, "host-3"); err != nil {
		t.Errorf("restored: %v", err)
	}
	if err := chaosRestoredErr(good, counts, "host-2"); err == nil || !strings.Contains(err.Error(), "web/1") {
		t.Errorf("web/1 is on the down host: %v", err)
	}

	// Specs: the newest acknowledged write of each service, nothing else.
	c := &chaos{acked: make(map[string]api.Service)}
	web := chaosService("web", 3, 8080, "http")
	older := api.Service{Spec: web, Version: "100.0@host-1"}
	newer := api.Service{Spec: chaosService("web", 4, 8080, "http"), Version: "100.1@host-4"}
	c.ack(t, newer)
	c.ack(t, older) // acknowledged later, but older: last writer wins
	if got := c.expected()["web"]; got.Version != newer.Version || got.Replicas != 4 {
		t.Errorf("expected web = %s x%d, want the newer write", got.Version, got.Replicas)
	}
	c.ack(t, api.Service{Spec: spec.Spec{Name: "gone"}, Version: "99.0@host-2", Deleted: true})
	if err := chaosSpecsErr("host-1", []api.Service{newer}, c.expected()); err != nil {
		t.Errorf("same specs: %v", err)
	}
	for name, got := range map[string][]api.Service{
		"older version": {older},
		"missing":       {},
		"extra":         {newer, {Spec: spec.Spec{Name: "gone"}, Version: "98.0@host-2"}},
	} {
		if err := chaosSpecsErr("host-1", got, c.expected()); err == nil {
			t.Errorf("%s: no error", name)
		}
	}

	for id, want := range map[string]string{"web-2-0a1b2c3d": "web/2", "p10-a-0-0a1b2c3d": "p10-a/0", "bad": "", "x-y-z": ""} {
		svc, slot, ok := chaosSlotOf(id)
		got := ""
		if ok {
			got = svc + "/" + strconv.Itoa(slot)
		}
		if got != want {
			t.Errorf("chaosSlotOf(%q) = %q, want %q", id, got, want)
		}
	}
	for err, want := range map[error]string{
		errors.New("status 503 Service Unavailable"):                                 "status 503 Service Unavailable",
		errors.New("read tcp 1.2.3.4:5->6.7.8.9:10: read: connection reset by peer"): "reset",
		errors.New(`Get "http://x/": EOF`):                                           "EOF",
		errors.New("something else"):                                                 "other",
	} {
		if got := chaosErrKind(err); got != want {
			t.Errorf("chaosErrKind(%v) = %q, want %q", err, got, want)
		}
	}
}
