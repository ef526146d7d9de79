package node

import (
	"encoding/json"
	"testing"

	"github.com/shoalmesh/shoal/node/store"
)

// The peer-plane and gossip decoders read outside input: they must never
// panic, and what they accept must be well formed.

func FuzzDecodeSyncRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"digest","from":"n1","digest":"` + string(make([]byte, 0)) + `0000000000000000000000000000000000000000000000000000000000000000"}`,
		`{"op":"push","from":"n1","entries":[{"key":"web","version":{"time":{"wall":1,"logical":2},"node":"n1"},"value":{"name":"web","image":"demo:1"}}],"want":["api"]}`,
		`{"op":"push","entries":[{"key":"web","version":{"time":{"wall":1,"logical":2},"node":"n1"},"deleted":true}]}`,
		`{"op":"nope"}`, `{}`, `[]`, `null`, `{"op":"digest","digest":"zz"}`, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeSyncRequest(b)
		if err != nil {
			return
		}
		if r.Op != "digest" && r.Op != "push" {
			t.Fatalf("accepted op %q", r.Op)
		}
		if r.Op == "digest" {
			if _, err := decodeDigest(r.Digest); err != nil {
				t.Fatalf("accepted bad digest %q", r.Digest)
			}
		}
		good, _ := checkEntries(r.Entries)
		for _, e := range good {
			if !e.Deleted {
				var m map[string]any
				if json.Unmarshal(e.Value, &m) != nil || m["name"] != e.Key {
					t.Fatalf("checkEntries kept %+v", e)
				}
			}
		}
	})
}

func FuzzDecodeNotice(f *testing.F) {
	v := store.Version{Time: store.Timestamp{Wall: 1764064800123456789, Logical: 3}, Node: "node-1"}
	good, _ := json.Marshal(notice{Key: "web", Version: v.String(), Origin: "node-1"})
	for _, s := range []string{string(good), `{"k":"web"}`, `{"k":"Web","v":"1.0@n","o":"n"}`, `{}`, "\xff", `{"k":"web","v":"1.0@","o":"n"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ver, err := decodeNotice(b)
		if err != nil {
			return
		}
		if n.Origin == "" || n.Key == "" || ver.IsZero() && n.Version != ver.String() {
			t.Fatalf("accepted %+v (%v)", n, ver)
		}
	})
}
