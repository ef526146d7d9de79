// Package client is a typed Go client for Shoal's HTTP API (/v1), used by the
// CLI and by tests.
//
// Every call takes a context; cancel it or give it a deadline to bound the
// call. The default HTTP client also gives up after 30 seconds. A non-2xx
// answer is returned as an *Error carrying the status and the server's
// message; IsNotFound, IsConflict and IsUnauthorized classify it.
//
// # Concurrency
//
// A Client is safe for concurrent use by multiple goroutines.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
)

// DefaultTimeout bounds every request made with the default HTTP client.
const DefaultTimeout = 30 * time.Second

// maxErrorBody is how much of a non-2xx body is read for its message.
const maxErrorBody = 64 << 10

// Client talks to one Shoal agent's HTTP API.
type Client struct {
	base  *url.URL // scheme and host, and a path prefix without trailing '/'
	token string
	hc    *http.Client
	ua    string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient replaces the default HTTP client (a plain http.Client with a
// 30s timeout), for TLS settings, proxies or streaming calls without a timeout.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithUserAgent sets the User-Agent header (default "shoal-client").
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.ua = ua }
}

// New returns a client for the agent at addr: "http://host:port",
// "https://host:port" or a bare "host:port" (meaning http). A path in addr is
// kept as a prefix (for agents behind a reverse proxy). token, if not empty,
// is sent as "Authorization: Bearer <token>".
func New(addr, token string, opts ...Option) (*Client, error) {
	u, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	c := &Client{base: u, token: token, ua: "shoal-client"}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: DefaultTimeout}
	}
	return c, nil
}

// ParseAddr parses an agent address as New accepts it and returns its URL
// (scheme, host and optional path prefix without a trailing '/').
func ParseAddr(addr string) (*url.URL, error) {
	raw := strings.TrimSpace(addr)
	if raw == "" {
		return nil, errors.New("client: empty agent address")
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("client: invalid agent address %q: want http://host:port, https://host:port or host:port", addr)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("client: invalid agent address %q: scheme must be http or https", addr)
	case u.Hostname() == "":
		return nil, fmt.Errorf("client: invalid agent address %q: missing host", addr)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return nil, fmt.Errorf("client: invalid agent address %q: want only scheme, host, port and path", addr)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Addr returns the agent's base URL.
func (c *Client) Addr() string { return c.base.String() }

// Error is a non-2xx answer from the API.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Message is the server's {"error": "..."} message, or the status text
	// when the body has none.
	Message string
}

// Error formats the message with the status: `service "x" not found (404 Not Found)`.
func (e *Error) Error() string {
	if text := http.StatusText(e.Status); text != "" {
		return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, text)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// IsNotFound reports whether err is an API 404.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is an API 409 (a failed If-Match) or 412.
func IsConflict(err error) bool {
	return hasStatus(err, http.StatusConflict) || hasStatus(err, http.StatusPreconditionFailed)
}

// IsUnauthorized reports whether err is an API 401 (missing or wrong token)
// or 403.
func IsUnauthorized(err error) bool {
	return hasStatus(err, http.StatusUnauthorized) || hasStatus(err, http.StatusForbidden)
}

func hasStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// Nodes lists the cluster members as the agent sees them (GET /v1/nodes).
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var out []api.Node
	return out, c.Do(ctx, http.MethodGet, "/v1/nodes", nil, &out)
}

// Services lists the services (GET /v1/services).
func (c *Client) Services(ctx context.Context) ([]api.Service, error) {
	var out []api.Service
	return out, c.Do(ctx, http.MethodGet, "/v1/services", nil, &out)
}

// Service returns one service (GET /v1/services/{name}).
func (c *Client) Service(ctx context.Context, name string) (api.Service, error) {
	var out api.Service
	p, err := servicePath(name)
	if err != nil {
		return out, err
	}
	return out, c.Do(ctx, http.MethodGet, p, nil, &out)
}

// PutService creates or replaces the service s.Name (PUT
// /v1/services/{name}) and returns it as stored. If ifMatch is not empty the
// write only succeeds while the stored version is ifMatch (sent as
// `If-Match: "<version>"`); otherwise it fails with a conflict
// (IsConflict).
func (c *Client) PutService(ctx context.Context, s spec.Spec, ifMatch string) (api.Service, error) {
	var out api.Service
	p, err := servicePath(s.Name)
	if err != nil {
		return out, err
	}
	var hdr http.Header
	if ifMatch != "" {
		hdr = http.Header{"If-Match": {quoteETag(ifMatch)}}
	}
	return out, c.do(ctx, http.MethodPut, p, hdr, s, &out)
}

// DeleteService deletes a service (DELETE /v1/services/{name}) and returns
// its tombstone.
func (c *Client) DeleteService(ctx context.Context, name string) (api.Service, error) {
	var out api.Service
	p, err := servicePath(name)
	if err != nil {
		return out, err
	}
	return out, c.Do(ctx, http.MethodDelete, p, nil, &out)
}

// Health returns the agent's health summary (GET /v1/health).
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	var out api.Health
	return out, c.Do(ctx, http.MethodGet, "/v1/health", nil, &out)
}

