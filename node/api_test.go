package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	nodepeer "github.com/shoalmesh/shoal/node/peer"
	"github.com/shoalmesh/shoal/testenv"
)

// do sends a raw API request and returns the status and decoded error.
func do(t *testing.T, method, url, token, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var e api.Error
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: %d answer is not a JSON error: %q", method, url, resp.StatusCode, b)
		}
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(b)
}

func TestAPIErrorsAndValidation(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 2})
	base := "http://" + c.Nodes[0].Agent().APIAddr()
	ctx := ctxT(t)

	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		code                     int
		msg                      string
	}{
		{"replicas out of range", "PUT", "/v1/services/web", `{"image":"demo:1","replicas":1001}`, nil, 400, "replicas"},
		{"no image", "PUT", "/v1/services/web", `{"replicas":1}`, nil, 400, "image"},
		{"unknown field", "PUT", "/v1/services/web", `{"image":"demo:1","replica":3}`, nil, 400, "replica"},
		{"not json", "PUT", "/v1/services/web", `image: demo`, nil, 400, ""},
		{"bad name in path", "PUT", "/v1/services/Web_1", `{"image":"demo:1"}`, nil, 400, "name"},
		{"name mismatch", "PUT", "/v1/services/web", `{"name":"api","image":"demo:1"}`, nil, 400, "does not match"},
		{"bad protocol", "PUT", "/v1/services/web", `{"image":"demo:1","ports":[{"published":80,"target":80,"protocol":"udp"}]}`, nil, 400, "protocol"},
		{"too large", "PUT", "/v1/services/web", `{"image":"` + strings.Repeat("a", 2<<20) + `"}`, nil, 413, "larger"},
		{"bad if-match", "PUT", "/v1/services/web", `{"image":"demo:1"}`, map[string]string{"If-Match": `"garbage"`}, 400, "If-Match"},
		{"missing service", "GET", "/v1/services/nope", "", nil, 404, "not found"},
		{"delete missing", "DELETE", "/v1/services/nope", "", nil, 404, "not found"},
		{"unknown route", "GET", "/v2/things", "", nil, 404, "no route"},
		{"wrong method", "POST", "/v1/services/web", "{}", nil, 405, "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := do(t, tc.method, base+tc.path, "", tc.body, tc.hdr)
			if code != tc.code {
				t.Fatalf("status %d (%s), want %d", code, msg, tc.code)
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not mention %q", msg, tc.msg)
			}
		})
	}
	// Nothing was stored, on either node.
	for _, n := range c.Nodes {
		list, err := n.Client.Services(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 0 {
			t.Errorf("%s stored %d services after bad requests: %+v", n.Name, len(list), list)
		}
	}

	// Create, then conditional updates.
	created, err := c.Nodes[0].Client.PutService(ctx, web("web", "demo:1", 1), "")
	if err != nil {
		t.Fatal(err)
	}
	same, err := c.Nodes[0].Client.PutService(ctx, web("web", "demo:1", 1), "")
	if err != nil {
		t.Fatal(err)
	}
	if same.Version != created.Version {
		t.Errorf("an identical PUT made a new version: %s -> %s", created.Version, same.Version)
	}
	if _, err := c.Nodes[0].Client.PutService(ctx, web("web", "demo:2", 1), created.Version); err != nil {
		t.Fatalf("conditional update with the current version: %v", err)
	}
	_, err = c.Nodes[0].Client.PutService(ctx, web("web", "demo:3", 1), created.Version)
	if !client.IsConflict(err) {
		t.Fatalf("stale If-Match: got %v, want 409", err)
	}
	got, err := c.Nodes[0].Client.Service(ctx, "web")
	if err != nil || got.Image != "demo:2" {
		t.Fatalf("after the refused update: %+v, %v", got, err)
	}
}

