package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/gossip/mdns"
	"github.com/shoalmesh/shoal/lb"
	nodepeer "github.com/shoalmesh/shoal/node/peer"
	"github.com/shoalmesh/shoal/node/store"
)

// Version is the Shoal version advertised in tags and the API. The build
// sets it with -ldflags "-X github.com/shoalmesh/shoal/node.Version=...".
var Version = "dev"

// Files in the data dir.
const (
	identityFile = "node.key"
	stateFile    = "state.db"
	keyringFile  = "keyring.json"
	snapshotFile = "serf.snapshot"
)

// Agent is one Shoal node: gossip, peer plane, replicated state and API.
//
// # Concurrency
//
// New only builds; Run starts and owns every goroutine and returns after
// all of them have stopped. The accessor methods are safe for concurrent
// use once Ready is closed.
type Agent struct {
	cfg Config
	log *slog.Logger

	ready   chan struct{} // closed once every plane is up
	crashed atomic.Bool   // Kill: stop without leaving
	cancel  atomic.Pointer[context.CancelFunc]

	// Set in Run before ready is closed; read-only afterwards.
	store   *store.Store
	host    *nodepeer.Host
	images  atomic.Pointer[peerImages] // nil unless the runtime shares content; set in Run
	cluster *gossip.Cluster
	apiAddr string
	metrics *metrics

	// runCtx ends when Run is told to stop; bg counts the short-lived
	// goroutines (pushes, pulls, sync rounds) started under it, which Run
	// waits for before it closes the planes they use.
	runCtx context.Context
	bg     sync.WaitGroup

	members  atomic.Pointer[memberView] // current membership, for the gater and sync
	syncMu   sync.Mutex                 // guards inflight
	inflight map[string]bool            // peers with an anti-entropy round under way

	savedPeers []string // owned by the event loop: last known peers written

	placement  *placementState
	lb         *lb.Balancer // routing mesh, created by Run
	lbs        *lbState
	runtimeErr atomic.Pointer[string] // why the runtime is not ready; "" = ready
	// filling is advertised in the tags from the start until this node
	// alone runs every slot it owns (placement.Node.Filling).
	filling        atomic.Bool
	fillingExpired atomic.Bool     // maxFilling passed since the start
	tagsMu         sync.Mutex      // advertise: tags read and set as one step
	startPeers     []string        // the known peers saved by the previous run
	replicas       *replicaSet     // reconcile loop, probes, status view (replicas.go)
	standby        *standbyMetrics // failover standby (standby.go)
	plainLn        net.Listener    // plain image listener, with ImageTransferPlain
}

// memberView is an immutable snapshot of the membership.
type memberView struct {
	byPeer map[peer.ID]gossip.Member
	list   []gossip.Member
	// aliveSince is, for each alive member, when this node saw it come
	// back after it had been failed or gone; the zero time for members
	// alive ever since this node first saw them.
	aliveSince map[string]time.Time
}

// New validates cfg and builds an agent. It does no I/O.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.Name),
		ready:     make(chan struct{}),
		inflight:  make(map[string]bool),
		placement: newPlacementState(),
		lbs:       newLBState(),
		replicas:  newReplicaSet(cfg.Name),
		standby:   newStandbyMetrics(),
	}
	notReady := "no container runtime driver"
	a.runtimeErr.Store(&notReady)
	a.filling.Store(true)
	a.members.Store(&memberView{byPeer: map[peer.ID]gossip.Member{}})
	a.replicas.pusher = newStatusPusher(a.pushStatus)
	return a, nil
}

// Ready is closed once the agent serves its API and has its gossip and
// peer planes up (it may not have joined anyone yet).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Name is the node's name.
func (a *Agent) Name() string { return a.cfg.Name }

// APIAddr is the API's actual listen address (valid once Ready).
func (a *Agent) APIAddr() string { return a.apiAddr }

// Store is the node's replicated state (valid once Ready).
func (a *Agent) Store() *store.Store { return a.store }

