package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sentinel errors. Errors returned by Store wrap one of them; test with
// errors.Is.
var (
	// ErrNotFound: Delete of a key that is absent or already deleted.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a conditional Put or Delete whose condition did not hold.
	// The error is a *ConflictError carrying the current version.
	ErrConflict = errors.New("store: version conflict")
	// ErrClosed: a write to a closed Store.
	ErrClosed = errors.New("store: closed")
	// ErrInvalid: an entry, key or value that fails validation (see
	// Entry.Validate), or invalid Options.
	ErrInvalid = errors.New("store: invalid entry")
)

// DefaultTombstoneHorizon is the default Options.TombstoneHorizon.
const DefaultTombstoneHorizon = 7 * 24 * time.Hour

// openTimeout bounds how long Open waits for the database file lock, which
// another process (an agent still shutting down) may hold.
const openTimeout = 5 * time.Second

var (
	bucketEntries = []byte("entries") // key -> JSON Entry
	bucketMeta    = []byte("meta")    // metaHLC -> JSON Timestamp
	metaHLC       = []byte("hlc")     // HLC high-water mark saved when tombstones are collected
)

// ConflictError is the error of a conditional write whose condition did not
// hold. It wraps ErrConflict.
type ConflictError struct {
	// Key is the key written.
	Key string
	// Expected is the condition: the version the caller expected, zero for
	// "must not exist".
	Expected Version
	// Current is the key's current version; zero if the key is absent.
	Current Version
	// Deleted reports whether the current entry is a tombstone.
	Deleted bool
}

// Error implements error.
func (e *ConflictError) Error() string {
	cur := "absent"
	switch {
	case e.Current.IsZero():
	case e.Deleted:
		cur = "deleted at " + e.Current.String()
	default:
		cur = e.Current.String()
	}
	want := "absent or deleted"
	if !e.Expected.IsZero() {
		want = e.Expected.String()
	}
	return fmt.Sprintf("%v: key %q: current version %s, expected %s", ErrConflict, e.Key, cur, want)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Options configures a Store.
type Options struct {
	// Node is this node's name, the tie-break in the versions it writes.
	// Required; must be a valid node name (1 to MaxNodeLen bytes of UTF-8
	// without control characters or white space) and unique in the cluster.
	Node string
	// Clock is the physical clock behind the store's HLC and tombstone
	// collection. Default SystemClock.
	Clock Clock
	// TombstoneHorizon is the age (by version wall time) after which
	// CollectTombstones removes a tombstone. Default DefaultTombstoneHorizon
	// (7 days) when zero or negative. A node offline for longer than this
	// can resurrect a deleted key; see the package documentation.
	TombstoneHorizon time.Duration
	// NoSync skips fsync on commit. A crash can then lose acknowledged
	// writes: for benchmarks and tests only.
	NoSync bool
	// OnChange, if set, is called with every entry that a local write or a
	// merge changed, after the change is persisted, in commit order. Calls
	// are never concurrent with each other, and are made without any store
	// lock held, so the callback may read the store (and even write to it).
	// A call may come from the goroutine of a later write rather than the
	// one that made the change, so it must not block (hand the entry to a
	// channel) and must not panic. It is not called for collected
	// tombstones.
	OnChange func(Entry)
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

// Store is a replicated last-writer-wins map persisted in bbolt and served
// from memory. It is safe for concurrent use.
type Store struct {
	opts Options // immutable after Open, defaults filled
	log  *slog.Logger
	db   *bolt.DB
	hlc  *HLC

	mergedInvalid atomic.Uint64 // entries rejected by Merge since Open

	// wmu serializes writers (Put, Delete, Merge, CollectTombstones, Close)
	// across their bbolt transaction, which gives the commit order. A holder
	// of wmu may read entries without mu, since entries only change under
	// both.
	wmu    sync.Mutex
	closed bool // guarded by wmu

	mu      sync.RWMutex     // guards all following fields
	entries map[string]Entry // every entry, tombstones included
	sum     *summary         // cached Digest and Versions; nil when stale

	cbMu       sync.Mutex // guards all following fields
	pending    []Entry    // changes committed but not yet passed to OnChange
	delivering bool       // a goroutine is running OnChange calls
}

// summary is the cached anti-entropy view of the store.
type summary struct {
	digest   [32]byte
	versions []KeyVersion
}

// Open opens (creating it with mode 0600 if needed) the bbolt database at
// path and loads every entry into memory. The store's HLC is advanced past
// the highest version stored, so a restarted node never reuses a timestamp
// even if its physical clock went back. A database locked by another process
// makes Open fail after a few seconds.
func Open(path string, opts Options) (*Store, error) {
	if err := checkNode(opts.Node); err != nil {
		return nil, fmt.Errorf("%w: Options.Node: %v", ErrInvalid, err)
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock
	}
	if opts.TombstoneHorizon <= 0 {
		opts.TombstoneHorizon = DefaultTombstoneHorizon
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{
		opts:    opts,
		log:     opts.Logger.With("component", "store"),
		db:      db,
		hlc:     NewHLC(opts.Clock),
		entries: make(map[string]Entry),
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	st := s.Stats()
	s.log.Info("store opened", "path", path, "live", st.Live, "tombstones", st.Tombstones, "hlc", s.hlc.Last())
	return s, nil
}

// load creates the buckets if needed and reads every entry into memory.
func (s *Store) load() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if raw := meta.Get(metaHLC); raw != nil {
			var ts Timestamp
			if err := json.Unmarshal(raw, &ts); err != nil {
				return fmt.Errorf("meta %s: %w", metaHLC, err)
			}
			s.hlc.Update(ts)
		}
		b, err := tx.CreateBucketIfNotExists(bucketEntries)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			if e.Key != string(k) {
				return fmt.Errorf("entry %q: stored under key %q", e.Key, k)
			}
			e, err := check(e)
			if err != nil {
				return fmt.Errorf("stored entry: %w: %v", ErrInvalid, err)
			}
			s.entries[e.Key] = e
			s.hlc.Update(e.Version.Time)
			return nil
		})
	})
}

