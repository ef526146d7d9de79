//go:build !linux

package lb

import "net"

// l4group is the L4 event loop's place in a Balancer; it has loops on
// Linux only (l4loop_linux.go), elsewhere every pair is copied by pipe.
type l4group struct{}

func (g *l4group) close() {}

// handOver reports false: pipe serves the pair.
func (l *listener) handOver(c, up *net.TCPConn, ep *endpoint) bool { return false }
