package node

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/node/store"
)

// How desired state spreads (see DESIGN.md, "How data flows"):
//
//  1. The node that accepts a write persists it, then pushes the entry
//     straight to every live member over the peer plane. This is the fast
//     path: one round trip on a LAN.
//  2. It also gossips a small notice (key + version + origin). A node that
//     missed the push and sees a notice for a version newer than its own
//     pulls the entry from the origin.
//  3. Every SyncInterval each node runs anti-entropy with a random live
//     peer: compare digests and, when they differ, exchange version lists
//     and the entries each side lacks. A member that joins (or returns
//     from a partition) is synced at once by a few nodes.
//
// Merging is last-writer-wins by (HLC, node name), so every path may
// deliver anything any number of times in any order.

// stateProto is the peer-plane protocol for state sync.
const stateProto = protocol.ID("/shoal/state/1")

// maxNotice caps a gossip notice we accept.
const maxNotice = 1024

// notice is the gossip announcement of a write.
type notice struct {
	Key     string `json:"k"`
	Version string `json:"v"`
	Origin  string `json:"o"`
}

// syncRequest is every request of stateProto.
type syncRequest struct {
	// Op is "digest" (compare digests; answer with versions if they
	// differ) or "push" (merge Entries; answer with the entries for Want).
	Op      string        `json:"op"`
	From    string        `json:"from"`
	Digest  string        `json:"digest,omitempty"`
	Entries []store.Entry `json:"entries,omitempty"`
	Want    []string      `json:"want,omitempty"`
}

// syncResponse answers a syncRequest.
type syncResponse struct {
	Equal    bool               `json:"equal,omitempty"`
	Versions []store.KeyVersion `json:"versions,omitempty"`
	Entries  []store.Entry      `json:"entries,omitempty"`
}

// errBadMessage marks a malformed peer or gossip message.
var errBadMessage = errors.New("node: malformed message")

// decodeSyncRequest parses and checks a peer's request.
func decodeSyncRequest(b []byte) (syncRequest, error) {
	var r syncRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	if dec.More() {
		return r, fmt.Errorf("%w: trailing data", errBadMessage)
	}
	switch r.Op {
	case "digest":
		if _, err := decodeDigest(r.Digest); err != nil {
			return r, err
		}
	case "push":
	default:
		return r, fmt.Errorf("%w: unknown op %q", errBadMessage, r.Op)
	}
	if len(r.Want) > 100000 {
		return r, fmt.Errorf("%w: want list of %d keys", errBadMessage, len(r.Want))
	}
	return r, nil
}

// decodeSyncResponse parses a peer's answer.
func decodeSyncResponse(b []byte) (syncResponse, error) {
	var r syncResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	return r, nil
}

// decodeNotice parses a gossip notice.
func decodeNotice(b []byte) (notice, store.Version, error) {
	var n notice
	if len(b) > maxNotice {
		return n, store.Version{}, fmt.Errorf("%w: notice of %d bytes", errBadMessage, len(b))
	}
	if err := json.Unmarshal(b, &n); err != nil {
		return n, store.Version{}, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	if err := spec.ValidName(n.Key); err != nil {
		return n, store.Version{}, fmt.Errorf("%w: key: %v", errBadMessage, err)
	}
	v, err := store.ParseVersion(n.Version)
	if err != nil {
		return n, store.Version{}, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	if n.Origin == "" {
		return n, store.Version{}, fmt.Errorf("%w: no origin", errBadMessage)
	}
	return n, v, nil
}

func decodeDigest(s string) ([32]byte, error) {
	var d [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("%w: bad digest %q", errBadMessage, s)
	}
	copy(d[:], b)
	return d, nil
}

// checkEntries drops entries whose value is not a valid spec for their
// key. A peer is a member, but its messages are still outside input.
func checkEntries(in []store.Entry) (ok []store.Entry, bad int) {
	ok = in[:0:0]
	for _, e := range in {
		if e.Deleted {
			if spec.ValidName(e.Key) != nil {
				bad++
				continue
			}
			ok = append(ok, e)
			continue
		}
		s, err := spec.Decode(e.Value)
		if err != nil || s.Name != e.Key {
			bad++
			continue
		}
		ok = append(ok, e)
	}
	return ok, bad
}

// registerSyncHandlers serves stateProto.
func (a *Agent) registerSyncHandlers() {
	a.host.Handle(stateProto, func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		r, err := decodeSyncRequest(req)
		if err != nil {
			a.metrics.droppedPeer.Inc()
			a.log.Warn("dropped bad peer message", "from", from, "err", err)
			return nil, err
		}
		var resp syncResponse
		switch r.Op {
		case "digest":
			d, _ := decodeDigest(r.Digest)
			if d == a.store.Digest() {
				resp.Equal = true
			} else {
				resp.Versions = a.store.Versions()
			}
		case "push":
			if err := a.merge(r.Entries, r.From); err != nil {
				return nil, err
			}
			if len(r.Want) > 0 {
				resp.Entries = a.store.Entries(r.Want)
			}
		}
		return json.Marshal(resp)
	})
}

// merge applies entries from a peer, dropping and counting invalid ones.
func (a *Agent) merge(entries []store.Entry, from string) error {
	if len(entries) == 0 {
		return nil
	}
	good, bad := checkEntries(entries)
	good = a.dropExpiredTombstones(good)
	if bad > 0 {
		a.metrics.droppedPeer.Add(float64(bad))
		a.log.Warn("dropped invalid entries from peer", "from", from, "count", bad)
	}
	changed, err := a.store.Merge(good)
	if len(changed) > 0 {
		a.metrics.merged.Add(float64(len(changed)))
	}
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			a.metrics.droppedPeer.Inc()
			a.log.Warn("store rejected entries from peer", "from", from, "err", err)
			return nil
		}
		return err
	}
	return nil
}

