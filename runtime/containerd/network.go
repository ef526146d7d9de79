package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	gocni "github.com/containerd/go-cni"
	"golang.org/x/sys/unix"

	"github.com/shoalmesh/shoal/runtime"
)

// Labels this driver adds to its containers besides the runtime.Label*
// ones, so that a new Driver can report and tear down what an earlier one
// set up.
const (
	// LabelNetwork is the network mode: "bridge" or "host".
	LabelNetwork = "shoal.network"
	// LabelHostPorts lists published ports as "container=host,..."
	// ("80=20001,443=20002"), sorted by container port.
	LabelHostPorts = "shoal.hostports"
	// LabelIP is the container's own address in bridge mode.
	LabelIP = "shoal.ip"
	// LabelStarted is when the task was started (RFC 3339, UTC).
	LabelStarted = "shoal.started"
	// LabelPrepared marks a container made by Prepare; with no
	// LabelStarted it is still waiting for its Start.
	LabelPrepared = "shoal.prepared"
)

// Network modes of runtime.ReplicaSpec.Network.
const (
	NetworkBridge = "bridge"
	NetworkHost   = "host"
)

// cniIface is the container-side interface of the bridge network.
const cniIface = "eth0"

// ipamDir is where host-local keeps its allocations.
func (d *Driver) ipamDir() string { return filepath.Join(d.cfg.DataDir, "cni", "ipam") }

// netName is the CNI network name: distinct per bridge, so agents sharing
// a machine do not share cached results.
func (d *Driver) netName() string { return "shoal-" + d.cfg.Bridge }

// conflist is the CNI network configuration list of the bridge network:
// the bridge plugin with host-local IPAM only. Masquerading, host ports
// and forwarding are rules of the driver's own (hostports_nftables.go).
func (d *Driver) conflist() ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       d.netName(),
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      d.cfg.Bridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": d.cfg.Subnet.String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": d.ipamDir(),
				},
			},
		},
	}
	return json.Marshal(conf)
}

// newCNI builds the go-cni handle: the bridge network as eth0, plus lo.
func (d *Driver) newCNI() (gocni.CNI, error) {
	list, err := d.conflist()
	if err != nil {
		return nil, fmt.Errorf("containerd: cni config: %w", err)
	}
	cni, err := gocni.New(
		gocni.WithPluginDir(d.cfg.CNIPluginDirs),
		gocni.WithMinNetworkCount(2),
		gocni.WithInterfacePrefix("eth"),
		gocni.WithConfListBytes(list),
		gocni.WithLoNetwork,
	)
	if err != nil {
		return nil, fmt.Errorf("containerd: cni: %w", err)
	}
	return cni, nil
}

