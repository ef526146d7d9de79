package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	cc := c.withoutTimeout()
	var out []api.Image
	// io.NopCloser hides any Close method of r: closing it is the
	// caller's business, not net/http's.
	return out, cc.do(ctx, http.MethodPost, "/v1/images", nil, io.NopCloser(r), &out)
}

// Images lists the images of the cluster, each with the nodes that hold
// it (GET /v1/images).
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	return out, c.Do(ctx, http.MethodGet, "/v1/images", nil, &out)
}

// LocalImages lists the images the agent's own container runtime holds
// (GET /v1/images?scope=local).
func (c *Client) LocalImages(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	return out, c.Do(ctx, http.MethodGet, "/v1/images?scope=local", nil, &out)
}

// withoutTimeout returns a shallow copy of the client whose HTTP client
// has no overall timeout, for calls that stream for long; both copies are
// only read, so this is safe.
func (c *Client) withoutTimeout() *Client {
	cc := *c
	if c.hc.Timeout != 0 {
		hc := *c.hc
		hc.Timeout = 0
		cc.hc = &hc
	}
	return &cc
}

// Prefetch has every live node pull image ahead of need (POST
// /v1/images/prefetch) and calls progress with each line of progress as it
// arrives. It returns when every node is done or failed; the caller tells
// them apart by the last line of each node.
func (c *Client) Prefetch(ctx context.Context, image string, progress func(api.PrefetchProgress)) error {
	lw := &progressLines{fn: progress}
	if err := c.withoutTimeout().Do(ctx, http.MethodPost, "/v1/images/prefetch", api.PrefetchRequest{Image: image}, lw); err != nil {
		return err
	}
	return lw.err
}

// progressLines decodes the JSON lines written to it.
type progressLines struct {
	fn  func(api.PrefetchProgress)
	buf []byte
	err error
}

func (p *progressLines) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := p.buf[:i]
		p.buf = p.buf[i+1:]
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var pr api.PrefetchProgress
		if err := json.Unmarshal(line, &pr); err != nil {
			p.err = fmt.Errorf("client: prefetch progress %.80q: %w", line, err)
			return 0, p.err
		}
		p.fn(pr)
	}
}
