// Package peer is Shoal's peer plane: a go-libp2p host that carries
// node-to-node traffic: desired-state sync, replica status, logs, and image
// content (package peerregistry).
//
// Every node has an Ed25519 identity kept in its data dir
// ([LoadOrCreateIdentity]); its peer ID is published in the node's gossip
// tags, and peers read it back with [PeerIDFromString]. The host ([New])
// listens on TCP only, secures connections with TLS 1.3 (libp2p's TLS
// handshake; Noise is offered too, as a fallback) and multiplexes them
// with yamux. Relay, NAT port mapping, hole punching, AutoNAT probing, mDNS,
// ping and metrics are all off: cluster members reach each other directly
// (zero-conf discovery on a LAN is Shoal's own, package gossip/mdns).
//
// # Admission
//
// A connection gater admits only peers that the caller reports as current
// cluster members ([Config.Allow]); it runs for every outbound dial and, after
// the security handshake has authenticated the remote's ID, for every connection
// in either direction. An optional address filter ([Config.AllowAddr]) lets
// tests inject partitions. The gater guards new connections only: when a
// member leaves (or a test partitions the network) the caller also calls
// [Host.ClosePeer].
//
// Resource manager: the null one. libp2p's default limiter caps connections
// per source IP (8) and connection rate per subnet (0.2/s after a burst of
// 16), which breaks test clusters that share one loopback IP and slows
// reconnection after a partition heals, while its per-peer stream caps guard
// against strangers, which the gater already keeps out. The residual
// exposure is pre-handshake: anyone who can reach the port can hold a
// handshake open for up to libp2p's 15 s accept timeout. Callers who want to
// close that too can make AllowAddr admit only members' IPs; it runs before
// the handshake. Connection manager: none; the cluster's membership bounds
// the number of connections, and trimming would only cause redials.
//
// # Request/response
//
// [Host.Handle] and [Host.Call] implement one-shot RPCs: the caller opens a
// stream for a protocol ID, writes one request frame and half-closes; the
// handler answers with one response frame (kind [FrameOK]) or one error frame
// (kind [FrameError], the error's message), and the stream is closed. Frames
// ([WriteFrame], [ReadFrame]) are exported so that streaming protocols built
// on [Host.Libp2p] can reuse them.
//
// Call bypasses libp2p's dial backoff: membership comes from gossip, and a
// peer that just came back must be reachable at once rather than after a
// backoff of five seconds or more.
//
// # Concurrency
//
// A [Host] is safe for concurrent use. Handlers run concurrently, one
// goroutine per inbound stream. [Host.Close] cancels the handlers' contexts,
// resets their streams and waits for them to return.
//
// libp2p logs through its own slog shim (package gologshim), configured by
// GOLOG_LOG_LEVEL; this package does not redirect it.
package peer
