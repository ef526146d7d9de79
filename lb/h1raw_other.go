//go:build !linux

package lb

import "net"

// rawSock is net.Conn's Read and Write elsewhere than on Linux (see
// h1raw_linux.go).
type rawSock struct{ c *net.TCPConn }

func (s *rawSock) reset(c *net.TCPConn)        { s.c = c }
func (s *rawSock) Read(p []byte) (int, error)  { return s.c.Read(p) }
func (s *rawSock) Write(p []byte) (int, error) { return s.c.Write(p) }
