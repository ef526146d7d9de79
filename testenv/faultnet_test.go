package testenv

import (
	"net/netip"
	"testing"
)

func TestNetworkPartitionAndHeal(t *testing.T) {
	a, b, c, d := netip.MustParseAddr("127.9.9.1"), netip.MustParseAddr("127.9.9.2"), netip.MustParseAddr("127.9.9.3"), netip.MustParseAddr("127.9.9.4")
	n := NewNetwork(1)
	if !n.Allowed(a, c) {
		t.Fatal("a healed network cuts a-c")
	}
	n.Partition([]netip.Addr{a, b}, []netip.Addr{c})
	cases := []struct {
		from, to netip.Addr
		want     bool
	}{
		{a, b, true}, {b, a, true}, {a, c, false}, {c, b, false},
		{d, d, true},                          // outside every group: its own group
		{d, a, false},                         // ... cut from the named groups
		{netip.AddrFrom16(a.As16()), b, true}, // IPv4-mapped form of a
	}
	for _, tc := range cases {
		if got := n.Allowed(tc.from, tc.to); got != tc.want {
			t.Errorf("Allowed(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
	n.Heal()
	if !n.Allowed(a, c) || !n.Allowed(d, a) {
		t.Fatal("heal left a cut")
	}
}

func TestNetworkDropIsSeeded(t *testing.T) {
	a, b := netip.MustParseAddr("127.9.9.1"), netip.MustParseAddr("127.9.9.2")
	run := func(seed uint64) []bool {
		n := NewNetwork(seed)
		n.SetDrop(0.3)
		out := make([]bool, 1000)
		for i := range out {
			out[i] = n.deliverPacket(a, b)
		}
		if s := n.Stats(); s.PacketsSent != 1000 || s.PacketsDropped < 200 || s.PacketsDropped > 400 {
			t.Errorf("seed %d: %+v, want about 300 of 1000 dropped", seed, s)
		}
		return out
	}
	x, y := run(7), run(7)
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("same seed, different fate for packet %d", i)
		}
	}
}
