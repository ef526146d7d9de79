package peer

import (
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// gater admits only current members (allow) at allowed addresses
// (allowAddr). libp2p calls it from many goroutines; it only reads immutable
// fields and bumps an atomic counter.
type gater struct {
	allow     func(peer.ID) bool
	allowAddr func(netip.Addr) bool // nil: every address
	refused   *atomic.Uint64
	log       *slog.Logger
}

var _ connmgr.ConnectionGater = (*gater)(nil)

// InterceptPeerDial runs before any outbound dial.
func (g *gater) InterceptPeerDial(p peer.ID) bool {
	if g.allow(p) {
		return true
	}
	g.refuse("dial", p, nil)
	return false
}

// InterceptAddrDial runs for each address an outbound dial would try.
func (g *gater) InterceptAddrDial(p peer.ID, addr ma.Multiaddr) bool {
	if g.allow(p) && g.addrOK(addr) {
		return true
	}
	g.refuse("dial addr", p, addr)
	return false
}

// InterceptAccept runs for an inbound connection before the handshake, when
// only the remote address is known.
func (g *gater) InterceptAccept(addrs network.ConnMultiaddrs) bool {
	if g.addrOK(addrs.RemoteMultiaddr()) {
		return true
	}
	g.refuse("accept", "", addrs.RemoteMultiaddr())
	return false
}

// InterceptSecured runs in both directions once Noise has authenticated the
// remote's peer ID.
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, addrs network.ConnMultiaddrs) bool {
	if g.allow(p) && g.addrOK(addrs.RemoteMultiaddr()) {
		return true
	}
	g.refuse("secured", p, addrs.RemoteMultiaddr())
	return false
}

// InterceptUpgraded admits every connection that got this far.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// addrOK applies allowAddr to the IP of a multiaddr. An address without an
// IP is refused when a filter is set: fail closed.
func (g *gater) addrOK(addr ma.Multiaddr) bool {
	if g.allowAddr == nil {
		return true
	}
	ip, ok := ipOf(addr)
	return ok && g.allowAddr(ip)
}

func (g *gater) refuse(stage string, p peer.ID, addr ma.Multiaddr) {
	g.refused.Add(1)
	g.log.Debug("peer: gater refused connection", "stage", stage, "peer", p, "addr", addr)
}

// ipOf returns the IP at the start of addr, unmapped from IPv4-in-IPv6.
func ipOf(addr ma.Multiaddr) (netip.Addr, bool) {
	if addr == nil {
		return netip.Addr{}, false
	}
	nip, err := manet.ToIP(addr)
	if err != nil {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(nip)
	if !ok {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}
