// Package store is Shoal's replicated desired-state store: a last-writer-wins
// (LWW) map from a string key to an opaque JSON value, persisted in bbolt and
// served from memory.
//
// The package knows nothing about services, gossip or networking. It offers
// local writes (Put, Delete), merges of entries received from peers (Merge),
// summaries for anti-entropy (Digest, Versions, Entries) and tombstone
// collection (CollectTombstones); moving entries between nodes is the
// caller's job.
//
// # Semantics
//
// Every write is stamped with a Version: the writing node's hybrid logical
// clock (HLC) reading, with the node name as tie-break. Versions are totally
// ordered, and for a given key the entry with the highest Version wins,
// wherever and in whatever order it arrives. Merge is therefore commutative,
// associative and idempotent, so replicas that have seen the same set of
// entries hold the same map and the same Digest. The HLC stays close to
// physical time, so of two concurrent writes the later one (by wall clock,
// within clock skew) wins; a write made after observing another (a merge
// advances the HLC past every remote version) always beats it.
//
// A Delete writes a tombstone: an entry with Deleted set and no value, which
// beats older writes like any other entry. Tombstones are kept for
// Options.TombstoneHorizon (by their version's wall time) and then removed by
// CollectTombstones. The caveat, the same as Cassandra's gc_grace_seconds: a
// node that was offline for longer than the horizon, and still holds an older
// live entry for a key whose tombstone everyone else has collected, brings
// that key back to life when it rejoins. Keep the horizon well above the
// longest outage after which a node may return with its old data directory.
//
// Local writes and merges are persisted with fsync (unless Options.NoSync)
// before the call returns, so an acknowledged write survives a crash. On
// Open the HLC is advanced past the highest version on disk, so a restarted
// node never reuses a timestamp even if its physical clock went back.
//
// Values are stored in canonical form (compacted JSON, a null value meaning
// none). Entries from outside are validated (see Entry.Validate) and invalid
// ones are dropped and counted, never applied.
//
// # Concurrency
//
// A Store is safe for concurrent use. Reads (Get, Lookup, List, Entries,
// Digest, Versions, Stats) are served from memory under a read lock and never
// wait for disk. Writes (Put, Delete, Merge, CollectTombstones) are
// serialized and hold the write lock across their bbolt transaction; reads
// proceed meanwhile and see a write once it is persisted. Options.OnChange is
// called without any lock held, in commit order, never concurrently with
// itself, possibly from the goroutine of a later write: it must not block.
// Values returned by reads are shared with the store and must not be
// modified; values passed in are copied.
//
// HLC is safe for concurrent use on its own.
package store