// Close closes the database. Later writes return ErrClosed; reads keep
// answering from memory. Closing twice is a no-op.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// HLC returns the store's hybrid logical clock. Callers stamping their own
// events (a replica status document, say) should use it, so that those
// timestamps order consistently with the store's writes.
func (s *Store) HLC() *HLC { return s.hlc }

// Put writes value under key as a local write, stamped
// Version{HLC().Now(), Options.Node}, and persists it (with fsync unless
// NoSync) before returning. value must be valid JSON other than null, at most
// MaxValueSize bytes once compacted; the store keeps a compacted copy.
//
// If cond is not nil the write is conditional: the key's current version
// (tombstones included) must equal *cond, and a zero *cond means the key must
// be absent or deleted; otherwise Put returns a *ConflictError (wrapping
// ErrConflict) and changes nothing.
//
// The returned entry's Value is shared with the store: do not modify it.
func (s *Store) Put(key string, value []byte, cond *Version) (Entry, error) {
	return s.write(key, value, false, cond)
}

// Delete writes a tombstone for key, as Put writes a value. It returns
// ErrNotFound if key is absent or already deleted; cond is as in Put.
func (s *Store) Delete(key string, cond *Version) (Entry, error) {
	return s.write(key, nil, true, cond)
}

func (s *Store) write(key string, value []byte, deleted bool, cond *Version) (Entry, error) {
	s.wmu.Lock()
	e, err := s.writeLocked(key, value, deleted, cond)
	s.wmu.Unlock()
	if err != nil {
		return Entry{}, err
	}
	s.deliver()
	return e, nil
}

func (s *Store) writeLocked(key string, value []byte, deleted bool, cond *Version) (Entry, error) {
	if s.closed {
		return Entry{}, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	value, err := canonicalValue(deleted, value)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: key %q: %v", ErrInvalid, key, err)
	}
	cur, exists := s.entries[key]
	if deleted && (!exists || cur.Deleted) {
		return Entry{}, fmt.Errorf("%w: key %q", ErrNotFound, key)
	}
	if cond != nil {
		var ok bool
		if cond.IsZero() {
			ok = !exists || cur.Deleted
		} else {
			ok = exists && cur.Version == *cond
		}
		if !ok {
			return Entry{}, &ConflictError{Key: key, Expected: *cond, Current: cur.Version, Deleted: cur.Deleted}
		}
	}
	e := Entry{
		Key:     key,
		Version: Version{Time: s.hlc.Now(), Node: s.opts.Node},
		Deleted: deleted,
		Value:   value,
	}
	if err := s.persist([]Entry{e}, nil, nil); err != nil {
		return Entry{}, err
	}
	s.commit([]Entry{e}, nil)
	return e, nil
}