func TestAPIStatusCodes(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1})
	base := "http://" + c.Nodes[0].Agent().APIAddr()
	body := `{"image":"demo:1","replicas":2,"ports":[{"published":8080,"target":80}]}`
	if code, msg := do(t, "PUT", base+"/v1/services/web", "", body, nil); code != 201 {
		t.Fatalf("create: %d %s", code, msg)
	}
	if code, msg := do(t, "PUT", base+"/v1/services/web", "", strings.Replace(body, "2,", "3,", 1), nil); code != 200 {
		t.Fatalf("replace: %d %s", code, msg)
	}
	code, out := do(t, "GET", base+"/v1/services/web", "", "", nil)
	var s api.Service
	if err := json.Unmarshal([]byte(out), &s); code != 200 || err != nil {
		t.Fatalf("get: %d %v", code, err)
	}
	// Defaults are filled in on write, so every node stores the same spec.
	if s.Replicas != 3 || s.Ports[0].Protocol != "tcp" || s.Network != "bridge" || s.UpdatedBy != "node-1" {
		t.Errorf("stored spec %+v", s)
	}
	if code, _ := do(t, "DELETE", base+"/v1/services/web", "", "", nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := do(t, "GET", base+"/v1/services/web", "", "", nil); code != 404 {
		t.Fatalf("get after delete: %d", code)
	}
	if code, _ := do(t, "GET", base+"/metrics", "", "", nil); code != 200 {
		t.Fatalf("metrics: %d", code)
	}
}

func TestTokenRequired(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1, Token: "s3cret"})
	base := "http://" + c.Nodes[0].Agent().APIAddr()
	for _, path := range []string{"/v1/health", "/v1/nodes", "/v1/services", "/metrics"} {
		if code, msg := do(t, "GET", base+path, "", "", nil); code != 401 {
			t.Errorf("GET %s without token: %d %s, want 401", path, code, msg)
		}
		if code, _ := do(t, "GET", base+path, "wrong", "", nil); code != 401 {
			t.Errorf("GET %s with a wrong token: %d, want 401", path, code)
		}
		if code, msg := do(t, "GET", base+path, "s3cret", "", nil); code != 200 {
			t.Errorf("GET %s with the token: %d %s", path, code, msg)
		}
	}
	if code, _ := do(t, "PUT", base+"/v1/services/web", "", `{"image":"demo:1"}`, nil); code != 401 {
		t.Errorf("PUT without token: %d", code)
	}
	if _, err := c.Nodes[0].Client.Health(ctxT(t)); err != nil {
		t.Errorf("client with token: %v", err)
	}
}

func TestAPIBeyondLoopbackNeedsToken(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.Name = "n1"
	cfg.DataDir = t.TempDir()
	cfg.APIAddr = "0.0.0.0:7070"
	if _, err := node.New(*cfg); err != node.ErrTokenRequired {
		t.Fatalf("got %v, want ErrTokenRequired", err)
	}
	cfg.Token = "t"
	if _, err := node.New(*cfg); err != nil {
		t.Fatalf("with a token: %v", err)
	}
}

func TestWrongGossipKeyCannotJoin(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	c := testenv.New(t, testenv.Options{Nodes: 2, EncryptKey: key})
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"other key", bytes.Repeat([]byte{2}, 32)}, {"no key", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.Name = "intruder"
			cfg.DataDir = t.TempDir()
			cfg.BindAddr = c.Nodes[0].Addr.Next().Next().Next().Next()
			cfg.APIAddr = cfg.BindAddr.String() + ":0"
			cfg.GossipPort, cfg.PeerPort = 0, 0
			cfg.Gossip = gossip.DefaultLocalConfig()
			cfg.EncryptKey = tc.key
			cfg.Logger = slog.New(slog.DiscardHandler)
			a, err := node.New(*cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() { cancel(); <-done }()
			<-a.Ready()
			jctx, jcancel := context.WithTimeout(ctx, 2*time.Second)
			defer jcancel()
			if n, err := a.Cluster().Join(jctx, []string{c.Nodes[0].GossipAddr()}); err == nil {
				t.Fatalf("join with the wrong key succeeded (%d nodes)", n)
			}
			for _, n := range c.Nodes {
				for _, m := range n.Agent().Cluster().Members() {
					if m.Name == "intruder" {
						t.Fatalf("%s lists the intruder (%s)", n.Name, m.Status)
					}
				}
			}
			if got := a.Cluster().Members(); len(got) != 1 {
				t.Fatalf("intruder sees %d members", len(got))
			}
		})
	}
	// The cluster itself is undisturbed.
	c.WaitMembers(5 * time.Second)
}

