package node

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
)

// Replica status spreads like desired state, but each document has one
// writer: every node publishes the status of the replicas it runs as a
// document (node name, version, replicas) and is its only author.
//
//  1. When its replicas change, a node pushes its document to every
//     member alive or suspect over the peer plane (statusProto, op
//     "push").
//  2. Every statusPullInterval each node pulls from a random live member
//     the documents newer than its own copies (op "pull", with the
//     versions it holds), so a missed push is repaired within seconds and
//     a node that joins learns every document at once.
//
// Versions are the publisher's wall clock in nanoseconds, forced to grow
// (max(last+1, now)), so a restarted node's documents supersede those of
// its earlier run. A copy is replaced only by a higher version.
//
// The view (ReplicaStatus) holds the latest document per node and shows
// those of members alive or suspect only: a failed or departed node's
// replicas vanish on the membership event itself, and their documents are
// dropped when placement is recomputed for it.

// statusProto is the peer-plane protocol for replica status.
const statusProto = protocol.ID("/shoal/status/1")

// statusPullInterval is the period of status anti-entropy. A variable so
// that a test can show what the pushes do without it.
var statusPullInterval = 2 * time.Second

// statusWarmRetry is how often a starting node with peers to join tries
// its first status pull (see statusPullLoop).
const statusWarmRetry = 100 * time.Millisecond

// Limits on status messages from peers.
const (
	maxStatusReplicas  = 20000 // replicas in one document
	maxStatusDocs      = 5000  // documents in one answer, versions in a pull
	maxStatusField     = 4096  // bytes in one string field
	maxStatusEndpoints = 1024  // endpoints of one replica
)

// statusDoc is one node's replica status.
type statusDoc struct {
	Node    string `json:"node"`
	Version uint64 `json:"version"`
	// Replicas are the node's replicas (Node set to the document's node).
	Replicas []api.Replica `json:"replicas"`
}

// statusRequest is every request of statusProto. Unknown fields are
// ignored, so later versions of the protocol may add some.
type statusRequest struct {
	// Op is "push" (merge Doc, the sender's own document) or "pull"
	// (answer with the documents newer than Have).
	Op   string            `json:"op"`
	From string            `json:"from"`
	Doc  *statusDoc        `json:"doc,omitempty"`
	Have map[string]uint64 `json:"have,omitempty"`
}

// statusResponse answers a statusRequest.
type statusResponse struct {
	Docs []statusDoc `json:"docs,omitempty"`
}

// replicaStates are the states a status may carry.
var replicaStates = []string{"pending", "starting", "running", "unhealthy", "stopping", "failed", "unknown"}

// futureStates maps a state this version does not know, but that is a
// well-formed state name (a later version's, as "stopping" was new once),
// to "unknown", and the replica to unhealthy: a peer of another version
// during a rolling upgrade is understood, its replica not routed to, and
// its document not dropped as bad. Malformed states are left for
// checkStatusDoc to refuse.
func futureStates(d *statusDoc) {
	for i := range d.Replicas {
		r := &d.Replicas[i]
		if !slices.Contains(replicaStates, r.State) && wellFormedState(r.State) {
			r.State, r.Healthy = "unknown", false
		}
	}
}

// wellFormedState reports whether s could be a replica state: 1 to 16
// lower-case letters and dashes.
func wellFormedState(s string) bool {
	if len(s) == 0 || len(s) > 16 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && c != '-' {
			return false
		}
	}
	return true
}

