// Package gossip is Shoal's membership and dissemination plane. It wraps
// hashicorp/serf (over hashicorp/memberlist) and gives the agent:
//
//   - membership with failure detection: who is in the cluster, at which
//     address, and whether it is alive, suspect, failed or gone;
//   - node tags ([Tags]): the peer ID, API address, capacity, labels and
//     runtime readiness every node advertises, decoded and validated;
//   - notices: small payloads broadcast to every member ([Cluster.Notify]);
//   - joining by seed address with retry and backoff ([Cluster.Join]),
//     rejoining known peers after a restart from a snapshot file, and
//     AES-GCM gossip encryption with a persisted keyring.
//
// It owns nothing about containers or desired state.
//
// # Lifecycle
//
// [New] binds the gossip sockets and starts the event pump but does not
// contact anyone; [Cluster.Join] contacts seeds; [Cluster.Leave] announces a
// graceful departure and shuts down; [Cluster.Shutdown] stops without a
// word, which the others see as a crash.
//
// # Events
//
// Membership changes and notices leave the package on exactly one channel,
// [Cluster.Events], in the order serf produced them. The channel is buffered
// ([Config.EventBuffer]); serf is never blocked by a slow consumer: when the
// buffer is full, events are dropped and counted ([Stats.EventsDropped]).
// A consumer that may have missed events recovers by reading
// [Cluster.Members], which is always current. The local node's own events
// (its join at start, its tag updates, its own notices) are delivered too.
//
// # Concurrency
//
// All methods of [Cluster] are safe for concurrent use. [Cluster.Events]
// must have a single consumer. [Tags] values are plain data.
package gossip
