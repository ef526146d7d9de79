// Package node is the Shoal agent: it wires the gossip plane (membership),
// the peer plane (libp2p, node-to-node bulk traffic), the replicated
// desired state (an LWW map persisted in bbolt) and the HTTP API together.
//
// A write accepted by any node's API is persisted (fsynced) before the API
// answers, then pushed to every live member over the peer plane, announced
// by a gossip notice for whoever missed the push, and repaired by periodic
// anti-entropy. See sync.go for the protocol.
//
// # Concurrency
//
// New only validates and builds. Run starts every goroutine and owns them:
// when its context ends it stops them, leaves the cluster (unless Kill was
// called, which simulates a crash), and closes every plane.
package node
