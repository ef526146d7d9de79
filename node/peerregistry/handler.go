package peerregistry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize caps what the manifests endpoint serves: content larger
// than this is not a manifest (containerd's resolver refuses manifests over
// about 4 MiB too).
const MaxManifestSize = 4 << 20

// TagFunc resolves a tag from the local image store. name is
// "<ns>/<repository>:<tag>" when the request carries containerd's ?ns=
// query (containerd adds it for every mirror, so every request from a peer
// does), otherwise "<repository>:<tag>"; for example
// "docker.io/library/alpine:3.20". It returns the image's target descriptor
// and whether the image exists. It must be safe for concurrent use.
type TagFunc func(ctx context.Context, name string) (ocispec.Descriptor, bool)

// Handler serves a content store read-only as an OCI distribution endpoint:
// GET and HEAD on /v2/, /v2/<name>/blobs/<digest> and
// /v2/<name>/manifests/<digest-or-tag>. Content is looked up by digest
// alone; the name only has to be a valid repository name. It is safe for
// concurrent use.
type Handler struct {
	store content.InfoReaderProvider
	tags  TagFunc // nil: tags are unknown
	log   *slog.Logger
	stats handlerCounters
	plain atomic.Pointer[plainRedirect] // nil: blobs are served here
}

// plainRedirect sends blob GETs to a PlainServer (plain.go).
type plainRedirect struct {
	srv    *PlainServer
	client func(remote string) (netip.Addr, bool)
}

// SetPlain makes the handler answer blob GETs with a redirect to srv, for
// requests whose client address is known: client maps a request's
// RemoteAddr (on the peer plane, the peer ID) to the address the client
// will connect to srv from. Blobs of unknown clients, HEADs and manifests
// are served as before. srv nil turns redirects off.
func (h *Handler) SetPlain(srv *PlainServer, client func(remote string) (netip.Addr, bool)) {
	if srv == nil {
		h.plain.Store(nil)
		return
	}
	h.plain.Store(&plainRedirect{srv: srv, client: client})
}

var _ http.Handler = (*Handler)(nil)

// handlerCounters back HandlerStats.
type handlerCounters struct {
	requests, ok, notFound, invalid, failed, bytes, redirected atomic.Uint64
}

// HandlerStats are a Handler's counters since NewHandler. All only grow.
type HandlerStats struct {
	// Requests counts every request.
	Requests uint64
	// OK counts 2xx answers (200 and 206) to blob and manifest requests.
	OK uint64
	// NotFound counts 404s: unknown content, unknown tag, unknown endpoint.
	NotFound uint64
	// Invalid counts other 4xx: bad method, name, digest, tag or range.
	Invalid uint64
	// Failed counts 5xx: the content store failed.
	Failed uint64
	// Bytes counts response body bytes written.
	Bytes uint64
	// Redirected counts blob GETs sent to the plain listener (SetPlain).
	Redirected uint64
}

// NewHandler returns a Handler serving store. tags may be nil (requests by
// tag then get 404); log nil means slog.Default().
func NewHandler(store content.InfoReaderProvider, tags TagFunc, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{store: store, tags: tags, log: log}
}

// Stats returns a snapshot of the handler's counters.
func (h *Handler) Stats() HandlerStats {
	return HandlerStats{
		Requests:   h.stats.requests.Load(),
		OK:         h.stats.ok.Load(),
		NotFound:   h.stats.notFound.Load(),
		Invalid:    h.stats.invalid.Load(),
		Failed:     h.stats.failed.Load(),
		Bytes:      h.stats.bytes.Load(),
		Redirected: h.stats.redirected.Load(),
	}
}