// checkStatusDoc validates a document from a peer (after futureStates).
func checkStatusDoc(d statusDoc) error {
	if err := spec.ValidName(d.Node); err != nil {
		return fmt.Errorf("%w: status node %q: %v", errBadMessage, d.Node, err)
	}
	if d.Version == 0 {
		return fmt.Errorf("%w: status of %s without a version", errBadMessage, d.Node)
	}
	if len(d.Replicas) > maxStatusReplicas {
		return fmt.Errorf("%w: status of %s has %d replicas", errBadMessage, d.Node, len(d.Replicas))
	}
	for i, r := range d.Replicas {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: status of %s, replica %d: %s", errBadMessage, d.Node, i, fmt.Sprintf(format, args...))
		}
		switch {
		case spec.ValidName(r.Service) != nil:
			return bad("bad service %q", r.Service)
		case r.Slot < 0 || r.Slot >= spec.MaxReplicas:
			return bad("bad slot %d", r.Slot)
		case r.Node != d.Node:
			return bad("node %q in a document of %q", r.Node, d.Node)
		case !slices.Contains(replicaStates, r.State):
			return bad("bad state %q", r.State)
		case r.Restarts < 0:
			return bad("negative restarts")
		case len(r.Container) > 256 || len(r.Version) > 64 || len(r.Image) > maxStatusField || len(r.LastError) > maxStatusField:
			return bad("field too long")
		}
		if r.Endpoint != "" {
			if _, err := netip.ParseAddrPort(r.Endpoint); err != nil {
				return bad("bad endpoint %q", r.Endpoint)
			}
		}
		if len(r.Endpoints) > maxStatusEndpoints {
			return bad("%d endpoints", len(r.Endpoints))
		}
		for port, ep := range r.Endpoints {
			if port < 1 || port > 65535 {
				return bad("endpoint of port %d", port)
			}
			if _, err := netip.ParseAddrPort(ep); err != nil {
				return bad("bad endpoint %q of port %d", ep, port)
			}
		}
	}
	return nil
}

// decodeStatusRequest parses and checks a peer's request.
func decodeStatusRequest(b []byte) (statusRequest, error) {
	var r statusRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	switch r.Op {
	case "push":
		if r.Doc == nil {
			return r, fmt.Errorf("%w: push without a document", errBadMessage)
		}
		futureStates(r.Doc)
		if err := checkStatusDoc(*r.Doc); err != nil {
			return r, err
		}
	case "pull":
		if len(r.Have) > maxStatusDocs {
			return r, fmt.Errorf("%w: pull with %d versions", errBadMessage, len(r.Have))
		}
	default:
		return r, fmt.Errorf("%w: unknown status op %q", errBadMessage, r.Op)
	}
	return r, nil
}

// decodeStatusResponse parses a peer's answer and drops the documents that
// do not check out; bad counts them.
func decodeStatusResponse(b []byte) (docs []statusDoc, bad int, err error) {
	var r statusResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	if len(r.Docs) > maxStatusDocs {
		return nil, 0, fmt.Errorf("%w: %d status documents", errBadMessage, len(r.Docs))
	}
	for _, d := range r.Docs {
		futureStates(&d)
		if checkStatusDoc(d) != nil {
			bad++
			continue
		}
		docs = append(docs, d)
	}
	return docs, bad, nil
}

// statusView holds the latest status document of every node.
//
// # Concurrency
//
// Safe for concurrent use.
type statusView struct {
	self string
	push chan struct{} // buffered 1: the local document changed

	// warm is closed once the view holds the documents of the cluster
	// this node joined (setWarm): the load balancer waits for it.
	warm     chan struct{}
	warmOnce sync.Once

	mu      sync.Mutex // guards all following fields
	docs    map[string]statusDoc
	changed chan struct{} // closed at the next change, then replaced
}

func newStatusView(self string) *statusView {
	return &statusView{
		self:    self,
		push:    make(chan struct{}, 1),
		warm:    make(chan struct{}),
		docs:    make(map[string]statusDoc),
		changed: make(chan struct{}),
	}
}

// setWarm marks the view as holding the cluster's documents, and wakes
// the watchers: what the view holds now counts as complete. It may be
// called more than once.
func (v *statusView) setWarm() {
	v.warmOnce.Do(func() {
		close(v.warm)
		v.mu.Lock()
		v.notifyLocked()
		v.mu.Unlock()
	})
}

// warmed returns a channel closed once the view is warm.
func (v *statusView) warmed() <-chan struct{} { return v.warm }

