package spec

import (
	"fmt"
	"strconv"
	"strings"
)

// ParsePublish parses a port publication as the CLI's --publish takes it:
//
//	"8080:80"       published 8080, target 80, tcp
//	"8080:80/http"  the same, proxied at L7
//	"80"            published and target 80, tcp
//	"80/http"       published and target 80, http
//
// The protocol is "tcp" (the default) or "http". Ports must be 1 to 65535.
// Host IPs ("127.0.0.1:8080:80") and ranges are not supported.
func ParsePublish(s string) (Port, error) {
	rest, proto, hasProto := strings.Cut(s, "/")
	if !hasProto {
		proto = ProtocolTCP
	}
	if proto != ProtocolTCP && proto != ProtocolHTTP {
		return Port{}, fmt.Errorf("spec: invalid publish %q: protocol must be %q or %q, got %q", s, ProtocolTCP, ProtocolHTTP, proto)
	}
	parts := strings.Split(rest, ":")
	if len(parts) > 2 {
		return Port{}, fmt.Errorf("spec: invalid publish %q: want PUBLISHED:TARGET[/tcp|/http] (host IPs are not supported)", s)
	}
	var ports [2]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p[0] == '+' {
			return Port{}, fmt.Errorf("spec: invalid publish %q: port %q must be a number between 1 and 65535", s, p)
		}
		ports[i] = n
	}
	if len(parts) == 1 {
		ports[1] = ports[0]
	}
	return Port{Published: ports[0], Target: ports[1], Protocol: proto}, nil
}

// ParseKV splits "key=value" at the first '='. The key must not be empty; the
// value may be empty and may contain '='.
func ParseKV(s string) (key, value string, err error) {
	key, value, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return "", "", fmt.Errorf("spec: invalid %q: want KEY=VALUE", s)
	}
	return key, value, nil
}
