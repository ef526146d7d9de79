package node

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/node/store"
)

// maxBody caps every API request body.
const maxBody = 1 << 20

// apiHandler is the HTTP API (/v1) with auth and error shaping around it.
func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", a.getHealth)
	mux.HandleFunc("GET /v1/nodes", a.getNodes)
	mux.HandleFunc("GET /v1/services", a.listServices)
	mux.HandleFunc("GET /v1/services/{name}", a.getService)
	mux.HandleFunc("PUT /v1/services/{name}", a.putService)
	mux.HandleFunc("DELETE /v1/services/{name}", a.deleteService)
	mux.HandleFunc("GET /v1/placement", a.getPlacement)
	mux.HandleFunc("GET /v1/placement/{service}/{slot}", a.explainPlacement)
	a.registerImageRoutes(mux)
	a.registerReplicaRoutes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	return a.authenticate(jsonMuxErrors(mux))
}

// authenticate requires the bearer token on every request when one is set.
func (a *Agent) authenticate(next http.Handler) http.Handler {
	if a.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + a.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="shoal"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// jsonMuxErrors turns the mux's own plain-text 404 and 405 answers into
// JSON errors like every other answer.
func jsonMuxErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&errorShaper{ResponseWriter: w, method: r.Method, path: r.URL.Path}, r)
	})
}

type errorShaper struct {
	http.ResponseWriter
	method, path string
	swallow      bool
}

func (e *errorShaper) WriteHeader(code int) {
	if strings.HasPrefix(e.Header().Get("Content-Type"), "text/plain") {
		switch code {
		case http.StatusNotFound:
			e.swallow = true
			writeError(e.ResponseWriter, code, fmt.Sprintf("no route for %s %s", e.method, e.path))
			return
		case http.StatusMethodNotAllowed:
			e.swallow = true
			writeError(e.ResponseWriter, code, fmt.Sprintf("method %s not allowed on %s", e.method, e.path))
			return
		}
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *errorShaper) Write(b []byte) (int, error) {
	if e.swallow {
		return len(b), nil
	}
	return e.ResponseWriter.Write(b)
}

func (e *errorShaper) Flush() {
	if f, ok := e.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Del("Content-Length")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	b, _ := json.Marshal(api.Error{Error: msg})
	_, _ = w.Write(append(b, '\n'))
}

func (a *Agent) getHealth(w http.ResponseWriter, r *http.Request) {
	members := a.cluster.Members()
	alive := 0
	for _, m := range members {
		if m.Status == gossip.StatusAlive {
			alive++
		}
	}
	writeJSON(w, http.StatusOK, api.Health{
		Status:   "ok",
		Node:     a.cfg.Name,
		Members:  len(members),
		Alive:    alive,
		Services: len(a.store.List()),
		Version:  Version,
	})
}

func (a *Agent) getNodes(w http.ResponseWriter, r *http.Request) {
	members := a.cluster.Members()
	out := make([]api.Node, 0, len(members))
	for _, m := range members {
		out = append(out, a.apiNode(m))
	}
	writeJSON(w, http.StatusOK, out)
}

// apiNode converts a gossip member to its API form.
func (a *Agent) apiNode(m gossip.Member) api.Node {
	n := api.Node{
		Name:       m.Name,
		Address:    m.Addr.String(),
		GossipPort: m.Port,
		Status:     string(m.Status),
		Self:       m.Name == a.cfg.Name,
	}
	if m.TagsErr != nil {
		n.Runtime = api.RuntimeStatus{Reason: "bad tags: " + m.TagsErr.Error()}
		return n
	}
	t := m.Tags
	n.PeerID, n.PeerPort, n.API = t.PeerID, t.PeerPort, t.API
	n.Labels, n.Arch, n.OS, n.Version = t.Labels, t.Arch, t.OS, t.Version
	n.Capacity = api.Capacity{CPUs: t.CPUs, Memory: t.Memory}
	n.Runtime = api.RuntimeStatus{Ready: t.RuntimeReady, Reason: t.RuntimeReason}
	n.Filling = t.Filling
	return n
}

// serviceOf decodes a stored entry into its API form.
func serviceOf(e store.Entry) (api.Service, error) {
	out := api.Service{
		Version:   e.Version.String(),
		UpdatedBy: e.Version.Node,
		UpdatedAt: e.Version.Time.Time().UTC(),
		Deleted:   e.Deleted,
	}
	if e.Deleted {
		out.Name = e.Key
		return out, nil
	}
	if err := json.Unmarshal(e.Value, &out.Spec); err != nil {
		return out, fmt.Errorf("stored spec %q: %w", e.Key, err)
	}
	return out, nil
}

func (a *Agent) listServices(w http.ResponseWriter, r *http.Request) {
	entries := a.store.List()
	out := make([]api.Service, 0, len(entries))
	for _, e := range entries {
		s, err := serviceOf(e)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.Problems = a.lbProblems(s.Name)
		out = append(out, s)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) getService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	e, ok := a.store.Get(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %q not found", name))
		return
	}
	s, err := serviceOf(e)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.Problems = a.lbProblems(s.Name)
	w.Header().Set("ETag", `"`+s.Version+`"`)
	writeJSON(w, http.StatusOK, s)
}

// ifMatch reads a conditional-write precondition: an If-Match header
// carrying a version token (quoted or not). Absent: no condition.
func ifMatch(r *http.Request) (*store.Version, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return nil, nil
	}
	v, err := store.ParseVersion(strings.Trim(h, `"`))
	if err != nil {
		return nil, fmt.Errorf("If-Match: %w", err)
	}
	return &v, nil
}