// notifyLocked wakes everyone waiting for a change.
func (v *statusView) notifyLocked() {
	close(v.changed)
	v.changed = make(chan struct{})
}

// setLocal replaces this node's replicas, with a new version if they
// differ, and asks for a push. It reports whether they differed.
func (v *statusView) setLocal(replicas []api.Replica, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur, ok := v.docs[v.self]
	if ok && reflect.DeepEqual(cur.Replicas, replicas) {
		return false
	}
	ver := max(cur.Version+1, uint64(max(now.UnixNano(), 1)))
	v.docs[v.self] = statusDoc{Node: v.self, Version: ver, Replicas: replicas}
	v.notifyLocked()
	select {
	case v.push <- struct{}{}:
	default:
	}
	return true
}

// local returns this node's document (false before the first setLocal).
func (v *statusView) local() (statusDoc, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	d, ok := v.docs[v.self]
	return d, ok
}

// merge keeps each document that is newer than the copy held. Documents
// about this node are ignored: it is their only author.
func (v *statusView) merge(docs ...statusDoc) (changed int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, d := range docs {
		if d.Node == v.self {
			continue
		}
		if cur, ok := v.docs[d.Node]; ok && cur.Version >= d.Version {
			continue
		}
		v.docs[d.Node] = d
		changed++
	}
	if changed > 0 {
		v.notifyLocked()
	}
	return changed
}

// mergePushed merges a document its node pushed, as merge does, and
// reports whether it withdrew a replica that the copy held had served
// (healthy and running): one that is stopping, unhealthy or gone now.
func (v *statusView) mergePushed(d statusDoc) (withdrew bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur, had := v.docs[d.Node]
	if d.Node == v.self || (had && cur.Version >= d.Version) {
		return false
	}
	v.docs[d.Node] = d
	v.notifyLocked()
	served := make(map[string]bool, len(d.Replicas))
	for _, r := range d.Replicas {
		if routable(r) {
			served[r.Container] = true
		}
	}
	for _, r := range cur.Replicas {
		if routable(r) && !served[r.Container] {
			return true
		}
	}
	return false
}

// routable reports whether the load balancer routes to r (see routes).
func routable(r api.Replica) bool { return r.Healthy && r.State == "running" }

// versions returns the version held per node.
func (v *statusView) versions() map[string]uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]uint64, len(v.docs))
	for n, d := range v.docs {
		out[n] = d.Version
	}
	return out
}

// newer returns the documents of nodes keep accepts that are newer than
// have's versions.
func (v *statusView) newer(have map[string]uint64, keep func(string) bool) []statusDoc {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []statusDoc
	for n, d := range v.docs {
		if d.Version > have[n] && keep(n) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b statusDoc) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// prune drops the documents of nodes drop says to, and reports how many.
func (v *statusView) prune(drop func(string) bool) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for node := range v.docs {
		if node != v.self && drop(node) {
			delete(v.docs, node)
			n++
		}
	}
	if n > 0 {
		v.notifyLocked()
	}
	return n
}

// replicas returns the replicas of the nodes keep accepts, sorted by
// service, slot, node and container.
func (v *statusView) replicas(keep func(string) bool) []api.Replica {
	v.mu.Lock()
	out := []api.Replica{}
	for n, d := range v.docs {
		if keep(n) {
			out = append(out, d.Replicas...)
		}
	}
	v.mu.Unlock()
	slices.SortFunc(out, func(a, b api.Replica) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Slot, b.Slot),
			cmp.Compare(a.Node, b.Node), cmp.Compare(a.Container, b.Container))
	})
	return out
}

// watch returns a channel closed at the next change.
func (v *statusView) watch() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

// statusMember reports whether node's status belongs in the view: this
// node, or a member that is alive or suspect.
func (a *Agent) statusMember(node string) bool {
	if node == a.cfg.Name {
		return true
	}
	for _, m := range a.members.Load().list {
		if m.Name == node {
			return m.Alive()
		}
	}
	return false
}

