package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
)

// maxImageArchive caps an image archive uploaded to POST /v1/images. The
// body is streamed into the runtime, never held in memory. A variable so
// tests can lower it.
var maxImageArchive int64 = 4 << 30

// errNoRuntime is the message of image calls on a node without a runtime.
const errNoRuntime = "no container runtime"

// imageContentTypes are the Content-Types POST /v1/images accepts (none
// at all is accepted too).
var imageContentTypes = map[string]bool{
	"application/x-tar":        true,
	"application/tar":          true,
	"application/octet-stream": true,
}

// registerImageRoutes adds the image endpoints (POST /v1/images, GET
// /v1/images) to the API.
func (a *Agent) registerImageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/images", a.loadImage)
	mux.HandleFunc("GET /v1/images", a.listImages)
	mux.HandleFunc("POST /v1/images/prefetch", a.prefetchImage)
}

// loadImage imports the image archive (`docker save` tarball or OCI
// archive) in the request body into this node's runtime and answers the
// images it held.
func (a *Agent) loadImage(w http.ResponseWriter, r *http.Request) {
	rt := a.cfg.Runtime
	if rt == nil {
		writeError(w, http.StatusServiceUnavailable, errNoRuntime)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !imageContentTypes[mt] {
			writeError(w, http.StatusUnsupportedMediaType,
				fmt.Sprintf("Content-Type %q: want application/x-tar or application/octet-stream (an image archive)", ct))
			return
		}
	}
	limit := maxImageArchive
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("image archive of %d bytes is larger than %d bytes", r.ContentLength, limit))
		return
	}
	body := &recordingReader{r: http.MaxBytesReader(w, r.Body, limit)}
	imgs, err := rt.ImportImage(r.Context(), body)
	n, bodyErr := body.result()
	if err != nil {
		// The body's own failure decides first: drivers may not wrap it.
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(bodyErr, &tooBig) || errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("image archive larger than %d bytes", limit))
		case r.Context().Err() != nil:
			// The client went away; nobody reads an answer.
			a.log.Info("image upload canceled", "err", err, "remote", r.RemoteAddr)
			writeError(w, http.StatusBadRequest, "image upload canceled")
		case bodyErr != nil:
			a.log.Info("image upload broken off", "err", bodyErr, "remote", r.RemoteAddr)
			writeError(w, http.StatusBadRequest, "reading image archive: "+bodyErr.Error())
		case errors.Is(err, runtime.ErrBadImage), errors.Is(err, runtime.ErrPlatform):
			writeError(w, http.StatusBadRequest, err.Error())
		case errors.Is(err, runtime.ErrNotReady):
			writeError(w, http.StatusServiceUnavailable, err.Error())
		default:
			a.log.Error("image import failed", "err", err)
			writeError(w, http.StatusInternalServerError, "importing image: "+err.Error())
		}
		return
	}
	out := apiImages(imgs)
	names := make([]string, len(out))
	for i, img := range out {
		names[i] = img.Name
	}
	a.log.Info("images imported", "images", names, "bytes", n)
	writeJSON(w, http.StatusOK, out)
}

// listImages answers the images of the cluster: every image a live member
// holds, once per name and digest, with the nodes that hold it. With
// ?scope=local, only this node's images (no nodes field). Members that do
// not answer in time are left out, and named in a Warning header.
func (a *Agent) listImages(w http.ResponseWriter, r *http.Request) {
	rt := a.cfg.Runtime
	if rt == nil {
		writeError(w, http.StatusServiceUnavailable, errNoRuntime)
		return
	}
	scope := r.URL.Query().Get("scope")
	if scope != "" && scope != "local" && scope != "cluster" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("scope %q: want local or cluster", scope))
		return
	}
	imgs, err := rt.Images(r.Context())
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, runtime.ErrNotReady) {
			code = http.StatusServiceUnavailable
		}
		writeError(w, code, "listing images: "+err.Error())
		return
	}
	if scope == "local" {
		writeJSON(w, http.StatusOK, apiImages(imgs))
		return
	}
	out, missing := a.clusterImages(r.Context(), apiImages(imgs))
	if len(missing) > 0 {
		w.Header().Set("Warning", `199 shoal "no image list from `+strings.Join(missing, ", ")+`"`)
	}
	writeJSON(w, http.StatusOK, out)
}

// apiImages converts runtime images to their API form (never nil, so the
// answer is a JSON list).
func apiImages(imgs []runtime.Image) []api.Image {
	out := make([]api.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, api.Image{Name: img.Name, Digest: img.Digest, Size: img.Size, Platforms: img.Platforms})
	}
	return out
}

// recordingReader counts what it reads and keeps the first read error
// other than io.EOF, so the handler can tell a broken or oversized upload
// from a bad archive whatever the driver makes of the error. It is safe
// for concurrent use (a driver may read from another goroutine).
type recordingReader struct {
	r io.Reader

	mu  sync.Mutex // guards the fields below
	n   int64
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.n += int64(n)
	if err != nil && err != io.EOF && rr.err == nil {
		rr.err = err
	}
	return n, err
}

// result returns the bytes read and the first read error.
func (rr *recordingReader) result() (int64, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return rr.n, rr.err
}

// pinImage sets s.ImageDigest when the write creates the service or
// changes its image, to the digest Image names on this node or, failing
// that, on a peer; a write that keeps the image keeps the digest the
// service had, so scaling or editing the environment never moves a
// service to other bytes. An image that cannot be resolved stays a plain
// reference (the runtime resolves it when it starts a replica). Docker's
// services pin the same way: at create, and when the image changes.
func (a *Agent) pinImage(ctx context.Context, s spec.Spec) spec.Spec {
	if s.ImageDigest != "" || strings.Contains(s.Image, "@") {
		return s
	}
	if prev, ok := a.store.Get(s.Name); ok {
		if ps, err := spec.Decode(prev.Value); err == nil && ps.Image == s.Image {
			s.ImageDigest = ps.ImageDigest
			return s
		}
	}
	if dg, ok := a.resolveImage(ctx, s.Image); ok {
		s.ImageDigest = dg
	}
	return s
}

// resolveImage returns the digest of the image ref names: among this
// node's images, then among its peers'.
func (a *Agent) resolveImage(ctx context.Context, ref string) (string, bool) {
	want := normalImageName(ref)
	if rt := a.cfg.Runtime; rt != nil {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		imgs, err := rt.Images(lctx)
		cancel()
		if err != nil {
			a.log.Warn("listing images to pin a digest", "image", ref, "err", err)
		}
		for _, img := range imgs {
			if normalImageName(img.Name) == want && img.Digest != "" {
				return img.Digest, true
			}
		}
	}
	return a.resolveImageOnPeers(ctx, ref)
}

// normalImageName normalises an image reference like docker does
// ("demo:1" is "docker.io/library/demo:1"), or returns it as is.
func normalImageName(ref string) string {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ref
	}
	return named.String()
}