// Do sends a request to path (which starts with "/v1/..." and may carry a
// query) and decodes the answer. body is sent as JSON unless it is nil (no
// body) or an io.Reader (sent as is, with Content-Type
// application/octet-stream). out receives the 2xx answer: JSON-decoded into
// it (left alone on 204 No Content), copied into it if it is an io.Writer, or
// discarded if nil. Non-2xx
// answers are returned as *Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	return c.do(ctx, method, path, nil, body, out)
}

func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, body, out any) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("client: path %q must start with '/'", path)
	}
	ref, err := url.Parse(path)
	if err != nil {
		return fmt.Errorf("client: invalid path %q: %w", path, err)
	}
	u := *c.base
	u.Path = c.base.Path + ref.Path
	u.RawPath = ""
	if ref.RawPath != "" {
		u.RawPath = c.base.EscapedPath() + ref.RawPath
	}
	u.RawQuery = ref.RawQuery

	var (
		rd          io.Reader
		contentType string
	)
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, contentType = b, "application/octet-stream"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("client: encoding %s %s body: %w", method, path, err)
		}
		rd, contentType = bytes.NewReader(buf), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}

	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats method and URL
		}
		return fmt.Errorf("client: %s %s: %w", method, u.Redacted(), err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return responseError(resp)
	}
	switch o := out.(type) {
	case nil:
		_, err = io.Copy(io.Discard, resp.Body)
	case io.Writer:
		_, err = io.Copy(o, resp.Body)
	default:
		if resp.StatusCode == http.StatusNoContent {
			break // nothing to decode; out keeps its value
		}
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if err != nil {
		return fmt.Errorf("client: reading %s %s answer: %w", method, path, err)
	}
	return nil
}

// responseError builds an *Error from a non-2xx answer.
func responseError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body api.Error
	if json.Unmarshal(data, &body) == nil && body.Error != "" {
		e.Message = body.Error
	} else if text := strings.TrimSpace(string(data)); text != "" && !strings.HasPrefix(text, "{") && !strings.HasPrefix(text, "<") && len(text) <= 200 {
		e.Message = text // a plain-text error, e.g. from net/http itself
	} else {
		e.Message = strings.ToLower(http.StatusText(resp.StatusCode))
	}
	if e.Message == "" {
		e.Message = resp.Status
	}
	return e
}

// servicePath returns /v1/services/{name}, refusing names that could not be
// a service (so a bad name never addresses a different endpoint).
func servicePath(name string) (string, error) {
	if err := spec.ValidName(name); err != nil {
		return "", err
	}
	return "/v1/services/" + url.PathEscape(name), nil
}

// quoteETag quotes a version for If-Match unless it is already an entity tag.
func quoteETag(v string) string {
	if v == "*" || strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `W/"`) {
		return v
	}
	return `"` + v + `"`
}
