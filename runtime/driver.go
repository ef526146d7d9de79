package runtime

import "context"

// Driver is a container runtime. Implementations must be safe for
// concurrent use.
type Driver interface {
	// Ready returns nil when the runtime can run containers, or an error
	// saying why not (daemon unreachable, wrong version, ...). It must
	// return promptly when ctx ends.
	Ready(ctx context.Context) error
}
