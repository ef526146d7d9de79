package testenv

import (
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Network is an in-process fault injector for the traffic between test
// nodes, modelled on etcd's rafttest network: partitions between groups
// of addresses, and seeded random drop of gossip packets. Every node's
// gossip transport and peer-plane gater consult it, so a cut applies to
// both planes.
//
// Cuts are symmetric and applied on the sending side: a node can neither
// send a packet nor open a connection across a cut. Safe for concurrent
// use.
type Network struct {
	mu    sync.Mutex
	rng   *rand.Rand
	group map[netip.Addr]int // partition group of each address; absent = 0
	drop  float64            // probability of dropping a gossip packet
	cut   bool               // whether any partition is in force
	stats NetworkStats
}

// NetworkStats counts what the network did.
type NetworkStats struct {
	PacketsSent, PacketsDropped, DialsRefused uint64
}

// NewNetwork returns a healed network whose random drops follow seed.
func NewNetwork(seed uint64) *Network {
	return &Network{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), group: map[netip.Addr]int{}}
}

// Partition splits the network into groups: addresses in different
// groups cannot reach each other. Addresses in no group form one more
// group of their own.
func (n *Network) Partition(groups ...[]netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[netip.Addr]int{}
	for i, g := range groups {
		for _, a := range g {
			n.group[a] = i + 1
		}
	}
	n.cut = true
}

// Heal removes every partition (drop rates stay).
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[netip.Addr]int{}
	n.cut = false
}

// SetDrop sets the probability (0 to 1) that a gossip packet is lost.
func (n *Network) SetDrop(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drop = p
}

// Stats returns the counters.
func (n *Network) Stats() NetworkStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Allowed reports whether from and to are on the same side of every cut.
func (n *Network) Allowed(from, to netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.allowedLocked(from, to)
}

func (n *Network) allowedLocked(from, to netip.Addr) bool {
	return !n.cut || n.group[from.Unmap()] == n.group[to.Unmap()]
}

// deliverPacket decides the fate of one gossip packet.
func (n *Network) deliverPacket(from, to netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stats.PacketsSent++
	if !n.allowedLocked(from, to) || (n.drop > 0 && n.rng.Float64() < n.drop) {
		n.stats.PacketsDropped++
		return false
	}
	return true
}

// Transport returns a memberlist transport bound to self:port whose
// outgoing packets and connections pass through the network's faults.
func (n *Network) Transport(self netip.Addr, port int) (memberlist.Transport, error) {
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{self.String()},
		BindPort:  port,
		Logger:    log.New(io.Discard, "", 0),
	})
	if err != nil {
		return nil, err
	}
	return &faultTransport{NetTransport: inner, net: n, self: self}, nil
}

// faultTransport wraps memberlist's NetTransport. Filtering the sending
// side is enough because every test node uses one.
type faultTransport struct {
	*memberlist.NetTransport
	net  *Network
	self netip.Addr
}

func destination(addr string) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("testenv: transport address %q: %w", addr, err)
	}
	return ap.Addr(), nil
}

// WriteTo silently loses packets that the network drops, as UDP would.
func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	to, err := destination(addr)
	if err != nil {
		return time.Time{}, err
	}
	if !t.net.deliverPacket(t.self, to) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

// DialTimeout refuses connections across a cut.
func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	to, err := destination(addr)
	if err != nil {
		return nil, err
	}
	if !t.net.Allowed(t.self, to) {
		t.net.mu.Lock()
		t.net.stats.DialsRefused++
		t.net.mu.Unlock()
		return nil, fmt.Errorf("testenv: %s -> %s: network partitioned", t.self, to)
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

// WriteToAddress shadows NetTransport's node-aware variant, which
// memberlist prefers; without it packets would bypass the faults.
func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// DialAddressTimeout shadows NetTransport's node-aware variant.
func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)
