package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/shoalmesh/shoal/node/api"
)

// Placement returns the owner of every replica slot as the agent computes
// it (GET /v1/placement). A non-empty service limits it to that service
// (404 if the service does not exist).
func (c *Client) Placement(ctx context.Context, service string) (api.Placement, error) {
	var out api.Placement
	p := "/v1/placement"
	if service != "" {
		if _, err := servicePath(service); err != nil {
			return out, err
		}
		p += "?service=" + url.QueryEscape(service)
	}
	return out, c.Do(ctx, http.MethodGet, p, nil, &out)
}

// ExplainPlacement says how slot service/slot was placed: every node's
// rank and why each one above the owner was skipped (GET
// /v1/placement/{service}/{slot}).
func (c *Client) ExplainPlacement(ctx context.Context, service string, slot int) (api.Explanation, error) {
	var out api.Explanation
	if _, err := servicePath(service); err != nil {
		return out, err
	}
	if slot < 0 {
		return out, fmt.Errorf("client: slot %d is negative", slot)
	}
	return out, c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/placement/%s/%d", url.PathEscape(service), slot), nil, &out)
}
