package mdns

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Peer IDs of the Ed25519 keys whose seeds are 1, 2 and 3 followed by
// zeros.
const (
	peerA = "12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X"
	peerB = "12D3KooWH3uVF6wv47WnArKHk5p6cvgCJEb74UTmxztmQDc298L3"
	peerC = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
)

func mustPeer(t testing.TB, s string) peer.ID {
	t.Helper()
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []Record{
		{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)},
		{Node: "a", Gossip: netip.MustParseAddrPort("192.168.1.20:1"), PeerID: mustPeer(t, peerB), KeyID: KeyID([]byte("0123456789abcdef"))},
		{Node: strings.Repeat("n", 63), Gossip: netip.MustParseAddrPort("[2001:db8::7]:65535"), PeerID: mustPeer(t, peerC)},
		// A SHA-256 peer ID (older RSA keys) round-trips too.
		{Node: "old-1", Gossip: netip.MustParseAddrPort("10.0.0.2:7946"), PeerID: mustPeer(t, "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")},
	} {
		txt, err := r.Encode()
		if err != nil {
			t.Fatalf("Encode(%+v): %v", r, err)
		}
		for _, s := range txt {
			if len(s) > 255 {
				t.Errorf("TXT string of %d bytes does not fit DNS: %q", len(s), s)
			}
		}
		got, err := Decode(txt)
		if err != nil {
			t.Fatalf("Decode(%q): %v", txt, err)
		}
		if got != r {
			t.Errorf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestRecordEncodeLayout(t *testing.T) {
	r := Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA), KeyID: "0011223344556677"}
	txt, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"v=1", "node=host-1", "gossip=10.0.0.1:7946", "peer=" + peerA, "key=0011223344556677"}
	if !slices.Equal(txt, want) {
		t.Fatalf("Encode = %q, want %q", txt, want)
	}
}

// TestDecodeRules: RFC 6763 key handling (case-insensitive keys, first
// occurrence wins, unknown keys and bare words ignored).
func TestDecodeRules(t *testing.T) {
	want := Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)}
	for name, txt := range map[string][]string{
		"any order":           {"peer=" + peerA, "gossip=10.0.0.1:7946", "node=host-1", "v=1"},
		"upper-case keys":     {"V=1", "Node=host-1", "GOSSIP=10.0.0.1:7946", "Peer=" + peerA},
		"first wins":          {"v=1", "node=host-1", "node=host-2", "gossip=10.0.0.1:7946", "gossip=garbage", "peer=" + peerA, "peer=x"},
		"unknown keys":        {"v=1", "node=host-1", "gossip=10.0.0.1:7946", "peer=" + peerA, "zone=a", "future=1"},
		"bare word and empty": {"", "flag", "=nokey", "v=1", "node=host-1", "gossip=10.0.0.1:7946", "peer=" + peerA},
		"CIDv1 peer ID":       {"v=1", "node=host-1", "gossip=10.0.0.1:7946", "peer=" + peer.ToCid(mustPeer(t, peerA)).String()},
	} {
		got, err := Decode(txt)
		if err != nil {
			t.Errorf("%s: Decode(%q): %v", name, txt, err)
			continue
		}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	ok := map[string]string{"v": "1", "node": "host-1", "gossip": "10.0.0.1:7946", "peer": peerA}
	with := func(k, v string) []string { // ok with k set to v ("" drops it)
		var txt []string
		for _, key := range []string{"v", "node", "gossip", "peer", "key"} {
			val, present := ok[key]
			if key == k {
				val, present = v, v != "\x00"
			}
			if present {
				txt = append(txt, key+"="+val)
			}
		}
		return txt
	}
	for _, tc := range []struct {
		name string
		txt  []string
	}{
		{"nothing", nil},
		{"libp2p's dnsaddr record", []string{"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/" + peerA}},
		{"no version", with("v", "\x00")},
		{"version 2", with("v", "2")},
		{"empty version", with("v", "")},
		{"no node", with("node", "\x00")},
		{"empty node", with("node", "")},
		{"upper-case node", with("node", "Host-1")},
		{"node with a dot", with("node", "host.1")},
		{"node ends in -", with("node", "host-")},
		{"node of 64", with("node", strings.Repeat("n", 64))},
		{"no gossip", with("gossip", "\x00")},
		{"gossip without port", with("gossip", "10.0.0.1")},
		{"gossip host name", with("gossip", "node1.local:7946")},
		{"gossip port 0", with("gossip", "10.0.0.1:0")},
		{"gossip port 65536", with("gossip", "10.0.0.1:65536")},
		{"gossip unspecified", with("gossip", "0.0.0.0:7946")},
		{"gossip v6 unspecified", with("gossip", "[::]:7946")},
		{"gossip multicast", with("gossip", "224.0.0.251:5353")},
		{"gossip broadcast", with("gossip", "255.255.255.255:7946")},
		{"gossip zone", with("gossip", "[fe80::1%eth0]:7946")},
		{"gossip v4-mapped", with("gossip", "[::ffff:10.0.0.1]:7946")},
		{"no peer", with("peer", "\x00")},
		{"empty peer", with("peer", "")},
		{"garbage peer", with("peer", "hello")},
		{"truncated peer", with("peer", peerA[:40])},
		{"empty key", with("key", "")},
		{"short key", with("key", "00112233")},
		{"upper-case key", with("key", "00112233445566AA")},
		{"non-hex key", with("key", "001122334455667g")},
	} {
		if r, err := Decode(tc.txt); err == nil {
			t.Errorf("%s: Decode(%q) = %+v, want an error", tc.name, tc.txt, r)
		} else if !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: error %v does not wrap ErrBadRecord", tc.name, err)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	good := Record{Node: "host-1", Gossip: netip.MustParseAddrPort("10.0.0.1:7946"), PeerID: mustPeer(t, peerA)}
	for name, mutate := range map[string]func(*Record){
		"no node":     func(r *Record) { r.Node = "" },
		"no gossip":   func(r *Record) { r.Gossip = netip.AddrPort{} },
		"no peer":     func(r *Record) { r.PeerID = "" },
		"bogus peer":  func(r *Record) { r.PeerID = peer.ID("not a multihash") },
		"bad key ID":  func(r *Record) { r.KeyID = "xyz" },
		"unspecified": func(r *Record) { r.Gossip = netip.MustParseAddrPort("0.0.0.0:7946") },
	} {
		r := good
		mutate(&r)
		if txt, err := r.Encode(); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: Encode = %q, %v; want ErrBadRecord", name, txt, err)
		}
	}
}

