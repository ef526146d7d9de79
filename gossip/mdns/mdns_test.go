package mdns

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/zeroconf/v2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeNet stands in for zeroconf: it records the advertisement and
// answers every browse round with the TXT records script returns.
type fakeNet struct {
	mu          sync.Mutex
	registered  [][]string // TXT of each registration
	shutdowns   int
	registerErr error
	script      func(round int) [][]string
	rounds      int
}

func (f *fakeNet) Shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdowns++
}

func (f *fakeNet) install(d *Discoverer) {
	d.register = func(txt []string) (server, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.registerErr != nil {
			return nil, f.registerErr
		}
		f.registered = append(f.registered, txt)
		return f, nil
	}
	d.browse = func(ctx context.Context, entries chan<- *zeroconf.ServiceEntry) error {
		f.mu.Lock()
		round := f.rounds
		f.rounds++
		f.mu.Unlock()
		defer close(entries) // as zeroconf.Browse does
		if f.script != nil {
			for _, txt := range f.script(round) {
				select {
				case entries <- &zeroconf.ServiceEntry{Text: txt}:
				case <-ctx.Done():
					return nil
				}
			}
		}
		<-ctx.Done()
		return nil
	}
}

// testNode is a Discoverer on a fake network with a fake cluster.
type testNode struct {
	d      *Discoverer
	net    *fakeNet
	joined atomic.Bool
	checks atomic.Int64 // calls of Joined

	mu       sync.Mutex
	joins    [][]string
	joinErrs []error // returned by the next joins, then success
}

func newTestNode(t *testing.T, self Record, keys [][]byte, script func(int) [][]string) *testNode {
	t.Helper()
	n := &testNode{net: &fakeNet{script: script}}
	d, err := New(Config{
		Self: self,
		Keys: keys,
		Bind: netip.IPv4Unspecified(),
		Join: func(_ context.Context, addrs []string) (int, error) {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.joins = append(n.joins, addrs)
			if len(n.joinErrs) > 0 {
				err := n.joinErrs[0]
				n.joinErrs = n.joinErrs[1:]
				return 0, err
			}
			n.joined.Store(true)
			return len(addrs), nil
		},
		Joined: func() bool {
			n.checks.Add(1)
			return n.joined.Load()
		},
		BrowseWindow:  20 * time.Millisecond,
		RetryInterval: 5 * time.Millisecond,
		RetryMax:      20 * time.Millisecond,
		CheckInterval: 5 * time.Millisecond,
		Logger:        discard,
	})
	if err != nil {
		if _, ierr := Interfaces(netip.IPv4Unspecified()); ierr != nil {
			t.Skipf("no multicast interface on this machine: %v", ierr)
		}
		t.Fatal(err)
	}
	n.net.install(d)
	n.d = d
	return n
}

// run starts Run and returns a function that stops it and returns its
// error.
func (n *testNode) run(t *testing.T) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.d.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return 10s after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (n *testNode) joinCalls() [][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.joins)
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func txtOf(t *testing.T, r Record) []string {
	t.Helper()
	txt, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return txt
}

// TestRunJoinsOnlyMatchingNodes: the node ignores itself, drops and counts
// malformed records and nodes of other clusters, and joins the first node
// that holds its key; then it stops browsing, and Run withdraws the
// advertisement when stopped.
func TestRunJoinsOnlyMatchingNodes(t *testing.T) {
	key, otherKey := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	self := Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)}
	mine := Record{Node: "host-3", Gossip: netip.MustParseAddrPort("10.0.0.3:7946"), PeerID: mustPeer(t, peerC), KeyID: KeyID(key)}
	ownAdvert := self
	ownAdvert.KeyID = KeyID(key)
	records := [][]string{
		txtOf(t, ownAdvert),                             // looped back
		{"v=1", "node=host-9", "gossip=10.0.0.9"},       // malformed
		{"dnsaddr=/ip4/10.0.0.8/tcp/4001/p2p/" + peerB}, // not ours at all
		txtOf(t, Record{Node: "host-2", Gossip: netip.MustParseAddrPort("10.0.0.2:7946"), PeerID: mustPeer(t, peerB), KeyID: KeyID(otherKey)}),
		txtOf(t, Record{Node: "host-4", Gossip: netip.MustParseAddrPort("10.0.0.4:7946"), PeerID: mustPeer(t, peerB)}),                    // unencrypted
		txtOf(t, Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.5:7946"), PeerID: mustPeer(t, peerB), KeyID: KeyID(key)}), // our name
		txtOf(t, mine),
		txtOf(t, mine), // a second answer must not cause a second join
	}
	n := newTestNode(t, self, [][]byte{key}, func(int) [][]string { return records })
	stop := n.run(t)

	eventually(t, "a join", func() bool { return n.d.Stats().Joins == 1 })
	// Joined now: the node only checks that it stays so, and browses no more.
	rounds := n.d.Stats().Rounds
	c := n.checks.Load()
	eventually(t, "joined checks", func() bool { return n.checks.Load() >= c+5 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if got := n.joinCalls(); !slices.EqualFunc(got, [][]string{{"10.0.0.3:7946"}}, slices.Equal) {
		t.Errorf("joins = %q, want only host-3", got)
	}
	st := n.d.Stats()
	want := Stats{Rounds: rounds, Found: 3, Malformed: 2, OtherKey: 2, Joins: 1}
	if st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
	if rounds != 1 {
		t.Errorf("browse rounds = %d, want 1 (it joined in the first)", rounds)
	}
	n.net.mu.Lock()
	defer n.net.mu.Unlock()
	if len(n.net.registered) != 1 || !slices.Equal(n.net.registered[0], txtOf(t, ownAdvert)) {
		t.Errorf("advertised %q, want %q (with the key ID)", n.net.registered, txtOf(t, ownAdvert))
	}
	if n.net.shutdowns != 1 {
		t.Errorf("advertisement shut down %d times, want 1", n.net.shutdowns)
	}
}

// TestRunAloneKeepsBrowsing: a node that finds nobody keeps browsing in
// rounds (with backoff) and joins the first node that appears later, even
// after a failed attempt.
func TestRunAloneKeepsBrowsing(t *testing.T) {
	self := Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)}
	other := Record{Node: "host-2", Gossip: netip.MustParseAddrPort("10.0.0.2:7946"), PeerID: mustPeer(t, peerB)}
	var appear atomic.Bool
	n := newTestNode(t, self, nil, func(int) [][]string {
		if appear.Load() {
			return [][]string{txtOf(t, other)}
		}
		return nil
	})
	n.joinErrs = []error{errors.New("connection refused")}
	n.run(t)

	eventually(t, "several rounds while alone", func() bool { return n.d.Stats().Rounds >= 4 })
	if calls := n.joinCalls(); len(calls) != 0 {
		t.Fatalf("joined %q with nobody around", calls)
	}
	appear.Store(true)
	eventually(t, "a join after one failure", func() bool { return n.d.Stats().Joins == 1 })
	st := n.d.Stats()
	if st.JoinFailures != 1 {
		t.Errorf("JoinFailures = %d, want 1", st.JoinFailures)
	}
	for _, c := range n.joinCalls() {
		if !slices.Equal(c, []string{"10.0.0.2:7946"}) {
			t.Errorf("join %q, want host-2's address", c)
		}
	}
}

