package peer

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// connAddrs is a network.ConnMultiaddrs with a given remote.
type connAddrs struct{ remote ma.Multiaddr }

func (c connAddrs) LocalMultiaddr() ma.Multiaddr  { return ma.StringCast("/ip4/127.0.0.1/tcp/1") }
func (c connAddrs) RemoteMultiaddr() ma.Multiaddr { return c.remote }

func TestGater(t *testing.T) {
	member, err := peer.IDFromPrivateKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := peer.IDFromPrivateKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	blockedIP := netip.MustParseAddr("10.0.0.9")
	var refused atomic.Uint64
	g := &gater{
		allow:     func(p peer.ID) bool { return p == member },
		allowAddr: func(ip netip.Addr) bool { return ip != blockedIP },
		refused:   &refused,
		log:       discard,
	}
	open := ma.StringCast("/ip4/10.0.0.1/tcp/7946")
	blocked := ma.StringCast("/ip4/10.0.0.9/tcp/7946")
	mapped := ma.StringCast("/ip6/::ffff:10.0.0.9/tcp/7946") // the same IP, IPv4-mapped
	noIP := ma.StringCast("/dns4/example.com/tcp/7946")

	tests := []struct {
		name string
		call func() bool
		want bool
	}{
		{"peer dial member", func() bool { return g.InterceptPeerDial(member) }, true},
		{"peer dial stranger", func() bool { return g.InterceptPeerDial(stranger) }, false},
		{"addr dial member open", func() bool { return g.InterceptAddrDial(member, open) }, true},
		{"addr dial member blocked", func() bool { return g.InterceptAddrDial(member, blocked) }, false},
		{"addr dial member mapped", func() bool { return g.InterceptAddrDial(member, mapped) }, false},
		{"addr dial stranger open", func() bool { return g.InterceptAddrDial(stranger, open) }, false},
		{"addr dial without IP fails closed", func() bool { return g.InterceptAddrDial(member, noIP) }, false},
		{"accept open", func() bool { return g.InterceptAccept(connAddrs{open}) }, true},
		{"accept blocked", func() bool { return g.InterceptAccept(connAddrs{blocked}) }, false},
		{"secured in member", func() bool { return g.InterceptSecured(network.DirInbound, member, connAddrs{open}) }, true},
		{"secured in stranger", func() bool { return g.InterceptSecured(network.DirInbound, stranger, connAddrs{open}) }, false},
		{"secured out member blocked", func() bool { return g.InterceptSecured(network.DirOutbound, member, connAddrs{blocked}) }, false},
		{"upgraded", func() bool { ok, _ := g.InterceptUpgraded(nil); return ok }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := refused.Load()
			if got := tt.call(); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			wantCount := before
			if !tt.want {
				wantCount++
			}
			if refused.Load() != wantCount {
				t.Fatalf("refused = %d, want %d", refused.Load(), wantCount)
			}
		})
	}

	// Without AllowAddr every address passes, IP or not.
	g.allowAddr = nil
	if !g.InterceptAddrDial(member, noIP) || !g.InterceptAccept(connAddrs{blocked}) {
		t.Fatal("nil AllowAddr refused an address")
	}
}
