package spec

import "time"

// Spec is the desired state of one service, as users write it and as every
// node replicates it. The JSON field names are the public schema.
type Spec struct {
	// Name identifies the service cluster-wide. A DNS label: lower-case
	// letters, digits and '-', 1 to 63 characters, starting and ending with
	// a letter or digit.
	Name string `json:"name"`
	// Image is the container image reference to run (required).
	Image string `json:"image"`
	// ImageDigest pins Image to the content it named when the service was
	// created or its image last changed: the node that took the write sets
	// it when it can resolve Image (its own images, then its peers').
	// Replicas run Image@ImageDigest, so every node runs the same bytes
	// even if a tag is loaded again with other content. Empty when Image
	// carries its own digest or could not be resolved.
	ImageDigest string `json:"image_digest,omitempty"`
	// Replicas is how many copies to run, 0 to 1000.
	Replicas int `json:"replicas"`
	// Command overrides the image's entrypoint and arguments when non-empty.
	Command []string `json:"command,omitempty"`
	// Env adds environment variables to every replica.
	Env map[string]string `json:"env,omitempty"`
	// Ports are published on every node's load balancer.
	Ports []Port `json:"ports,omitempty"`
	// Health is the probe the owning node runs against each replica.
	Health *Health `json:"health,omitempty"`
	// Resources are the limits (and placement requests) of each replica.
	Resources Resources `json:"resources,omitzero"`
	// Constraints restrict placement to nodes whose labels equal these.
	Constraints map[string]string `json:"constraints,omitempty"`
	// Network is "bridge" (the default: own IP, CNI) or "host".
	Network string `json:"network,omitempty"`
	// Balance tunes how every node's load balancer spreads the traffic of
	// the published ports; nil takes the defaults.
	Balance *Balance `json:"balance,omitempty"`
}

// Balance is a service's load-balancing settings.
type Balance struct {
	// Policy is "least_request" (the default: power of two choices over
	// requests in flight and latency), "round_robin" or "maglev"
	// (consistent hashing of HashOn: the same client goes to the same
	// replica from every node).
	Policy string `json:"policy,omitempty"`
	// HashOn is what "maglev" hashes: "client_ip" (the default) or
	// "header:NAME" (http ports; requests without the header hash the
	// client IP).
	HashOn string `json:"hash_on,omitempty"`
	// ProxyProtocol sends a PROXY protocol v2 header with the client's
	// address first on every connection to a replica through a tcp port.
	ProxyProtocol bool `json:"proxy_protocol,omitempty"`
}

// Port publishes a container port on every node.
type Port struct {
	// Published is the port every node's load balancer listens on.
	Published int `json:"published"`
	// Target is the port the container listens on.
	Target int `json:"target"`
	// Protocol is "tcp" (L4, the default) or "http" (L7).
	Protocol string `json:"protocol,omitempty"`
}

// Health is a replica health probe. Exactly one of HTTP, TCP and Exec is set.
type Health struct {
	// HTTP is a path probed with GET on the replica's first target port;
	// a 2xx or 3xx answer is healthy.
	HTTP string `json:"http,omitempty"`
	// TCP is a container port that must accept a connection.
	TCP int `json:"tcp,omitempty"`
	// Exec is a command run inside the container; exit 0 is healthy.
	Exec []string `json:"exec,omitempty"`
	// Interval between probes (default 5s).
	Interval Duration `json:"interval,omitzero"`
	// Timeout of one probe (default 2s, at most Interval).
	Timeout Duration `json:"timeout,omitzero"`
}

// Resources are per-replica limits. Zero means unlimited.
type Resources struct {
	// CPUs is a CPU limit in cores (0.5 = half a core).
	CPUs float64 `json:"cpus,omitempty"`
	// Memory is a memory limit in bytes.
	Memory Bytes `json:"memory,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("5s", "250ms").
type Duration time.Duration

// Bytes is a size in bytes. It reads JSON as a number of bytes or a string
// with a unit ("512Mi", "1g", "64MB") and writes a number of bytes.
type Bytes int64
