package node

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
)

func goodDoc() statusDoc {
	return statusDoc{Node: "node-1", Version: 7, Replicas: []api.Replica{{
		Service: "web", Slot: 2, Node: "node-1", Container: "web-2-1a2b3c4d", State: "running",
		Healthy: true, Endpoint: "10.0.0.1:30001", Endpoints: map[int]string{80: "10.0.0.1:30001"}, Restarts: 1, StartedAt: time.Unix(1, 0).UTC(),
	}}}
}

func TestCheckStatusDoc(t *testing.T) {
	tests := []struct {
		name string
		edit func(*statusDoc)
		ok   bool
	}{
		{"good", func(*statusDoc) {}, true},
		{"empty replicas", func(d *statusDoc) { d.Replicas = nil }, true},
		{"bad node", func(d *statusDoc) { d.Node = "Node_1" }, false},
		{"no version", func(d *statusDoc) { d.Version = 0 }, false},
		{"bad service", func(d *statusDoc) { d.Replicas[0].Service = "" }, false},
		{"negative slot", func(d *statusDoc) { d.Replicas[0].Slot = -1 }, false},
		{"replica of another node", func(d *statusDoc) { d.Replicas[0].Node = "node-2" }, false},
		{"bad state", func(d *statusDoc) { d.Replicas[0].State = "exploded" }, false},
		{"bad endpoint", func(d *statusDoc) { d.Replicas[0].Endpoint = "10.0.0.1" }, false},
		{"negative restarts", func(d *statusDoc) { d.Replicas[0].Restarts = -2 }, false},
		{"bad port endpoint", func(d *statusDoc) { d.Replicas[0].Endpoints[80] = "nowhere" }, false},
		{"endpoint of port 0", func(d *statusDoc) { d.Replicas[0].Endpoints[0] = "10.0.0.1:1" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := goodDoc()
			tt.edit(&d)
			err := checkStatusDoc(d)
			if (err == nil) != tt.ok {
				t.Fatalf("checkStatusDoc = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, errBadMessage) {
				t.Fatalf("error %v does not wrap errBadMessage", err)
			}
		})
	}
}

func TestStatusViewVersions(t *testing.T) {
	v := newStatusView("node-1")
	now := time.Unix(100, 0)
	if !v.setLocal([]api.Replica{}, now) {
		t.Fatal("first setLocal reported no change")
	}
	d1, _ := v.local()
	if v.setLocal([]api.Replica{}, now.Add(time.Second)) {
		t.Fatal("setLocal with the same replicas reported a change")
	}
	// A clock that went back still gives a higher version.
	v.setLocal(goodDoc().Replicas, now.Add(-time.Hour))
	d2, _ := v.local()
	if d2.Version <= d1.Version {
		t.Fatalf("version went from %d to %d", d1.Version, d2.Version)
	}
	select {
	case <-v.push:
	default:
		t.Fatal("a local change asked for no push")
	}

	watch := v.watch()
	other := goodDoc()
	other.Node = "node-2"
	other.Replicas[0].Node = "node-2"
	if n := v.merge(other); n != 1 {
		t.Fatalf("merge of a new document changed %d", n)
	}
	select {
	case <-watch:
	default:
		t.Fatal("watchers not woken by a merge")
	}
	older := other
	older.Version--
	older.Replicas = nil
	self := d2
	self.Version += 100
	self.Replicas = nil
	if n := v.merge(older, other, self); n != 0 {
		t.Fatalf("older, equal and self documents changed %d", n)
	}
	if got := v.newer(map[string]uint64{"node-2": other.Version}, func(string) bool { return true }); len(got) != 1 || got[0].Node != "node-1" {
		t.Fatalf("newer = %+v, want node-1's document only", got)
	}
	if got := v.replicas(func(n string) bool { return n != "node-1" }); len(got) != 1 || got[0].Node != "node-2" {
		t.Fatalf("replicas = %+v", got)
	}
	if n := v.prune(func(n string) bool { return true }); n != 1 {
		t.Fatalf("prune dropped %d, want 1 (never self)", n)
	}
}

func FuzzDecodeStatusRequest(f *testing.F) {
	doc := goodDoc()
	push, _ := json.Marshal(statusRequest{Op: "push", From: "node-1", Doc: &doc})
	pull, _ := json.Marshal(statusRequest{Op: "pull", From: "node-2", Have: map[string]uint64{"node-1": 3}})
	resp, _ := json.Marshal(statusResponse{Docs: []statusDoc{doc}})
	for _, s := range []string{string(push), string(pull), string(resp),
		`{"op":"push"}`, `{"op":"push","doc":{"node":"n","version":0}}`, `{"op":"nope"}`, `{}`, `[]`, `null`, "\x00",
		`{"op":"push","doc":{"node":"n","version":1,"replicas":[{"service":"web","slot":0,"node":"n","state":"running","endpoint":"x"}]}}`,
		`{"docs":[{"node":"n","version":1,"replicas":[{"service":"w","slot":1e9,"node":"n","state":"running"}]}]}`,
		`{"op":"push","doc":{"node":"n","version":1,"replicas":[{"service":"web","slot":0,"node":"n","state":"running","endpoints":{"0":"10.0.0.1:1"}}]}}`,
		`{"op":"push","doc":{"node":"n","version":1,"replicas":[{"service":"web","slot":0,"node":"n","state":"running","endpoints":{"x":"10.0.0.1:1"}}]}}`,
		`{"op":"push","doc":{"node":"n","version":1,"replicas":[{"service":"web","slot":0,"node":"n","state":"draining","healthy":true}]}}`,
		`{"docs":[{"node":"n","version":1,"replicas":[{"service":"w","slot":1,"node":"n","state":"Draining!"}]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeStatusRequest(b); err == nil {
			switch r.Op {
			case "push":
				if r.Doc == nil || checkStatusDoc(*r.Doc) != nil {
					t.Fatalf("accepted bad push %+v", r)
				}
			case "pull":
			default:
				t.Fatalf("accepted op %q", r.Op)
			}
		} else if !errors.Is(err, errBadMessage) {
			t.Fatalf("error %v does not wrap errBadMessage", err)
		}
		docs, _, err := decodeStatusResponse(b)
		if err != nil {
			return
		}
		for _, d := range docs {
			if checkStatusDoc(d) != nil {
				t.Fatalf("kept bad document %+v", d)
			}
		}
	})
}

func FuzzDecodeLogsRequest(f *testing.F) {
	for _, s := range []string{`{"service":"web","tail":10,"follow":true}`, `{"service":"Web"}`, `{}`, `[]`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeLogsRequest(b)
		if err == nil && r.Service == "" {
			t.Fatalf("accepted %+v", r)
		}
	})
}

// A state of a later version is read as "unknown" (and not healthy), so
// a peer of another version is understood during a rolling upgrade; a
// malformed state still makes the document bad.
func TestStatusFutureStates(t *testing.T) {
	for _, tt := range []struct {
		state string
		ok    bool
	}{{"draining", true}, {"stopping", true}, {"Exploded!", false}, {"", false}, {"a-very-long-state-name", false}} {
		d := goodDoc()
		d.Replicas[0].State = tt.state
		push, _ := json.Marshal(statusRequest{Op: "push", Doc: &d})
		req, err := decodeStatusRequest(push)
		if (err == nil) != tt.ok {
			t.Fatalf("state %q: push decoded with %v, want ok=%v", tt.state, err, tt.ok)
		}
		d = goodDoc()
		d.Replicas[0].State = tt.state
		resp, _ := json.Marshal(statusResponse{Docs: []statusDoc{d}})
		docs, bad, err := decodeStatusResponse(resp)
		if err != nil || (bad == 0) != tt.ok || len(docs) != bad^1 {
			t.Fatalf("state %q: response decoded to %d docs, %d bad, %v; want ok=%v", tt.state, len(docs), bad, err, tt.ok)
		}
		if !tt.ok {
			continue
		}
		want := tt.state
		if want == "draining" {
			want = "unknown"
		}
		for _, got := range []api.Replica{req.Doc.Replicas[0], docs[0].Replicas[0]} {
			if got.State != want || got.Healthy != (want != "unknown") {
				t.Fatalf("state %q read as %q healthy=%v, want %q healthy=%v", tt.state, got.State, got.Healthy, want, want != "unknown")
			}
		}
	}
}

// mergePushed says when a pushed document withdraws a replica that the
// copy held had the balancers route to; the sender waits on the answer
// to stop it.
func TestStatusMergePushedWithdraws(t *testing.T) {
	v := newStatusView("self")
	d := goodDoc()
	version := d.Version
	next := func(edit func(*api.Replica)) statusDoc {
		version++
		n := goodDoc()
		n.Version = version
		if edit != nil {
			edit(&n.Replicas[0])
		}
		return n
	}
	if v.mergePushed(d) {
		t.Fatal("a first document withdrew something")
	}
	added := next(nil)
	added.Replicas = append(added.Replicas, api.Replica{Service: "web", Slot: 3, Node: "node-1", Container: "web-3-x", State: "starting"})
	if v.mergePushed(added) {
		t.Fatal("a document that adds a replica withdrew something")
	}
	stale := next(func(r *api.Replica) { r.State = "stopping"; r.Healthy = false })
	stale.Version = 1
	if v.mergePushed(stale) {
		t.Fatal("an older document was taken")
	}
	for _, tc := range []struct {
		name string
		edit func(*api.Replica)
	}{
		{"stopping", func(r *api.Replica) { r.State = "stopping"; r.Healthy = false }},
		{"unhealthy", func(r *api.Replica) { r.Healthy = false }},
		{"gone", func(r *api.Replica) { r.Container = "web-2-other"; r.State = "starting"; r.Healthy = false }},
	} {
		if v.mergePushed(next(nil)) { // served again first
			t.Fatalf("%s: serving the replica again withdrew something", tc.name)
		}
		if !v.mergePushed(next(tc.edit)) {
			t.Errorf("%s: not reported as withdrawn", tc.name)
		}
	}
	self := next(func(r *api.Replica) { r.State = "stopping" })
	self.Node = "self"
	if v.mergePushed(self) {
		t.Fatal("a document about this node was taken")
	}
}
