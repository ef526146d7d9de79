package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	gocni "github.com/containerd/go-cni"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalmesh/shoal/runtime"
)

var (
	_ runtime.Driver   = (*Driver)(nil)
	_ runtime.Preparer = (*Driver)(nil)
)

// Config configures a Driver. Zero fields take the defaults noted.
type Config struct {
	// Socket is the containerd socket path (required).
	Socket string
	// Namespace is the containerd namespace holding the node's images and
	// containers (default "shoal").
	Namespace string
	// Node is the node name, put on every container in runtime.LabelNode.
	Node string
	// DataDir holds the containers' logs (DataDir/logs/<id>.log) and the
	// CNI IPAM state (DataDir/cni) (required).
	DataDir string

	// CNIPluginDirs are searched for the CNI plugins (default
	// ["/usr/lib/cni", "/opt/cni/bin"]).
	CNIPluginDirs []string
	// Bridge is the Linux bridge containers attach to (default "shoal0").
	// Several agents on one machine need different bridges.
	Bridge string
	// Subnet is the bridge's container subnet (default 10.213.0.0/24).
	// Several agents on one machine need disjoint subnets.
	Subnet netip.Prefix
	// HostIP is the address published ports are mapped on (the agent's
	// bind address). Invalid (zero): every host address.
	HostIP netip.Addr
	// PortRange is the inclusive range host ports are taken from
	// (default 20000-29999).
	PortRange [2]int

	// LogMaxBytes bounds each replica's log file; a larger one is rotated
	// into a single <id>.log.1 (default 10 MiB).
	LogMaxBytes int64
	// LogCheckInterval is how often log sizes are checked (default 5s).
	LogCheckInterval time.Duration
	// StopTimeout is the SIGTERM grace period Stop uses when called with
	// a zero timeout (default 10s).
	StopTimeout time.Duration
	// Logger receives the driver's logs (default slog.Default()).
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultNamespace        = "shoal"
	DefaultBridge           = "shoal0"
	DefaultLogMaxBytes      = 10 << 20
	DefaultLogCheckInterval = 5 * time.Second
	DefaultStopTimeout      = 10 * time.Second
)

// DefaultSubnet is Config.Subnet's default.
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/24")

// DefaultCNIPluginDirs is Config.CNIPluginDirs' default.
var DefaultCNIPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// cniPlugins are the plugin binaries bridge networking needs.
var cniPlugins = []string{"bridge", "host-local", "loopback"}

// runcRuntime is the containerd runtime (shim) containers run with.
const runcRuntime = "io.containerd.runc.v2"

// Driver runs replicas as containerd containers. Safe for concurrent use.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	client *containerd.Client
	cni    gocni.CNI
	logDir string

	portMu   sync.Mutex     // guards reserved
	reserved map[int]string // host ports handed out by Starts in flight -> container ID

	fwdMu   sync.Mutex // guards fwdDone
	fwdDone bool       // the iptables FORWARD rules are in place

	resolver atomic.Pointer[resolverFunc] // set by SetImageResolver

	stop chan struct{}  // closed by Close
	wg   sync.WaitGroup // the log rotation loop
	once sync.Once

	// crashAfter, set by tests only (export_test.go), makes create return
	// right after the named step without cleaning up, as if the agent
	// had been killed there.
	crashAfter string
}

// New returns a Driver for the daemon at cfg.Socket. It does not fail
// when the daemon is down (Ready reports that); it fails on a bad
// configuration or when DataDir cannot be created. It makes no call to
// the daemon, so ctx bounds nothing today. Close releases it.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Socket == "" {
		return nil, errors.New("containerd: Config.Socket is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("containerd: Config.DataDir is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if len(cfg.CNIPluginDirs) == 0 {
		cfg.CNIPluginDirs = DefaultCNIPluginDirs
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 {
		return nil, fmt.Errorf("containerd: Config.Subnet %s: need an IPv4 prefix of /30 or larger", cfg.Subnet)
	}
	if cfg.PortRange == [2]int{} {
		cfg.PortRange = [2]int{20000, 29999}
	}
	if cfg.PortRange[0] < 1 || cfg.PortRange[1] > 65535 || cfg.PortRange[0] > cfg.PortRange[1] {
		return nil, fmt.Errorf("containerd: Config.PortRange %v is not a port range", cfg.PortRange)
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.LogCheckInterval <= 0 {
		cfg.LogCheckInterval = DefaultLogCheckInterval
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Driver{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "containerd"),
		logDir:   filepath.Join(cfg.DataDir, "logs"),
		reserved: make(map[int]string),
		stop:     make(chan struct{}),
	}
	for _, dir := range []string{d.logDir, d.ipamDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("containerd: %w", err)
		}
	}
	cni, err := d.newCNI()
	if err != nil {
		return nil, err
	}
	d.cni = cni

	// Non-blocking dial: the connection comes up (and comes back) on its
	// own; until then calls fail with Unavailable, which Ready reports.
	// No default namespace on the client, so New makes no call.
	client, err := containerd.New(cfg.Socket,
		containerd.WithDefaultRuntime(runcRuntime),
		containerd.WithDialOpts([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(dialUnix),
		}))
	if err != nil {
		return nil, fmt.Errorf("containerd: client for %s: %w", cfg.Socket, err)
	}
	d.client = client

	d.wg.Add(1)
	go d.rotateLoop()

	return d, nil
}

// Close stops the driver's background work and closes its connection.
// Containers keep running, with their networks; when none is left, the
// driver's nftables table and iptables rules go too. Safe to call more
// than once.
func (d *Driver) Close() error {
	var err error
	d.once.Do(func() {
		close(d.stop)
		d.wg.Wait()
		if err := d.dropIdleNetwork(); err != nil {
			d.log.Warn("close: network rules", "err", err)
		}
		err = d.client.Close()
	})
	return err
}

// Ready reports whether the daemon answers and the CNI plugins are
// installed; the error (wrapping runtime.ErrNotReady) says what is missing.
func (d *Driver) Ready(ctx context.Context) error {
	var problems []string
	if missing := d.missingPlugins(); len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("CNI plugins %s not found in %s", strings.Join(missing, ", "), strings.Join(d.cfg.CNIPluginDirs, ":")))
	}
	vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := d.client.Version(vctx); err != nil {
		problems = append(problems, fmt.Sprintf("containerd at %s unreachable: %v", d.cfg.Socket, err))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", runtime.ErrNotReady, strings.Join(problems, "; "))
	}
	return nil
}

// dialUnix dials containerd's socket once (containerd's own dialer keeps
// retrying a missing socket until the dial deadline, which would make
// every call block while the daemon is down).
func dialUnix(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
}

// missingPlugins returns the CNI plugins not found in any plugin dir.
func (d *Driver) missingPlugins() []string {
	var missing []string
	for _, p := range cniPlugins {
		found := false
		for _, dir := range d.cfg.CNIPluginDirs {
			if st, err := os.Stat(filepath.Join(dir, p)); err == nil && !st.IsDir() {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, p)
		}
	}
	return missing
}

// nsCtx puts the driver's namespace into ctx.
func (d *Driver) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.cfg.Namespace)
}

// classify wraps err from a containerd call into the runtime error class
// it belongs to (ErrNotFound, ErrNotReady), with what was being done.
func classify(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("containerd: %s: %w: %w", msg, runtime.ErrNotFound, err)
	case errdefs.IsUnavailable(err):
		return fmt.Errorf("containerd: %s: %w: %w", msg, runtime.ErrNotReady, err)
	}
	return fmt.Errorf("containerd: %s: %w", msg, err)
}
