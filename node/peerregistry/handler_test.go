package peerregistry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestHandler checks the read-only distribution API on a plain httptest
// server: statuses, headers, bodies, ranges and error bodies.
func TestHandler(t *testing.T) {
	st, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	im := buildImage(t, st, 1000)
	layer := im.layers[0]
	layerBytes := im.blobs[layer.Digest]
	// A manifest without a mediaType field: detected by its fields.
	bare := put(t, st, []byte(fmt.Sprintf(`{"schemaVersion":2,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[]}`,
		im.config.MediaType, im.config.Digest, im.config.Size)))
	unknown := digest.FromString("nowhere")

	var tagAsked []string
	tags := func(_ context.Context, name string) (ocispec.Descriptor, bool) {
		tagAsked = append(tagAsked, name)
		if name == "docker.io/library/demo:1" || name == "demo:1" {
			return im.index, true
		}
		return ocispec.Descriptor{}, false
	}
	h := NewHandler(st, tags, discard)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)

	blob := "/v2/library/demo/blobs/" + layer.Digest.String()
	man := func(ref string) string { return "/v2/library/demo/manifests/" + ref }
	tests := []struct {
		name, method, path, rangeHdr string
		status                       int
		ctype                        string // "" = not checked
		digest                       digest.Digest
		length                       int64 // -1 = not checked
		body                         []byte
		code                         string // OCI error code
	}{
		{"base GET", "GET", "/v2/", "", 200, "application/json", "", 2, []byte("{}"), ""},
		{"base HEAD", "HEAD", "/v2/", "", 200, "application/json", "", 2, nil, ""},
		{"base no slash", "GET", "/v2", "", 200, "application/json", "", 2, []byte("{}"), ""},
		{"blob GET", "GET", blob, "", 200, "application/octet-stream", layer.Digest, layer.Size, layerBytes, ""},
		{"blob HEAD", "HEAD", blob, "", 200, "application/octet-stream", layer.Digest, layer.Size, nil, ""},
		{"blob range", "GET", blob, "bytes=10-19", 206, "application/octet-stream", layer.Digest, 10, layerBytes[10:20], ""},
		{"blob open range", "GET", blob, "bytes=900-", 206, "application/octet-stream", layer.Digest, 100, layerBytes[900:], ""},
		{"blob range past end", "GET", blob, "bytes=5000-", 416, "", "", -1, nil, ""},
		{"blob of any name", "GET", "/v2/a/b.c/d__e/blobs/" + layer.Digest.String(), "", 200, "", layer.Digest, layer.Size, layerBytes, ""},
		{"blob unknown", "GET", "/v2/x/blobs/" + unknown.String(), "", 404, "application/json", "", -1, nil, codeBlobUnknown},
		{"blob unknown HEAD", "HEAD", "/v2/x/blobs/" + unknown.String(), "", 404, "application/json", "", -1, nil, ""},
		{"manifest GET", "GET", man(im.manifest.Digest.String()), "", 200, ocispec.MediaTypeImageManifest, im.manifest.Digest, im.manifest.Size, im.blobs[im.manifest.Digest], ""},
		{"manifest HEAD", "HEAD", man(im.manifest.Digest.String()), "", 200, ocispec.MediaTypeImageManifest, im.manifest.Digest, im.manifest.Size, nil, ""},
		{"index GET", "GET", man(im.index.Digest.String()), "", 200, ocispec.MediaTypeImageIndex, im.index.Digest, im.index.Size, im.blobs[im.index.Digest], ""},
		{"manifest detected by fields", "GET", man(bare.Digest.String()), "", 200, ocispec.MediaTypeImageManifest, bare.Digest, bare.Size, nil, ""},
		{"manifest by tag with ns", "HEAD", man("1") + "?ns=docker.io", "", 200, ocispec.MediaTypeImageIndex, im.index.Digest, im.index.Size, nil, ""},
		{"manifest by tag", "GET", "/v2/demo/manifests/1", "", 200, ocispec.MediaTypeImageIndex, im.index.Digest, im.index.Size, im.blobs[im.index.Digest], ""},
		{"manifest tag unknown", "GET", man("2"), "", 404, "application/json", "", -1, nil, codeManifestUnknown},
		{"manifest bad ns", "GET", man("1") + "?ns=a/b", "", 400, "application/json", "", -1, nil, codeNameInvalid},
		{"manifest by tag, IPv6 ns", "GET", man("1") + "?ns=[::1]:5000", "", 404, "application/json", "", -1, nil, codeManifestUnknown},
		{"config is not a manifest", "GET", man(im.config.Digest.String()), "", 404, "application/json", "", -1, nil, codeManifestUnknown},
		{"layer is not a manifest", "GET", man(layer.Digest.String()), "", 404, "application/json", "", -1, nil, codeManifestUnknown},
		{"manifest unknown", "GET", man(unknown.String()), "", 404, "application/json", "", -1, nil, codeManifestUnknown},
		{"POST", "POST", "/v2/x/blobs/uploads/", "", 405, "application/json", "", -1, nil, codeUnsupported},
		{"PUT", "PUT", man("1"), "", 405, "application/json", "", -1, nil, codeUnsupported},
		{"DELETE", "DELETE", blob, "", 405, "application/json", "", -1, nil, codeUnsupported},
		{"bad name", "GET", "/v2/Library/demo/blobs/" + layer.Digest.String(), "", 400, "application/json", "", -1, nil, codeNameInvalid},
		{"bad name dots", "GET", "/v2/a..b/blobs/" + layer.Digest.String(), "", 400, "application/json", "", -1, nil, codeNameInvalid},
		{"bad digest", "GET", "/v2/x/blobs/sha256:1234", "", 400, "application/json", "", -1, nil, codeDigestInvalid},
		{"bad digest algorithm", "GET", "/v2/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "", 400, "application/json", "", -1, nil, codeDigestInvalid},
		{"bad manifest digest", "GET", man("sha256:zz"), "", 400, "application/json", "", -1, nil, codeDigestInvalid},
		{"bad tag", "GET", man("-1"), "", 400, "application/json", "", -1, nil, codeManifestInvalid},
		{"tags list", "GET", "/v2/x/tags/list", "", 404, "application/json", "", -1, nil, codeUnsupported},
		{"catalog", "GET", "/v2/_catalog", "", 404, "application/json", "", -1, nil, codeUnsupported},
		{"upload status", "GET", "/v2/x/blobs/uploads/abc", "", 404, "application/json", "", -1, nil, codeUnsupported},
		{"not v2", "GET", "/v1/x", "", 404, "application/json", "", -1, nil, codeUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.rangeHdr != "" {
				req.Header.Set("Range", tc.rangeHdr)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, tc.status, body)
			}
			if tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.ctype)
			}
			if tc.digest != "" && resp.Header.Get("Docker-Content-Digest") != tc.digest.String() {
				t.Errorf("Docker-Content-Digest %q, want %q", resp.Header.Get("Docker-Content-Digest"), tc.digest)
			}
			if tc.length >= 0 && resp.ContentLength != tc.length {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, tc.length)
			}
			if tc.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD answered a body of %d bytes", len(body))
			}
			if tc.body != nil && string(body) != string(tc.body) {
				t.Errorf("body differs: %d bytes, want %d", len(body), len(tc.body))
			}
			if tc.status == 206 {
				want := fmt.Sprintf("bytes %s/%d", strings.TrimPrefix(tc.rangeHdr, "bytes="), layer.Size)
				if strings.HasSuffix(tc.rangeHdr, "-") {
					want = fmt.Sprintf("bytes %s%d/%d", strings.TrimPrefix(tc.rangeHdr, "bytes="), layer.Size-1, layer.Size)
				}
				if got := resp.Header.Get("Content-Range"); got != want {
					t.Errorf("Content-Range %q, want %q", got, want)
				}
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q", resp.Header.Get("Allow"))
			}
			if tc.code != "" {
				var e struct {
					Errors []ociError `json:"errors"`
				}
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
					t.Fatalf("error body %q: %v", body, err)
				}
				if e.Errors[0].Code != tc.code || e.Errors[0].Message == "" {
					t.Errorf("error %+v, want code %s", e.Errors[0], tc.code)
				}
			}
		})
	}
	if want := []string{"docker.io/library/demo:1", "demo:1", "library/demo:2", "[::1]:5000/library/demo:1"}; strings.Join(tagAsked, ",") != strings.Join(want, ",") {
		t.Errorf("TagFunc asked %q, want %q", tagAsked, want)
	}
	s := h.Stats()
	// OK: 2xx on blobs and manifests (blob GET, HEAD, 2 ranges, any name;
	// manifest GET, HEAD, index, bare, 2 tags). NotFound: 3 unknown
	// content, 2 unknown tags, 2 not manifests, 4 unknown endpoints.
	// Invalid: 416, bad ns, 3 methods, 2 names, 3 digests, 1 tag.
	want := HandlerStats{Requests: uint64(len(tests)), OK: 11, NotFound: 11, Invalid: 11, Failed: 0}
	if s.Requests != want.Requests || s.OK != want.OK || s.NotFound != want.NotFound || s.Invalid != want.Invalid || s.Failed != 0 {
		t.Errorf("Stats %+v, want %+v", s, want)
	}
	if s.Bytes == 0 {
		t.Error("Stats.Bytes is 0")
	}
}

// put writes b into st as a blob.
func put(t testing.TB, st content.Ingester, b []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(testCtx(t), st, d.Digest.String(), bytes.NewReader(b), d); err != nil {
		t.Fatal(err)
	}
	return d
}