func TestKeyID(t *testing.T) {
	a, b := KeyID([]byte("0123456789abcdef")), KeyID([]byte("0123456789abcdeF"))
	if !isKeyID(a) || !isKeyID(b) {
		t.Fatalf("KeyID = %q, %q: want %d hex digits", a, b, keyIDLen)
	}
	if a == b {
		t.Fatal("different keys share a key ID")
	}
	if KeyID([]byte("0123456789abcdef")) != a {
		t.Fatal("KeyID is not deterministic")
	}
}

// FuzzDecode: Decode never panics, and what it accepts is canonical:
// it encodes, and the encoding decodes to the same record.
func FuzzDecode(f *testing.F) {
	valid := "v=1\nnode=host-1\ngossip=10.0.0.1:7946\npeer=" + peerA
	for _, seed := range []string{
		valid,
		valid + "\nkey=0011223344556677",
		"v=1\nnode=n\ngossip=[2001:db8::1]:1\npeer=" + peerB + "\nkey=",
		"V=1\nNODE=a\nGossip=10.1.2.3:7946\npeer=" + peerC + "\nnode=b\nextra",
		"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/" + peerA,
		"v=2\nnode=host-1\ngossip=10.0.0.1:7946\npeer=" + peerA,
		"v=1\nnode=host-1\ngossip=[fe80::1%eth0]:7946\npeer=" + peerA,
		"v=1\nnode=host-1\ngossip=10.0.0.1:7946\npeer=QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
		"v=1\nnode=host-1\ngossip=10.0.0.1:7946\npeer=bafzaajaiaejcb3cc2ucxvb2gzeozc5f5kc2ncevqo2bqx7cq7n4pxcqbq4vk7njb",
		"",
		"=\n==\n=v=1",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		txt := strings.Split(s, "\n")
		r, err := Decode(txt)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("Decode(%q): error %v does not wrap ErrBadRecord", txt, err)
			}
			return
		}
		enc, err := r.Encode()
		if err != nil {
			t.Fatalf("Decode(%q) = %+v, which does not encode: %v", txt, r, err)
		}
		again, err := Decode(enc)
		if err != nil || again != r {
			t.Fatalf("re-decoding %q: %+v, %v; want %+v", enc, again, err, r)
		}
	})
}
