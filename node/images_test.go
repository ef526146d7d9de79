package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/testenv"
)

// scriptedImages is a fake runtime whose ImportImage fails on demand by
// the archive's first word, and reports when it has read the start of an
// archive (to show the API streams the body).
type scriptedImages struct {
	*runtime.Fake
	started chan struct{} // gets a value when an import has read its first bytes
}

func (s *scriptedImages) ImportImage(ctx context.Context, r io.Reader) ([]runtime.Image, error) {
	first := make([]byte, 6)
	n, err := io.ReadFull(r, first)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	first = first[:n]
	select {
	case s.started <- struct{}{}:
	default:
	}
	switch string(first) {
	case "arm64!":
		return nil, fmt.Errorf("%w: archive has linux/arm64 only", runtime.ErrPlatform)
	case "noway!":
		return nil, fmt.Errorf("containerd: %w", runtime.ErrNotReady)
	case "boom!!":
		return nil, errors.New("disk on fire")
	}
	return s.Fake.ImportImage(ctx, io.MultiReader(bytes.NewReader(first), r))
}

func post(t *testing.T, url, contentType string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestImagesAPI(t *testing.T) {
	defer node.SetMaxImageArchive(1 << 10)() // restored before the cluster stops
	rt := &scriptedImages{Fake: runtime.NewFake(), started: make(chan struct{}, 1)}
	c := testenv.New(t, testenv.Options{Nodes: 1, Runtime: func(*testenv.Node) runtime.Driver { return rt }})
	cl := c.Nodes[0].Client
	ctx := ctxT(t)
	url := "http://" + c.Nodes[0].Agent().APIAddr() + "/v1/images"

	got, err := cl.LoadImage(ctx, strings.NewReader("shoal-demo:latest\nweb:2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "shoal-demo:latest" || got[1].Name != "web:2" || !strings.HasPrefix(got[0].Digest, "sha256:") {
		t.Fatalf("loaded %+v", got)
	}
	list, err := cl.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := func(imgs []api.Image) []string {
		var out []string
		for _, i := range imgs {
			out = append(out, i.Name)
		}
		return out
	}
	if !slices.Equal(names(list), []string{"shoal-demo:latest", "web:2"}) || !slices.Equal(list[0].Platforms, []string{"linux/amd64"}) {
		t.Fatalf("listed %+v", list)
	}
	// The node's runtime holds them.
	held, _ := rt.Images(ctx)
	if !slices.Equal(names(apiOf(held)), names(list)) {
		t.Errorf("runtime holds %v, API lists %v", names(apiOf(held)), names(list))
	}

	cases := []struct {
		name, contentType, body string
		chunked                 bool
		code                    int
		msg                     string
	}{
		{"tar content type", "application/x-tar", "db:5", false, 200, "db:5"},
		{"content type with parameters", "application/octet-stream; foo=bar", "cache:1", false, 200, "cache:1"},
		{"no content type", "", "queue:1", false, 200, "queue:1"},
		{"empty archive", "application/x-tar", "", false, 400, "malformed image"},
		{"blank archive", "application/x-tar", "          ", false, 400, "no image in archive"},
		{"wrong platform", "application/x-tar", "arm64! x:1", false, 400, "linux/arm64 only"},
		{"runtime not ready", "application/x-tar", "noway! x:1", false, 503, "not ready"},
		{"runtime failure", "application/x-tar", "boom!! x:1", false, 500, "disk on fire"},
		{"json body", "application/json", `{"image":"x"}`, false, 415, "Content-Type"},
		{"too large, declared", "application/x-tar", strings.Repeat("a ", 600), false, 413, "larger than 1024"},
		{"too large, streamed", "application/x-tar", strings.Repeat("a ", 600), true, 413, "larger than 1024"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked { // hide the length: sent chunked
				body = io.MultiReader(body)
			}
			code, msg := post(t, url, tc.contentType, body)
			if code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Fatalf("status %d %s, want %d with %q", code, msg, tc.code, tc.msg)
			}
		})
	}
	// The refused archives added nothing.
	list, err = cl.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"cache:1", "db:5", "queue:1", "shoal-demo:latest", "web:2"}; !slices.Equal(names(list), want) {
		t.Errorf("after the bad uploads: %v, want %v", names(list), want)
	}
	// Client errors carry the status and the message.
	_, err = cl.LoadImage(ctx, strings.NewReader("arm64! x:1"))
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "platform") {
		t.Errorf("LoadImage of a foreign archive: %v", err)
	}
}