// Cluster is the node's gossip membership (valid once Ready).
func (a *Agent) Cluster() *gossip.Cluster { return a.cluster }

// PeerID is the node's peer-plane identity (valid once Ready).
func (a *Agent) PeerID() peer.ID { return a.host.ID() }

// Registry holds the agent's Prometheus metrics (valid once Ready).
func (a *Agent) Registry() *prometheus.Registry { return a.metrics.reg }

// Kill makes Run return as a crash would: without leaving the cluster,
// so the other nodes detect a failure. Tests use it.
func (a *Agent) Kill() {
	a.crashed.Store(true)
	if c := a.cancel.Load(); c != nil {
		(*c)()
	}
}

// Stop makes Run leave the cluster gracefully and return, as cancelling
// its context does.
func (a *Agent) Stop() {
	if c := a.cancel.Load(); c != nil {
		(*c)()
	}
}

// ResetPeerConns closes the peer-plane connections to addresses that
// Config.AllowAddr now refuses. Tests call it after cutting the network.
func (a *Agent) ResetPeerConns() {
	if a.cfg.AllowAddr == nil {
		return
	}
	for _, conn := range a.host.Libp2p().Network().Conns() {
		ip, err := manet.ToIP(conn.RemoteMultiaddr())
		if err != nil {
			continue
		}
		addr, ok := netip.AddrFromSlice(ip)
		if ok && !a.cfg.AllowAddr(addr.Unmap()) {
			_ = conn.Close()
		}
	}
}