// Merge applies remote entries under last-writer-wins: an entry replaces the
// local one if its Version is higher; an equal Version is a no-op. (Should two
// different entries ever carry the same Version, a tombstone wins, then the
// bytewise greater value, so the result still does not depend on order.)
// Merge is commutative, associative and idempotent: any order, grouping or
// repetition of the same entries yields the same map.
//
// Entries failing Entry.Validate are skipped, counted in
// Stats.MergedInvalid and logged; the valid ones are still applied and Merge
// then returns them together with an error wrapping ErrInvalid. The HLC is
// advanced past every valid remote version. All changes are persisted in one
// transaction (with fsync unless NoSync) before Merge returns them, sorted by
// key, in canonical form (values compacted). Their Values are shared with the
// store: do not modify them.
func (s *Store) Merge(entries []Entry) ([]Entry, error) {
	s.wmu.Lock()
	changed, invalid, firstErr, err := s.mergeLocked(entries)
	s.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	s.deliver()
	if len(changed) > 0 {
		s.log.Debug("merged entries", "received", len(entries), "changed", len(changed))
	}
	if invalid > 0 {
		s.mergedInvalid.Add(uint64(invalid))
		s.log.Warn("dropped invalid entries in merge", "received", len(entries), "invalid", invalid, "first", firstErr)
		return changed, fmt.Errorf("%w: skipped %d of %d entries (first: %v)", ErrInvalid, invalid, len(entries), firstErr)
	}
	return changed, nil
}