// dropExpiredTombstones leaves out tombstones older than the horizon: this
// node may already have collected them, and taking them back would only
// churn digests until the next collection.
func (a *Agent) dropExpiredTombstones(in []store.Entry) []store.Entry {
	cutoff := a.cfg.Clock.Now().Add(-a.cfg.TombstoneHorizon)
	out := in[:0]
	for _, e := range in {
		if e.Deleted && e.Version.Time.Time().Before(cutoff) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// call sends one request to a member and decodes the answer.
func (a *Agent) call(ctx context.Context, m gossip.Member, req syncRequest) (syncResponse, error) {
	id, addr, err := peerOf(m)
	if err != nil {
		return syncResponse{}, err
	}
	req.From = a.cfg.Name
	b, err := json.Marshal(req)
	if err != nil {
		return syncResponse{}, err
	}
	out, err := a.host.Call(ctx, id, addr, stateProto, b)
	if err != nil {
		return syncResponse{}, err
	}
	resp, err := decodeSyncResponse(out)
	if err != nil {
		a.metrics.droppedPeer.Inc()
		a.log.Warn("dropped bad peer answer", "from", m.Name, "err", err)
	}
	return resp, err
}

// announce spreads a local write: eager push to every live member, and a
// gossip notice for whoever the push misses.
func (a *Agent) announce(e store.Entry) {
	n, _ := json.Marshal(notice{Key: e.Key, Version: e.Version.String(), Origin: a.cfg.Name})
	if err := a.cluster.Notify(n); err != nil {
		a.log.Warn("gossip notice failed", "key", e.Key, "err", err)
	}
	peers := a.livePeers()
	sem := make(chan struct{}, 32)
	for _, m := range peers {
		sem <- struct{}{}
		a.goBg(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(a.runCtx, 5*time.Second)
			defer cancel()
			if _, err := a.call(ctx, m, syncRequest{Op: "push", Entries: []store.Entry{e}}); err != nil {
				a.metrics.pushErrors.Inc()
				a.log.Debug("push failed; gossip and anti-entropy will repair", "to", m.Name, "err", err)
			}
		})
	}
}

// livePeers are the alive members other than this node.
func (a *Agent) livePeers() []gossip.Member {
	var out []gossip.Member
	for _, m := range a.members.Load().list {
		if m.Name != a.cfg.Name && m.Status == gossip.StatusAlive && m.TagsErr == nil {
			out = append(out, m)
		}
	}
	return out
}

// handleNotice pulls an announced entry if ours is older.
func (a *Agent) handleNotice(ctx context.Context, payload []byte) {
	n, v, err := decodeNotice(payload)
	if err != nil {
		a.metrics.droppedNotices.Inc()
		a.log.Warn("dropped bad gossip notice", "err", err)
		return
	}
	if n.Origin == a.cfg.Name {
		return
	}
	if cur, ok := a.store.Lookup(n.Key); ok && cur.Version.Compare(v) >= 0 {
		return
	}
	var origin *gossip.Member
	for _, m := range a.members.Load().list {
		if m.Name == n.Origin && m.Status == gossip.StatusAlive {
			origin = &m
			break
		}
	}
	if origin == nil {
		return // anti-entropy will get it from someone else
	}
	a.goBg(func() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := a.call(ctx, *origin, syncRequest{Op: "push", Want: []string{n.Key}})
		if err != nil {
			a.log.Debug("pull after notice failed", "from", origin.Name, "err", err)
			return
		}
		if err := a.merge(resp.Entries, origin.Name); err != nil {
			a.log.Warn("merge after notice failed", "err", err)
		}
	})
}