// Run starts the agent and blocks until ctx is done (or Kill), then leaves
// the cluster gracefully and releases everything. The returned error joins
// every failure on the way out.
func (a *Agent) Run(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.cancel.Store(&cancel)
	a.runCtx = ctx
	if a.crashed.Load() {
		return errors.New("node: agent was killed before it started")
	}

	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
	}()

	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("node: data dir: %w", err)
	}
	a.metrics = newMetrics()

	// State first: nothing acknowledged may be lost, so the store must
	// open before anything can write to it.
	st, err := store.Open(filepath.Join(a.cfg.DataDir, stateFile), store.Options{
		Node:             a.cfg.Name,
		Clock:            a.cfg.Clock,
		TombstoneHorizon: a.cfg.TombstoneHorizon,
		OnChange:         a.onStateChange,
		Logger:           a.log,
	})
	if err != nil {
		return fmt.Errorf("node: open state: %w", err)
	}
	a.store = st
	closers = append(closers, st.Close)

	id, err := nodepeer.LoadOrCreateIdentity(filepath.Join(a.cfg.DataDir, identityFile))
	if err != nil {
		return fmt.Errorf("node: identity: %w", err)
	}
	host, err := nodepeer.New(nodepeer.Config{
		Identity:  id,
		ListenIP:  a.cfg.BindAddr,
		Port:      a.cfg.PeerPort,
		Allow:     a.allowPeer,
		AllowAddr: a.cfg.AllowAddr,
		Logger:    a.log,
	})
	if err != nil {
		return fmt.Errorf("node: peer plane: %w", err)
	}
	a.host = host
	closers = append(closers, host.Close)
	a.registerSyncHandlers()

	// The API listener comes before gossip so its real address (port 0)
	// can be advertised in the tags.
	ln, err := net.Listen("tcp", a.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("node: api: %w", err)
	}
	a.apiAddr = ln.Addr().String()
	if a.cfg.ImageTransfer == ImageTransferPlain {
		pl, err := net.Listen("tcp", net.JoinHostPort(a.cfg.BindAddr.String(), strconv.Itoa(a.cfg.ImagePort)))
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("node: plain image listener: %w", err)
		}
		a.plainLn = pl
		closers = append(closers, func() error {
			if err := pl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				return err
			}
			return nil
		})
	}
	srv := &http.Server{
		Handler:           a.apiHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	var stopAPI sync.Once
	var stopAPIErr error
	shutdownAPI := func() error {
		stopAPI.Do(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			stopAPIErr = srv.Shutdown(sctx)
		})
		return stopAPIErr
	}
	closers = append(closers, shutdownAPI)

	a.checkRuntime(ctx) // so the first tags already say whether we can run containers
	cluster, err := gossip.New(a.gossipConfig())
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("node: gossip: %w", err)
	}
	a.cluster = cluster
	closers = append(closers, func() error {
		if a.crashed.Load() {
			return cluster.Shutdown()
		}
		return cluster.Leave()
	})
	a.metrics.registerCluster(cluster, host, st)
	a.lb = lb.New(lb.Config{Bind: a.cfg.BindAddr, Logger: a.log.With("component", "lb"), Registerer: a.metrics.reg})
	closers = append(closers, a.lb.Close)
	a.refreshMembers()
	a.kickPlacement()
	joinSeeds, useMDNS := splitJoin(a.cfg.Join)
	var discovery *mdns.Discoverer
	if useMDNS {
		if discovery, err = a.newMDNS(); err != nil {
			_ = ln.Close()
			return fmt.Errorf("node: --join mdns: %w", err)
		}
	}

	var wg sync.WaitGroup
	defer a.bg.Wait()
	defer wg.Wait()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("api server stopped", "err", err)
		}
	}()
	wg.Add(6)
	go func() { defer wg.Done(); a.eventLoop(ctx) }()
	go func() { defer wg.Done(); a.lbLoop(ctx) }()
	go func() { defer wg.Done(); a.placementLoop(ctx) }()
	go func() { defer wg.Done(); a.runtimeLoop(ctx) }()
	go func() { defer wg.Done(); a.antiEntropyLoop(ctx) }()
	go func() { defer wg.Done(); a.tombstoneLoop(ctx) }()
	a.startPeerImages(ctx, &wg)
	a.startReplicas(ctx, &wg)
	known, err := loadKnownPeers(a.cfg.DataDir)
	if err != nil {
		a.log.Warn("ignoring unreadable list of known peers", "err", err)
	}
	if seeds := seeds(joinSeeds, known); len(seeds) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := cluster.Join(ctx, seeds)
			if err != nil {
				if ctx.Err() == nil {
					a.log.Error("join failed", "seeds", seeds, "err", err)
				}
				return
			}
			a.log.Info("joined cluster", "seeds", seeds, "contacted", n)
			a.syncSome(ctx, 3)
		}()
	}
	if discovery != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := discovery.Run(ctx); err != nil {
				a.log.Error("mDNS discovery stopped", "err", err)
			}
		}()
	}

	if !a.encrypted() {
		a.log.Warn("gossip is not encrypted: any host that reaches the gossip port can join; start with --encrypt \"$(shoal keygen)\"")
	}
	a.log.Info("agent started",
		"api", a.apiAddr,
		"gossip", netip.AddrPortFrom(a.cfg.AdvertiseAddr, uint16(cluster.LocalMember().Port)),
		"peer_id", host.ID(), "peer_port", host.Port(),
		"encrypted", a.encrypted())
	close(a.ready)

	<-ctx.Done()
	// No request may start background work once the loops are told to
	// stop, so the API goes first.
	if err := shutdownAPI(); err != nil {
		a.log.Warn("api shutdown", "err", err)
	}
	if a.crashed.Load() {
		a.log.Warn("agent killed")
	} else {
		a.log.Info("agent leaving")
	}
	return nil
}

// gossipConfig fills the gossip preset with this node's identity.
func (a *Agent) gossipConfig() *gossip.Config {
	g := *a.cfg.Gossip // shallow copy: the nested configs are ours to set
	serfCfg := *g.Serf
	mlCfg := *serfCfg.MemberlistConfig
	serfCfg.MemberlistConfig = &mlCfg
	g.Serf = &serfCfg

	g.NodeName = a.cfg.Name
	g.Tags = a.tags()
	g.EncryptKey = a.cfg.EncryptKey
	g.KeyringPath = filepath.Join(a.cfg.DataDir, keyringFile)
	g.SnapshotPath = filepath.Join(a.cfg.DataDir, snapshotFile)
	if g.Logger == nil {
		g.Logger = a.cfg.Logger // gossip adds the node name itself
	}
	mlCfg.BindAddr = a.cfg.BindAddr.String()
	mlCfg.BindPort = a.cfg.GossipPort
	mlCfg.AdvertiseAddr = a.cfg.AdvertiseAddr.String()
	mlCfg.AdvertisePort = a.cfg.GossipPort
	return &g
}

