package node

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/gossip"
)

func TestSplitJoin(t *testing.T) {
	for _, tc := range []struct {
		join  []string
		seeds []string
		mdns  bool
	}{
		{nil, nil, false},
		{[]string{"10.0.0.1:7946"}, []string{"10.0.0.1:7946"}, false},
		{[]string{JoinMDNS}, nil, true},
		{[]string{"10.0.0.1:7946", JoinMDNS, "10.0.0.2:7946", JoinMDNS}, []string{"10.0.0.1:7946", "10.0.0.2:7946"}, true},
	} {
		seeds, mdns := splitJoin(tc.join)
		if !slices.Equal(seeds, tc.seeds) || mdns != tc.mdns {
			t.Errorf("splitJoin(%q) = %q, %v; want %q, %v", tc.join, seeds, mdns, tc.seeds, tc.mdns)
		}
	}
}

// TestJoinMDNSNeedsMulticast: --join mdns on an address whose interface
// cannot multicast (loopback) fails the start with a clear error, and
// releases what was opened (the API listener).
func TestJoinMDNSNeedsMulticast(t *testing.T) {
	if lo, err := net.InterfaceByName("lo"); err != nil || lo.Flags&net.FlagMulticast != 0 {
		t.Skip("no loopback interface without multicast")
	}
	cfg := DefaultConfig()
	cfg.Name = "n1"
	cfg.DataDir = t.TempDir()
	cfg.BindAddr = netip.MustParseAddr("127.0.91.7")
	cfg.APIAddr = "127.0.91.7:0"
	cfg.GossipPort, cfg.PeerPort = 0, 0
	cfg.Gossip = gossip.DefaultLocalConfig()
	cfg.Join = []string{JoinMDNS}
	cfg.Logger = slog.New(slog.DiscardHandler)
	a, err := New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	if err == nil || !strings.Contains(err.Error(), "--join mdns") || !strings.Contains(err.Error(), "cannot multicast") {
		t.Fatalf("Run = %v, want a --join mdns error about multicast", err)
	}
	if c, err := net.DialTimeout("tcp", a.apiAddr, time.Second); err == nil {
		c.Close()
		t.Fatalf("API listener %s still open", a.apiAddr)
	}
}
