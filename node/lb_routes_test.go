package node

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/shoalmesh/shoal/lb"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/node/store"
)

func entryOf(t *testing.T, s spec.Spec, version string) store.Entry {
	t.Helper()
	v, err := store.ParseVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return store.Entry{Key: s.Name, Version: v, Value: b}
}

func TestRoutesFromSpecsAndReplicaView(t *testing.T) {
	webSpec := spec.Spec{Name: "web", Image: "x", Replicas: 3,
		Ports:   []spec.Port{{Published: 80, Target: 8080, Protocol: "http"}, {Published: 443, Target: 8443, Protocol: "tcp"}},
		Balance: &spec.Balance{Policy: "maglev", HashOn: "client_ip"}}
	entries := []store.Entry{
		// Newer write first: routes must still put the older one first.
		entryOf(t, spec.Spec{Name: "late", Image: "x", Replicas: 1, Ports: []spec.Port{{Published: 80, Target: 80, Protocol: "tcp"}}}, "2000.0@b"),
		entryOf(t, webSpec, "1000.0@a"),
		entryOf(t, spec.Spec{Name: "noports", Image: "x", Replicas: 1}, "1000.0@a"),
	}
	rep := func(slot int, node string, state string, healthy bool, eps map[int]string) api.Replica {
		return api.Replica{Service: "web", Slot: slot, Node: node, State: state, Healthy: healthy, Endpoints: eps}
	}
	replicas := []api.Replica{
		rep(0, "n1", "running", true, map[int]string{8080: "10.0.0.1:30001", 8443: "10.0.0.1:30002"}),
		rep(1, "n2", "running", false, map[int]string{8080: "10.0.0.2:30001", 8443: "10.0.0.2:30002"}), // failing its check
		rep(2, "n3", "starting", false, map[int]string{8080: "10.0.0.3:30001"}),
		rep(2, "n4", "running", true, map[int]string{8080: "10.0.0.4:30001"}), // no 8443 endpoint
	}
	got := routes(entries, replicas)
	want := []lb.Route{
		{Service: "web", Port: 80, Protocol: "http", Policy: "maglev", HashOn: "client_ip", Endpoints: []lb.Endpoint{
			{Addr: netip.MustParseAddrPort("10.0.0.1:30001"), Node: "n1", Slot: 0},
			{Addr: netip.MustParseAddrPort("10.0.0.4:30001"), Node: "n4", Slot: 2},
		}},
		{Service: "web", Port: 443, Protocol: "tcp", Policy: "maglev", HashOn: "client_ip", Endpoints: []lb.Endpoint{
			{Addr: netip.MustParseAddrPort("10.0.0.1:30002"), Node: "n1", Slot: 0},
		}},
		{Service: "late", Port: 80, Protocol: "tcp"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("routes:\n got %+v\nwant %+v", got, want)
	}
}
