package runtime

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"time"
)

// Errors every Driver returns (wrapped with %w), checked with errors.Is.
var (
	// ErrNotFound: no such container or image.
	ErrNotFound = errors.New("runtime: not found")
	// ErrPlatform: the image has no variant for this node's OS/arch.
	ErrPlatform = errors.New("runtime: image platform does not match this node")
	// ErrBadImage: the archive or image is malformed.
	ErrBadImage = errors.New("runtime: malformed image")
	// ErrNotReady: the runtime cannot run containers now.
	ErrNotReady = errors.New("runtime: not ready")
)

// Labels the drivers put on every container they create, so the agent
// finds its replicas again after a restart (adoption) by asking the
// runtime, not its own memory.
const (
	LabelService = "shoal.service" // service name
	LabelSlot    = "shoal.slot"    // slot index, decimal
	LabelVersion = "shoal.version" // spec version the replica was made from
	LabelNode    = "shoal.node"    // node name that created it
)

// Driver is a container runtime. Implementations must be safe for
// concurrent use. Every method takes ctx first and must return promptly
// when it ends.
type Driver interface {
	// Ready returns nil when the runtime can run containers, or an error
	// saying why not (daemon unreachable, wrong version, ...).
	Ready(ctx context.Context) error

	// ImportImage reads a `docker save` tarball or an OCI image archive,
	// stores its images and unpacks those for this node's platform. It
	// returns the images it imported. An archive with no image for this
	// platform is an error wrapping ErrPlatform; a malformed one wraps
	// ErrBadImage.
	ImportImage(ctx context.Context, r io.Reader) ([]Image, error)
	// Images lists the images the node holds.
	Images(ctx context.Context) ([]Image, error)
	// EnsureImage makes ref available locally, pulling it from its
	// registry when it is not, and returns it. ErrPlatform when the image
	// exists but not for this platform.
	EnsureImage(ctx context.Context, ref string) (Image, error)

	// Start creates and starts a replica's container and returns it as
	// running. The container carries the Label* labels.
	Start(ctx context.Context, spec ReplicaSpec) (Replica, error)
	// Stop stops the container (SIGTERM, then SIGKILL after timeout) and
	// removes it with its snapshot, network (IP, host port, veth, iptables
	// rules) and logs. Stopping a missing container is not an error.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// List returns every container this driver created (found by labels),
	// running or not, so a restarted agent adopts what is still there.
	List(ctx context.Context) ([]Replica, error)
	// Exec runs cmd inside a running container and returns its exit code
	// (health probes).
	Exec(ctx context.Context, id string, cmd []string) (int, error)
	// Logs returns the container's combined stdout and stderr: the last
	// tail lines (tail < 0: all that is kept), then, with follow, new
	// lines until ctx ends or the container is removed.
	Logs(ctx context.Context, id string, tail int, follow bool) (io.ReadCloser, error)
}

// Image is a stored image.
type Image struct {
	// Name is the reference it is stored under ("docker.io/library/x:1",
	// "shoal-demo:latest").
	Name string `json:"name"`
	// Digest is the manifest (or index) digest ("sha256:...").
	Digest string `json:"digest"`
	// Size is the size of its content in bytes.
	Size int64 `json:"size"`
	// Platforms it has content for ("linux/amd64").
	Platforms []string `json:"platforms,omitempty"`
}

// ReplicaSpec is what the agent asks a driver to run.
type ReplicaSpec struct {
	// ID is the container ID, unique per node (the agent derives it from
	// service, slot and spec version).
	ID      string
	Service string
	Slot    int
	// Version is the spec version; it is kept as a label.
	Version string
	Image   string
	// Command overrides the image's entrypoint and arguments when set.
	Command []string
	Env     map[string]string
	// Network is "bridge" (own IP via CNI, host ports mapped) or "host".
	Network string
	// Ports are the container ports to publish. In bridge mode each gets a
	// host port from the driver's range; in host mode the first one is
	// given to the container as $PORT.
	Ports []int
	// CPUs and Memory are limits (0 = none).
	CPUs   float64
	Memory int64
}

// State is a container's lifecycle state.
type State string

const (
	StateCreated State = "created"
	StateRunning State = "running"
	StateExited  State = "exited"
	StateUnknown State = "unknown"
	// StatePrepared: made by Preparer.Prepare and not started yet. The
	// agent keeps such containers out of its replicas: they serve nothing
	// until a Start of the same spec starts them.
	StatePrepared State = "prepared"
)

// Preparer is an optional Driver interface for a fast failover: Prepare
// does every step of Start but starting the container's process (image,
// container, task, network), and a later Start of the same spec (same ID
// and version) only starts the process. A prepared container shows in List
// as StatePrepared; Stop removes it like any other. A Start whose ID names
// a prepared container of another version, or one that cannot be started,
// removes it and starts afresh.
type Preparer interface {
	Prepare(ctx context.Context, spec ReplicaSpec) (Replica, error)
}

// Replica is a container as the runtime reports it.
type Replica struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Slot    int    `json:"slot"`
	Version string `json:"version"`
	Image   string `json:"image"`
	State   State  `json:"state"`
	// ExitCode is set when State is exited.
	ExitCode  int       `json:"exit_code,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// IP is the container's own address (bridge mode).
	IP netip.Addr `json:"ip,omitzero"`
	// HostPorts maps each published container port to its host port
	// (bridge mode), or to itself (host mode).
	HostPorts map[int]int `json:"host_ports,omitempty"`
}
