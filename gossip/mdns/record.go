package mdns

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
)

// RecordVersion is the version of the TXT record layout that Encode writes
// and Decode accepts.
const RecordVersion = "1"

// TXT record keys (RFC 6763 section 6: key=value strings; keys are
// compared case-insensitively).
const (
	keyVersion = "v"
	keyNode    = "node"
	keyGossip  = "gossip"
	keyPeer    = "peer"
	keyKey     = "key"
)

// keyIDLen is the length of a KeyID in hex digits (64 bits).
const keyIDLen = 16

// maxPeerIDLen bounds a peer ID's text form (an Ed25519 one has 52
// characters, an RSA one 46).
const maxPeerIDLen = 100

// ErrBadRecord: a TXT record is not a valid Shoal discovery record (or a
// Record given to Encode is incomplete).
var ErrBadRecord = errors.New("mdns: bad record")

// Record is what one node advertises on the LAN: everything another node
// needs to join its gossip, since a node that is not yet a member cannot
// talk to the peer plane (its connection gater admits members only).
type Record struct {
	// Node is the node's name (a DNS label, as node names are).
	Node string
	// Gossip is the node's advertised gossip address (memberlist,
	// UDP+TCP): what to join.
	Gossip netip.AddrPort
	// PeerID is the node's peer-plane identity.
	PeerID peer.ID
	// KeyID identifies the node's primary gossip encryption key
	// (KeyID); "" when its gossip is not encrypted.
	KeyID string
}

// KeyID returns the public identifier of a gossip encryption key: the
// first 64 bits of a domain-separated SHA-256 of the key, in hex. Nodes
// compare it to skip clusters whose key they do not hold; for a random key
// of 128 bits or more it reveals nothing usable about the key.
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("shoal mdns key id v1\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:keyIDLen/2])
}

// Encode returns r as TXT strings in a fixed order. It fails when r would
// not decode (Decode(Encode(r)) == r for every r Encode accepts).
func (r Record) Encode() ([]string, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	txt := []string{
		keyVersion + "=" + RecordVersion,
		keyNode + "=" + r.Node,
		keyGossip + "=" + r.Gossip.String(),
		keyPeer + "=" + r.PeerID.String(),
	}
	if r.KeyID != "" {
		txt = append(txt, keyKey+"="+r.KeyID)
	}
	return txt, nil
}

// Decode parses TXT strings into a Record. Following RFC 6763, keys are
// case-insensitive, only the first occurrence of a key counts, and
// unknown keys and strings without '=' are ignored. The version, node,
// gossip address and peer ID are required; the key ID is optional. Every
// error wraps ErrBadRecord.
func Decode(txt []string) (Record, error) {
	var (
		r    Record
		seen = make(map[string]bool, 5)
	)
	for _, s := range txt {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			continue
		}
		k = strings.ToLower(k)
		if seen[k] {
			continue
		}
		switch k {
		case keyVersion:
			if v != RecordVersion {
				return Record{}, fmt.Errorf("%w: version %q, want %q", ErrBadRecord, v, RecordVersion)
			}
		case keyNode:
			r.Node = v
		case keyGossip:
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return Record{}, fmt.Errorf("%w: gossip address %q: %v", ErrBadRecord, v, err)
			}
			r.Gossip = ap
		case keyPeer:
			id, err := peer.Decode(v)
			if err != nil {
				return Record{}, fmt.Errorf("%w: peer ID %q: %v", ErrBadRecord, v, err)
			}
			r.PeerID = id
		case keyKey:
			r.KeyID = v
		default:
			continue
		}
		seen[k] = true
	}
	if !seen[keyVersion] {
		return Record{}, fmt.Errorf("%w: no version", ErrBadRecord)
	}
	if seen[keyKey] && r.KeyID == "" {
		return Record{}, fmt.Errorf("%w: empty key ID", ErrBadRecord)
	}
	if err := r.validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// validate checks every field; the error wraps ErrBadRecord.
func (r Record) validate() error {
	if p := nameProblem(r.Node); p != "" {
		return fmt.Errorf("%w: node name %q: %s", ErrBadRecord, r.Node, p)
	}
	a := r.Gossip.Addr()
	switch {
	case !r.Gossip.IsValid():
		return fmt.Errorf("%w: no gossip address", ErrBadRecord)
	case r.Gossip.Port() == 0:
		return fmt.Errorf("%w: gossip address %s has port 0", ErrBadRecord, r.Gossip)
	case a.Zone() != "":
		return fmt.Errorf("%w: gossip address %s has a zone", ErrBadRecord, r.Gossip)
	case a.Is4In6():
		return fmt.Errorf("%w: gossip address %s is IPv4-mapped", ErrBadRecord, r.Gossip)
	case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%w: gossip address %s cannot be joined", ErrBadRecord, r.Gossip)
	}
	if r.PeerID == "" {
		return fmt.Errorf("%w: no peer ID", ErrBadRecord)
	}
	// Its text form must parse back to it (Ed25519 identity and SHA-256
	// IDs do), and stay short: TXT strings hold 255 bytes.
	if s := r.PeerID.String(); len(s) > maxPeerIDLen {
		return fmt.Errorf("%w: peer ID longer than %d characters", ErrBadRecord, maxPeerIDLen)
	} else if id, err := peer.Decode(s); err != nil || id != r.PeerID {
		return fmt.Errorf("%w: peer ID %q is not a libp2p peer ID", ErrBadRecord, s)
	}
	if r.KeyID != "" && !isKeyID(r.KeyID) {
		return fmt.Errorf("%w: key ID %q: want %d lower-case hex digits", ErrBadRecord, r.KeyID, keyIDLen)
	}
	return nil
}

func isKeyID(s string) bool {
	if len(s) != keyIDLen {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// nameProblem mirrors node/spec's rules for names (which gossip does not
// import): a DNS label of lower-case letters, digits and '-'.
func nameProblem(s string) string {
	switch {
	case s == "":
		return "missing"
	case len(s) > 63:
		return "longer than 63 characters"
	case strings.IndexFunc(s, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') }) >= 0:
		return "not only lower-case letters, digits and '-'"
	case s[0] == '-' || s[len(s)-1] == '-':
		return "starts or ends with '-'"
	}
	return ""
}
