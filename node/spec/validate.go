package spec

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits enforced by Validate.
const (
	MaxReplicas     = 1000                      // most replicas of one service
	MaxImageLen     = 255                       // longest image reference
	MaxCPUs         = 1024                      // largest CPU limit in cores
	MinMemory       = 4 * MiB                   // smallest non-zero memory limit
	MinInterval     = Duration(time.Second)     // shortest health-probe interval
	DefaultInterval = Duration(5 * time.Second) // health interval when unset
	DefaultTimeout  = Duration(2 * time.Second) // health timeout when unset (capped at the interval)
)

// Protocols and networks.
const (
	ProtocolTCP   = "tcp"    // L4 proxying, the default
	ProtocolHTTP  = "http"   // L7 proxying
	NetworkBridge = "bridge" // own network namespace and IP via CNI, the default
	NetworkHost   = "host"   // the node's network namespace
)

// Balancing policies and hash keys.
const (
	PolicyLeastRequest = "least_request" // the default
	PolicyRoundRobin   = "round_robin"
	PolicyMaglev       = "maglev"
	HashClientIP       = "client_ip" // the default hash key of maglev
	HashHeaderPrefix   = "header:"   // followed by a header name
)

// Problem is one reason a Spec is invalid.
type Problem struct {
	// Field is the JSON path of the offending field ("replicas",
	// "ports[1].published", "health.timeout").
	Field string
	// Reason says what is wrong, with the offending value where it helps.
	Reason string
}

// String formats p as "field: reason".
func (p Problem) String() string { return p.Field + ": " + p.Reason }

// ValidationError lists every problem Validate found in a Spec.
type ValidationError struct {
	// Problems in field order; never empty.
	Problems []Problem
}

