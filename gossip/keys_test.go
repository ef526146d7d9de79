package gossip

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyEncodeDecode(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != KeySize {
		t.Fatalf("GenerateKey: %d bytes, want %d", len(key), KeySize)
	}
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(key, other) {
		t.Fatal("two generated keys are equal")
	}
	s := EncodeKey(key)
	got, err := DecodeKey(" " + s + "\n")
	if err != nil {
		t.Fatalf("DecodeKey(%q): %v", s, err)
	}
	if !bytes.Equal(got, key) {
		t.Fatalf("DecodeKey(EncodeKey(k)) = %x, want %x", got, key)
	}
}

func TestDecodeKey(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantLen int // 0: want ErrInvalidKey
	}{
		{"aes128", EncodeKey(make([]byte, 16)), 16},
		{"aes192", EncodeKey(make([]byte, 24)), 24},
		{"aes256", EncodeKey(make([]byte, 32)), 32},
		{"consul keygen", "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=", 32},
		{"too short", EncodeKey(make([]byte, 15)), 0},
		{"too long", EncodeKey(make([]byte, 33)), 0},
		{"empty", "", 0},
		{"not base64", "not a key!", 0},
		{"url encoding", strings.NewReplacer("+", "-", "/", "_").Replace("pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := DecodeKey(tt.in)
			if tt.wantLen == 0 {
				if !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("DecodeKey(%q) = %x, %v; want ErrInvalidKey", tt.in, key, err)
				}
				return
			}
			if err != nil || len(key) != tt.wantLen {
				t.Fatalf("DecodeKey(%q) = %d bytes, %v; want %d bytes", tt.in, len(key), err, tt.wantLen)
			}
		})
	}
}

func TestKeyringFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring")

	kr, err := loadKeyring(path)
	if kr != nil || err != nil {
		t.Fatalf("loadKeyring(missing) = %v, %v; want nil, nil", kr, err)
	}

	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	if err := saveKeyring(path, [][]byte{k1, k2}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("keyring mode %o, want 600", perm)
	}
	kr, err = loadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if keys := kr.GetKeys(); len(keys) != 2 || !bytes.Equal(keys[0], k1) || !bytes.Equal(keys[1], k2) {
		t.Fatalf("loaded keys %x, want [%x %x]", keys, k1, k2)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}

	bad := []struct {
		name, content string
	}{
		{"not json", "nope"},
		{"not strings", "[1, 2]"},
		{"empty", "[]"},
		{"bad key", `["AAAA"]`},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keyring")
			if err := os.WriteFile(p, []byte(b.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := loadKeyring(p); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("loadKeyring(%s) error = %v, want ErrInvalidKey", b.content, err)
			}
		})
	}
}