// OCI distribution error codes used here.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeManifestInvalid = "MANIFEST_INVALID"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeNameInvalid     = "NAME_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeUnknown         = "UNKNOWN"
	codeDenied          = "DENIED"
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.stats.requests.Add(1)
	cw := &countingWriter{ResponseWriter: w, n: &h.stats.bytes}
	var rt route
	defer func() { h.done(r, rt, cw) }()
	w = cw
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.fail(w, r, http.StatusMethodNotAllowed, codeUnsupported, "method not allowed: this registry is read-only", r.Method)
		return
	}
	var err error
	rt, err = parsePath(r.URL.Path)
	switch {
	case errors.Is(err, errUnknownPath):
		h.fail(w, r, http.StatusNotFound, codeUnsupported, "unknown endpoint", r.URL.Path)
	case errors.Is(err, errNameInvalid):
		h.fail(w, r, http.StatusBadRequest, codeNameInvalid, "invalid repository name", r.URL.Path)
	case errors.Is(err, errDigestInvalid):
		h.fail(w, r, http.StatusBadRequest, codeDigestInvalid, "invalid digest", r.URL.Path)
	case errors.Is(err, errTagInvalid):
		h.fail(w, r, http.StatusBadRequest, codeManifestInvalid, "invalid tag", r.URL.Path)
	case err != nil:
		h.fail(w, r, http.StatusBadRequest, codeUnknown, err.Error(), r.URL.Path)
	case rt.kind == routeBase:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "{}")
		}
	case rt.kind == routeBlob:
		h.serveBlob(w, r, rt)
	case rt.kind == routeManifest:
		h.serveManifest(w, r, rt)
	}
}

// done counts and logs an answer once ServeHTTP is over, ServeContent's own
// answers (206, 304, 416) included.
func (h *Handler) done(r *http.Request, rt route, cw *countingWriter) {
	status := cw.status
	switch {
	case status/100 == 2 && rt.kind != routeBase:
		h.stats.ok.Add(1)
		h.log.Debug("peerregistry: served", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr,
			"status", status, "range", r.Header.Get("Range"), "bytes", cw.written)
		return
	case status == http.StatusNotFound:
		h.stats.notFound.Add(1)
	case status >= 500:
		h.stats.failed.Add(1)
	case status >= 400:
		h.stats.invalid.Add(1)
	default:
		return
	}
	h.log.Debug("peerregistry: refused request", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr,
		"status", status)
}

// serveBlob answers GET/HEAD /v2/<name>/blobs/<d>, ranges included.
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, rt route) {
	ctx, d := r.Context(), rt.digest
	info, err := h.store.Info(ctx, d)
	if err != nil {
		h.storeError(w, r, err, codeBlobUnknown, "blob unknown to registry", d)
		return
	}
	if p := h.plain.Load(); p != nil && r.Method == http.MethodGet && ctx.Value(plainKey{}) == nil && r.Header.Get(NoRedirectHeader) == "" {
		if ip, ok := p.client(r.RemoteAddr); ok {
			h.stats.redirected.Add(1)
			w.Header().Set("Location", p.srv.URL(r.URL.EscapedPath(), d, ip))
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
	}
	ra, err := h.store.ReaderAt(ctx, ocispec.Descriptor{Digest: d, Size: info.Size})
	if err != nil {
		h.storeError(w, r, err, codeBlobUnknown, "blob unknown to registry", d)
		return
	}
	defer ra.Close()
	setContentHeaders(w, "application/octet-stream", d)
	http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(ra, 0, ra.Size()))
}

