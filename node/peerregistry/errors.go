package peerregistry

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	digest "github.com/opencontainers/go-digest"
)

// ErrSkippedPeer is returned (wrapped) for a request to a peer that the
// Resolver has marked bad; containerd's fetcher then tries its next host.
var ErrSkippedPeer = errors.New("peerregistry: peer skipped after serving bad content")

// BadContentError reports that a peer served content that does not match
// the digest it was asked for. The body of a verified response returns it
// instead of io.EOF; the Resolver has then already counted, logged and
// marked the peer.
type BadContentError struct {
	// Peer is the peer that served the content.
	Peer peer.ID
	// Digest is the digest requested.
	Digest digest.Digest
	// Got is the digest of what the peer sent (of the whole body, or from
	// its Docker-Content-Digest header), or empty if unknown.
	Got digest.Digest
	// Size is how many body bytes the peer sent (-1 for a header mismatch).
	Size int64
}

func (e *BadContentError) Error() string {
	return fmt.Sprintf("peerregistry: peer %s served bad content for %s: got %s (%d bytes)", e.Peer, e.Digest, e.Got, e.Size)
}