// TestRunBrowsesAgainWhenAlone: a joined node does not browse; left alone
// it browses again.
func TestRunBrowsesAgainWhenAlone(t *testing.T) {
	self := Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)}
	n := newTestNode(t, self, nil, nil)
	n.joined.Store(true)
	n.run(t)
	eventually(t, "joined checks", func() bool { return n.checks.Load() >= 5 })
	if r := n.d.Stats().Rounds; r != 0 {
		t.Fatalf("a joined node browsed %d rounds", r)
	}
	n.joined.Store(false)
	eventually(t, "browsing once alone", func() bool { return n.d.Stats().Rounds >= 1 })
}

func TestRunAdvertiseFails(t *testing.T) {
	self := Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)}
	n := newTestNode(t, self, nil, nil)
	n.net.registerErr = errors.New("no supported interface")
	err := n.d.Run(context.Background())
	if err == nil || !errors.Is(err, n.net.registerErr) {
		t.Fatalf("Run = %v, want the registration error", err)
	}
	if err := n.d.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestNewValidates(t *testing.T) {
	good := Config{
		Self:   Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)},
		Bind:   netip.IPv4Unspecified(),
		Join:   func(context.Context, []string) (int, error) { return 0, nil },
		Joined: func() bool { return false },
	}
	for name, mutate := range map[string]func(*Config){
		"no Join":       func(c *Config) { c.Join = nil },
		"no Joined":     func(c *Config) { c.Joined = nil },
		"bad record":    func(c *Config) { c.Self.Node = "Host_1" },
		"no bind":       func(c *Config) { c.Bind = netip.Addr{} },
		"foreign bind":  func(c *Config) { c.Bind = netip.MustParseAddr("192.0.2.77") }, // TEST-NET-1: on no interface
		"unspec gossip": func(c *Config) { c.Self.Gossip = netip.MustParseAddrPort("0.0.0.0:7946") },
	} {
		cfg := good
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestInterfaces: an unspecified address selects up, multicast-capable
// interfaces only; a specific one selects its own interface.
func TestInterfaces(t *testing.T) {
	all, err := Interfaces(netip.IPv4Unspecified())
	if err != nil {
		t.Skipf("no multicast interface on this machine: %v", err)
	}
	for _, ifc := range all {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagMulticast == 0 {
			t.Errorf("selected %s with flags %s", ifc.Name, ifc.Flags)
		}
	}
	// The first address of a selected interface selects that interface.
	addrs, err := all[0].Addrs()
	if err != nil || len(addrs) == 0 {
		t.Skipf("%s has no address", all[0].Name)
	}
	p, err := netip.ParsePrefix(addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	one, err := Interfaces(p.Addr())
	if err != nil || len(one) != 1 || one[0].Index != all[0].Index {
		t.Fatalf("Interfaces(%s) = %v, %v; want [%s]", p.Addr(), one, err, all[0].Name)
	}
	// Loopback cannot multicast (unless someone turned it on).
	if lo, err := net.InterfaceByName("lo"); err == nil && lo.Flags&net.FlagMulticast == 0 {
		if _, err := Interfaces(netip.MustParseAddr("127.0.0.1")); err == nil {
			t.Error("Interfaces(127.0.0.1) accepted a loopback without multicast")
		}
	}
}

func TestBackoff(t *testing.T) {
	b := newBackoff(100*time.Millisecond, time.Second)
	base := 100 * time.Millisecond
	for i := range 10 {
		d := b.next()
		if d < base/2 || d > base {
			t.Fatalf("pause %d = %v, want within [%v, %v]", i, d, base/2, base)
		}
		base = min(base*2, time.Second)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}
