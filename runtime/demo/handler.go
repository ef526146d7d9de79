// Package demo is Shoal's demo workload: a tiny HTTP server that says which
// replica answered, and the container image that runs it.
//
// The image holds only the shoal binary itself (at /shoal, started as
// `/shoal demo-server`), so Shoal can build it anywhere without a registry
// or a Docker daemon: `shoal image build-demo -o demo.tar`, then `shoal
// image load demo.tar` on the nodes. The binary must be statically linked
// (built with CGO_ENABLED=0): the image has no libc.
//
// # Concurrency
//
// Handler's handler is safe for concurrent use. WriteArchive calls are
// independent of each other.
package demo

import (
	"encoding/json"
	"net/http"
	"os"
	"time"
)

// Reply is the JSON body of the demo server's GET /.
type Reply struct {
	// Service, Slot and Node name the replica: the agent sets them in
	// every replica's environment (SHOAL_SERVICE, SHOAL_SLOT, SHOAL_NODE).
	Service string `json:"service"`
	Slot    string `json:"slot"`
	Node    string `json:"node"`
	// Hostname is the container's host name.
	Hostname string `json:"hostname"`
	// Time is when the server answered (UTC).
	Time time.Time `json:"time"`
}

// Handler returns the demo server's handler. GET / answers a Reply naming
// the replica; GET /healthz answers 200 "ok" (for health probes). Other
// paths are 404.
func Handler(service, slot, node string) http.Handler {
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, err := json.Marshal(Reply{Service: service, Slot: slot, Node: node, Hostname: host, Time: time.Now().UTC()})
		if err != nil { // cannot happen: plain strings and a time
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// Every request must reach a replica, not a cache, so that load
		// balancing is visible.
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(b, '\n'))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