// The archive reaches the runtime while it is still being sent: neither
// the client nor the API buffers it whole.
func TestImagesAPIStreams(t *testing.T) {
	rt := &scriptedImages{Fake: runtime.NewFake(), started: make(chan struct{}, 1)}
	c := testenv.New(t, testenv.Options{Nodes: 1, Runtime: func(*testenv.Node) runtime.Driver { return rt }})
	ctx := ctxT(t)
	pr, pw := io.Pipe()
	type answer struct {
		imgs []api.Image
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		imgs, err := c.Nodes[0].Client.LoadImage(ctx, pr)
		done <- answer{imgs, err}
	}()
	if _, err := pw.Write([]byte("streamed:1 ")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rt.started: // the runtime read the start with the upload still open
	case a := <-done:
		t.Fatalf("load finished before the upload did: %+v %v", a.imgs, a.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the runtime saw nothing of an open upload within 10s: the body is buffered")
	}
	if _, err := pw.Write([]byte("streamed:2")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case a := <-done:
		if a.err != nil || len(a.imgs) != 2 || a.imgs[1].Name != "streamed:2" {
			t.Fatalf("loaded %+v, %v", a.imgs, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("load did not finish after the upload ended")
	}
}

func TestImagesAPINoRuntime(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1, Runtime: func(*testenv.Node) runtime.Driver { return nil }})
	ctx := ctxT(t)
	cl := c.Nodes[0].Client
	_, err := cl.LoadImage(ctx, strings.NewReader("demo:1"))
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 503 || apiErr.Message != "no container runtime" {
		t.Errorf("load without a runtime: %v", err)
	}
	_, err = cl.Images(ctx)
	if !errors.As(err, &apiErr) || apiErr.Status != 503 || apiErr.Message != "no container runtime" {
		t.Errorf("list without a runtime: %v", err)
	}
}

func apiOf(imgs []runtime.Image) []api.Image {
	out := make([]api.Image, len(imgs))
	for i, img := range imgs {
		out[i] = api.Image{Name: img.Name}
	}
	return out
}

// A service is pinned to the digest its image has on the node that takes
// the write, at create and when the image changes, never on other edits;
// replicas run the pinned reference. An image nobody holds stays a plain
// reference, and a digest in the image itself is kept as written.
func TestServiceImageDigestPinning(t *testing.T) {
	rt := runtime.NewFake()
	c := testenv.New(t, testenv.Options{Nodes: 1, Runtime: func(*testenv.Node) runtime.Driver { return rt }})
	cl := c.Nodes[0].Client
	ctx := ctxT(t)
	loaded, err := cl.LoadImage(ctx, strings.NewReader("demo:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	first := loaded[0].Digest

	put := func(s spec.Spec) api.Service {
		t.Helper()
		out, err := cl.PutService(ctx, s, "")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	web := spec.Spec{Name: "web", Image: "docker.io/library/demo:1", Replicas: 1}
	if got := put(web); got.ImageDigest != first {
		t.Fatalf("created with digest %q, want %q (the node's demo:1)", got.ImageDigest, first)
	}
	c.Eventually(15*time.Second, func() error {
		rs := running(t, rt, "web")
		if len(rs) != 1 || rs[0].Image != "docker.io/library/demo:1@"+first {
			return fmt.Errorf("running %+v, want one replica of demo:1@%s", rs, first)
		}
		return nil
	})

	// demo:1 is loaded again with other content: scaling keeps the pin.
	reloaded, err := cl.LoadImage(ctx, strings.NewReader("other:1 demo:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if reloaded[1].Digest == first {
		t.Fatal("the fake gave the reloaded image the same digest")
	}
	web.Replicas = 2
	if got := put(web); got.ImageDigest != first {
		t.Fatalf("scaled: digest %q, want the pinned %q", got.ImageDigest, first)
	}
	// Changing the image pins the new one.
	web.Image = "other:1"
	if got := put(web); got.ImageDigest != reloaded[0].Digest {
		t.Fatalf("new image: digest %q, want %q", got.ImageDigest, reloaded[0].Digest)
	}
	// Nobody holds it: a plain reference.
	web.Image = "nowhere:3"
	if got := put(web); got.ImageDigest != "" {
		t.Fatalf("unknown image pinned to %q", got.ImageDigest)
	}
	// A digest given by the user is the one that runs.
	pinned := "demo:1@" + first
	if got := put(spec.Spec{Name: "api", Image: pinned, Replicas: 1}); got.ImageDigest != "" || got.Image != pinned {
		t.Fatalf("user digest: %+v", got.Spec)
	}
	// The image list: a bad scope is refused.
	resp, err := http.Get("http://" + c.Nodes[0].Agent().APIAddr() + "/v1/images?scope=everywhere")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "want local or cluster") {
		t.Fatalf("scope=everywhere: %d %s", resp.StatusCode, body)
	}
	// A digest field with a digest in the image is refused.
	bad := spec.Spec{Name: "api", Image: pinned, ImageDigest: first, Replicas: 1}
	if _, err := cl.PutService(ctx, bad, ""); err == nil || !strings.Contains(err.Error(), "image_digest") {
		t.Fatalf("image_digest with a pinned image: %v", err)
	}
}
