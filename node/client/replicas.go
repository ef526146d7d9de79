package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoalmesh/shoal/node/api"
)

// Replicas returns the cluster-wide replica view as the agent holds it
// (GET /v1/replicas): every replica every live node reports. A non-empty
// service limits it to that service (404 if the service does not exist
// and has no replicas).
func (c *Client) Replicas(ctx context.Context, service string) ([]api.Replica, error) {
	var out []api.Replica
	p := "/v1/replicas"
	if service != "" {
		if _, err := servicePath(service); err != nil {
			return out, err
		}
		p += "?service=" + url.QueryEscape(service)
	}
	return out, c.Do(ctx, http.MethodGet, p, nil, &out)
}

// LogsOptions select what Logs returns.
type LogsOptions struct {
	// Tail is the number of last lines per replica (< 0: all the runtime
	// keeps).
	Tail int
	// Follow keeps the stream open for new lines until ctx ends.
	Follow bool
}

// Logs copies the logs of every replica of service to w as the agent
// streams them (GET /v1/logs/{service}), one line per log line, each
// prefixed with "[service/slot@node] ". With Follow it returns only when
// ctx ends (then with ctx's error) or the agent closes the stream; the
// default 30s timeout does not apply to a followed stream.
func (c *Client) Logs(ctx context.Context, service string, opts LogsOptions, w io.Writer) error {
	if _, err := servicePath(service); err != nil {
		return err
	}
	p := fmt.Sprintf("/v1/logs/%s?tail=%s", url.PathEscape(service), strconv.Itoa(max(opts.Tail, -1)))
	sc := c
	if opts.Follow {
		p += "&follow=1"
		cp := *c
		cp.hc = &http.Client{Transport: c.hc.Transport, CheckRedirect: c.hc.CheckRedirect, Jar: c.hc.Jar}
		sc = &cp
	}
	return sc.Do(ctx, http.MethodGet, p, nil, w)
}