// tags are what this node advertises over gossip.
func (a *Agent) tags() gossip.Tags {
	return gossip.Tags{
		PeerID:        a.host.ID().String(),
		PeerPort:      a.host.Port(),
		API:           a.apiAddr,
		Arch:          goruntime.GOARCH,
		OS:            goruntime.GOOS,
		CPUs:          float64(goruntime.NumCPU()),
		Memory:        totalMemory(),
		RuntimeReady:  *a.runtimeErr.Load() == "",
		RuntimeReason: *a.runtimeErr.Load(),
		Labels:        a.cfg.Labels,
		Version:       Version,
		Filling:       a.filling.Load(),
	}
}

// advertise sets the gossip tags to the current tags(). Reading and
// setting under one lock keeps an older value from overwriting a newer one.
func (a *Agent) advertise() error {
	a.tagsMu.Lock()
	defer a.tagsMu.Unlock()
	return a.cluster.SetTags(a.tags())
}

// allowPeer is the peer plane's gater: only current members may connect.
// Failed members stay admitted (a partitioned node is still one of us);
// members that left are not.
func (a *Agent) allowPeer(id peer.ID) bool {
	m, ok := a.members.Load().byPeer[id]
	return ok && m.Status != gossip.StatusLeft
}

// refreshMembers rebuilds the membership snapshot from gossip.
func (a *Agent) refreshMembers() {
	list := a.cluster.Members()
	v := &memberView{byPeer: make(map[peer.ID]gossip.Member, len(list)), list: list,
		aliveSince: nextAliveSince(a.members.Load(), list, time.Now())}
	for _, m := range list {
		if m.TagsErr != nil || m.Tags.PeerID == "" {
			continue
		}
		id, err := peer.Decode(m.Tags.PeerID)
		if err != nil {
			continue
		}
		v.byPeer[id] = m
	}
	a.members.Store(v)
}

// nextAliveSince computes memberView.aliveSince for list from the view
// before it.
func nextAliveSince(old *memberView, list []gossip.Member, now time.Time) map[string]time.Time {
	out := make(map[string]time.Time, len(list))
	for _, m := range list {
		if !m.Alive() {
			continue
		}
		if t, ok := old.aliveSince[m.Name]; ok {
			out[m.Name] = t // alive before too
		} else if slices.ContainsFunc(old.list, func(o gossip.Member) bool { return o.Name == m.Name }) {
			out[m.Name] = now // back after a failure or a leave
		} else {
			out[m.Name] = time.Time{} // first seen now
		}
	}
	return out
}

// openStream opens a stream for proto to member m on the peer plane,
// dialing its address from gossip at once (no libp2p dial backoff: the
// member may just have come back). Opening is bounded by 10 s.
func (a *Agent) openStream(ctx context.Context, m gossip.Member, proto protocol.ID) (network.Stream, error) {
	id, addr, err := peerOf(m)
	if err != nil {
		return nil, err
	}
	lh := a.host.Libp2p()
	if ma, err := manet.FromNetAddr(net.TCPAddrFromAddrPort(addr)); err == nil {
		lh.Peerstore().AddAddr(id, ma, peerstore.TempAddrTTL)
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if lh.Network().Connectedness(id) != network.Connected {
		octx = network.WithForceDirectDial(octx, "shoal: dial on membership")
	}
	return lh.NewStream(octx, id, proto)
}

// peerOf returns a member's peer identity and address.
func peerOf(m gossip.Member) (peer.ID, netip.AddrPort, error) {
	if m.TagsErr != nil {
		return "", netip.AddrPort{}, fmt.Errorf("member %s has bad tags: %w", m.Name, m.TagsErr)
	}
	id, err := peer.Decode(m.Tags.PeerID)
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("member %s has a bad peer ID: %w", m.Name, err)
	}
	if m.Tags.PeerPort <= 0 || m.Tags.PeerPort > 65535 {
		return "", netip.AddrPort{}, fmt.Errorf("member %s has a bad peer port %d", m.Name, m.Tags.PeerPort)
	}
	return id, netip.AddrPortFrom(m.Addr, uint16(m.Tags.PeerPort)), nil
}

