package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/store"
	"github.com/shoalmesh/shoal/runtime"
)

// Options configure an in-process cluster.
type Options struct {
	// Nodes is how many agents to start (default 3).
	Nodes int
	// Seed drives the network's random faults (default: random, logged).
	Seed uint64
	// Gossip returns the gossip preset for each node (default
	// gossip.DefaultLocalConfig).
	Gossip func() *gossip.Config
	// EncryptKey, when set, encrypts gossip on every node.
	EncryptKey []byte
	// Token, when set, protects every node's API.
	Token string
	// SyncInterval is the anti-entropy period (default 1s).
	SyncInterval time.Duration
	// Configure, when set, adjusts node i's configuration before start.
	Configure func(i int, c *node.Config)
	// Runtime returns a node's container runtime (default: a ready
	// runtime.Fake); the node's Index, Name, Addr and DataDir are set.
	// Return nil for a node without a runtime.
	Runtime func(n *Node) runtime.Driver
	// OnStateChange, when set, is called with the node index for every
	// state change on any node. It must not block.
	OnStateChange func(i int, e store.Entry)
}

// Cluster is a set of in-process agents on distinct loopback addresses
// (127.a.b.1, .2, ...), wired through one fault-injecting Network.
//
// Every node uses the default ports on its own address, so a restarted
// node comes back at the same address and its membership snapshot stays
// valid, as on a real machine.
type Cluster struct {
	tb    testing.TB
	opts  Options
	Net   *Network
	Nodes []*Node
	logs  *testLog
}

// Node is one agent of a Cluster.
type Node struct {
	Index   int
	Name    string
	Addr    netip.Addr
	DataDir string
	// Client talks to the node's API.
	Client *client.Client

	c       *Cluster
	runtime runtime.Driver // kept across restarts, as a machine's daemon is

	mu      sync.Mutex // guards the fields below
	agent   *node.Agent
	done    chan error
	running bool
}

// New starts a cluster of opts.Nodes agents, joined through the first
// one, and waits until every node sees every other alive. The cluster is
// torn down when the test ends.
func New(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64()
	}
	if opts.Gossip == nil {
		opts.Gossip = gossip.DefaultLocalConfig
	}
	if opts.Runtime == nil {
		opts.Runtime = func(*Node) runtime.Driver { return runtime.NewFake() }
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = time.Second
	}
	tb.Logf("testenv: %d nodes, seed %d", opts.Nodes, opts.Seed)
	c := &Cluster{tb: tb, opts: opts, Net: NewNetwork(opts.Seed), logs: &testLog{tb: tb}}
	tb.Cleanup(c.logs.end) // first registered, so it runs last: after the nodes stopped
	base := freeSubnet(tb)
	root := tb.TempDir()
	for i := 0; i < opts.Nodes; i++ {
		a := base.As4()
		a[3] = byte(i + 1)
		n := &Node{
			Index:   i,
			Name:    fmt.Sprintf("node-%d", i+1),
			Addr:    netip.AddrFrom4(a),
			DataDir: filepath.Join(root, fmt.Sprintf("node-%d", i+1)),
			c:       c,
		}
		n.runtime = opts.Runtime(n)
		cl, err := client.New("http://"+net.JoinHostPort(n.Addr.String(), "7070"), opts.Token)
		if err != nil {
			tb.Fatal(err)
		}
		n.Client = cl
		c.Nodes = append(c.Nodes, n)
	}
	tb.Cleanup(c.Close)
	for i, n := range c.Nodes {
		var join []string
		if i > 0 {
			join = []string{c.Nodes[0].GossipAddr()}
		}
		if err := n.Start(join...); err != nil {
			tb.Fatalf("testenv: start %s: %v", n.Name, err)
		}
	}
	c.WaitMembers(30 * time.Second)
	return c
}

// freeSubnet picks a random 127.a.b.0/24 whose first address is free, so
// concurrent test processes do not collide.
func freeSubnet(tb testing.TB) netip.Addr {
	for range 50 {
		a := netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(1 + rand.IntN(250)), 1})
		ln, err := net.Listen("tcp", net.JoinHostPort(a.String(), "7946"))
		if err != nil {
			continue
		}
		_ = ln.Close()
		return a
	}
	tb.Fatal("testenv: no free loopback subnet")
	return netip.Addr{}
}

// Runtime is the node's container runtime (nil if it has none).
func (n *Node) Runtime() runtime.Driver { return n.runtime }

// GossipAddr is the node's gossip address (host:port).
func (n *Node) GossipAddr() string {
	return net.JoinHostPort(n.Addr.String(), fmt.Sprint(node.DefaultGossipPort))
}

// Agent is the running agent, or nil when the node is down.
func (n *Node) Agent() *node.Agent {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		return nil
	}
	return n.agent
}

// Running reports whether the node's agent is up.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

