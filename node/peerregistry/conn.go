package peerregistry

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// streamConn is a libp2p stream as a net.Conn, for net/http on either side
// (the gostream pattern).
//
// On the client side (reset set) Close resets the stream: net/http closes a
// client connection only to abandon it (a response body closed early, a
// cancelled request, an idle connection dropped), and a reset is what tells
// the server to stop writing. On the server side Close is a graceful close,
// so that the client reads the whole answer, unless the server is shutting
// down (shutdown set).
//
// stall, when positive, bounds a Write (server) or Read (client) that makes
// no progress: a peer that stops reading, or stops sending, is cut off
// instead of holding the stream forever. The deadline moves forward with
// each call (at most every stall/8, since setting it costs a timer reset),
// so a long transfer that keeps moving is never cut, and a blocked call
// fails between 7/8 stall and stall after the last progress. Server-side
// reads are left to http.Server, which sets its own read deadlines.
type streamConn struct {
	network.Stream
	client   bool
	stall    time.Duration
	shutdown *atomic.Bool // server side: set once the server stops
	// deadline is when the stall deadline last set expires. Only the one
	// goroutine that reads (client) or writes (server) touches it.
	deadline time.Time
}

// extend moves the stall deadline forward if it is due, using set.
func (c *streamConn) extend(set func(time.Time) error) {
	now := time.Now()
	if c.deadline.Sub(now) > c.stall-c.stall/8 {
		return
	}
	c.deadline = now.Add(c.stall)
	_ = set(c.deadline)
}

var _ net.Conn = (*streamConn)(nil)

func (c *streamConn) Read(p []byte) (int, error) {
	if c.client && c.stall > 0 {
		c.extend(c.SetReadDeadline)
	}
	return c.Stream.Read(p)
}

func (c *streamConn) Write(p []byte) (int, error) {
	if !c.client && c.stall > 0 {
		c.extend(c.SetWriteDeadline)
	}
	return c.Stream.Write(p)
}

func (c *streamConn) Close() error {
	if c.client || (c.shutdown != nil && c.shutdown.Load()) {
		return c.Reset()
	}
	return c.Stream.Close()
}

func (c *streamConn) LocalAddr() net.Addr  { return peerAddr(c.Conn().LocalPeer()) }
func (c *streamConn) RemoteAddr() net.Addr { return peerAddr(c.Conn().RemotePeer()) }

// peerAddr is a peer ID as a net.Addr; http.Request.RemoteAddr is its
// string, the remote's peer ID.
type peerAddr peer.ID

func (a peerAddr) Network() string { return "libp2p" }
func (a peerAddr) String() string  { return peer.ID(a).String() }
