package peer

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	pb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxIdentityFile bounds how much of an identity file is read; a marshalled
// Ed25519 key is 68 bytes (or 100 in the older form with the public key
// repeated).
const maxIdentityFile = 4 << 10

// LoadOrCreateIdentity reads the Ed25519 private key at path (libp2p's
// marshalled protobuf form, crypto.MarshalPrivateKey), or, when the file does
// not exist, generates a key and writes it with mode 0600: to a temporary file
// in the same directory, synced, then renamed over path, so a crash never
// leaves a partial key behind. The directory is created (mode 0700) if needed.
//
// A file that exists but does not hold a valid Ed25519 key is an error
// wrapping ErrBadIdentity, never silently replaced: the key is the node's
// identity, and a new one would make it a stranger to its peers.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	data, err := readIdentityFile(path)
	switch {
	case err == nil:
		key, err := parseIdentity(data)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrBadIdentity, path, err)
		}
		return key, nil
	case errors.Is(err, fs.ErrNotExist):
		return createIdentity(path)
	default:
		return nil, fmt.Errorf("peer: read identity: %w", err)
	}
}

func readIdentityFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("%w %s: larger than %d bytes", ErrBadIdentity, path, maxIdentityFile)
	}
	return data, nil
}

// parseIdentity decodes a marshalled key and checks that it is a usable
// Ed25519 key: the public half stored in the file must match the private
// half, which libp2p's decoder does not check.
func parseIdentity(data []byte) (crypto.PrivKey, error) {
	key, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return nil, err
	}
	if key.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("key type %s, want Ed25519", key.Type())
	}
	msg := []byte("shoal identity check")
	sig, err := key.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if ok, err := key.GetPublic().Verify(msg, sig); err != nil || !ok {
		return nil, errors.New("public key does not match private key")
	}
	return key, nil
}

func createIdentity(path string) (crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("peer: generate identity: %w", err)
	}
	data, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("peer: marshal identity: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("peer: create identity dir: %w", err)
	}
	if err := writeFileAtomic(path, data); err != nil {
		return nil, fmt.Errorf("peer: write identity: %w", err)
	}
	return key, nil
}

// writeFileAtomic writes data to a temporary file beside path (created 0600
// by os.CreateTemp), syncs it, renames it over path and syncs the directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// PeerIDFromString parses a peer ID found in outside input (a gossip tag). It
// accepts only the canonical string form (peer.ID.String) of an ID that
// embeds an Ed25519 public key, which is what every Shoal node has; anything
// else is an error wrapping ErrBadPeerID.
func PeerIDFromString(s string) (peer.ID, error) {
	const maxLen = 128 // an Ed25519 ID is 52 characters
	if s == "" || len(s) > maxLen {
		return "", fmt.Errorf("%w: length %d", ErrBadPeerID, len(s))
	}
	id, err := peer.Decode(s)
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrBadPeerID, s, err)
	}
	if id.String() != s {
		return "", fmt.Errorf("%w %q: not in canonical form", ErrBadPeerID, s)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrBadPeerID, s, err)
	}
	if pub.Type() != pb.KeyType_Ed25519 {
		return "", fmt.Errorf("%w %q: key type %s, want Ed25519", ErrBadPeerID, s, pub.Type())
	}
	return id, nil
}
