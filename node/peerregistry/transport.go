package peerregistry

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Transport is an http.RoundTripper that carries requests for
// http://<peer ID>/... to that peer over the libp2p host, under Protocol.
// It keeps streams alive between requests and reuses them, as net/http
// does TCP connections. It is safe for concurrent use.
type Transport struct {
	h    host.Host
	addr func(peer.ID) netip.AddrPort
	rt   *http.Transport
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport returns a Transport over h. addr gives a member's peer-plane
// address (an invalid AddrPort when unknown); when it is valid the
// Transport adds it to the peerstore before dialing, as node/peer's Call
// does, and dials bypassing libp2p's dial backoff. addr may be nil (the
// peerstore must then know the peer) and must be safe for concurrent use.
func NewTransport(h host.Host, addr func(peer.ID) netip.AddrPort) *Transport {
	t := &Transport{h: h, addr: addr}
	t.rt = &http.Transport{
		Proxy:                 nil, // never a proxy: the "host" is a peer ID
		DialContext:           t.dial,
		DisableCompression:    true, // blobs are compressed already; keep Range offsets exact
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       idleTimeout,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return t
}

// RoundTrip implements http.RoundTripper. The request's URL must be
// http://<peer ID>/...; the peer must be allowed by the host's gater (a
// current member) and serve Protocol.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		closeBody(req)
		return nil, fmt.Errorf("peerregistry: scheme %q: want http://<peer ID>/", req.URL.Scheme)
	}
	if _, err := peer.Decode(req.URL.Hostname()); err != nil || req.URL.Port() != "" {
		closeBody(req)
		return nil, fmt.Errorf("peerregistry: host %q is not a peer ID", req.URL.Host)
	}
	return t.rt.RoundTrip(req)
}

// CloseIdleConnections resets the streams kept alive for reuse.
func (t *Transport) CloseIdleConnections() { t.rt.CloseIdleConnections() }

// dial opens a stream to the peer named by address ("<peer ID>:80").
func (t *Transport) dial(ctx context.Context, _, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("peerregistry: dial %q: %w", address, err)
	}
	id, err := peer.Decode(host)
	if err != nil {
		return nil, fmt.Errorf("peerregistry: dial %q: not a peer ID: %w", host, err)
	}
	if t.addr != nil {
		if ap := t.addr(id); ap.IsValid() {
			m, err := manet.FromNetAddr(net.TCPAddrFromAddrPort(ap))
			if err != nil {
				return nil, fmt.Errorf("peerregistry: address %s of %s: %w", ap, id, err)
			}
			t.h.Peerstore().AddAddr(id, m, peerstore.TempAddrTTL)
		}
	}
	if t.h.Network().Connectedness(id) != network.Connected {
		// Membership comes from gossip: a peer that just came back must be
		// reachable at once, not after libp2p's dial backoff.
		ctx = network.WithForceDirectDial(ctx, "shoal: registry dial on membership")
	}
	s, err := t.h.NewStream(ctx, id, Protocol)
	if err != nil {
		return nil, fmt.Errorf("peerregistry: open %s stream to %s: %w", Protocol, id, err)
	}
	return &streamConn{Stream: s, client: true, stall: stallTimeout}, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