// config builds the node's agent configuration.
func (n *Node) config(join []string) node.Config {
	o := n.c.opts
	cfg := node.DefaultConfig()
	cfg.Name = n.Name
	cfg.DataDir = n.DataDir
	cfg.BindAddr = n.Addr
	cfg.AdvertiseAddr = n.Addr
	cfg.APIAddr = net.JoinHostPort(n.Addr.String(), "7070")
	cfg.Token = o.Token
	cfg.Join = join
	cfg.EncryptKey = o.EncryptKey
	cfg.SyncInterval = o.SyncInterval
	cfg.Runtime = n.runtime
	cfg.RuntimeCheckInterval = 200 * time.Millisecond
	cfg.Gossip = o.Gossip()
	cfg.Logger = testLogger(n.c.logs, n.Name)
	net := n.c.Net
	self := n.Addr
	cfg.AllowAddr = func(remote netip.Addr) bool { return net.Allowed(self, remote) }
	if o.OnStateChange != nil {
		i := n.Index
		cfg.OnStateChange = func(e store.Entry) { o.OnStateChange(i, e) }
	}
	if o.Configure != nil {
		o.Configure(n.Index, cfg)
	}
	return *cfg
}

// Start starts the node's agent (again) with its data dir, joining the
// given seeds (none: rejoin from the membership snapshot), and waits
// until it is ready.
func (n *Node) Start(join ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		return fmt.Errorf("testenv: %s is already running", n.Name)
	}
	cfg := n.config(join)
	tr, err := n.c.Net.Transport(n.Addr, cfg.GossipPort)
	if err != nil {
		return err
	}
	cfg.Gossip.Serf.MemberlistConfig.Transport = tr
	a, err := node.New(cfg)
	if err != nil {
		_ = tr.Shutdown()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case <-a.Ready():
	case err := <-done:
		_ = tr.Shutdown()
		return fmt.Errorf("testenv: %s exited while starting: %w", n.Name, err)
	case <-time.After(30 * time.Second):
		a.Kill()
		return fmt.Errorf("testenv: %s not ready after 30s", n.Name)
	}
	n.agent, n.done, n.running = a, done, true
	return nil
}

// Kill crashes the node: it stops without leaving, so the others detect
// a failure. Its data dir stays for Start.
func (n *Node) Kill() error { return n.stop(true) }

// Stop stops the node gracefully: it leaves the cluster first.
func (n *Node) Stop() error { return n.stop(false) }

func (n *Node) stop(crash bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		return nil
	}
	n.running = false
	if crash {
		n.agent.Kill()
	} else {
		n.agent.Stop()
	}
	select {
	case err := <-n.done:
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("testenv: %s did not stop within 30s", n.Name)
	}
}

// Running returns the nodes whose agents are up.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Partition cuts the network between groups of node indexes (both gossip
// and peer plane) and drops the peer-plane connections that cross a cut.
func (c *Cluster) Partition(groups ...[]int) {
	addrs := make([][]netip.Addr, len(groups))
	for gi, g := range groups {
		for _, i := range g {
			addrs[gi] = append(addrs[gi], c.Nodes[i].Addr)
		}
	}
	c.Net.Partition(addrs...)
	for _, n := range c.Running() {
		if a := n.Agent(); a != nil {
			a.ResetPeerConns()
		}
	}
}

// Heal removes every partition.
func (c *Cluster) Heal() { c.Net.Heal() }

// WaitMembers waits until every running node sees exactly the running
// nodes as alive.
func (c *Cluster) WaitMembers(timeout time.Duration) {
	c.tb.Helper()
	c.Eventually(timeout, func() error {
		running := c.Running()
		for _, n := range running {
			a := n.Agent()
			if a == nil {
				return fmt.Errorf("%s went down", n.Name)
			}
			alive := map[string]bool{}
			for _, m := range a.Cluster().Members() {
				if m.Status == gossip.StatusAlive {
					alive[m.Name] = true
				}
			}
			for _, o := range running {
				if !alive[o.Name] {
					return fmt.Errorf("%s does not see %s alive", n.Name, o.Name)
				}
			}
			if len(alive) != len(running) {
				return fmt.Errorf("%s sees %d alive, want %d", n.Name, len(alive), len(running))
			}
		}
		return nil
	})
}

// Eventually polls cond until it returns nil, failing the test with the
// last error after timeout.
func (c *Cluster) Eventually(timeout time.Duration, cond func() error) {
	c.tb.Helper()
	if err := Poll(timeout, cond); err != nil {
		c.tb.Fatalf("testenv: condition not met after %s: %v", timeout, err)
	}
}

// Poll calls cond every few milliseconds until it returns nil or timeout
// passes, and returns the last error.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// Close stops every node (crash-style: nothing to wait for) and checks
// that each one shut down cleanly.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = n.Kill() }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.tb.Errorf("testenv: shutdown: %v", err)
	}
}

// testLogger logs to the test log when SHOAL_TEST_LOG is set (to a level
// name: debug, info, warn), and nowhere otherwise.
func testLogger(w *testLog, name string) *slog.Logger {
	lvl := os.Getenv("SHOAL_TEST_LOG")
	if lvl == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(lvl))); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})).With("test_node", name)
}

// testLog writes log lines to the test log until the test ends, and
// drops them after: a goroutine of a library that outlives the agent's
// shutdown (memberlist's indirect ping waits out its timeout) must not
// log to a completed test, which panics.
type testLog struct {
	tb    testing.TB
	mu    sync.Mutex
	ended bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLog) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
}
