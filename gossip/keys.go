package gossip

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/memberlist"
)

// KeySize is the size of keys made by GenerateKey (AES-256).
const KeySize = 32

// GenerateKey returns a new random 32-byte gossip encryption key.
func GenerateKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("gossip: generate key: %w", err)
	}
	return key, nil
}

// EncodeKey returns key in standard base64, the form `consul keygen` prints.
func EncodeKey(key []byte) string {
	return base64.StdEncoding.EncodeToString(key)
}

// DecodeKey parses a standard base64 key (surrounding white space is
// ignored). The key must decode to 16, 24 or 32 bytes.
func DecodeKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w: not standard base64: %v", ErrInvalidKey, err)
	}
	if err := memberlist.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("%w: %d bytes, want 16, 24 or 32", ErrInvalidKey, len(key))
	}
	return key, nil
}

// loadKeyring reads a keyring file in serf's format (a JSON array of base64
// keys, primary first). It returns nil, nil if the file does not exist.
func loadKeyring(path string) (*memberlist.Keyring, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gossip: read keyring: %w", err)
	}
	var encoded []string
	if err := json.Unmarshal(data, &encoded); err != nil {
		return nil, fmt.Errorf("%w: keyring %s: not a JSON array of strings: %v", ErrInvalidKey, path, err)
	}
	if len(encoded) == 0 {
		return nil, fmt.Errorf("%w: keyring %s holds no keys", ErrInvalidKey, path)
	}
	keys := make([][]byte, 0, len(encoded))
	for i, s := range encoded {
		key, err := DecodeKey(s)
		if err != nil {
			return nil, fmt.Errorf("keyring %s: key %d: %w", path, i, err)
		}
		keys = append(keys, key)
	}
	kr, err := memberlist.NewKeyring(keys[1:], keys[0])
	if err != nil {
		return nil, fmt.Errorf("%w: keyring %s: %v", ErrInvalidKey, path, err)
	}
	return kr, nil
}

// saveKeyring writes keys to path in serf's format with mode 0600, through a
// temporary file and a rename so a crash leaves the old or the new file.
func saveKeyring(path string, keys [][]byte) error {
	encoded := make([]string, len(keys))
	for i, k := range keys {
		encoded[i] = EncodeKey(k)
	}
	data, err := json.MarshalIndent(encoded, "", "  ")
	if err != nil {
		return fmt.Errorf("gossip: encode keyring: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("gossip: write keyring: %w", err)
	}
	tmp := f.Name()
	// CreateTemp makes the file 0600 already; Chmod keeps that true under
	// any future change there.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("gossip: write keyring %s: %w", path, err)
	}
	return nil
}

// Keys returns copies of the keys gossip encryption uses, primary first;
// nil when gossip is not encrypted. Zero-conf discovery advertises an ID
// derived from the primary key so that clusters on one LAN stay apart.
func (c *Cluster) Keys() [][]byte {
	kr := c.cfg.Serf.MemberlistConfig.Keyring
	if kr == nil {
		return nil
	}
	keys := kr.GetKeys()
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = bytes.Clone(k)
	}
	return out
}
