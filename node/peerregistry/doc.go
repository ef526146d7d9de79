// Package peerregistry lets images travel peer to peer: each node serves its
// containerd content store read-only as an OCI distribution endpoint over
// the peer plane (package node/peer), and a node that lacks an image pulls
// it, by digest, with containerd's own pull through a resolver that tries
// peers first and the upstream registry last.
//
// # Protocol
//
// [Handler] implements the read-only part of the OCI distribution API: GET
// and HEAD on /v2/, /v2/<name>/blobs/<digest> and
// /v2/<name>/manifests/<digest-or-tag>. Content is addressed by digest, so
// the name is only checked against the spec's grammar. Answers carry
// Content-Length, Docker-Content-Digest and Content-Type (a manifest's
// media type comes from its mediaType field, else from its fields); ranges
// are served by http.ServeContent; errors are OCI JSON error bodies (400
// for a malformed name, digest or tag, 404 for unknown content or
// endpoints, 405 for any method but GET and HEAD). Tags are resolved by an
// optional [TagFunc] from the node's image store.
//
// [Server] serves the handler as HTTP/1.1 on libp2p streams of protocol
// [Protocol] (/shoal/registry/1): each stream is one HTTP connection, kept
// alive for further requests. Requests' contexts derive from the one given
// to [Server.Run], which is where containerd's namespace goes. On the client side [Transport] is an
// http.RoundTripper for URLs http://<peer ID>/...: it adds the member's
// address to the peerstore, dials bypassing libp2p's dial backoff (as
// node/peer's Call does) and opens a stream. The stream is already
// encrypted and authenticated by the peer plane, hence plain http.
//
// Why streams under http.Server and http.Transport (the gostream pattern),
// not go-libp2p's p2p/http: that package's client opens a stream per
// request without resetting it when the request's context is cancelled,
// does not bypass the dial backoff, and shares one protocol ID (/http/1.1)
// with every other HTTP service behind path prefixes and a .well-known
// discovery round trip. The standard net/http client and server give
// cancellation, connection reuse and timeouts for free; the adapter is a
// few lines (conn.go): a client connection is reset, not closed, when
// net/http abandons it, so the server stops writing, and a Read (client) or
// Write (server) that makes no progress for a minute fails, so a stalled
// peer cannot hold a stream or a handler forever.
//
// # Admission
//
// Only current members can connect: node/peer's connection gater refuses
// every other peer ID, in both directions, before any stream is opened. A
// non-member's request fails at the handshake and never reaches the
// handler. This package adds no check of its own.
//
// # Pulling
//
// [NewResolver] returns a containerd remotes.Resolver built on
// remotes/docker with a hosts function: the candidate peers in the order
// given (the caller puts the holders first), with pull and resolve
// capability, then the upstream registry (by default containerd's default
// registry configuration, with plain HTTP for loopback registries). A peer
// that lacks the content answers 404 and containerd tries the next host.
//
// # Verification
//
// Every full (200) body that a peer sends for a blob or a manifest by
// digest is hashed as it streams; at its end, if the digest does not
// match, the body returns a [*BadContentError] (naming the peer and the
// digest) instead of io.EOF. A Docker-Content-Digest header that names
// another digest is rejected the same way. The resolver then counts the
// peer ([Resolver.Stats]), logs it at warn, reports it to
// ResolverConfig.OnBadPeer, and skips it for every later request, including
// those of fetchers created before.
//
// containerd has by then written the bad bytes into an ingest, and its
// commit would fail on them at every retry: the caller must abort the
// ingest before retrying. [AbortIngests] does it (by digest: it aborts every
// ingest whose ref containerd derived from that digest), [BadDigest] finds
// the digest in a failed pull's error, and [RetryBadContent] runs the
// whole loop (pull, on bad content abort and retry, the bad peer now
// skipped).
//
// # Resume
//
// An interrupted transfer resumes instead of starting over, by containerd's
// own machinery. If a stream ends short, containerd's fetcher reopens the
// body with Range: bytes=<offset>- within the same fetch. If the fetch
// fails (the connection broke), the ingest keeps what was written, and the
// next fetch of the same descriptor resumes it: content.Copy seeks to the
// ingest's offset, which becomes the Range. A peer answers 206 from
// http.ServeContent.
//
// A ranged body cannot be verified on its own: the prefix came earlier,
// perhaps from another peer. containerd's commit checks the whole blob and
// fails with "unexpected commit digest"; [BadDigest] recognises that error
// too. The resolver records the last peer that sent bytes of each digest
// ([Resolver.LastSource]); [Resolver.Blame] marks it bad, and the caller
// aborts the ingest and retries (RetryBadContent does all three).
//
// # Concurrency
//
// Handler, Transport and Resolver are safe for concurrent use. Server.Run
// owns the serving goroutines; cancelling its context unregisters the
// protocol, resets the streams in flight and waits for running handlers.
//
// Throughput: see BenchmarkThroughput and BenchmarkTLSCeiling. The peer
// plane's encryption is most of the cost of a transfer, so on a CPU-bound
// machine a peer moves blobs several times slower than plain HTTP on
// loopback. A node may opt out for blob bodies: with a [PlainServer] set
// on its Handler ([Handler.SetPlain]), blob GETs are redirected to a plain
// HTTP listener with a ticket bound to the blob and the client's address;
// [Transport] follows such a redirect only to the peer's own address and
// falls back to the peer plane if the listener does not serve it (see
// plain.go).
package peerregistry