// Error joins the problems as "field: reason; field: reason".
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// problems accumulates Problems.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Validate checks every rule of the schema and returns nil or a
// *ValidationError listing all problems found. It does not modify s. Unset
// fields that Normalize would fill (protocol, network, health interval and
// timeout) are judged by their defaults, so Validate gives the same answer
// before and after Normalize.
func (s Spec) Validate() error {
	var ps problems
	if r := nameProblem(s.Name); r != "" {
		ps.add("name", "%s", r)
	}
	if r := imageProblem(s.Image); r != "" {
		ps.add("image", "%s", r)
	}
	switch {
	case s.ImageDigest == "":
	case !imageDigestRE.MatchString(s.ImageDigest):
		ps.add("image_digest", "must be \"sha256:\" followed by 64 lower-case hex digits, got %q", s.ImageDigest)
	case strings.Contains(s.Image, "@"):
		ps.add("image_digest", "must be empty when image carries a digest")
	}
	if s.Replicas < 0 || s.Replicas > MaxReplicas {
		ps.add("replicas", "must be between 0 and %d, got %d", MaxReplicas, s.Replicas)
	}
	validateArgs(&ps, "command", s.Command, false)
	for _, k := range sortedKeys(s.Env) {
		v := s.Env[k]
		switch {
		case k == "":
			ps.add("env", "variable names must not be empty")
		case strings.ContainsAny(k, "=\x00"):
			ps.add("env", "variable name %q must not contain '=' or NUL", k)
		}
		if strings.ContainsRune(v, 0) {
			ps.add("env["+k+"]", "value must not contain NUL")
		}
	}
	network := s.Network
	if network == "" {
		network = NetworkBridge
	}
	if network != NetworkBridge && network != NetworkHost {
		ps.add("network", "must be %q or %q, got %q", NetworkBridge, NetworkHost, s.Network)
	}
	validatePorts(&ps, s.Ports, network)
	if s.Health != nil {
		validateHealth(&ps, s.Health, len(s.Ports))
	}
	validateResources(&ps, s.Resources)
	if s.Balance != nil {
		validateBalance(&ps, s.Balance, s.Ports)
	}
	for _, k := range sortedKeys(s.Constraints) {
		if r := labelKeyProblem(k); r != "" {
			ps.add("constraints", "key %q: %s", k, r)
		}
		if r := labelValueProblem(s.Constraints[k]); r != "" {
			ps.add("constraints["+k+"]", "value %q: %s", s.Constraints[k], r)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// validateArgs checks an argv: no NUL anywhere, and when required or
// non-empty, a non-empty program name.
func validateArgs(ps *problems, field string, args []string, required bool) {
	if len(args) == 0 {
		if required {
			ps.add(field, "must not be empty")
		}
		return
	}
	if args[0] == "" {
		ps.add(field+"[0]", "the program name must not be empty")
	}
	for i, a := range args {
		if strings.ContainsRune(a, 0) {
			ps.add(fmt.Sprintf("%s[%d]", field, i), "must not contain NUL")
		}
	}
}

func validatePorts(ps *problems, ports []Port, network string) {
	if network == NetworkHost && len(ports) > 1 {
		ps.add("ports", "host network allows at most one port (the replica listens on $PORT), got %d", len(ports))
	}
	seen := make(map[int]int, len(ports))
	for i, p := range ports {
		f := fmt.Sprintf("ports[%d]", i)
		if p.Published < 1 || p.Published > 65535 {
			ps.add(f+".published", "must be between 1 and 65535, got %d", p.Published)
		} else if j, dup := seen[p.Published]; dup {
			ps.add(f+".published", "port %d is already published by ports[%d]", p.Published, j)
		} else {
			seen[p.Published] = i
		}
		if p.Target < 1 || p.Target > 65535 {
			ps.add(f+".target", "must be between 1 and 65535, got %d", p.Target)
		}
		if p.Protocol != "" && p.Protocol != ProtocolTCP && p.Protocol != ProtocolHTTP {
			ps.add(f+".protocol", "must be %q or %q, got %q", ProtocolTCP, ProtocolHTTP, p.Protocol)
		}
	}
}

func validateHealth(ps *problems, h *Health, nports int) {
	var set []string
	if h.HTTP != "" {
		set = append(set, "http")
	}
	if h.TCP != 0 {
		set = append(set, "tcp")
	}
	if len(h.Exec) > 0 {
		set = append(set, "exec")
	}
	switch len(set) {
	case 0:
		ps.add("health", "exactly one of http, tcp and exec must be set, got none")
	case 1:
	default:
		ps.add("health", "exactly one of http, tcp and exec must be set, got %s", strings.Join(set, " and "))
	}
	if h.HTTP != "" {
		switch {
		case h.HTTP[0] != '/':
			ps.add("health.http", "path must start with '/', got %q", h.HTTP)
		case strings.IndexFunc(h.HTTP, badPathRune) >= 0:
			ps.add("health.http", "path must not contain whitespace or control characters, got %q", h.HTTP)
		case nports == 0:
			ps.add("health.http", "needs a port to probe: add one to ports (the first port's target is probed)")
		}
	}
	if h.TCP < 0 || h.TCP > 65535 {
		ps.add("health.tcp", "must be between 1 and 65535, got %d", h.TCP)
	}
	validateArgs(ps, "health.exec", h.Exec, false)
	interval := h.Interval
	if interval == 0 {
		interval = DefaultInterval
	}
	if interval < MinInterval {
		ps.add("health.interval", "must be at least %s, got %s", MinInterval, h.Interval)
	}
	switch {
	case h.Timeout < 0:
		ps.add("health.timeout", "must be positive, got %s", h.Timeout)
	case h.Timeout > interval && interval >= MinInterval:
		ps.add("health.timeout", "must not exceed the interval (%s), got %s", interval, h.Timeout)
	}
}

func badPathRune(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

func validateBalance(ps *problems, b *Balance, ports []Port) {
	policy := b.Policy
	if policy == "" {
		policy = PolicyLeastRequest
	}
	if policy != PolicyLeastRequest && policy != PolicyRoundRobin && policy != PolicyMaglev {
		ps.add("balance.policy", "must be %q, %q or %q, got %q", PolicyLeastRequest, PolicyRoundRobin, PolicyMaglev, b.Policy)
	}
	if b.HashOn != "" {
		header, isHeader := strings.CutPrefix(b.HashOn, HashHeaderPrefix)
		switch {
		case policy != PolicyMaglev:
			ps.add("balance.hash_on", "only applies to policy %q", PolicyMaglev)
		case b.HashOn != HashClientIP && !isHeader:
			ps.add("balance.hash_on", "must be %q or %q followed by a header name, got %q", HashClientIP, HashHeaderPrefix, b.HashOn)
		case isHeader && !validToken(header):
			ps.add("balance.hash_on", "bad header name %q", header)
		case isHeader && !slices.ContainsFunc(ports, func(p Port) bool { return p.Protocol == ProtocolHTTP }):
			ps.add("balance.hash_on", "hashing on a header needs an http port")
		}
	}
	if b.ProxyProtocol && !slices.ContainsFunc(ports, func(p Port) bool { return p.Protocol != ProtocolHTTP }) {
		ps.add("balance.proxy_protocol", "applies to tcp ports; the service has none")
	}
}

// validToken reports whether s is an RFC 9110 token (a header name).
func validToken(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func validateResources(ps *problems, r Resources) {
	if math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) || r.CPUs < 0 || r.CPUs > MaxCPUs {
		ps.add("resources.cpus", "must be between 0 (unlimited) and %d, got %v", MaxCPUs, r.CPUs)
	}
	if r.Memory < 0 || (r.Memory > 0 && r.Memory < MinMemory) {
		ps.add("resources.memory", "must be 0 (unlimited) or at least %s, got %d bytes", MinMemory, int64(r.Memory))
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ValidName reports whether s is a valid service name: an RFC 1123 DNS label
// of 1 to 63 lower-case letters, digits and '-', starting and ending with a
// letter or digit.
func ValidName(s string) error {
	if r := nameProblem(s); r != "" {
		return fmt.Errorf("spec: invalid name %q: %s", s, r)
	}
	return nil
}

func nameProblem(s string) string {
	switch {
	case s == "":
		return "required"
	case len(s) > 63:
		return fmt.Sprintf("must be at most 63 characters, got %d", len(s))
	case strings.IndexFunc(s, func(r rune) bool { return !isLowerAlnum(r) && r != '-' }) >= 0:
		return fmt.Sprintf("must contain only lower-case letters, digits and '-', got %q", s)
	case s[0] == '-' || s[len(s)-1] == '-':
		return fmt.Sprintf("must start and end with a letter or digit, got %q", s)
	}
	return ""
}

func isLowerAlnum(r rune) bool { return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' }

// ValidLabel reports whether key and value form a valid label (node label or
// placement constraint). See the package documentation for the rules.
func ValidLabel(key, value string) error {
	if r := labelKeyProblem(key); r != "" {
		return fmt.Errorf("spec: invalid label key %q: %s", key, r)
	}
	if r := labelValueProblem(value); r != "" {
		return fmt.Errorf("spec: invalid label value %q for key %q: %s", value, key, r)
	}
	return nil
}

var (
	labelNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	subdomainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)
)

const labelNameRule = "must be 1 to 63 characters of letters, digits, '.', '_' and '-', starting and ending with a letter or digit"

func labelKeyProblem(k string) string {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if prefix == "" || len(prefix) > 253 || !subdomainRE.MatchString(prefix) {
			return fmt.Sprintf("prefix %q must be a lower-case DNS subdomain of at most 253 characters", prefix)
		}
	}
	if len(name) > 63 || !labelNameRE.MatchString(name) {
		if name == "" {
			return "name must not be empty"
		}
		return "name " + labelNameRule
	}
	return ""
}

func labelValueProblem(v string) string {
	if v == "" {
		return ""
	}
	if len(v) > 63 || !labelNameRE.MatchString(v) {
		return "must be empty or " + labelNameRule[len("must be "):]
	}
	return ""
}

// Image reference grammar, a subset of the distribution reference grammar:
//
//	reference := [domain "/"] path [":" tag] ["@" digest]
//	domain    := host-component ("." host-component)* [":" port]
//	path      := path-component ("/" path-component)*
//	path-component := [a-z0-9]+ (("." | "_" | "__" | "-"+) [a-z0-9]+)*
//	tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//	digest    := "sha256:" [a-f0-9]{64}
//
// IPv6 registry hosts are not accepted.
var (
	imageNameRE = regexp.MustCompile(`^(?:` +
		`(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*(?::[0-9]+)?/` +
		`)?` +
		`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	imageTagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	imageDigestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

func imageProblem(img string) string {
	switch {
	case img == "":
		return "required"
	case len(img) > MaxImageLen:
		return fmt.Sprintf("must be at most %d characters, got %d", MaxImageLen, len(img))
	case !utf8.ValidString(img) || strings.IndexFunc(img, badPathRune) >= 0:
		return fmt.Sprintf("must not contain whitespace or control characters, got %q", img)
	}
	name := img
	if i := strings.IndexByte(name, '@'); i >= 0 {
		digest := name[i+1:]
		name = name[:i]
		if !imageDigestRE.MatchString(digest) {
			return fmt.Sprintf("digest %q must be \"sha256:\" followed by 64 lower-case hex digits", digest)
		}
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.Contains(name[i:], "/") {
		tag := name[i+1:]
		name = name[:i]
		if !imageTagRE.MatchString(tag) {
			return fmt.Sprintf("tag %q must be 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", tag)
		}
	}
	if !imageNameRE.MatchString(name) {
		return fmt.Sprintf("%q is not a valid image reference: want [registry[:port]/]name[:tag][@sha256:<64 hex>], with a lower-case name", img)
	}
	return ""
}
