package node

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

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

// A peer's image list (GET /shoal/v1/images on its peer registry).
func FuzzDecodePeerImages(f *testing.F) {
	for _, s := range []string{
		`[{"name":"docker.io/library/demo:1","digest":"sha256:` + strings.Repeat("ab", 32) + `","size":1234,"platforms":["linux/amd64"]}]`,
		`[]`, `null`, `{}`, `[{"name":"","digest":"sha256:00"}]`, `[{"name":"x","digest":"md5:1"}]`,
		`[{"name":"x","digest":"sha256:` + strings.Repeat("0", 64) + `","size":-1}]`,
		`[{"name":"x","digest":"sha256:` + strings.Repeat("0", 64) + `","nodes":["a"]}]`, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		imgs, err := decodePeerImages(b)
		if err != nil {
			return
		}
		for _, img := range imgs {
			if img.Name == "" || img.Size < 0 || len(img.Nodes) > 0 {
				t.Fatalf("accepted %+v", img)
			}
			if _, err := digest.Parse(img.Digest); err != nil {
				t.Fatalf("accepted digest %q", img.Digest)
			}
		}
	})
}

// The image-pull stream of prefetch: a request and progress frames.
func FuzzDecodePull(f *testing.F) {
	for _, s := range []string{
		`{"image":"docker.io/library/demo:1@sha256:` + strings.Repeat("ab", 32) + `"}`,
		`{"image":"demo:1"}`, `{"image":""}`, `{}`, `null`,
		`{"done":10,"total":100}`, `{"done":100,"total":100,"image":{"name":"demo:1","digest":"sha256:00","size":100}}`,
		`{"done":-1,"total":0}`, `{"done":5,"total":1}`, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodePullRequest(b); err == nil {
			if _, ok := manifestPath(r.Image); !ok || !strings.Contains(r.Image, "@") {
				t.Fatalf("accepted pull of %q", r.Image)
			}
		}
		if p, err := decodePullFrame(b); err == nil {
			if p.Done < 0 || p.Total < 0 || (p.Total > 0 && p.Done > p.Total) || (p.Image != nil && p.Image.Name == "") {
				t.Fatalf("accepted progress %+v", p)
			}
		}
	})
}
