package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
)

// request is one request the fake API received.
type request struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

// fakeAPI is an in-memory stand-in for an agent's HTTP API: the same routes,
// strict spec decoding, versions, If-Match and bearer tokens.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex // guards all following fields
	token     string     // required bearer token; "" = none
	reject    string     // if set, every PUT fails with 400 and this message
	services  map[string]api.Service
	nodes     []api.Node
	seq       int
	requests  []request
	conflicts int // conditional PUTs to lose to a simulated concurrent writer
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, services: map[string]api.Service{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		reply(w, 200, f.nodes)
	})
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		out := []api.Service{}
		for _, k := range slices.Sorted(maps.Keys(f.services)) {
			out = append(out, f.services[k])
		}
		reply(w, 200, out)
	})
	mux.HandleFunc("GET /v1/services/{name}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		s, ok := f.services[r.PathValue("name")]
		if !ok {
			replyError(w, 404, fmt.Sprintf("service %q not found", r.PathValue("name")))
			return
		}
		reply(w, 200, s)
	})
	mux.HandleFunc("PUT /v1/services/{name}", f.put)
	mux.HandleFunc("DELETE /v1/services/{name}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		name := r.PathValue("name")
		s, ok := f.services[name]
		if !ok {
			replyError(w, 404, fmt.Sprintf("service %q not found", name))
			return
		}
		delete(f.services, name)
		s.Version, s.Deleted = f.nextVersion(), true
		reply(w, 200, s)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		replyError(w, 404, "no route for "+r.Method+" "+r.URL.Path)
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mu.Lock()
		f.requests = append(f.requests, request{r.Method, r.URL.Path, r.Header.Clone(), body})
		token := f.token
		f.mu.Unlock()
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			replyError(w, 401, "missing or wrong bearer token")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) put(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s, err := spec.Decode(body)
	if err != nil {
		replyError(w, 400, err.Error())
		return
	}
	name := r.PathValue("name")
	f.mu.Lock()
	reject := f.reject
	f.mu.Unlock()
	if reject != "" {
		replyError(w, 400, reject)
		return
	}
	if s.Name != name {
		replyError(w, 400, fmt.Sprintf("name %q in body does not match %q in path", s.Name, name))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prev, exists := f.services[name]
	if im := r.Header.Get("If-Match"); im != "" {
		if f.conflicts > 0 && exists { // another writer got there first
			f.conflicts--
			prev.Version = f.nextVersion()
			f.services[name] = prev
		}
		if !exists || im != `"`+prev.Version+`"` {
			replyError(w, 409, fmt.Sprintf("version mismatch: If-Match %s, have %q", im, prev.Version))
			return
		}
	}
	svc := api.Service{Spec: s, Version: f.nextVersion(), UpdatedBy: "fake", UpdatedAt: time.Now().UTC()}
	f.services[name] = svc
	reply(w, 200, svc)
}

// nextVersion returns a new version; f.mu must be held.
func (f *fakeAPI) nextVersion() string {
	f.seq++
	return fmt.Sprintf("v%d", f.seq)
}

// add stores a service directly.
func (f *fakeAPI) add(s spec.Spec) api.Service {
	s.Normalize()
	f.mu.Lock()
	defer f.mu.Unlock()
	svc := api.Service{Spec: s, Version: f.nextVersion(), UpdatedBy: "fake", UpdatedAt: time.Now().UTC()}
	f.services[s.Name] = svc
	return svc
}

// set changes the fake's behaviour under its lock.
func (f *fakeAPI) set(fn func(f *fakeAPI)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeAPI) service(name string) (api.Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[name]
	return s, ok
}

func (f *fakeAPI) reqs() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// reqsOf returns the requests with this method.
func (f *fakeAPI) reqsOf(method string) []request {
	var out []request
	for _, r := range f.reqs() {
		if r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func replyError(w http.ResponseWriter, code int, msg string) {
	reply(w, code, api.Error{Error: msg})
}

// result is the outcome of one CLI run.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the shoal CLI in-process against f (via --addr unless env or args
// set the address) and returns its exit code and output.
func cli(t *testing.T, f *fakeAPI, env map[string]string, args ...string) result {
	t.Helper()
	if f != nil && env[envAddr] == "" && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--addr") }) {
		args = append([]string{"--addr", f.srv.URL}, args...)
	}
	var out, errb bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := execute(context.Background(), args, &out, &errb, getenv)
	return result{code, out.String(), errb.String()}
}

// ok fails the test unless r succeeded.
func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
	return r
}

// failed fails the test unless r failed with a one-line "shoal: " error
// containing want.
func (r result) failed(t *testing.T, want string) {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (stdout %q, stderr %q)", r.code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "shoal: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Fatalf("stderr %q is not one line starting with \"shoal: \"", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Fatalf("stderr %q does not contain %q", r.stderr, want)
	}
}