// serveManifest answers GET/HEAD /v2/<name>/manifests/<digest-or-tag>.
func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	d, tagType := rt.digest, ""
	if rt.tag != "" {
		name := rt.name + ":" + rt.tag
		if ns := r.URL.Query().Get("ns"); ns != "" {
			if !validNS(ns) {
				h.fail(w, r, http.StatusBadRequest, codeNameInvalid, "invalid ns parameter", ns)
				return
			}
			name = ns + "/" + name
		}
		var desc ocispec.Descriptor
		ok := false
		if h.tags != nil {
			desc, ok = h.tags(ctx, name)
		}
		if !ok || desc.Digest.Validate() != nil {
			h.fail(w, r, http.StatusNotFound, codeManifestUnknown, "manifest unknown", name)
			return
		}
		d, tagType = desc.Digest, desc.MediaType
	}
	info, err := h.store.Info(ctx, d)
	if err != nil {
		h.storeError(w, r, err, codeManifestUnknown, "manifest unknown", d)
		return
	}
	if info.Size > MaxManifestSize {
		h.fail(w, r, http.StatusNotFound, codeManifestUnknown, "content too large to be a manifest", d)
		return
	}
	b, err := content.ReadBlob(ctx, h.store, ocispec.Descriptor{Digest: d, Size: info.Size})
	if err != nil {
		h.storeError(w, r, err, codeManifestUnknown, "manifest unknown", d)
		return
	}
	mt := manifestType(b)
	if mt == "" && (images.IsManifestType(tagType) || images.IsIndexType(tagType)) {
		mt = tagType
	}
	if mt == "" {
		h.fail(w, r, http.StatusNotFound, codeManifestUnknown, "content is not a manifest", d)
		return
	}
	setContentHeaders(w, mt, d)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// setContentHeaders sets the headers containerd's resolver and fetcher read.
// Content-Length and Content-Range are ServeContent's; setting Content-Type
// here also stops it from sniffing.
func setContentHeaders(w http.ResponseWriter, mediaType string, d digest.Digest) {
	hd := w.Header()
	hd.Set("Content-Type", mediaType)
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("ETag", strconv.Quote(d.String())) // If-Range and If-None-Match work
}

// manifestType returns the media type of a manifest or index: its
// mediaType field when that names one, else what its fields say (an OCI
// index has "manifests", an OCI manifest "config" and "layers"), else "".
func manifestType(b []byte) string {
	var m struct {
		MediaType string           `json:"mediaType"`
		Config    *json.RawMessage `json:"config"`
		Layers    *json.RawMessage `json:"layers"`
		Manifests *json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return ""
	}
	switch {
	case images.IsManifestType(m.MediaType) || images.IsIndexType(m.MediaType):
		return m.MediaType
	case m.MediaType != "":
		return "" // a config, a layer or an artifact that says so
	case m.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case m.Config != nil && m.Layers != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}

// nsRE is a registry host (a name, or an IP, IPv6 in brackets), optionally
// with a port: what containerd puts in ?ns=.
var nsRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$`)

func validNS(ns string) bool { return len(ns) <= 255 && nsRE.MatchString(ns) }

// storeError answers a content store error: 404 with code for not found,
// 500 otherwise.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error, code, msg string, d digest.Digest) {
	if errdefs.IsNotFound(err) {
		h.fail(w, r, http.StatusNotFound, code, msg, d)
		return
	}
	h.log.Warn("peerregistry: content store failed", "path", r.URL.Path, "from", r.RemoteAddr, "err", err)
	h.fail(w, r, http.StatusInternalServerError, codeUnknown, "content store failed", d)
}

// ociError is one entry of an OCI distribution error body.
type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// fail writes an OCI error answer (no body for HEAD). ServeHTTP counts it.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string, detail any) {
	body, _ := json.Marshal(struct {
		Errors []ociError `json:"errors"`
	}{[]ociError{{Code: code, Message: msg, Detail: detail}}})
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// countingWriter counts body bytes into n and remembers the status.
type countingWriter struct {
	http.ResponseWriter
	n       *atomic.Uint64
	status  int
	written int64
}

func (c *countingWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.written += int64(n)
	c.n.Add(uint64(n))
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// copyBufSize is the chunk size of blob bodies. On the peer plane each
// Write becomes yamux frames (at most 64 KiB each) and security-layer
// messages without coalescing; net/http's default 32 KiB chunks would make
// every frame half full. (On the 2-core test machine the gain was within
// the benchmark's noise.)
const copyBufSize = 256 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// ReadFrom copies src in copyBufSize chunks; http.ServeContent's io.CopyN
// uses it.
func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	return io.CopyBuffer(writerOnly{c}, src, *bp)
}

// writerOnly hides ReadFrom so that io.CopyBuffer uses the buffer.
type writerOnly struct{ io.Writer }