func (s *Store) mergeLocked(entries []Entry) (changed []Entry, invalid int, firstErr, err error) {
	if s.closed {
		return nil, 0, nil, ErrClosed
	}
	best := make(map[string]Entry)
	for _, raw := range entries {
		e, err := check(raw)
		if err != nil {
			invalid++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		s.hlc.Update(e.Version.Time)
		cur, ok := best[e.Key]
		if !ok {
			cur, ok = s.entries[e.Key]
		}
		if ok && !e.supersedes(cur) {
			continue
		}
		best[e.Key] = e
	}
	if len(best) == 0 {
		return nil, invalid, firstErr, nil
	}
	changed = make([]Entry, 0, len(best))
	for _, e := range best {
		changed = append(changed, e)
	}
	slices.SortFunc(changed, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	if err := s.persist(changed, nil, nil); err != nil {
		return nil, invalid, firstErr, err
	}
	s.commit(changed, nil)
	return changed, invalid, firstErr, nil
}

// CollectTombstones deletes the tombstones whose version wall time is older
// than now minus Options.TombstoneHorizon and returns how many it deleted.
func (s *Store) CollectTombstones() (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	cutoff := s.opts.Clock.Now().Add(-s.opts.TombstoneHorizon).UnixNano()
	var dead []string
	for k, e := range s.entries {
		if e.Deleted && e.Version.Time.Wall < cutoff {
			dead = append(dead, k)
		}
	}
	if len(dead) == 0 {
		return 0, nil
	}
	// The collected tombstones may hold the highest versions this node ever
	// saw; save the HLC so that Open can still advance past them.
	hwm := s.hlc.Last()
	if err := s.persist(nil, dead, &hwm); err != nil {
		return 0, err
	}
	s.commit(nil, dead)
	s.log.Info("collected tombstones", "count", len(dead), "horizon", s.opts.TombstoneHorizon)
	return len(dead), nil
}

// persist writes put, deletes del and saves the HLC high-water mark hwm if
// not nil, in one bbolt transaction. Called with wmu held.
func (s *Store) persist(put []Entry, del []string, hwm *Timestamp) error {
	encoded := make([][]byte, len(put))
	for i, e := range put {
		b, err := encodeJSON(e)
		if err != nil {
			return fmt.Errorf("store: encode entry %q: %w", e.Key, err)
		}
		encoded[i] = b
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		for i, e := range put {
			if err := b.Put([]byte(e.Key), encoded[i]); err != nil {
				return err
			}
		}
		for _, k := range del {
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
		if hwm != nil {
			raw, err := encodeJSON(*hwm)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketMeta).Put(metaHLC, raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: persist: %w", err)
	}
	return nil
}

// encodeJSON encodes v without HTML escaping, so that a canonical
// (compacted) json.RawMessage inside v is written byte for byte.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// commit applies persisted changes to memory and queues them for OnChange.
// Called with wmu held, so the queue is in commit order.
func (s *Store) commit(put []Entry, del []string) {
	s.mu.Lock()
	for _, e := range put {
		s.entries[e.Key] = e
	}
	for _, k := range del {
		delete(s.entries, k)
	}
	s.sum = nil
	s.mu.Unlock()
	if s.opts.OnChange != nil && len(put) > 0 {
		s.cbMu.Lock()
		s.pending = append(s.pending, put...)
		s.cbMu.Unlock()
	}
}

// deliver passes queued changes to OnChange, in order, unless another
// goroutine is already doing so (it will pick them up). Called without wmu.
func (s *Store) deliver() {
	if s.opts.OnChange == nil {
		return
	}
	s.cbMu.Lock()
	if s.delivering {
		s.cbMu.Unlock()
		return
	}
	s.delivering = true
	done := false
	defer func() {
		if !done { // OnChange panicked: let the next writer deliver the rest
			s.cbMu.Lock()
			s.delivering = false
			s.cbMu.Unlock()
		}
	}()
	for len(s.pending) > 0 {
		batch := s.pending
		s.pending = nil
		s.cbMu.Unlock()
		for _, e := range batch {
			s.opts.OnChange(e)
		}
		s.cbMu.Lock()
	}
	s.delivering = false
	s.cbMu.Unlock()
	done = true
}

// Get returns the live entry for key; ok is false if key is absent or
// deleted. The returned Value is shared: do not modify it.
func (s *Store) Get(key string) (e Entry, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok = s.entries[key]
	if !ok || e.Deleted {
		return Entry{}, false
	}
	return e, true
}

// Lookup returns the entry for key, tombstones included. The returned Value
// is shared: do not modify it.
func (s *Store) Lookup(key string) (e Entry, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok = s.entries[key]
	return e, ok
}

// List returns the live entries sorted by key. The returned Values are
// shared: do not modify them.
func (s *Store) List() []Entry {
	s.mu.RLock()
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		if !e.Deleted {
			out = append(out, e)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Entries returns the stored entries (tombstones included) for keys, in the
// order given; unknown keys are skipped. The returned Values are shared: do
// not modify them.
func (s *Store) Entries(keys []string) []Entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		if e, ok := s.entries[k]; ok {
			out = append(out, e)
		}
	}
	return out
}

// Digest returns a SHA-256 hash over every entry, tombstones included, sorted
// by key: each entry contributes its key, version and deleted flag. Two
// stores with the same Digest hold the same map (values are implied by
// versions). The result is cached until the next change.
func (s *Store) Digest() [32]byte { return s.summary().digest }

// Versions returns every entry's KeyVersion, tombstones included, sorted by
// key.
func (s *Store) Versions() []KeyVersion { return slices.Clone(s.summary().versions) }

func (s *Store) summary() *summary {
	s.mu.RLock()
	sum := s.sum
	s.mu.RUnlock()
	if sum != nil {
		return sum
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sum == nil {
		s.sum = summarize(s.entries)
	}
	return s.sum
}

// digestDomain prefixes the digest input, so the hash format can change.
const digestDomain = "shoal/store digest v1\n"

func summarize(entries map[string]Entry) *summary {
	sum := &summary{versions: make([]KeyVersion, 0, len(entries))}
	for _, e := range entries {
		sum.versions = append(sum.versions, e.KeyVersion())
	}
	slices.SortFunc(sum.versions, func(a, b KeyVersion) int { return strings.Compare(a.Key, b.Key) })
	h := sha256.New()
	h.Write([]byte(digestDomain))
	var buf []byte
	for _, kv := range sum.versions {
		buf = buf[:0]
		buf = binary.AppendUvarint(buf, uint64(len(kv.Key)))
		buf = append(buf, kv.Key...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(kv.Version.Time.Wall))
		buf = binary.BigEndian.AppendUint32(buf, kv.Version.Time.Logical)
		buf = binary.AppendUvarint(buf, uint64(len(kv.Version.Node)))
		buf = append(buf, kv.Version.Node...)
		if kv.Deleted {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		h.Write(buf)
	}
	h.Sum(sum.digest[:0])
	return sum
}

// Stats holds counts for metrics and tests.
type Stats struct {
	// Live is the number of live entries.
	Live int
	// Tombstones is the number of tombstones.
	Tombstones int
	// MergedInvalid is the number of entries Merge rejected since Open.
	MergedInvalid uint64
}

// Stats returns the store's current counts.
func (s *Store) Stats() Stats {
	st := Stats{MergedInvalid: s.mergedInvalid.Load()}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.entries {
		if e.Deleted {
			st.Tombstones++
		} else {
			st.Live++
		}
	}
	return st
}