func (a *Agent) putService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := spec.ValidName(name); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("service name %q: %v", name, err))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	// The name may be left out of the body; the path names the service.
	body, err = withDefaultName(body, name)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s, err := spec.Decode(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.Name != name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name %q in body does not match %q in path", s.Name, name))
		return
	}
	cond, err := ifMatch(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s = a.pinImage(r.Context(), s)
	value, err := json.Marshal(s)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if other, port := a.portOwner(name, s.Ports); other != "" {
		writeError(w, http.StatusConflict, fmt.Sprintf("published port %d is already used by service %s", port, other))
		return
	}
	prev, existed := a.store.Get(name)
	if existed && bytes.Equal(prev.Value, value) && (cond == nil || *cond == prev.Version) {
		// Same spec again: no new version, so no replica churns.
		out, _ := serviceOf(prev)
		w.Header().Set("ETag", `"`+out.Version+`"`)
		writeJSON(w, http.StatusOK, out)
		return
	}
	e, err := a.store.Put(name, value, cond)
	if err != nil {
		a.writeStoreError(w, name, err)
		return
	}
	a.metrics.writes.Inc()
	a.announce(e)
	out, _ := serviceOf(e)
	w.Header().Set("ETag", `"`+out.Version+`"`)
	code := http.StatusOK
	if !existed {
		code = http.StatusCreated
	}
	writeJSON(w, code, out)
}

// withDefaultName sets "name" in a JSON object body when it is absent.
func withDefaultName(body []byte, name string) ([]byte, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		// Let the strict decoder produce the precise message.
		return body, nil
	}
	if _, ok := probe["name"]; ok {
		return body, nil
	}
	probe["name"], _ = json.Marshal(name)
	return json.Marshal(probe)
}

func (a *Agent) deleteService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	cond, err := ifMatch(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	e, err := a.store.Delete(name, cond)
	if err != nil {
		a.writeStoreError(w, name, err)
		return
	}
	a.metrics.writes.Inc()
	a.announce(e)
	out, _ := serviceOf(e)
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) writeStoreError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %q not found", name))
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		a.log.Error("store write failed", "service", name, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}
