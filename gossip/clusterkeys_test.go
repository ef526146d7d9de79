package gossip

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestClusterKeys: Keys reports the keyring in use (given, or loaded from
// the keyring file), primary first, as copies; nil without encryption.
func TestClusterKeys(t *testing.T) {
	t.Parallel()
	ip := testIP()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}

	plain := start(t, localConfig("plain", ip))
	if got := plain.Keys(); got != nil {
		t.Fatalf("unencrypted: Keys = %x, want nil", got)
	}

	path := filepath.Join(t.TempDir(), "keyring.json")
	cfg := localConfig("given", ip)
	cfg.EncryptKey = key
	cfg.KeyringPath = path
	given := start(t, cfg)
	got := given.Keys()
	if len(got) != 1 || !bytes.Equal(got[0], key) {
		t.Fatalf("with EncryptKey: Keys = %x, want [%x]", got, key)
	}
	got[0][0] ^= 0xff // a copy: changing it changes nothing
	if again := given.Keys(); !bytes.Equal(again[0], key) {
		t.Fatalf("Keys returned the keyring's own slice: now %x", again[0])
	}

	cfg = localConfig("loaded", ip)
	cfg.KeyringPath = path // no EncryptKey: the file's keyring is used
	loaded := start(t, cfg)
	if got := loaded.Keys(); len(got) != 1 || !bytes.Equal(got[0], key) {
		t.Fatalf("from keyring file: Keys = %x, want [%x]", got, key)
	}
}
