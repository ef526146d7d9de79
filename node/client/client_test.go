package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"http://127.0.0.1:7070", "http://127.0.0.1:7070", ""},
		{"https://node-1.example.com", "https://node-1.example.com", ""},
		{"127.0.0.1:7070", "http://127.0.0.1:7070", ""},
		{"localhost:7070/", "http://localhost:7070", ""},
		{"[::1]:7070", "http://[::1]:7070", ""},
		{"http://proxy:80/shoal/", "http://proxy:80/shoal", ""},
		{" node:1 ", "http://node:1", ""},
		{"", "", "empty agent address"},
		{":7070", "", "missing host"},
		{"ftp://host:1", "", "scheme must be http or https"},
		{"http://host:port", "", "invalid agent address"},
		{"http://u:p@host:1", "", "only scheme"},
		{"host:1?x=1", "", "only scheme"},
	}
	for _, tt := range tests {
		u, err := ParseAddr(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseAddr(%q) = %v, %v; want error containing %q", tt.in, u, err, tt.err)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("ParseAddr(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
		}
	}
	if _, err := New("ftp://x", ""); err == nil {
		t.Error("New accepted a bad address")
	}
}

// expect is what the fake server checks and answers for one request.
type expect struct {
	method, path string
	header       map[string]string // headers that must be present with these values
	noHeader     []string          // headers that must be absent
	body         string            // if set, the request body must be this JSON
	status       int
	answer       string
}

