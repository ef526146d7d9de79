// Package api holds the JSON types of Shoal's HTTP API (/v1), shared by the
// agent that serves them and the client that reads them.
package api

import (
	"time"

	"github.com/shoalmesh/shoal/node/spec"
)

// Node is one cluster member as GET /v1/nodes reports it.
type Node struct {
	Name string `json:"name"`
	// Address is the IP other nodes use to reach this one.
	Address string `json:"address"`
	// GossipPort is the memberlist port at Address.
	GossipPort int `json:"gossip_port"`
	// Status is alive, suspect, failed, leaving or left.
	Status string `json:"status"`
	// PeerID is the node's libp2p identity on the peer plane.
	PeerID string `json:"peer_id,omitempty"`
	// PeerPort is the peer plane's TCP port at Address.
	PeerPort int `json:"peer_port,omitempty"`
	// API is the node's HTTP API address (host:port).
	API    string            `json:"api,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Arch   string            `json:"arch,omitempty"`
	OS     string            `json:"os,omitempty"`
	// Capacity is what placement may give this node.
	Capacity Capacity `json:"capacity"`
	// Runtime says whether the node can run containers, and why not.
	Runtime RuntimeStatus `json:"runtime"`
	// Version is the node's Shoal version.
	Version string `json:"version,omitempty"`
	// Filling is true while the node, just started, takes its share of
	// the replicas and has not yet alone run every slot it owns.
	Filling bool `json:"filling,omitempty"`
	// Self is true for the node that answered.
	Self bool `json:"self,omitempty"`
}

// Capacity is a node's advertised resources.
type Capacity struct {
	CPUs   float64 `json:"cpus"`
	Memory int64   `json:"memory"`
}

// RuntimeStatus is a node's container runtime readiness.
type RuntimeStatus struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// Service is a stored service spec with its replication metadata.
type Service struct {
	spec.Spec
	// Version is the entry's version token; send it back in If-Match for a
	// conditional update.
	Version string `json:"version"`
	// UpdatedBy is the node that accepted the write.
	UpdatedBy string `json:"updated_by"`
	// UpdatedAt is the write's hybrid-logical-clock wall time.
	UpdatedAt time.Time `json:"updated_at"`
	// Deleted is set on the answer to a DELETE.
	Deleted bool `json:"deleted,omitempty"`
	// Problems say what keeps the answering node from serving the service
	// as specified (a published port taken by another service or another
	// program).
	Problems []string `json:"problems,omitempty"`
}

// Health is the answer to GET /v1/health.
type Health struct {
	Status   string `json:"status"`
	Node     string `json:"node"`
	Members  int    `json:"members"`
	Alive    int    `json:"alive"`
	Services int    `json:"services"`
	Version  string `json:"version"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Placement is the answer to GET /v1/placement: the owner of every replica
// slot, and the slots no node can take, as this node computes them.
type Placement struct {
	Slots       []PlacedSlot   `json:"slots"`
	Unplaceable []UnplacedSlot `json:"unplaceable"`
}

// PlacedSlot is one replica slot and its owner.
type PlacedSlot struct {
	Service string `json:"service"`
	Slot    int    `json:"slot"`
	Node    string `json:"node"`
}

// UnplacedSlot is a replica slot without an owner, and why.
type UnplacedSlot struct {
	Service string `json:"service"`
	Slot    int    `json:"slot"`
	Reason  string `json:"reason"`
}

// Explanation says how one slot was placed: GET
// /v1/placement/{service}/{slot}.
type Explanation struct {
	Service string `json:"service"`
	Slot    int    `json:"slot"`
	// Node is the owner ("" when unplaceable, then Reason says why).
	Node   string `json:"node"`
	Reason string `json:"reason,omitempty"`
	// Relaxed names a rule dropped because no node could take the slot
	// under it ("load bound", "load bound and spread").
	Relaxed string `json:"relaxed,omitempty"`
	// Candidates are every node: eligible ones by rank, then the others.
	Candidates []Candidate `json:"candidates"`
}

// Candidate is one node as ranked for one slot.
type Candidate struct {
	Node     string  `json:"node"`
	Score    float64 `json:"score"`
	Rank     int     `json:"rank"`
	Eligible bool    `json:"eligible"`
	Chosen   bool    `json:"chosen,omitempty"`
	Skipped  string  `json:"skipped,omitempty"`
	Slots    int     `json:"slots"`
	Limit    int     `json:"limit"`
}

// Image is an image a node holds: POST /v1/images answers the ones it
// imported, GET /v1/images lists them all.
type Image struct {
	// Name is the reference it is stored under
	// ("docker.io/library/shoal-demo:latest").
	Name string `json:"name"`
	// Digest is the manifest (or index) digest ("sha256:...").
	Digest string `json:"digest"`
	// Size is the size of its content in bytes.
	Size int64 `json:"size"`
	// Platforms it has content for ("linux/amd64").
	Platforms []string `json:"platforms,omitempty"`
	// Nodes hold this image (this name with this digest), sorted; in the
	// cluster-wide list (GET /v1/images) only.
	Nodes []string `json:"nodes,omitempty"`
}

// Replica is one replica as its owning node reports it: GET /v1/replicas.
type Replica struct {
	Service string `json:"service"`
	Slot    int    `json:"slot"`
	// Node is the node that runs it.
	Node string `json:"node"`
	// Container is the container ID ("" while pending).
	Container string `json:"container,omitempty"`
	// Version is the container template's version (a hash of image,
	// command, env, network, target ports and resources).
	Version string `json:"version,omitempty"`
	// Image is the image reference it runs.
	Image string `json:"image,omitempty"`
	// State is pending (owned, not started yet), starting (running, no
	// health check passed yet), running, unhealthy (running, failing its
	// health check), stopping (its node is stopping and removing it: not
	// served, not counted), failed (exited; a restart is scheduled) or
	// unknown.
	State string `json:"state"`
	// Healthy is whether it runs and passes its health check (a service
	// without one is healthy once running).
	Healthy bool `json:"healthy"`
	// Endpoint is advertise-IP:host-port of the first published port; empty
	// without ports.
	Endpoint string `json:"endpoint,omitempty"`
	// Endpoints maps the target port of every published port to the
	// address that reaches it (advertise-IP:host-port): what the load
	// balancers route to.
	Endpoints map[int]string `json:"endpoints,omitempty"`
	// Restarts counts restarts after crashes on this node.
	Restarts int `json:"restarts"`
	// StartedAt is when the container started.
	StartedAt time.Time `json:"started_at,omitzero"`
	// LastError is the last start failure, exit or probe error.
	LastError string `json:"last_error,omitempty"`
	// Leaving is set while the node that runs it no longer owns the
	// slot: it keeps the container until the slot's new owner runs a
	// healthy replica of it (make-before-break), then stops it.
	Leaving bool `json:"leaving,omitempty"`
	// Adopted is set on a container that ran before its node's agent
	// (re)started: the agent adopted it. While the node is filling,
	// placement keeps its slot there before any other copy.
	Adopted bool `json:"adopted,omitempty"`
}

// PrefetchRequest is the body of POST /v1/images/prefetch.
type PrefetchRequest struct {
	// Image is the reference to copy to every node ("demo:1"); the node
	// pins it to the digest it or its peers hold.
	Image string `json:"image"`
}

// PrefetchProgress is one line of the answer to POST /v1/images/prefetch
// (a stream of JSON lines): a node's progress pulling the image.
type PrefetchProgress struct {
	Node string `json:"node"`
	// Image is the reference pinned to its digest.
	Image string `json:"image"`
	// State is "pulling", then "done" or "failed".
	State string `json:"state"`
	// Done and Total are bytes of the image's content for the node's
	// platform held and needed (Total 0: not known yet).
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// Seconds the pull took, on the last line of a node.
	Seconds float64 `json:"seconds,omitempty"`
	// Error says why the pull failed.
	Error string `json:"error,omitempty"`
}
