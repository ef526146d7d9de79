package gossip

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// memberlist's probeNode does not watch for shutdown: after Shutdown
	// it can wait out its probe timeout (up to a probe interval) before it
	// returns, longer than goleak retries under load. It always ends.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// discard is a logger for tests that do not look at logs.
var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// nextIP hands each test cluster its own loopback address, so that a port
// freed by one test and reused by another never carries gossip between them.
var nextIP atomic.Uint32

func testIP() string {
	n := nextIP.Add(1)
	return fmt.Sprintf("127.0.%d.%d", 1+n/250, 1+n%250)
}

// localConfig is DefaultLocalConfig on ip with a free port.
func localConfig(name, ip string) *Config {
	c := DefaultLocalConfig()
	c.NodeName = name
	c.Logger = discard
	c.Serf.MemberlistConfig.BindAddr = ip
	c.Serf.MemberlistConfig.BindPort = 0
	return c
}

// testNode is a Cluster whose events are recorded in the background.
type testNode struct {
	*Cluster
	t *testing.T

	mu     sync.Mutex
	events []Event
	wake   chan struct{} // closed and replaced on every event
}

// start creates a Cluster from cfg, records its events, and shuts it down
// when the test ends.
func start(t *testing.T, cfg *Config) *testNode {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeName, err)
	}
	n := &testNode{Cluster: c, t: t, wake: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range c.Events() {
			n.mu.Lock()
			n.events = append(n.events, ev)
			close(n.wake)
			n.wake = make(chan struct{})
			n.mu.Unlock()
		}
	}()
	live.Store(n, struct{}{})
	t.Cleanup(func() {
		live.Delete(n)
		if err := c.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", cfg.NodeName, err)
		}
		<-done // Events is closed by Shutdown
	})
	return n
}

// addr is the node's gossip address, usable as a seed.
func (n *testNode) addr() string {
	m := n.LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(m.Port))
}

// waitEvent waits until the node has received an event matching match.
func (n *testNode) waitEvent(timeout time.Duration, what string, match func(Event) bool) Event {
	n.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		n.mu.Lock()
		i := slices.IndexFunc(n.events, match)
		var ev Event
		if i >= 0 {
			ev = n.events[i]
		}
		wake := n.wake
		n.mu.Unlock()
		if i >= 0 {
			return ev
		}
		select {
		case <-wake:
		case <-deadline.C:
			n.t.Fatalf("%s: no %s within %v", n.LocalMember().Name, what, timeout)
		}
	}
}

// member returns the node's view of the named member.
func (n *testNode) member(name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s%s", timeout, what, debugState())
		}
		<-tick.C
	}
}

// live tracks running test nodes for failure reports.
var live sync.Map // *testNode -> struct{}

// debugState describes every running test node's view, for failures.
func debugState() string {
	var b strings.Builder
	live.Range(func(k, _ any) bool {
		n := k.(*testNode)
		fmt.Fprintf(&b, "\n  %s (%s) sees:", n.LocalMember().Name, n.addr())
		for _, m := range n.Members() {
			fmt.Fprintf(&b, " %s@%v:%d=%s", m.Name, m.Addr, m.Port, m.Status)
		}
		return true
	})
	return b.String()
}

// memberEvent matches an event of type typ about the named member.
func memberEvent(typ EventType, name string) func(Event) bool {
	return func(ev Event) bool {
		return ev.Type == typ && slices.ContainsFunc(ev.Members, func(m Member) bool { return m.Name == name })
	}
}

// allAlive reports whether every node sees exactly want alive members.
func allAlive(nodes []*testNode, want int) func() bool {
	return func() bool {
		for _, n := range nodes {
			if n.NumAlive() != want {
				return false
			}
		}
		return true
	}
}
