package peer

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

var (
	// ErrTooLarge is returned when a frame's length exceeds the limit: by
	// ReadFrame before it allocates anything, by Call for an oversized
	// request, and by WriteFrame for a payload whose length does not fit the
	// 4-byte length field.
	ErrTooLarge = errors.New("peer: frame too large")
	// ErrBadFrame is returned when a frame is well formed but not what the
	// protocol expects there (an unknown kind).
	ErrBadFrame = errors.New("peer: bad frame")
	// ErrRefused is returned by Call when this host's own gater refuses the
	// connection (Config.Allow or Config.AllowAddr said no). A refusal by the
	// remote's gater cannot be told apart from a dropped connection and is
	// returned as the underlying transport error.
	ErrRefused = errors.New("peer: connection refused by gater")
	// ErrUnsupported is returned by Call when the remote has no handler for
	// the protocol.
	ErrUnsupported = errors.New("peer: protocol not supported by remote")
	// ErrClosed is returned by Call after Close.
	ErrClosed = errors.New("peer: host closed")
	// ErrBadIdentity is returned by LoadOrCreateIdentity for an identity
	// file that exists but does not hold an Ed25519 private key.
	ErrBadIdentity = errors.New("peer: bad identity file")
	// ErrBadPeerID is returned by PeerIDFromString for a string that is not
	// the canonical form of an Ed25519 peer ID.
	ErrBadPeerID = errors.New("peer: bad peer ID")
)

// RemoteError is the error Call returns when the remote handler returned an
// error: Message is that error's text. It says nothing about the transport,
// which worked.
type RemoteError struct {
	// Peer is the remote that answered.
	Peer peer.ID
	// Message is the handler's error text, as sent by the remote (outside
	// input: do not interpret it).
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("peer: remote error from %s: %s", e.Peer, e.Message)
}
