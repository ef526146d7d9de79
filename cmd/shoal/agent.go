package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/spec"
	ctrd "github.com/shoalmesh/shoal/runtime/containerd"
)

// agentFlags are the flags of `shoal agent`.
type agentFlags struct {
	name, dataDir, bind, advertise, api string
	gossipPort, peerPort                int
	join, labels                        []string
	encrypt                             string
	containerd, namespace, profile      string
	logLevel, logFormat                 string
	bridge, subnet, hostPorts           string
	standby                             bool
	imageTransfer                       string
	imagePort                           int
	pprofAddr                           string
}

func newAgentCmd() *cobra.Command {
	f := &agentFlags{}
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a Shoal node",
		Long: `Run a Shoal node. Every node runs the same agent; there is no master.

Start the first node, then point the others at it with --join. On a LAN,
--join mdns needs no address: every node advertises itself by multicast DNS
on the interface of --bind (all multicast-capable interfaces for 0.0.0.0)
and joins a node it finds there that holds the same --encrypt key. A node
restarted with the same --data-dir rejoins the peers it knew without --join.
SIGTERM or SIGINT leaves the cluster gracefully.`,
		Example: `  shoal agent --data-dir /var/lib/shoal --encrypt "$(shoal keygen)"
  shoal agent --data-dir /var/lib/shoal --join 10.0.0.1:7946 --label zone=a
  shoal agent --data-dir /var/lib/shoal --bind 10.0.0.5 --join mdns`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			token, _ := cmd.Flags().GetString("token")
			cfg, err := f.config(token)
			if err != nil {
				return err
			}
			return runAgent(cmd.Context(), cfg, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", host, "node name, unique in the cluster")
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/shoal", "directory for the node's identity and state")
	fl.StringVar(&f.bind, "bind", "0.0.0.0", "IP for gossip, peer and load-balancer traffic")
	fl.StringVar(&f.advertise, "advertise", "", "IP other nodes use to reach this one (default: --bind, or the first non-loopback IP when --bind is 0.0.0.0)")
	fl.IntVar(&f.gossipPort, "gossip-port", node.DefaultGossipPort, "gossip port (UDP and TCP)")
	fl.IntVar(&f.peerPort, "peer-port", node.DefaultPeerPort, "peer-plane port (TCP)")
	fl.StringVar(&f.api, "api", node.DefaultAPIAddr, "HTTP API listen address; beyond loopback it requires --token")
	fl.StringArrayVar(&f.join, "join", nil, "seed address HOST:PORT to join, retried with backoff until it answers; or \"mdns\": find nodes on the LAN by multicast DNS (repeatable; mdns and seeds combine)")
	fl.StringVar(&f.encrypt, "encrypt", "", "gossip encryption key, base64 (see 'shoal keygen'); kept in the data dir for later starts")
	fl.StringArrayVar(&f.labels, "label", nil, "node label k=v for placement constraints (repeatable)")
	fl.StringVar(&f.containerd, "containerd", "/run/containerd/containerd.sock", "containerd socket")
	fl.StringVar(&f.namespace, "namespace", node.DefaultNamespace, "containerd namespace")
	fl.StringVar(&f.bridge, "bridge", ctrd.DefaultBridge, "bridge the containers of bridge-mode replicas attach to (CNI)")
	fl.StringVar(&f.subnet, "subnet", ctrd.DefaultSubnet.String(), "subnet the bridge-mode replicas get their addresses from")
	fl.StringVar(&f.hostPorts, "host-ports", "20000-29999", "range of host ports mapped to bridge-mode replicas' ports")
	fl.StringVar(&f.profile, "profile", "lan", "gossip timing: lan, wan, local or fast (a LAN preset that declares a crashed node failed in about a second)")
	fl.StringVar(&f.imageTransfer, "image-transfer", "encrypted", "how image blobs go to peers: encrypted (over the peer plane) or plain (HTTP on --image-port, each request authorised over the peer plane and every blob verified by digest; faster, for networks you trust)")
	fl.IntVar(&f.imagePort, "image-port", 0, "TCP port of the plain image listener, with --image-transfer plain (0: any free port)")
	fl.BoolVar(&f.standby, "standby", true, "while a member is suspect, prepare (create, not start) the replicas this node would take over from it, so failover only starts them")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fl.StringVar(&f.pprofAddr, "pprof-addr", "", "serve Go's profiles (net/http/pprof) on this loopback HOST:PORT (default: off)")
	return cmd
}

// config turns the flags into an agent configuration.
func (f *agentFlags) config(token string) (node.Config, error) {
	cfg := node.DefaultConfig()
	cfg.Name = f.name
	cfg.DataDir = f.dataDir
	var err error
	if cfg.BindAddr, err = netip.ParseAddr(f.bind); err != nil {
		return node.Config{}, fmt.Errorf("--bind %q: not an IP address", f.bind)
	}
	if f.advertise != "" {
		if cfg.AdvertiseAddr, err = netip.ParseAddr(f.advertise); err != nil {
			return node.Config{}, fmt.Errorf("--advertise %q: not an IP address", f.advertise)
		}
	}
	cfg.GossipPort, cfg.PeerPort = f.gossipPort, f.peerPort
	cfg.APIAddr = f.api
	cfg.Join = f.join
	cfg.Token = token
	if f.encrypt != "" {
		if cfg.EncryptKey, err = gossip.DecodeKey(f.encrypt); err != nil {
			return node.Config{}, fmt.Errorf("--encrypt: %w", err)
		}
	}
	cfg.Labels = map[string]string{}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return node.Config{}, fmt.Errorf("--label %q: want k=v", l)
		}
		if err := spec.ValidLabel(k, v); err != nil {
			return node.Config{}, fmt.Errorf("--label %q: %w", l, err)
		}
		cfg.Labels[k] = v
	}
	cfg.Containerd, cfg.Namespace = f.containerd, f.namespace
	cfg.NoStandby = !f.standby
	cfg.ImageTransfer, cfg.ImagePort = f.imageTransfer, f.imagePort
	if cfg.Gossip, err = gossip.ProfileConfig(f.profile); err != nil {
		return node.Config{}, fmt.Errorf("--profile: %w", err)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return node.Config{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, opts))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	default:
		return node.Config{}, fmt.Errorf("--log-format %q: want text or json", f.logFormat)
	}
	return *cfg, nil
}

