package runtime

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
)

// AcceptQueuer is implemented by drivers that can tell how many
// connections wait, not yet accepted, on a replica's listening sockets.
// The agent stops a replica only once they are accepted (after it has
// taken the replica out of every load balancer), since a server that
// closes its listener resets the connections still queued on it.
type AcceptQueuer interface {
	// Queued returns the connections queued on the listening TCP
	// sockets at ports in the network namespace of container id (the
	// host's for host networking). A missing container or task wraps
	// ErrNotFound.
	Queued(ctx context.Context, id string, ports []int) (int, error)
}

// ListenQueued reads the text of /proc/PID/net/tcp or tcp6 and returns
// the sum of the accept queues of the sockets in state LISTEN whose local
// port is one of ports. For a listening socket the kernel reports the
// accept queue's length as rx_queue.
func ListenQueued(procNetTCP []byte, ports []int) (int, error) {
	lines := bytes.Split(procNetTCP, []byte("\n"))
	total := 0
	for i, line := range lines {
		f := bytes.Fields(line)
		if i == 0 || len(f) == 0 {
			continue // the header, or the last newline
		}
		if len(f) < 5 {
			return 0, fmt.Errorf("runtime: /proc/net/tcp line %d: %d fields", i+1, len(f))
		}
		const listen = "0A"
		if string(f[3]) != listen {
			continue
		}
		colon := bytes.LastIndexByte(f[1], ':')
		if colon < 0 {
			return 0, fmt.Errorf("runtime: /proc/net/tcp line %d: local address %q", i+1, f[1])
		}
		port, err := strconv.ParseUint(string(f[1][colon+1:]), 16, 16)
		if err != nil {
			return 0, fmt.Errorf("runtime: /proc/net/tcp line %d: port: %w", i+1, err)
		}
		if !slices.Contains(ports, int(port)) {
			continue
		}
		tx, rx, ok := bytes.Cut(f[4], []byte(":"))
		if !ok || len(tx) == 0 {
			return 0, fmt.Errorf("runtime: /proc/net/tcp line %d: queues %q", i+1, f[4])
		}
		q, err := strconv.ParseUint(string(rx), 16, 32)
		if err != nil {
			return 0, fmt.Errorf("runtime: /proc/net/tcp line %d: rx_queue: %w", i+1, err)
		}
		total += int(q)
	}
	return total, nil
}