// eventLoop consumes gossip events: membership changes and notices.
func (a *Agent) eventLoop(ctx context.Context) {
	events := a.cluster.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			switch ev.Type {
			case gossip.EventNotice:
				a.handleNotice(ctx, ev.Notice)
			default:
				a.refreshMembers()
				a.rememberPeers()
				a.kickPlacement()
				for _, m := range ev.Members {
					a.log.Info("member "+ev.Type.String(), "member", m.Name, "addr", m.Addr)
					switch ev.Type {
					case gossip.EventJoin:
						if m.Name != a.cfg.Name {
							a.maybeSyncWithJoiner(ctx, m)
							a.goBg(func() { a.exchangeStatus(ctx, m) })
						}
					case gossip.EventLeave:
						if id, _, err := peerOf(m); err == nil {
							_ = a.host.ClosePeer(id)
						}
					}
				}
			}
		}
	}
}

// rememberPeers persists the known peers when they changed.
func (a *Agent) rememberPeers() {
	peers := knownPeers(a.cfg.Name, a.members.Load().list)
	if slices.Equal(peers, a.savedPeers) {
		return
	}
	if err := saveKnownPeers(a.cfg.DataDir, peers); err != nil {
		a.log.Warn("saving known peers failed", "err", err)
		return
	}
	a.savedPeers = peers
}

// checkRuntime asks the driver whether it is ready and stores the answer.
func (a *Agent) checkRuntime(ctx context.Context) {
	reason := "no container runtime driver"
	if a.cfg.Runtime != nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := a.cfg.Runtime.Ready(cctx)
		cancel()
		reason = ""
		if err != nil {
			reason = err.Error()
		}
	}
	if old := a.runtimeErr.Swap(&reason); *old != reason {
		if reason == "" {
			a.log.Info("container runtime ready")
		} else {
			a.log.Warn("container runtime not ready", "reason", reason)
		}
		if a.cluster != nil {
			if err := a.advertise(); err != nil {
				a.log.Error("advertising runtime readiness failed", "err", err)
			}
		}
	}
}

// runtimeLoop re-checks the runtime's readiness periodically; a change is
// advertised in the tags, and so reaches every node's placement.
func (a *Agent) runtimeLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.RuntimeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.checkRuntime(ctx)
		}
	}
}

// onStateChange is the store's change hook.
func (a *Agent) onStateChange(e store.Entry) {
	a.kickPlacement()
	if a.cfg.OnStateChange != nil {
		a.cfg.OnStateChange(e)
	}
}

// tombstoneLoop collects expired tombstones once an hour.
func (a *Agent) tombstoneLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := a.store.CollectTombstones(); err != nil {
				a.log.Warn("tombstone collection failed", "err", err)
			} else if n > 0 {
				a.log.Info("collected tombstones", "count", n)
			}
		}
	}
}

// encrypted reports whether gossip is encrypted (a key given now, or kept
// in the data dir from an earlier start).
func (a *Agent) encrypted() bool {
	return len(a.cfg.EncryptKey) > 0 || fileExists(filepath.Join(a.cfg.DataDir, keyringFile))
}

// goBg runs fn in a goroutine that Run waits for before shutting down.
func (a *Agent) goBg(fn func()) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		fn()
	}()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
