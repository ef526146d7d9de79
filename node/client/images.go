package client

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/shoalmesh/shoal/node/api"
)

// LoadImage uploads an image archive (a `docker save` tarball or an OCI
// image archive, uncompressed) to the agent, which imports it into its
// container runtime (POST /v1/images), and returns the images imported.
//
// r is streamed, never read whole into memory. Since an archive can take
// long to send, the client's overall timeout (DefaultTimeout with the
// default HTTP client) does not apply to this call: bound it with ctx.
// A bad archive or one for another platform is a 400 *Error, a node
// without a container runtime a 503.
func (c *Client) LoadImage(ctx context.Context, r io.Reader) ([]api.Image, error) {
	if r == nil {
		return nil, errors.New("client: LoadImage: nil archive reader")
	}
	// A shallow copy of the client whose HTTP client has no overall
	// timeout; both copies are only read, so this is safe.
	cc := *c
	if c.hc.Timeout != 0 {
		hc := *c.hc
		hc.Timeout = 0
		cc.hc = &hc
	}
	var out []api.Image
	// io.NopCloser hides any Close method of r: closing it is the
	// caller's business, not net/http's.
	return out, cc.do(ctx, http.MethodPost, "/v1/images", nil, io.NopCloser(r), &out)
}

// Images lists the images the agent's container runtime holds (GET
// /v1/images).
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	return out, c.Do(ctx, http.MethodGet, "/v1/images", nil, &out)
}