// runtimeConfig checks the runtime flags.
func (f *agentFlags) runtimeConfig(cfg *node.Config) (ctrd.Config, error) {
	subnet, err := netip.ParsePrefix(f.subnet)
	if err != nil {
		return ctrd.Config{}, fmt.Errorf("--subnet %q: not a CIDR prefix", f.subnet)
	}
	var lo, hi int
	if _, err := fmt.Sscanf(f.hostPorts, "%d-%d", &lo, &hi); err != nil || lo < 1 || hi > 65535 || lo > hi {
		return ctrd.Config{}, fmt.Errorf("--host-ports %q: want LOW-HIGH within 1-65535", f.hostPorts)
	}
	rc := ctrd.Config{
		Socket:    cfg.Containerd,
		Namespace: cfg.Namespace,
		Node:      cfg.Name,
		DataDir:   filepath.Join(cfg.DataDir, "runtime"),
		Bridge:    f.bridge,
		Subnet:    subnet,
		PortRange: [2]int{lo, hi},
		Logger:    cfg.Logger,
	}
	if !cfg.BindAddr.IsUnspecified() {
		rc.HostIP = cfg.BindAddr
	}
	return rc, nil
}

// runAgent runs until SIGTERM or SIGINT, then leaves gracefully. A second
// signal exits at once.
func runAgent(ctx context.Context, cfg node.Config, f *agentFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	rc, err := f.runtimeConfig(&cfg)
	if err != nil {
		return err
	}
	drv, err := ctrd.New(ctx, rc)
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	defer drv.Close()
	cfg.Runtime = drv
	a, err := node.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore default handling: a second signal kills us
	}()
	if f.pprofAddr != "" {
		if _, err := servePprof(ctx, f.pprofAddr, cfg.Logger); err != nil {
			return err
		}
	}
	return a.Run(ctx)
}
