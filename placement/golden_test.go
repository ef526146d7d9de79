package placement

import (
	"math"
	"reflect"
	"testing"
)

func goldenNodes() []Node {
	return []Node{
		{Name: "node-a", OS: "linux", Arch: "amd64", Labels: map[string]string{"zone": "eu"}, Schedulable: true},
		{Name: "node-b", OS: "linux", Arch: "amd64", Labels: map[string]string{"zone": "eu"}, Schedulable: true, Weight: 2},
		{Name: "node-c", OS: "linux", Arch: "arm64", Labels: map[string]string{"zone": "us"}, Schedulable: true, CPUs: 2},
		{Name: "node-d", OS: "linux", Arch: "amd64", Labels: map[string]string{"zone": "us"}, Schedulable: true},
		{Name: "node-e", OS: "linux", Arch: "amd64", Schedulable: false, Reason: "runtime not ready"},
	}
}

func goldenServices() []Service {
	return []Service{
		{Name: "web", Replicas: 4},
		{Name: "api", Replicas: 3, Constraints: map[string]string{"zone": "eu"}},
		{Name: "arm", Replicas: 2, Platforms: []string{"linux/arm64"}, CPUs: 1},
		{Name: "big", Replicas: 1, CPUs: 8},
		{Name: "gpu", Replicas: 1, Constraints: map[string]string{"gpu": "yes"}},
	}
}

// TestGolden pins the placement of a fixed cluster and the hash values
// behind it. Every node of a cluster must compute the same owners, across
// versions (rolling upgrades) and CPU architectures: if this test fails,
// the change is a protocol change that moves slots in mixed-version
// clusters. Do it deliberately, and update the values.
func TestGolden(t *testing.T) {
	hashes := []struct {
		name      string
		got, want uint64
	}{
		{"hashString", hashString("web"), 0xc850f03f92a375f3},
		{"slotHash", slotHash(hashString("web"), 2), 0x333a6b511b91f079},
		{"pairHash", pairHash(hashString("node-a"), slotHash(hashString("web"), 2)), 0xad91796e215647ab},
		{"log(0.5)", math.Float64bits(portableLog(0.5)), 0xbfe62e42fefa39ef},
		{"log(0.999)", math.Float64bits(portableLog(0.999)), 0xbf5064670d979b73},
		{"log(1e-10)", math.Float64bits(portableLog(1e-10)), 0xc037069e2aa2aa5b},
		{"log(0.7071)", math.Float64bits(portableLog(0.7071)), 0xbfd62e6b3842a25e},
	}
	for _, h := range hashes {
		if h.got != h.want {
			t.Errorf("%s = %#x, want %#x", h.name, h.got, h.want)
		}
	}

	r := Compute(goldenNodes(), goldenServices(), Options{})
	want := map[string]string{
		"api/0": "node-a", "api/1": "node-b", "api/2": "node-b",
		"arm/0": "node-c", "arm/1": "node-c",
		"big/0": "node-b",
		"web/0": "node-b", "web/1": "node-d", "web/2": "node-c", "web/3": "node-a",
	}
	if got := owners(r); !reflect.DeepEqual(got, want) {
		t.Errorf("owners = %v\nwant %v", got, want)
	}
	wantUnplaced := []Unplaced{{Slot{"gpu", 0}, "no eligible node: label gpu=yes (4 nodes), not schedulable: runtime not ready (1 node)"}}
	if !reflect.DeepEqual(r.Unplaceable, wantUnplaced) {
		t.Errorf("unplaceable = %v", r.Unplaceable)
	}
	wantLoads := []Load{
		{Node: "node-a", Slots: 2, Limit: 2},
		{Node: "node-b", Slots: 4, Limit: 5, CPUs: 8},
		// Over its bound: arm runs only here, and web's 4 replicas need
		// all 4 eligible nodes (spread comes before the bound).
		{Node: "node-c", Slots: 3, Limit: 2, CPUs: 2},
		{Node: "node-d", Slots: 1, Limit: 3},
	}
	if !reflect.DeepEqual(r.Loads, wantLoads) {
		t.Errorf("loads = %+v\nwant %+v", r.Loads, wantLoads)
	}
}
