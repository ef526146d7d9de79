package peerregistry

import (
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

const hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// TestParsePath checks the path grammar on hand-picked cases; the fuzz
// target below checks its invariants on everything else.
func TestParsePath(t *testing.T) {
	d := digest.Digest("sha256:" + hexA)
	tests := []struct {
		path string
		want route
		err  error
	}{
		{"/v2/", route{kind: routeBase}, nil},
		{"/v2", route{kind: routeBase}, nil},
		{"/v2/library/alpine/blobs/sha256:" + hexA, route{kind: routeBlob, name: "library/alpine", digest: d}, nil},
		{"/v2/a/manifests/sha256:" + hexA, route{kind: routeManifest, name: "a", digest: d}, nil},
		{"/v2/a/manifests/v1.2_3-x", route{kind: routeManifest, name: "a", tag: "v1.2_3-x"}, nil},
		{"/v2/blobs/manifests/latest", route{kind: routeManifest, name: "blobs", tag: "latest"}, nil},
		{"/v2/x/manifests/blobs/sha256:" + hexA, route{kind: routeBlob, name: "x/manifests", digest: d}, nil},
		{"/v2/a-b/c__d/e.f/blobs/sha256:" + hexA, route{kind: routeBlob, name: "a-b/c__d/e.f", digest: d}, nil},
		{"/v2/a---b/manifests/x", route{kind: routeManifest, name: "a---b", tag: "x"}, nil},
		{"/", route{}, errUnknownPath},
		{"", route{}, errUnknownPath},
		{"/v2//", route{}, errUnknownPath},
		{"/v3/a/blobs/sha256:" + hexA, route{}, errUnknownPath},
		{"/v2/a/tags/list", route{}, errUnknownPath},
		{"/v2/_catalog", route{}, errUnknownPath},
		{"/v2/a/blobs/uploads/", route{}, errUnknownPath},
		{"/v2/a/blobs/", route{}, errUnknownPath},
		{"/v2/a/manifests/", route{}, errUnknownPath},
		{"/v2/a/blobs/sha256:" + hexA + "/", route{}, errUnknownPath},
		{"/v2//blobs/sha256:" + hexA, route{}, errNameInvalid},
		{"/v2/A/blobs/sha256:" + hexA, route{}, errNameInvalid},
		{"/v2/a//b/blobs/sha256:" + hexA, route{}, errNameInvalid},
		{"/v2/a_/blobs/sha256:" + hexA, route{}, errNameInvalid},
		{"/v2/a___b/blobs/sha256:" + hexA, route{}, errNameInvalid},
		{"/v2/-a/manifests/x", route{}, errNameInvalid},
		{"/v2/a/b/../c/blobs/sha256:" + hexA, route{}, errNameInvalid},
		{"/v2/" + strings.Repeat("a", 256) + "/blobs/sha256:" + hexA, route{}, errNameInvalid},
		{"/v2/a/blobs/latest", route{}, errDigestInvalid},
		{"/v2/a/blobs/sha256:" + strings.ToUpper(hexA), route{}, errDigestInvalid},
		{"/v2/a/blobs/sha256:" + hexA[1:], route{}, errDigestInvalid},
		{"/v2/a/blobs/foo:bar", route{}, errDigestInvalid},
		{"/v2/a/manifests/sha256:xyz", route{}, errDigestInvalid},
		{"/v2/a/manifests/.x", route{}, errTagInvalid},
		{"/v2/a/manifests/" + strings.Repeat("t", 129), route{}, errTagInvalid},
		{"/v2/a/manifests/a b", route{}, errTagInvalid},
	}
	for _, tc := range tests {
		got, err := parsePath(tc.path)
		if err != tc.err || got != tc.want {
			t.Errorf("parsePath(%q) = %+v, %v; want %+v, %v", tc.path, got, err, tc.want, tc.err)
		}
	}
}

// FuzzParsePath checks that parsePath never panics, that what it accepts is
// well formed, and that formatting a route and parsing it again is the
// identity. The seeds run as a normal test:
//
//	go test -run '^$' -fuzz FuzzParsePath ./node/peerregistry
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/v2/", "/v2", "/v2/library/alpine/blobs/sha256:" + hexA,
		"/v2/a/manifests/sha256:" + hexA, "/v2/a/manifests/latest",
		"/v2/x/manifests/blobs/sha256:" + hexA, "/v2/blobs/manifests/blobs",
		"/v2/a/blobs/uploads/", "/v2/a/tags/list", "/v2/A/blobs/x",
		"/v2/a/blobs/sha512:" + hexA + hexA, "/v2/a/manifests/%2e", "/v2/a..b/manifests/x",
		"/v2/a/manifests/sha256:", "/v2/a/manifests/:", "/v2//manifests/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := parsePath(p)
		if err != nil {
			if r != (route{}) {
				t.Fatalf("parsePath(%q) failed with %v but returned %+v", p, err, r)
			}
			return
		}
		switch r.kind {
		case routeBase:
			if r.name != "" || r.digest != "" || r.tag != "" {
				t.Fatalf("base route with fields: %+v", r)
			}
		case routeBlob, routeManifest:
			if !nameRE.MatchString(r.name) || len(r.name) > maxNameLen {
				t.Fatalf("accepted bad name %q", r.name)
			}
			if (r.digest == "") == (r.tag == "") || r.kind == routeBlob && r.digest == "" {
				t.Fatalf("route %+v: want exactly one of digest and tag", r)
			}
			if r.digest != "" && r.digest.Validate() != nil {
				t.Fatalf("accepted bad digest %q", r.digest)
			}
			if r.tag != "" && !tagRE.MatchString(r.tag) {
				t.Fatalf("accepted bad tag %q", r.tag)
			}
		default:
			t.Fatalf("unknown kind %d", r.kind)
		}
		if p != "/v2" && r.String() != p {
			t.Fatalf("String() = %q, parsed from %q", r.String(), p)
		}
		again, err := parsePath(r.String())
		if err != nil || again != r {
			t.Fatalf("parsePath(String()) = %+v, %v; want %+v", again, err, r)
		}
	})
}
