// Package lb will hold the per-node load balancer: one listener per
// published port, endpoints fed from replica status, balancing policies,
// passive health, retries and metrics.
//
// It is built by the Load balancer issue (#5).
package lb
