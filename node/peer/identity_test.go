package peer

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestLoadOrCreateIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "identity.key") // the directory is created too

	key, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if key.Type() != crypto.Ed25519 {
		t.Fatalf("key type %v, want Ed25519", key.Type())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode %v, want 0600", perm)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("key dir: %v, %v; want mode 0700", di.Mode().Perm(), err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("dir holds %d entries (%v), want just the key: no temp file left", len(entries), err)
	}

	again, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !key.Equals(again) {
		t.Fatal("reloaded key differs")
	}
	id1, _ := peer.IDFromPrivateKey(key)
	id2, _ := peer.IDFromPrivateKey(again)
	if id1 != id2 {
		t.Fatalf("peer ID changed across reload: %s, %s", id1, id2)
	}
}

func TestLoadOrCreateIdentityRejectsBadFiles(t *testing.T) {
	good, err := crypto.MarshalPrivateKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	secp, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secpBytes, err := crypto.MarshalPrivateKey(secp)
	if err != nil {
		t.Fatal(err)
	}
	// The marshalled key ends with the public half; flipping a bit there
	// leaves a key that decodes but does not match itself.
	mismatched := bytes.Clone(good)
	mismatched[len(mismatched)-1] ^= 1

	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a key at all")},
		{"truncated", good[:len(good)/2]},
		{"trailing junk", append(bytes.Clone(good), 0xff, 0xff)},
		{"wrong key type", secpBytes},
		{"public half mismatched", mismatched},
		{"too large", make([]byte, maxIdentityFile+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identity.key")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreateIdentity(path)
			if !errors.Is(err, ErrBadIdentity) {
				t.Fatalf("error %v, want ErrBadIdentity", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(after, tt.data) {
				t.Fatal("bad identity file was modified")
			}
		})
	}
}

func TestLoadOrCreateIdentityUnreadable(t *testing.T) {
	// A directory where the file should be: an error, not a new key.
	path := t.TempDir()
	if _, err := LoadOrCreateIdentity(path); err == nil {
		t.Fatal("loaded an identity from a directory")
	}
}

func TestPeerIDFromString(t *testing.T) {
	id, err := peer.IDFromPrivateKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	secp, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secpID, err := peer.IDFromPrivateKey(secp)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"canonical Ed25519", id.String(), true},
		{"empty", "", false},
		{"garbage", "hello", false},
		{"CID form", peer.ToCid(id).String(), false},
		{"truncated", id.String()[:20], false},
		{"secp256k1", secpID.String(), false},
		{"hashed key (no embedded key)", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", false},
		{"too long", strings.Repeat("1", 200), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PeerIDFromString(tt.in)
			if tt.ok {
				if err != nil || got != id {
					t.Fatalf("got %s, %v; want %s", got, err, id)
				}
				return
			}
			if !errors.Is(err, ErrBadPeerID) {
				t.Fatalf("got %s, %v; want ErrBadPeerID", got, err)
			}
		})
	}
}

// FuzzPeerIDFromString: peer IDs come from gossip tags, outside input. The
// parser must not panic, and what it accepts must print back as the input.
func FuzzPeerIDFromString(f *testing.F) {
	f.Add("12D3KooWA3DRMXEuickwCqYduhgTwXYzLEPzjZHuNQucuBYMsVV8")
	f.Add("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
	f.Add("bafzaajaiaejca")
	f.Add("")
	f.Add("12D3KooW")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := PeerIDFromString(s)
		if err != nil {
			if !errors.Is(err, ErrBadPeerID) {
				t.Fatalf("error %v does not wrap ErrBadPeerID", err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("accepted %q as %s", s, id)
		}
		if _, err := id.ExtractPublicKey(); err != nil {
			t.Fatalf("accepted ID without a key: %v", err)
		}
	})
}
