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
	h     host.Host
	addr  func(peer.ID) netip.AddrPort
	rt    *http.Transport
	plain *http.Transport // redirects to a peer's plain listener (plain.go)
	local netip.Addr      // source address of plain connections; zero: any
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
	t.plain = &http.Transport{
		Proxy:                 nil,
		DialContext:           t.dialPlain,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       idleTimeout,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	return t
}

// SetPlainSource sets the source address of connections to peers' plain
// listeners: the address they know this node by, which their tickets are
// issued for. Call it before the first request.
func (t *Transport) SetPlainSource(ip netip.Addr) { t.local = ip }

// dialPlain connects to a peer's plain listener from t.local.
func (t *Transport) dialPlain(ctx context.Context, network, address string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if t.local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: t.local.AsSlice()}
	}
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c}, nil
}

// followPlain follows a peer's redirect of a blob GET to its plain
// listener: only to the peer's own address (as membership knows it) and the
// same path, so that what comes back is still the blob asked for, from that
// peer, and is verified as such.
func (t *Transport) followPlain(req *http.Request, resp *http.Response, id peer.ID) (*http.Response, error) {
	loc, err := resp.Location()
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("peerregistry: peer %s redirected without a usable Location: %w", id, err)
	}
	var own netip.AddrPort
	if t.addr != nil {
		own = t.addr(id)
	}
	ap, aerr := netip.ParseAddrPort(loc.Host)
	switch {
	case loc.Scheme != "http" || loc.User != nil || aerr != nil:
		return nil, fmt.Errorf("peerregistry: peer %s redirected to %q: want http://<its address>:<port>/", id, loc.Redacted())
	case !own.IsValid() || ap.Addr().Unmap() != own.Addr().Unmap():
		return nil, fmt.Errorf("peerregistry: peer %s redirected to %s, not its own address (%v)", id, ap.Addr(), own.Addr())
	case loc.EscapedPath() != req.URL.EscapedPath():
		return nil, fmt.Errorf("peerregistry: peer %s redirected %s to another path %s", id, req.URL.Path, loc.Path)
	}
	plainReq := req.Clone(req.Context())
	plainReq.URL, plainReq.Host = loc, ""
	out, err := t.plain.RoundTrip(plainReq)
	if err == nil && out.StatusCode == http.StatusForbidden {
		// The ticket did not match how we reached the peer (another
		// source address, say).
		_ = out.Body.Close()
		err = fmt.Errorf("plain listener refused the ticket (%s)", out.Status)
	} else if err == nil || req.Context().Err() != nil {
		return out, err
	}
	// No usable answer from the plain listener (a firewall, a refused
	// ticket): fetch over the peer plane, asking the peer not to redirect.
	again := req.Clone(req.Context())
	again.Header.Set(NoRedirectHeader, "1")
	out, perr := t.rt.RoundTrip(again)
	if perr != nil {
		return nil, fmt.Errorf("peerregistry: plain transfer from %s: %w; over the peer plane: %w", id, err, perr)
	}
	return out, nil
}

// NoRedirectHeader in a request asks the Handler to serve a blob itself
// rather than redirect it to its plain listener.
const NoRedirectHeader = "Shoal-No-Redirect"

// RoundTrip implements http.RoundTripper. The request's URL must be
// http://<peer ID>/...; the peer must be allowed by the host's gater (a
// current member) and serve Protocol.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		closeBody(req)
		return nil, fmt.Errorf("peerregistry: scheme %q: want http://<peer ID>/", req.URL.Scheme)
	}
	id, err := peer.Decode(req.URL.Hostname())
	if err != nil || req.URL.Port() != "" {
		closeBody(req)
		return nil, fmt.Errorf("peerregistry: host %q is not a peer ID", req.URL.Host)
	}
	resp, err := t.rt.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTemporaryRedirect || req.Method != http.MethodGet {
		return resp, err
	}
	return t.followPlain(req, resp, id)
}

// CloseIdleConnections resets the streams kept alive for reuse and closes
// idle plain connections.
func (t *Transport) CloseIdleConnections() {
	t.rt.CloseIdleConnections()
	t.plain.CloseIdleConnections()
}

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
