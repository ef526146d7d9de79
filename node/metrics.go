package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoalmesh/shoal/gossip"
	nodepeer "github.com/shoalmesh/shoal/node/peer"
	"github.com/shoalmesh/shoal/node/store"
)

// metrics are the agent's Prometheus series. Each agent has its own
// registry, so several agents can live in one test process.
type metrics struct {
	reg            *prometheus.Registry
	writes         prometheus.Counter
	merged         prometheus.Counter
	droppedNotices prometheus.Counter
	droppedPeer    prometheus.Counter
	pushErrors     prometheus.Counter
	syncRounds     prometheus.Counter
	syncErrors     prometheus.Counter

	placementSeconds prometheus.Histogram
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_state_writes_total", Help: "Writes to the desired state accepted by this node's API."}),
		merged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_state_merged_total", Help: "Entries from peers that changed this node's state."}),
		droppedNotices: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_gossip_notices_dropped_total", Help: "Malformed gossip notices dropped."}),
		droppedPeer: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_peer_messages_dropped_total", Help: "Malformed or invalid peer-plane messages and entries dropped."}),
		pushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_state_push_errors_total", Help: "Eager pushes of a write to a peer that failed."}),
		syncRounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_antientropy_rounds_total", Help: "Anti-entropy rounds started."}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_antientropy_errors_total", Help: "Anti-entropy rounds that failed."}),
	}
	m.placementSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "shoal_placement_compute_seconds",
		Help:    "Time to compute the placement of every slot.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
	})
	reg.MustRegister(m.placementSeconds)
	reg.MustRegister(m.writes, m.merged, m.droppedNotices, m.droppedPeer, m.pushErrors, m.syncRounds, m.syncErrors)
	return m
}

// registerCluster adds gauges read from the planes at scrape time.
func (m *metrics) registerCluster(c *gossip.Cluster, h *nodepeer.Host, st *store.Store) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_members_alive", Help: "Alive members in this node's view."},
			func() float64 { return float64(c.NumAlive()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_services", Help: "Live service specs in the desired state."},
			func() float64 { return float64(st.Stats().Live) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_tombstones", Help: "Deleted service specs remembered as tombstones."},
			func() float64 { return float64(st.Stats().Tombstones) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shoal_gossip_events_dropped_total", Help: "Gossip events dropped because the agent fell behind."},
			func() float64 { return float64(c.Stats().EventsDropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shoal_peer_refused_total", Help: "Peer-plane connections refused by the membership gater."},
			func() float64 { return float64(h.Stats().Refused) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shoal_peer_bad_frames_total", Help: "Malformed peer-plane frames."},
			func() float64 { return float64(h.Stats().BadFrames) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}