func TestMalformedMessagesAreDroppedAndCounted(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 2})
	a, b := c.Nodes[0].Agent(), c.Nodes[1].Agent()
	ctx := ctxT(t)

	// Gossip notices: garbage, wrong types, bad key, bad version.
	bad := []string{"\x00\xff", `{"k":1}`, `{"k":"Bad Name","v":"1.0@n","o":"x"}`, `{"k":"web","v":"nope","o":"x"}`, `{"k":"web","v":"1.0@n"}`}
	for _, p := range bad {
		if err := a.Cluster().Notify([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	c.Eventually(10*time.Second, func() error {
		if got := b.DroppedNotices(); got < float64(len(bad)) {
			return fmt.Errorf("node-2 dropped %v notices, want %d", got, len(bad))
		}
		return nil
	})

	// Peer messages: garbage, unknown op, entries that are not specs.
	msgs := []string{
		"not json",
		`{"op":"explode"}`,
		`{"op":"digest","digest":"zz"}`,
		`{"op":"push","entries":[{"key":"web","version":{"time":{"wall":1,"logical":0},"node":"x"},"value":{"image":""}}]}`,
		`{"op":"push","entries":[{"key":"web","version":{"time":{"wall":1,"logical":0},"node":"x"},"value":{"name":"other","image":"demo:1"}}]}`,
	}
	before := b.DroppedPeerMessages()
	for _, m := range msgs {
		_, _ = a.CallState(ctx, b, []byte(m))
	}
	if got := b.DroppedPeerMessages() - before; got < float64(len(msgs)) {
		t.Errorf("node-2 counted %v dropped peer messages, want %d", got, len(msgs))
	}
	// Nothing was stored, and both nodes still work.
	for _, n := range c.Nodes {
		if list, err := n.Client.Services(ctx); err != nil || len(list) != 0 {
			t.Fatalf("%s: %v services, err %v", n.Name, len(list), err)
		}
	}
	if _, err := c.Nodes[0].Client.PutService(ctx, web("ok", "demo:1", 1), ""); err != nil {
		t.Fatal(err)
	}
	waitSpec(t, c, "ok", "demo:1", 10*time.Second)
}

func TestPeerPlaneRefusesNonMembers(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 2})
	target := c.Nodes[0].Agent()
	id, err := nodepeer.LoadOrCreateIdentity(filepath.Join(t.TempDir(), "stranger.key"))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := nodepeer.New(nodepeer.Config{
		Identity: id,
		ListenIP: c.Nodes[1].Addr.Next().Next(),
		Allow:    func(peer.ID) bool { return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	before := target.PeerHost().Stats().Refused
	m := target.Cluster().LocalMember()
	addr := netip.AddrPortFrom(m.Addr, uint16(m.Tags.PeerPort))
	_, err = stranger.Call(ctxT(t), target.PeerID(), addr, node.StateProto, []byte(`{"op":"digest","digest":"`+strings.Repeat("0", 64)+`"}`))
	if err == nil {
		t.Fatal("a host that is not a member called the state protocol")
	}
	if got := target.PeerHost().Stats().Refused; got <= before {
		t.Errorf("refused count %d -> %d, want an increase", before, got)
	}
	// Members still get through.
	if _, err := c.Nodes[1].Agent().CallState(ctxT(t), target, []byte(`{"op":"digest","digest":"`+strings.Repeat("0", 64)+`"}`)); err != nil {
		t.Errorf("member call: %v", err)
	}
}
