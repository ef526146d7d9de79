package peerregistry

import (
	_ "crypto/sha256" // digest algorithms the registry accepts; go-digest
	_ "crypto/sha512" // needs them linked for Algorithm.Available
	"errors"
	"regexp"
	"strings"

	digest "github.com/opencontainers/go-digest"
)

// routeKind is the endpoint a request path names.
type routeKind int

const (
	routeBase     routeKind = iota + 1 // /v2/
	routeBlob                          // /v2/<name>/blobs/<digest>
	routeManifest                      // /v2/<name>/manifests/<digest-or-tag>
)

// route is a parsed request path. Exactly one of digest and tag is set for
// routeManifest; routeBlob always has digest; routeBase has neither and no
// name.
type route struct {
	kind   routeKind
	name   string
	digest digest.Digest
	tag    string
}

// Path parse errors; the handler maps each to a status and an OCI error code.
var (
	errUnknownPath   = errors.New("peerregistry: unknown endpoint")
	errNameInvalid   = errors.New("peerregistry: invalid repository name")
	errDigestInvalid = errors.New("peerregistry: invalid digest")
	errTagInvalid    = errors.New("peerregistry: invalid tag")
)

const (
	// maxNameLen bounds a repository name, as the reference registry does.
	maxNameLen = 255
	// maxTagLen bounds a tag (OCI distribution spec).
	maxTagLen = 128
)

var (
	// nameRE is the OCI distribution spec's repository name grammar.
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	// tagRE is the OCI distribution spec's tag grammar.
	tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// parsePath parses the path of a read-only OCI distribution request. It is
// pure (no I/O, no state). Errors: errUnknownPath for
// anything that is not one of the three endpoints this package serves
// (uploads, tags/list and _catalog included), errNameInvalid,
// errDigestInvalid (a blob reference, or a manifest reference containing
// ':', that is not a valid digest of an available algorithm) and
// errTagInvalid.
func parsePath(p string) (route, error) {
	if p == "/v2" || p == "/v2/" {
		return route{kind: routeBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}, errUnknownPath
	}
	// The name may itself contain "blobs" or "manifests" components; the
	// endpoint is the last one, and the reference after it has no slash.
	kind, sep := routeBlob, "/blobs/"
	i := strings.LastIndex(rest, sep)
	if j := strings.LastIndex(rest, "/manifests/"); j > i {
		kind, sep, i = routeManifest, "/manifests/", j
	}
	if i < 0 {
		return route{}, errUnknownPath
	}
	name, ref := rest[:i], rest[i+len(sep):]
	if ref == "" || strings.Contains(ref, "/") {
		return route{}, errUnknownPath
	}
	if len(name) > maxNameLen || !nameRE.MatchString(name) {
		return route{}, errNameInvalid
	}
	r := route{kind: kind, name: name}
	if kind == routeBlob || strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return route{}, errDigestInvalid
		}
		r.digest = d
		return r, nil
	}
	if len(ref) > maxTagLen || !tagRE.MatchString(ref) {
		return route{}, errTagInvalid
	}
	r.tag = ref
	return r, nil
}

// String formats r back into a request path; parsePath(r.String()) == r for
// every route parsePath returns.
func (r route) String() string {
	switch r.kind {
	case routeBase:
		return "/v2/"
	case routeBlob:
		return "/v2/" + r.name + "/blobs/" + r.digest.String()
	case routeManifest:
		ref := r.tag
		if r.digest != "" {
			ref = r.digest.String()
		}
		return "/v2/" + r.name + "/manifests/" + ref
	}
	return ""
}
