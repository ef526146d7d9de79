package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	manet "github.com/multiformats/go-multiaddr/net"
	msmux "github.com/multiformats/go-multistream"
)

// Handler serves one request from peer from (authenticated by Noise); the
// returned bytes are the response. A returned error reaches the caller as a
// *RemoteError carrying only the error's message. Handlers run concurrently,
// one goroutine per request. ctx is cancelled when the host closes, or
// Config.CallTimeout after the request's stream opened (reading the request
// counts against it; writing the answer gets another CallTimeout). A panic in
// a handler is recovered, logged at error level and reported to the caller
// as an internal error.
type Handler func(ctx context.Context, from peer.ID, req []byte) ([]byte, error)

// internalError is the message callers see when a handler panics.
const internalError = "internal error"

// Handle registers fn for protocol proto, replacing any earlier handler; a
// nil fn removes the handler. It is safe to call at any time.
func (h *Host) Handle(proto protocol.ID, fn Handler) {
	if fn == nil {
		h.lh.RemoveStreamHandler(proto)
		return
	}
	h.lh.SetStreamHandler(proto, func(s network.Stream) { h.serve(s, proto, fn) })
}

// serve answers one inbound request stream.
func (h *Host) serve(s network.Stream, proto protocol.ID, fn Handler) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = s.Reset()
		return
	}
	h.running.Add(1)
	h.mu.Unlock()
	defer h.running.Done()

	from := s.Conn().RemotePeer()
	ctx, cancel := context.WithTimeout(h.ctx, h.callTimeout)
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetReadDeadline(dl)
	}

	kind, req, err := ReadFrame(s, h.maxMsg)
	if err == nil && kind != FrameOK {
		err = fmt.Errorf("%w: request kind %d", ErrBadFrame, kind)
	}
	if err != nil {
		if isBadFrame(err) {
			h.stats.badFrames.Add(1)
		}
		h.log.Debug("peer: dropped request", "proto", proto, "from", from, "err", err)
		_ = s.Reset()
		return
	}
	h.stats.served.Add(1)

	resp, herr := h.runHandler(ctx, fn, proto, from, req)
	// The answer gets its own deadline, so that a handler that ran out of
	// time can still say so.
	_ = s.SetWriteDeadline(time.Now().Add(h.callTimeout))
	switch {
	case herr != nil:
		err = WriteFrame(s, FrameError, truncate(herr.Error(), h.maxMsg))
	case len(resp) > h.maxMsg:
		h.log.Warn("peer: handler response too large", "proto", proto, "from", from, "size", len(resp), "limit", h.maxMsg)
		err = WriteFrame(s, FrameError, fmt.Appendf(nil, "response too large: %d bytes, limit %d", len(resp), h.maxMsg))
	default:
		err = WriteFrame(s, FrameOK, resp)
	}
	if err != nil {
		h.log.Debug("peer: write response", "proto", proto, "from", from, "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// runHandler calls fn, turning a panic into an error.
func (h *Host) runHandler(ctx context.Context, fn Handler, proto protocol.ID, from peer.ID, req []byte) (resp []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("peer: handler panicked", "proto", proto, "from", from, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, errors.New(internalError)
		}
	}()
	return fn(ctx, from, req)
}

// truncate returns msg as bytes, cut to at most limit bytes.
func truncate(msg string, limit int) []byte {
	if len(msg) > limit {
		msg = msg[:limit]
	}
	return []byte(msg)
}

// isBadFrame reports whether a ReadFrame error is the sender's fault (as
// opposed to a reset, a deadline or a closed host).
func isBadFrame(err error) bool {
	return errors.Is(err, ErrTooLarge) || errors.Is(err, ErrBadFrame) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// Call sends req to peer to under protocol proto and returns the response.
// If the host has no connection to the peer it dials addr (if valid) and any
// address it already knows for the peer, bypassing libp2p's dial backoff.
// Without a deadline in ctx the call is bounded by Config.CallTimeout;
// cancelling ctx aborts it at once.
//
// Errors, always wrapped with the peer ID and protocol: ErrRefused (this
// host's gater said no), ErrUnsupported (no handler for proto there),
// *RemoteError (the handler failed), ErrTooLarge (request or response over
// Config.MaxMessageSize), ErrBadFrame, ErrClosed, the context's error, or
// the transport's error (which is what a refusal by the remote's gater
// looks like).
func (h *Host) Call(ctx context.Context, to peer.ID, addr netip.AddrPort, proto protocol.ID, req []byte) (resp []byte, err error) {
	h.stats.calls.Add(1)
	defer func() {
		if err != nil {
			h.stats.callErrors.Add(1)
			err = fmt.Errorf("peer: call %s on %s: %w", proto, to, err)
		}
	}()
	if h.isClosed() {
		return nil, ErrClosed
	}
	if len(req) > h.maxMsg {
		return nil, fmt.Errorf("%w: request of %d bytes, limit %d", ErrTooLarge, len(req), h.maxMsg)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.callTimeout)
		defer cancel()
	}
	if addr.IsValid() {
		m, err := manet.FromNetAddr(net.TCPAddrFromAddrPort(addr))
		if err != nil {
			return nil, fmt.Errorf("address %s: %w", addr, err)
		}
		h.lh.Peerstore().AddAddr(to, m, peerstore.TempAddrTTL)
	}

	sctx := ctx
	if h.lh.Network().Connectedness(to) != network.Connected {
		// Skip libp2p's dial backoff (see the package doc).
		sctx = network.WithForceDirectDial(ctx, "shoal: dial on membership")
	}
	s, err := h.lh.NewStream(sctx, to, proto)
	if err != nil {
		return nil, h.classifyOpenError(ctx, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = s.Reset()
		}
	}()
	// The deadline bounds blocked reads and writes; AfterFunc turns a plain
	// cancellation into a reset, and costs no goroutine until it fires.
	if dl, has := ctx.Deadline(); has {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	if err := WriteFrame(s, FrameOK, req); err != nil {
		return nil, h.ctxOr(ctx, h.unsupportedOr(err))
	}
	// A CloseWrite that fails (the server may have reset the stream
	// already, as it does for a request over its limit) is reported by
	// the read that follows: go-libp2p maps Read's errors to
	// network.ErrReset, but returns yamux's own error from CloseWrite.
	_ = s.CloseWrite()
	kind, payload, err := ReadFrame(s, h.maxMsg)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("stream closed without a response: %w", io.ErrUnexpectedEOF)
		}
		err = h.unsupportedOr(err)
		if isBadFrame(err) && ctx.Err() == nil {
			h.stats.badFrames.Add(1)
			h.log.Debug("peer: bad response frame", "proto", proto, "peer", to, "err", err)
		}
		return nil, h.ctxOr(ctx, err)
	}
	switch kind {
	case FrameOK:
		ok = true
		_ = s.Close()
		return payload, nil
	case FrameError:
		ok = true
		_ = s.Close()
		return nil, &RemoteError{Peer: to, Message: string(payload)}
	default:
		h.stats.badFrames.Add(1)
		h.log.Debug("peer: bad response frame", "proto", proto, "peer", to, "kind", kind)
		return nil, fmt.Errorf("%w: response kind %d", ErrBadFrame, kind)
	}
}

// classifyOpenError maps a NewStream failure to this package's errors.
func (h *Host) classifyOpenError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, swarm.ErrGaterDisallowedConnection):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	case errors.Is(err, swarm.ErrSwarmClosed) || h.isClosed():
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return h.ctxOr(ctx, h.unsupportedOr(err))
}

// unsupportedOr maps multistream's "protocol not supported" to
// ErrUnsupported. libp2p negotiates the protocol lazily when identify has
// already listed it, so this can surface on the first read or write too.
func (h *Host) unsupportedOr(err error) error {
	var ns msmux.ErrNotSupported[protocol.ID]
	if errors.As(err, &ns) {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return err
}

// ctxOr returns the context's error, wrapping err, when the context is done:
// a reset caused by cancellation should read as the cancellation.
func (h *Host) ctxOr(ctx context.Context, err error) error {
	cerr := ctx.Err()
	var ne net.Error
	if cerr == nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
		// The stream's deadline is the context's, and its timer may fire
		// first. (yamux's deadline error is a net.Error, not
		// os.ErrDeadlineExceeded.)
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