// ReplicaStatus is the cluster-wide replica view as this node holds it:
// the replicas every live member reports, sorted by service, slot, node
// and container. Safe for concurrent use.
func (a *Agent) ReplicaStatus() []api.Replica {
	return a.replicas.status.replicas(a.statusMember)
}

// ReplicaChanges returns a channel closed at the next change of the
// replica view (a document arrives, or a member's replicas are dropped).
// Callers take it before they read ReplicaStatus and wait on it after, so
// that a change in between is not missed.
func (a *Agent) ReplicaChanges() <-chan struct{} { return a.replicas.status.watch() }

// pruneStatus drops the documents of members that failed or left, and
// wakes the view's watchers when membership changed (the view filters by
// it). It runs after every placement recompute.
func (a *Agent) pruneStatus() {
	byName := make(map[string]gossip.Member)
	for _, m := range a.members.Load().list {
		byName[m.Name] = m
	}
	v := a.replicas.status
	v.prune(func(node string) bool {
		m, ok := byName[node]
		return ok && !m.Alive()
	})
	// Membership may have changed what the view shows.
	v.mu.Lock()
	v.notifyLocked()
	v.mu.Unlock()
}

// registerStatusHandler serves statusProto.
func (a *Agent) registerStatusHandler() {
	a.host.Handle(statusProto, func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		r, err := decodeStatusRequest(req)
		if err != nil {
			a.metrics.droppedPeer.Inc()
			a.log.Warn("dropped bad status message", "from", from, "err", err)
			return nil, err
		}
		switch r.Op {
		case "push":
			m, ok := a.members.Load().byPeer[from]
			if !ok || m.Name != r.Doc.Node {
				a.metrics.droppedPeer.Inc()
				a.log.Warn("dropped status pushed for another node", "from", from, "node", r.Doc.Node)
				return nil, fmt.Errorf("%w: status of %q pushed by another peer", errBadMessage, r.Doc.Node)
			}
			if a.replicas.status.mergePushed(*r.Doc) {
				// The sender may be waiting for this answer to stop
				// a replica (drainBeforeStop): the balancer drops it
				// first.
				a.syncLB()
			}
			return []byte("{}"), nil
		default: // pull
			return json.Marshal(statusResponse{Docs: a.replicas.status.newer(r.Have, a.statusMember)})
		}
	})
}

// callStatus sends one status request to m.
func (a *Agent) callStatus(ctx context.Context, m gossip.Member, req statusRequest) ([]byte, error) {
	id, addr, err := peerOf(m)
	if err != nil {
		return nil, err
	}
	req.From = a.cfg.Name
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("node: encode status request: %w", err)
	}
	return a.host.Call(ctx, id, addr, statusProto, b)
}

// statusPushLoop pushes this node's document to every member alive or
// suspect (pushPeers) each time it changes, through a statusPusher: one
// sender per member, so a member that does not answer delays no one
// else's pushes, and changes coalesce per member.
func (a *Agent) statusPushLoop(ctx context.Context) {
	v := a.replicas.status
	p := a.replicas.pusher
	defer p.close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.push:
		}
		if doc, ok := v.local(); ok {
			p.push(ctx, doc, a.pushPeers())
		}
	}
}

// pushStatus pushes doc to m and reports whether m took it.
func (a *Agent) pushStatus(ctx context.Context, m gossip.Member, doc statusDoc) bool {
	_, err := a.callStatus(ctx, m, statusRequest{Op: "push", Doc: &doc})
	if err != nil && ctx.Err() == nil {
		a.log.Debug("status push failed; anti-entropy will repair", "to", m.Name, "err", err)
	}
	return err == nil
}