// serve starts a server that checks each request against want in order and
// records failures on t.
func serve(t *testing.T, want ...expect) *httptest.Server {
	t.Helper()
	i := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i >= len(want) {
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			http.Error(w, "unexpected", 500)
			return
		}
		e := want[i]
		i++
		if r.Method != e.method || r.URL.RequestURI() != e.path {
			t.Errorf("request = %s %s, want %s %s", r.Method, r.URL.RequestURI(), e.method, e.path)
		}
		for k, v := range e.header {
			if got := r.Header.Get(k); got != v {
				t.Errorf("%s %s: header %s = %q, want %q", r.Method, r.URL, k, got, v)
			}
		}
		for _, k := range e.noHeader {
			if got := r.Header.Get(k); got != "" {
				t.Errorf("%s %s: header %s = %q, want none", r.Method, r.URL, k, got)
			}
		}
		body, _ := io.ReadAll(r.Body)
		if e.body != "" && !jsonEqual(body, []byte(e.body)) {
			t.Errorf("%s %s: body = %s, want %s", r.Method, r.URL, body, e.body)
		}
		w.Header().Set("Content-Type", "application/json")
		if e.status != 0 {
			w.WriteHeader(e.status)
		}
		io.WriteString(w, e.answer)
	}))
	t.Cleanup(func() {
		srv.Close()
		if i != len(want) {
			t.Errorf("server saw %d requests, want %d", i, len(want))
		}
	})
	return srv
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func newClient(t *testing.T, srv *httptest.Server, token string) *Client {
	t.Helper()
	c, err := New(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const svcJSON = `{"name":"web","image":"demo:1","replicas":3,"network":"bridge","version":"v7","updated_by":"n1","updated_at":"2026-01-02T03:04:05Z"}`

func TestCalls(t *testing.T) {
	ctx := context.Background()
	auth := map[string]string{"Authorization": "Bearer s3cret", "Accept": "application/json", "User-Agent": "shoal-client"}
	srv := serve(t,
		expect{method: "GET", path: "/v1/nodes", header: auth, answer: `[{"name":"n1","address":"127.0.0.1","gossip_port":7946,"status":"alive","capacity":{"cpus":2,"memory":1024},"runtime":{"ready":true}}]`},
		expect{method: "GET", path: "/v1/services", header: auth, answer: "[" + svcJSON + "]"},
		expect{method: "GET", path: "/v1/services/web", header: auth, answer: svcJSON},
		expect{method: "PUT", path: "/v1/services/web", header: map[string]string{"Content-Type": "application/json", "If-Match": `"v7"`}, body: `{"name":"web","image":"demo:1","replicas":3}`, answer: svcJSON},
		expect{method: "PUT", path: "/v1/services/web", noHeader: []string{"If-Match"}, body: `{"name":"web","image":"demo:1","replicas":3}`, answer: svcJSON},
		expect{method: "DELETE", path: "/v1/services/web", answer: `{"name":"web","image":"demo:1","replicas":0,"version":"v8","updated_by":"n1","updated_at":"2026-01-02T03:04:06Z","deleted":true}`},
		expect{method: "GET", path: "/v1/health", answer: `{"status":"ok","node":"n1","members":3,"alive":3,"services":1,"version":"dev"}`},
	)
	c := newClient(t, srv, "s3cret")

	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Name != "n1" || nodes[0].Status != "alive" || !nodes[0].Runtime.Ready || nodes[0].Capacity.CPUs != 2 {
		t.Fatalf("Nodes = %+v, %v", nodes, err)
	}
	want := api.Service{
		Spec:      spec.Spec{Name: "web", Image: "demo:1", Replicas: 3, Network: "bridge"},
		Version:   "v7",
		UpdatedBy: "n1",
		UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	svcs, err := c.Services(ctx)
	if err != nil || len(svcs) != 1 || !reflect.DeepEqual(svcs[0], want) {
		t.Fatalf("Services = %+v, %v", svcs, err)
	}
	svc, err := c.Service(ctx, "web")
	if err != nil || !reflect.DeepEqual(svc, want) {
		t.Fatalf("Service = %+v, %v", svc, err)
	}
	s := spec.Spec{Name: "web", Image: "demo:1", Replicas: 3}
	if svc, err := c.PutService(ctx, s, "v7"); err != nil || svc.Version != "v7" {
		t.Fatalf("PutService(ifMatch) = %+v, %v", svc, err)
	}
	if _, err := c.PutService(ctx, s, ""); err != nil {
		t.Fatalf("PutService = %v", err)
	}
	del, err := c.DeleteService(ctx, "web")
	if err != nil || !del.Deleted || del.Version != "v8" {
		t.Fatalf("DeleteService = %+v, %v", del, err)
	}
	h, err := c.Health(ctx)
	if err != nil || h != (api.Health{Status: "ok", Node: "n1", Members: 3, Alive: 3, Services: 1, Version: "dev"}) {
		t.Fatalf("Health = %+v, %v", h, err)
	}
}

func TestNoTokenNoAuthorization(t *testing.T) {
	srv := serve(t, expect{method: "GET", path: "/v1/health", noHeader: []string{"Authorization"}, answer: `{"status":"ok"}`})
	if _, err := newClient(t, srv, "").Health(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		status  int
		answer  string
		msg     string
		classes [3]bool // not found, conflict, unauthorized
	}{
		{404, `{"error":"service \"web\" not found"}`, `service "web" not found (404 Not Found)`, [3]bool{true, false, false}},
		{409, `{"error":"version mismatch: have v8"}`, "version mismatch: have v8 (409 Conflict)", [3]bool{false, true, false}},
		{412, `{"error":"precondition"}`, "precondition (412 Precondition Failed)", [3]bool{false, true, false}},
		{401, `{"error":"missing bearer token"}`, "missing bearer token (401 Unauthorized)", [3]bool{false, false, true}},
		{403, `{"error":"bad token"}`, "bad token (403 Forbidden)", [3]bool{false, false, true}},
		{400, `{"error":"spec: replicas: must be between 0 and 1000, got 1001"}`, "spec: replicas: must be between 0 and 1000, got 1001 (400 Bad Request)", [3]bool{}},
		{500, ``, "internal server error (500 Internal Server Error)", [3]bool{}},
		{502, `<html>bad gateway</html>`, "bad gateway (502 Bad Gateway)", [3]bool{}},
		{503, "draining\n", "draining (503 Service Unavailable)", [3]bool{}},
		{400, `{"other":1}`, "bad request (400 Bad Request)", [3]bool{}},
	}
	for _, tt := range tests {
		srv := serve(t, expect{method: "GET", path: "/v1/services/web", status: tt.status, answer: tt.answer})
		_, err := newClient(t, srv, "").Service(context.Background(), "web")
		var e *Error
		if !errors.As(err, &e) || e.Status != tt.status || err.Error() != tt.msg {
			t.Errorf("status %d: err = %v, want *Error %q", tt.status, err, tt.msg)
			continue
		}
		if got := [3]bool{IsNotFound(err), IsConflict(err), IsUnauthorized(err)}; got != tt.classes {
			t.Errorf("status %d: classes = %v, want %v", tt.status, got, tt.classes)
		}
	}
	if IsNotFound(errors.New("x")) || IsNotFound(nil) {
		t.Error("IsNotFound true for a non-API error")
	}
}

func TestBadNameSendsNothing(t *testing.T) {
	srv := serve(t) // any request fails the test
	c := newClient(t, srv, "")
	ctx := context.Background()
	for _, name := range []string{"", "../nodes", "a/b", "Web"} {
		if _, err := c.Service(ctx, name); err == nil {
			t.Errorf("Service(%q) succeeded", name)
		}
		if _, err := c.DeleteService(ctx, name); err == nil {
			t.Errorf("DeleteService(%q) succeeded", name)
		}
		if _, err := c.PutService(ctx, spec.Spec{Name: name}, ""); err == nil {
			t.Errorf("PutService(%q) succeeded", name)
		}
	}
}

func TestDo(t *testing.T) {
	srv := serve(t,
		expect{method: "POST", path: "/v1/things?x=1&y=a%20b", header: map[string]string{"Content-Type": "application/json"}, body: `{"a":1}`, answer: `{"ok":true}`},
		expect{method: "POST", path: "/v1/blobs", header: map[string]string{"Content-Type": "application/octet-stream"}, answer: "raw bytes"},
		expect{method: "DELETE", path: "/v1/things/1", answer: "ignored"},
		expect{method: "GET", path: "/v1/bad", answer: "{not json"},
	)
	c := newClient(t, srv, "")
	ctx := context.Background()
	var out struct{ OK bool }
	if err := c.Do(ctx, "POST", "/v1/things?x=1&y=a%20b", map[string]int{"a": 1}, &out); err != nil || !out.OK {
		t.Fatalf("Do JSON = %+v, %v", out, err)
	}
	var buf bytes.Buffer
	if err := c.Do(ctx, "POST", "/v1/blobs", strings.NewReader("payload"), &buf); err != nil || buf.String() != "raw bytes" {
		t.Fatalf("Do raw = %q, %v", buf.String(), err)
	}
	if err := c.Do(ctx, "DELETE", "/v1/things/1", nil, nil); err != nil {
		t.Fatalf("Do nil out = %v", err)
	}
	if err := c.Do(ctx, "GET", "/v1/bad", nil, &out); err == nil || !strings.Contains(err.Error(), "reading GET /v1/bad answer") {
		t.Fatalf("Do bad JSON = %v", err)
	}
	if err := c.Do(ctx, "GET", "v1/x", nil, nil); err == nil {
		t.Fatal("Do accepted a relative path")
	}
	if err := c.Do(ctx, "GET", "/v1/x", func() {}, nil); err == nil {
		t.Fatal("Do accepted an unencodable body")
	}
}

func TestPathPrefix(t *testing.T) {
	srv := serve(t, expect{method: "GET", path: "/shoal/v1/health", answer: `{"status":"ok"}`})
	c, err := New(srv.URL+"/shoal/", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestBareHostPort(t *testing.T) {
	srv := serve(t, expect{method: "GET", path: "/v1/health", answer: `{"status":"ok"}`})
	c, err := New(strings.TrimPrefix(srv.URL, "http://"), "")
	if err != nil {
		t.Fatal(err)
	}
	if h, err := c.Health(context.Background()); err != nil || h.Status != "ok" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
}

func TestContextCancel(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := newClient(t, srv, "")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Health(ctx); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Health after cancel = %v, want context.Canceled", err)
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more
	c, err := New(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Nodes(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "client: GET "+addr+"/v1/nodes: ") {
		t.Fatalf("Nodes = %v, want a client error naming the URL", err)
	}
	var e *Error
	if errors.As(err, &e) {
		t.Fatalf("transport failure reported as an API error: %v", err)
	}
}

func TestQuoteETag(t *testing.T) {
	for in, want := range map[string]string{"v1": `"v1"`, `"v1"`: `"v1"`, `W/"x"`: `W/"x"`, "*": "*"} {
		if got := quoteETag(in); got != want {
			t.Errorf("quoteETag(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoContentAndOddStatus(t *testing.T) {
	srv := serve(t,
		expect{method: "DELETE", path: "/v1/things/1", status: 204},
		expect{method: "GET", path: "/v1/odd", status: 599, answer: `{"error":"odd"}`},
	)
	c := newClient(t, srv, "")
	var out struct{ A int }
	if err := c.Do(context.Background(), "DELETE", "/v1/things/1", nil, &out); err != nil {
		t.Fatalf("204 = %v", err)
	}
	err := c.Do(context.Background(), "GET", "/v1/odd", nil, nil)
	if err == nil || err.Error() != "odd (HTTP 599)" {
		t.Fatalf("599 = %v", err)
	}
}
