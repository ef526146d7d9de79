// Package spec defines a service's desired state (Spec) as users write it and
// as every node replicates it, and the rules that make a Spec acceptable.
//
// The life of a spec from outside input is always the same:
//
//	s, err := spec.Decode(body) // strict JSON, then Normalize, then Validate
//
// Decode rejects unknown or duplicate fields, wrong JSON types, trailing data
// and anything Validate rejects, with messages that name the field
// ("spec: unknown field \"replica\"", "spec: replicas: must be between 0 and
// 1000, got 1001"). Every error Decode returns is the client's fault (an HTTP
// 400). Code that builds a Spec in Go (the CLI) calls Normalize and Validate
// itself.
//
// Normalize fills defaults so that every node stores byte-for-byte the same
// spec: port protocol "tcp", network "bridge", health interval 5s and timeout
// min(2s, interval), and empty maps and slices become nil. It never reorders
// anything (the first port is the one HTTP health probes use).
//
// # Label rules
//
// Constraint keys and values (and node labels, see ValidLabel) follow
// Kubernetes' label syntax:
//
//   - key: an optional prefix and a name separated by '/'. The name is 1 to 63
//     characters of [A-Za-z0-9._-], starting and ending with a letter or digit.
//     The prefix is a lower-case DNS subdomain of at most 253 characters
//     (e.g. "topology.example.com/zone").
//   - value: empty, or 1 to 63 characters of [A-Za-z0-9._-] starting and ending
//     with a letter or digit.
//
// # Host networking
//
// With Network "host" a replica shares its node's network namespace, where the
// node's load balancer already listens on every Published port. The container
// therefore cannot listen on a fixed port: the runtime picks a free port for
// each replica and passes it in the environment as $PORT, and Target is only
// informational. Because there is a single $PORT, a host-mode service has at
// most one port.
//
// Spec deliberately has no MarshalJSON or UnmarshalJSON method: api.Service
// embeds it, and such a method would be promoted and replace the encoding of
// the whole Service.
//
// # Concurrency
//
// Spec values are plain data. Decode, Validate, ValidName, ValidLabel and the
// parse functions are safe for concurrent use; Normalize mutates its receiver
// (including the Health it points to and the Ports backing array).
package spec