// antiEntropyLoop syncs with a random live peer every SyncInterval
// (jittered by up to a quarter so nodes do not march in step).
func (a *Agent) antiEntropyLoop(ctx context.Context) {
	for {
		d := a.cfg.SyncInterval
		d += time.Duration(rand.Int64N(int64(d)/4 + 1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		a.syncSome(ctx, 1)
	}
}

// syncSome runs anti-entropy with up to n random live peers, concurrently.
func (a *Agent) syncSome(ctx context.Context, n int) {
	peers := a.livePeers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	if len(peers) > n {
		peers = peers[:n]
	}
	for _, m := range peers {
		a.goBg(func() { a.syncWith(ctx, m) })
	}
}

// maybeSyncWithJoiner gives a member that joined (or came back) a full
// sync. Each node does so with a probability that makes about four nodes
// do it, so a join does not cost every node a round.
func (a *Agent) maybeSyncWithJoiner(ctx context.Context, m gossip.Member) {
	alive := len(a.livePeers())
	if alive > 4 && rand.IntN(alive) >= 4 {
		return
	}
	a.goBg(func() { a.syncWith(ctx, m) })
}

// syncWith runs one anti-entropy round with m: digest, then versions, then
// both directions of the difference in one push.
func (a *Agent) syncWith(ctx context.Context, m gossip.Member) {
	a.syncMu.Lock()
	if a.inflight[m.Name] {
		a.syncMu.Unlock()
		return
	}
	a.inflight[m.Name] = true
	a.syncMu.Unlock()
	defer func() {
		a.syncMu.Lock()
		delete(a.inflight, m.Name)
		a.syncMu.Unlock()
	}()

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a.metrics.syncRounds.Inc()
	d := a.store.Digest()
	resp, err := a.call(ctx, m, syncRequest{Op: "digest", Digest: hex.EncodeToString(d[:])})
	if err != nil {
		a.metrics.syncErrors.Inc()
		a.log.Debug("anti-entropy failed", "peer", m.Name, "err", err)
		return
	}
	if resp.Equal {
		return
	}
	want, give := diffVersions(a.store.Versions(), resp.Versions)
	if len(want) == 0 && len(give) == 0 {
		return
	}
	a.log.Debug("anti-entropy repairing", "peer", m.Name, "want", len(want), "give", len(give))
	resp, err = a.call(ctx, m, syncRequest{Op: "push", Entries: a.store.Entries(give), Want: want})
	if err != nil {
		a.metrics.syncErrors.Inc()
		return
	}
	if err := a.merge(resp.Entries, m.Name); err != nil {
		a.log.Warn("anti-entropy merge failed", "peer", m.Name, "err", err)
	}
}

// diffVersions compares two sorted version lists: want are keys where
// theirs is newer, give keys where ours is.
func diffVersions(ours, theirs []store.KeyVersion) (want, give []string) {
	mine := make(map[string]store.Version, len(ours))
	for _, kv := range ours {
		mine[kv.Key] = kv.Version
	}
	seen := make(map[string]bool, len(theirs))
	for _, kv := range theirs {
		seen[kv.Key] = true
		if v, ok := mine[kv.Key]; !ok || kv.Version.Compare(v) > 0 {
			want = append(want, kv.Key)
		} else if v.Compare(kv.Version) > 0 {
			give = append(give, kv.Key)
		}
	}
	for _, kv := range ours {
		if !seen[kv.Key] {
			give = append(give, kv.Key)
		}
	}
	return want, give
}