// setupNetwork attaches the network namespace at nsPath to the bridge
// network, maps the host ports and returns the container's address.
func (d *Driver) setupNetwork(ctx context.Context, id, nsPath string, ports map[int]int) (netip.Addr, error) {
	res, err := d.cni.Setup(ctx, id, nsPath)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("containerd: cni setup %s: %w", id, err)
	}
	if cfg, ok := res.Interfaces[cniIface]; ok {
		for _, ipc := range cfg.IPConfigs {
			if a, ok := netip.AddrFromSlice(ipc.IP); ok && d.cfg.Subnet.Contains(a.Unmap()) {
				ip := a.Unmap()
				if err := d.mapHostPorts(id, ip, ports); err != nil {
					return netip.Addr{}, err
				}
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("containerd: cni setup %s: no address in %s on %s", id, d.cfg.Subnet, cniIface)
}

// teardownNetwork releases what setupNetwork set up: the host port
// rules, the IPAM allocation and the veth. The bridge plugin removes the
// veth only while the namespace exists, hence the pinned namespace; an
// empty nsPath (the pin is gone) releases the rest. So does a pin that is
// a plain file, not a mounted namespace (an agent that died between
// creating the pin and mounting it, or between unmounting and removing
// it): the bridge plugin would refuse it on every try ("unknown FS
// magic"), and the stop would never finish.
func (d *Driver) teardownNetwork(ctx context.Context, id, nsPath string) error {
	if err := d.unmapHostPorts(id); err != nil {
		return err
	}
	if nsPath != "" && !isNetns(nsPath) {
		d.log.Warn("network namespace pin is not a mounted namespace; releasing the network without it", "id", id, "pin", nsPath)
		nsPath = ""
	}
	if err := d.cni.Remove(ctx, id, nsPath); err != nil {
		return fmt.Errorf("containerd: cni teardown %s: %w", id, err)
	}
	return nil
}

// netnsPath is the network namespace of process pid.
func netnsPath(pid uint32) string { return fmt.Sprintf("/proc/%d/ns/net", pid) }

// pinPath is where the network namespace of container id is pinned.
func (d *Driver) pinPath(id string) string { return filepath.Join(d.cfg.DataDir, "netns", id) }

// pinNetns bind-mounts the network namespace of pid at path, so it
// outlives the container's processes until unpinNetns: the network is
// torn down completely after the task is gone, and by a new Driver after
// an agent restart.
func pinNetns(pid uint32, path string) error {
	if err := unpinNetns(path); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("containerd: pin netns: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("containerd: pin netns: %w", err)
	}
	f.Close()
	if err := syscall.Mount(netnsPath(pid), path, "none", syscall.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("containerd: pin netns of %d at %s: %w", pid, path, err)
	}
	return nil
}

// isNetns reports whether path is a network namespace (a pin that is
// mounted, or /proc/PID/ns/net of a live process).
func isNetns(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// unpinNetns unmounts and removes a pin; a missing one is fine.
func unpinNetns(path string) error {
	if err := syscall.Unmount(path, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("containerd: unpin netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("containerd: unpin netns: %w", err)
	}
	return nil
}

// allocPorts picks a free host port in PortRange for each container port
// and reserves them for id until release is called. A port is free when
// no container of this driver holds it (labels), no Start in flight
// reserved it, and it can be bound on HostIP.
func (d *Driver) allocPorts(ctx context.Context, id string, ports []int) (map[int]int, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	used, err := d.usedHostPorts(ctx)
	if err != nil {
		return nil, err
	}
	d.portMu.Lock()
	defer d.portMu.Unlock()
	want := slices.Compact(slices.Sorted(slices.Values(ports)))
	lo, hi := d.cfg.PortRange[0], d.cfg.PortRange[1]
	n := hi - lo + 1
	start := rand.IntN(n)
	out := make(map[int]int, len(want))
	for i := 0; i < n && len(out) < len(want); i++ {
		p := lo + (start+i)%n
		if used[p] || d.reserved[p] != "" || !d.canBind(p) {
			continue
		}
		out[want[len(out)]] = p
	}
	if len(out) < len(want) {
		return nil, fmt.Errorf("containerd: no free host port in %d-%d for %s", lo, hi, id)
	}
	for _, h := range out {
		d.reserved[h] = id
	}
	return out, nil
}

// releasePorts drops the reservations of id.
func (d *Driver) releasePorts(id string) {
	d.portMu.Lock()
	defer d.portMu.Unlock()
	for p, owner := range d.reserved {
		if owner == id {
			delete(d.reserved, p)
		}
	}
}

// usedHostPorts returns the host ports the driver's containers hold.
func (d *Driver) usedHostPorts(ctx context.Context) (map[int]bool, error) {
	cs, err := d.client.Containers(d.nsCtx(ctx), serviceFilter)
	if err != nil {
		return nil, classify(err, "list containers")
	}
	used := make(map[int]bool)
	for _, c := range cs {
		labels, err := c.Labels(d.nsCtx(ctx))
		if err != nil {
			continue
		}
		hp, _ := parseHostPorts(labels[LabelHostPorts])
		for _, h := range hp {
			used[h] = true
		}
	}
	return used, nil
}

// canBind reports whether TCP port p can be bound on HostIP now.
func (d *Driver) canBind(p int) bool {
	host := ""
	if d.cfg.HostIP.IsValid() {
		host = d.cfg.HostIP.String()
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// formatHostPorts encodes container->host ports for LabelHostPorts.
func formatHostPorts(ports map[int]int) string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(ports)) {
		parts = append(parts, fmt.Sprintf("%d=%d", c, ports[c]))
	}
	return strings.Join(parts, ",")
}

// parseHostPorts decodes LabelHostPorts. Labels are outside input (any
// containerd client can write them): bad entries are an error.
func parseHostPorts(s string) (map[int]int, error) {
	if s == "" {
		return nil, nil
	}
	out := make(map[int]int)
	for _, part := range strings.Split(s, ",") {
		c, h, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("containerd: host ports %q: entry %q is not container=host", s, part)
		}
		cp, err1 := strconv.Atoi(c)
		hp, err2 := strconv.Atoi(h)
		if err1 != nil || err2 != nil || cp < 1 || cp > 65535 || hp < 1 || hp > 65535 {
			return nil, fmt.Errorf("containerd: host ports %q: entry %q is not two ports", s, part)
		}
		out[cp] = hp
	}
	return out, nil
}

// serviceFilter selects the containers that carry runtime.LabelService.
var serviceFilter = fmt.Sprintf("labels.%q", runtime.LabelService)