// pushPeers are the members a status push goes to: the live ones and the
// suspects. A suspect is most likely alive (after a heal, stale
// suspicions travel for a while), and its view holds this node's
// document; skipping it left a moved slot's old copy running until the
// next pull, because only this push said the new one was healthy. (A
// suspect that crashed only holds up its own sender.)
func (a *Agent) pushPeers() []gossip.Member {
	var out []gossip.Member
	for _, m := range a.members.Load().list {
		if m.Name != a.cfg.Name && m.Alive() && m.TagsErr == nil {
			out = append(out, m)
		}
	}
	return out
}

// exchangeStatus swaps replica status with a member that joins (or comes
// back after a partition): it pushes this node's document to m and pulls
// m's newer ones. Without it each would learn the other's replicas only
// from its random pulls, one member every statusPullInterval, and a slot
// that moved would wait on its hand-off meanwhile. It runs once this node
// sees m join, so the documents it pulls are not pruned as those of a
// failed member (as a push that arrived before this node saw m back
// could be).
func (a *Agent) exchangeStatus(ctx context.Context, m gossip.Member) {
	if doc, ok := a.replicas.status.local(); ok {
		cctx, cancel := context.WithTimeout(ctx, statusPushTimeout)
		_, err := a.callStatus(cctx, m, statusRequest{Op: "push", Doc: &doc})
		cancel()
		if err != nil {
			a.log.Debug("status push to a joiner failed; anti-entropy will repair", "to", m.Name, "err", err)
		}
	}
	a.pullStatus(ctx, m)
}

// statusPullLoop pulls newer documents from a random live member every
// statusPullInterval (jittered by up to a quarter).
//
// It also warms the view up. A node that starts with peers to join (seeds
// or known peers) knows no replica of theirs until a document arrives,
// and its load balancer would answer every published port with nothing to
// route to (lbLoop waits for the warm view). So until its first pull
// succeeds it tries every statusWarmRetry; the view is warm after that
// pull (one answer carries every document the peer holds), at once for a
// node without peers to join, and after joinGrace regardless.
func (a *Agent) statusPullLoop(ctx context.Context, hasSeeds bool) {
	v := a.replicas.status
	start := time.Now()
	warm := !hasSeeds
	if warm {
		v.setWarm()
	}
	for {
		d := statusPullInterval + time.Duration(rand.Int64N(int64(statusPullInterval)/4+1))
		if !warm {
			d = statusWarmRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if !warm && time.Since(start) >= joinGrace {
			warm = true
			v.setWarm()
			a.log.Warn("serving published ports without the replicas of peers: no status pull answered", "after", joinGrace)
		}
		peers := a.livePeers()
		if len(peers) == 0 {
			continue
		}
		if a.pullStatus(ctx, peers[rand.IntN(len(peers))]) && !warm {
			warm = true
			v.setWarm()
			a.log.Debug("replica status warm", "after", time.Since(start))
		}
	}
}

// pullStatus fetches from m the documents newer than ours, and reports
// whether m answered.
func (a *Agent) pullStatus(ctx context.Context, m gossip.Member) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := a.callStatus(ctx, m, statusRequest{Op: "pull", Have: a.replicas.status.versions()})
	if err != nil {
		a.log.Debug("status pull failed", "from", m.Name, "err", err)
		return false
	}
	docs, bad, err := decodeStatusResponse(out)
	if err != nil || bad > 0 {
		a.metrics.droppedPeer.Add(float64(max(bad, 1)))
		a.log.Warn("dropped bad status answer", "from", m.Name, "bad_docs", bad, "err", err)
	}
	a.replicas.status.merge(docs...)
	return err == nil
}

// getReplicas serves GET /v1/replicas[?service=NAME]: the cluster-wide
// replica view as this node holds it.
func (a *Agent) getReplicas(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	if svc != "" {
		if err := spec.ValidName(svc); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("service name %q: %v", svc, err))
			return
		}
	}
	all := a.ReplicaStatus()
	out := make([]api.Replica, 0, len(all))
	for _, rep := range all {
		if svc == "" || rep.Service == svc {
			out = append(out, rep)
		}
	}
	if svc != "" && len(out) == 0 {
		if _, ok := a.store.Get(svc); !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("service %q not found", svc))
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}
