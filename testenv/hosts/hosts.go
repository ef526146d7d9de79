// Package hosts runs multi-host local clusters: N hosts on one machine,
// each a network namespace with its own address on a bridge, each running
// a real `shoal agent` process with its own data dir and containerd
// namespace, all sharing one containerd daemon. It backs `shoal dev` and
// the chaos tests, with verbs that do to a host what happens to machines:
// kill (a crash: the agent and its containers die), stop and start, pause
// and resume (SIGSTOP, SIGCONT), partition and heal, netem.
//
// A cluster's state lives in a directory (state.json, the agents' data
// dirs and logs), so that separate invocations of `shoal dev` act on the
// same cluster. Everything it makes is named after the cluster's ID and
// removed by Down: processes (by PID), namespaces, veths, the bridge and
// iptables rules.
//
// Every function needs root, ip (iproute2) and iptables; Netem also needs
// the kernel's sch_netem.
package hosts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// State is a cluster, as kept in Dir/state.json.
type State struct {
	// ID names everything the cluster makes (4 hex digits).
	ID string `json:"id"`
	// Dir holds the state, data dirs and logs.
	Dir string `json:"dir"`
	// Binary is the shoal binary the agents run.
	Binary string `json:"binary"`
	// Bridge connects the hosts; BridgeAddr is its address, the hosts'
	// gateway.
	Bridge     string       `json:"bridge"`
	Subnet     netip.Prefix `json:"subnet"`
	BridgeAddr netip.Addr   `json:"bridge_addr"`
	// Containerd is the socket every agent uses; ContainerdPID is set
	// when the cluster started that daemon itself.
	Containerd    string `json:"containerd"`
	ContainerdPID int    `json:"containerd_pid,omitempty"`
	// Token guards every agent's API.
	Token string `json:"token"`
	// Profile is the agents' gossip profile.
	Profile string `json:"profile"`
	// Hosts in order; the first is every other's seed unless Join is set.
	Hosts []Host `json:"hosts"`
	// Join, when set, are every host's --join values instead.
	Join []string `json:"join,omitempty"`
}

// Host is one host of a cluster.
type Host struct {
	Name    string     `json:"name"`
	NetNS   string     `json:"netns"`
	Veth    string     `json:"veth"` // root side; eth0 inside
	Addr    netip.Addr `json:"address"`
	API     string     `json:"api"` // http://addr:7070
	DataDir string     `json:"data_dir"`
	Log     string     `json:"log"`
	PID     int        `json:"pid,omitempty"` // the agent's, 0 when stopped
	Paused  bool       `json:"paused,omitempty"`
}

// Options configure Up.
type Options struct {
	Nodes  int
	Dir    string
	Binary string
	// Containerd is the socket to use; "" starts a private daemon under
	// Dir.
	Containerd string
	// Profile is the gossip profile (default "fast": the hosts are a LAN).
	Profile string
	// AgentArgs are extra `shoal agent` flags for every host.
	AgentArgs []string
	// Join, when set, replaces the default seed (host-1 for every other
	// host): every host, host-1 too, gets these --join values; "mdns"
	// makes a cluster without seeds.
	Join []string
}

const stateFile = "state.json"

// Load reads the cluster in dir.
func Load(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("hosts: no cluster in %s (shoal dev up makes one)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("hosts: %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}

// Save writes the state to its dir.
func (s *State) Save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("hosts: %w", err)
	}
	return os.Rename(tmp, filepath.Join(s.Dir, stateFile))
}

// Up creates a cluster in opts.Dir, which must not hold one, and starts
// every agent. It returns once every agent's API answers; use
// WaitMembers to wait for the membership.
func Up(ctx context.Context, opts Options) (*State, error) {
	if opts.Nodes < 1 || opts.Nodes > 200 {
		return nil, fmt.Errorf("hosts: --nodes must be 1 to 200, got %d", opts.Nodes)
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, stateFile)); err == nil {
		return nil, fmt.Errorf("hosts: a cluster already lives in %s (shoal dev down removes it)", opts.Dir)
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("hosts: %s not found (scripts/install-deps.sh installs it)", tool)
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(opts.Binary)
	if err != nil {
		return nil, err
	}
	id := randomHex(2)
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	s := &State{
		ID: id, Dir: dir, Binary: bin, Bridge: "shd" + id, Subnet: subnet,
		BridgeAddr: subnet.Addr().Next(), Containerd: opts.Containerd,
		Token: randomHex(16), Profile: cmpOr(opts.Profile, "fast"),
		Join: opts.Join,
	}
	// Saved first, so that Down can clean up after a failed Up.
	if err := s.Save(); err != nil {
		return nil, err
	}
	fail := func(err error) (*State, error) {
		_ = s.Down(context.WithoutCancel(ctx))
		return nil, err
	}
	if s.Containerd == "" {
		if err := s.startContainerd(ctx); err != nil {
			return fail(err)
		}
	}
	if err := s.makeBridge(); err != nil {
		return fail(err)
	}
	addr := s.BridgeAddr
	for i := range opts.Nodes {
		addr = addr.Next()
		h := Host{
			Name:    fmt.Sprintf("host-%d", i+1),
			NetNS:   fmt.Sprintf("shoal-%s-%d", id, i+1),
			Veth:    fmt.Sprintf("shv%s-%d", id, i+1),
			Addr:    addr,
			API:     "http://" + netip.AddrPortFrom(addr, 7070).String(),
			DataDir: filepath.Join(dir, fmt.Sprintf("host-%d", i+1)),
			Log:     filepath.Join(dir, fmt.Sprintf("host-%d.log", i+1)),
		}
		s.Hosts = append(s.Hosts, h)
		if err := s.Save(); err != nil {
			return fail(err)
		}
		if err := s.makeHost(&s.Hosts[i]); err != nil {
			return fail(err)
		}
	}
	for i := range s.Hosts {
		if err := s.startAgent(i, opts.AgentArgs); err != nil {
			return fail(err)
		}
	}
	if err := s.Save(); err != nil {
		return fail(err)
	}
	for i := range s.Hosts {
		if err := s.waitAPI(ctx, i); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// Host returns the host called name ("host-2" or "2").
func (s *State) Host(name string) (int, error) {
	for i, h := range s.Hosts {
		if h.Name == name || strconv.Itoa(i+1) == name {
			return i, nil
		}
	}
	names := make([]string, len(s.Hosts))
	for i, h := range s.Hosts {
		names[i] = h.Name
	}
	return -1, fmt.Errorf("hosts: no host %q (hosts: %s)", name, strings.Join(names, ", "))
}

// run runs a command and returns its error with its output.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNS runs a command in host h's namespace.
func inNS(h *Host, name string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", h.NetNS, name}, args...)...)
}

func (s *State) makeBridge() error {
	steps := [][]string{
		{"ip", "link", "add", s.Bridge, "type", "bridge"},
		{"ip", "addr", "add", netip.PrefixFrom(s.BridgeAddr, s.Subnet.Bits()).String(), "dev", s.Bridge},
		{"ip", "link", "set", s.Bridge, "up"},
		// Bridged traffic passes the host's FORWARD chain when
		// br_netfilter is loaded; let the cluster's through.
		{"iptables", "-I", "FORWARD", "-i", s.Bridge, "-o", s.Bridge, "-m", "comment", "--comment", "shoal-dev-" + s.ID, "-j", "ACCEPT"},
	}
	for _, st := range steps {
		if err := run(st[0], st[1:]...); err != nil {
			return fmt.Errorf("hosts: bridge: %w", err)
		}
	}
	return nil
}

func (s *State) makeHost(h *Host) error {
	steps := [][]string{
		{"ip", "netns", "add", h.NetNS},
		{"ip", "link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.NetNS},
		{"ip", "link", "set", h.Veth, "master", s.Bridge, "up"},
		{"ip", "-n", h.NetNS, "link", "set", "lo", "up"},
		{"ip", "-n", h.NetNS, "addr", "add", netip.PrefixFrom(h.Addr, s.Subnet.Bits()).String(), "dev", "eth0"},
		{"ip", "-n", h.NetNS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NetNS, "route", "add", "default", "via", s.BridgeAddr.String()},
		// The chain partitions use; jumped to from INPUT and OUTPUT.
		{"ip", "netns", "exec", h.NetNS, "iptables", "-N", "SHOAL-DEV"},
		{"ip", "netns", "exec", h.NetNS, "iptables", "-I", "INPUT", "-j", "SHOAL-DEV"},
		{"ip", "netns", "exec", h.NetNS, "iptables", "-I", "OUTPUT", "-j", "SHOAL-DEV"},
	}
	for _, st := range steps {
		if err := run(st[0], st[1:]...); err != nil {
			return fmt.Errorf("hosts: %s: %w", h.Name, err)
		}
	}
	return os.MkdirAll(h.DataDir, 0o700)
}

// agentArgs are host i's `shoal agent` arguments.
func (s *State) agentArgs(i int, extra []string) []string {
	h := &s.Hosts[i]
	// nsenter --net, not `ip netns exec`: the latter also enters a new
	// mount namespace, and the agent's network namespaces (bind mounts
	// under its data dir) must be visible to containerd and runc.
	args := []string{"--net=/run/netns/" + h.NetNS, "--", s.Binary, "agent",
		"--name", h.Name, "--data-dir", h.DataDir,
		"--bind", h.Addr.String(), "--api", netip.AddrPortFrom(h.Addr, 7070).String(),
		"--token", s.Token, "--profile", s.Profile,
		"--containerd", s.Containerd, "--namespace", "shoal-" + h.Name,
	}
	switch {
	case len(s.Join) > 0:
		for _, j := range s.Join {
			args = append(args, "--join", j)
		}
	case i > 0:
		args = append(args, "--join", netip.AddrPortFrom(s.Hosts[0].Addr, 7946).String())
	}
	return append(args, extra...)
}

// startAgent starts host i's agent, detached (its own session), logging to
// the host's log file.
func (s *State) startAgent(i int, extra []string) error {
	h := &s.Hosts[i]
	logf, err := os.OpenFile(h.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("hosts: %w", err)
	}
	defer logf.Close()
	if extra == nil {
		extra = readArgs(h.DataDir)
	} else if err := writeArgs(h.DataDir, extra); err != nil {
		return err
	}
	cmd := exec.Command("nsenter", s.agentArgs(i, extra)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("hosts: start %s: %w", h.Name, err)
	}
	h.PID, h.Paused = cmd.Process.Pid, false
	// nsenter execs the agent: the PID is the agent's. Reap it
	// in the background while this process lives.
	go func() { _ = cmd.Wait() }()
	return nil
}

// extraArgsFile keeps a host's extra agent flags for restarts.
const extraArgsFile = "dev-agent-args.json"

func writeArgs(dataDir string, args []string) error {
	b, _ := json.Marshal(args)
	return os.WriteFile(filepath.Join(dataDir, extraArgsFile), b, 0o600)
}

func readArgs(dataDir string) []string {
	var args []string
	if b, err := os.ReadFile(filepath.Join(dataDir, extraArgsFile)); err == nil {
		_ = json.Unmarshal(b, &args)
	}
	return args
}

// waitAPI waits until host i's agent answers /v1/health.
func (s *State) waitAPI(ctx context.Context, i int) error {
	h := &s.Hosts[i]
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := s.get(ctx, i, "/v1/health", nil); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("hosts: %s's agent did not answer in 30s: %v (log: %s)", h.Name, err, h.Log)
		}
		if !alive(h.PID) {
			return fmt.Errorf("hosts: %s's agent exited (log: %s)", h.Name, h.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// Kill crashes host i: SIGKILL to its agent, then every task in its
// containerd namespace is killed, as a power loss would.
func (s *State) Kill(ctx context.Context, i int) error {
	h := &s.Hosts[i]
	if h.PID > 0 {
		_ = syscall.Kill(h.PID, syscall.SIGCONT) // a paused agent dies too
		_ = syscall.Kill(h.PID, syscall.SIGKILL)
		waitGone(h.PID, 10*time.Second)
	}
	h.PID, h.Paused = 0, false
	s.killTasks(ctx, h)
	return s.Save()
}

// Stop stops host i's agent cleanly (SIGTERM: it leaves the cluster).
// Its containers keep running, as with any agent restart.
func (s *State) Stop(i int) error {
	h := &s.Hosts[i]
	if h.PID > 0 {
		_ = syscall.Kill(h.PID, syscall.SIGCONT)
		_ = syscall.Kill(h.PID, syscall.SIGTERM)
		if !waitGone(h.PID, 30*time.Second) {
			_ = syscall.Kill(h.PID, syscall.SIGKILL)
			waitGone(h.PID, 5*time.Second)
		}
	}
	h.PID, h.Paused = 0, false
	return s.Save()
}

// Start starts host i's agent again with its data dir.
func (s *State) Start(ctx context.Context, i int) error {
	if s.Hosts[i].PID > 0 && alive(s.Hosts[i].PID) {
		return fmt.Errorf("hosts: %s is running (pid %d)", s.Hosts[i].Name, s.Hosts[i].PID)
	}
	if err := s.startAgent(i, nil); err != nil {
		return err
	}
	if err := s.Save(); err != nil {
		return err
	}
	return s.waitAPI(ctx, i)
}

// Pause freezes host i's agent (SIGSTOP); its containers keep running.
func (s *State) Pause(i int) error { return s.signal(i, syscall.SIGSTOP, true) }

// Resume undoes Pause.
func (s *State) Resume(i int) error { return s.signal(i, syscall.SIGCONT, false) }

func (s *State) signal(i int, sig syscall.Signal, paused bool) error {
	h := &s.Hosts[i]
	if h.PID == 0 || !alive(h.PID) {
		return fmt.Errorf("hosts: %s's agent is not running", h.Name)
	}
	if err := syscall.Kill(h.PID, sig); err != nil {
		return fmt.Errorf("hosts: %s: %w", h.Name, err)
	}
	h.Paused = paused
	return s.Save()
}

// Partition cuts the hosts into groups that cannot reach each other:
// every host drops traffic from and to the hosts of the other groups.
// Hosts in no group keep reaching everyone. An earlier partition is
// healed first.
func (s *State) Partition(groups ...[]int) error {
	if err := s.Heal(); err != nil {
		return err
	}
	group := make(map[int]int)
	for g, members := range groups {
		for _, i := range members {
			if i < 0 || i >= len(s.Hosts) {
				return fmt.Errorf("hosts: no host %d", i+1)
			}
			if _, dup := group[i]; dup {
				return fmt.Errorf("hosts: %s is in two groups", s.Hosts[i].Name)
			}
			group[i] = g
		}
	}
	for i, gi := range group {
		for j, gj := range group {
			if gi == gj {
				continue
			}
			h, other := &s.Hosts[i], s.Hosts[j].Addr.String()
			if err := inNS(h, "iptables", "-A", "SHOAL-DEV", "-s", other, "-j", "DROP"); err != nil {
				return err
			}
			if err := inNS(h, "iptables", "-A", "SHOAL-DEV", "-d", other, "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition.
func (s *State) Heal() error {
	for i := range s.Hosts {
		if err := inNS(&s.Hosts[i], "iptables", "-F", "SHOAL-DEV"); err != nil {
			return err
		}
	}
	return nil
}

// Netem delays and drops host i's outgoing packets (tc netem on its
// eth0); zero delay and loss remove the rule.
func (s *State) Netem(i int, delay time.Duration, lossPct float64) error {
	h := &s.Hosts[i]
	if delay == 0 && lossPct == 0 {
		_ = inNS(h, "tc", "qdisc", "del", "dev", "eth0", "root")
		return nil
	}
	args := []string{"qdisc", "replace", "dev", "eth0", "root", "netem"}
	if delay > 0 {
		args = append(args, "delay", fmt.Sprintf("%dus", delay.Microseconds()))
	}
	if lossPct > 0 {
		args = append(args, "loss", strconv.FormatFloat(lossPct, 'f', -1, 64)+"%")
	}
	if err := inNS(h, "tc", args...); err != nil {
		return fmt.Errorf("hosts: netem needs the kernel's sch_netem: %w", err)
	}
	return nil
}

// Exec runs a command in host i's namespace with the given stdio.
func (s *State) Exec(ctx context.Context, i int, argv []string, stdin, stdout, stderr *os.File) error {
	if len(argv) == 0 {
		return errors.New("hosts: exec: no command")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.Hosts[i].NetNS}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// Down removes everything the cluster made: agents (killed by PID), their
// containers, namespaces, veths, the bridge and its iptables rule, the
// private containerd, and the directory.
func (s *State) Down(ctx context.Context) error {
	var errs []error
	for i := range s.Hosts {
		h := &s.Hosts[i]
		if h.PID > 0 {
			_ = syscall.Kill(h.PID, syscall.SIGCONT)
			_ = syscall.Kill(h.PID, syscall.SIGKILL)
			waitGone(h.PID, 10*time.Second)
			h.PID = 0
		}
	}
	for i := range s.Hosts {
		h := &s.Hosts[i]
		s.removeContainers(ctx, h)
		// Deleting the namespace deletes eth0 and so the veth pair.
		if err := run("ip", "netns", "del", h.NetNS); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
		_ = run("ip", "link", "del", h.Veth)
	}
	if s.Bridge != "" {
		_ = run("ip", "link", "del", s.Bridge)
		for run("iptables", "-D", "FORWARD", "-i", s.Bridge, "-o", s.Bridge, "-m", "comment", "--comment", "shoal-dev-"+s.ID, "-j", "ACCEPT") == nil {
		}
	}
	if s.ContainerdPID > 0 {
		stopContainerd(s.ContainerdPID, s.Containerd)
	}
	unmountUnder(s.Dir)
	if err := os.RemoveAll(s.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitGone waits until pid is gone or a zombie.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// freeSubnet picks a 10.a.b.0/24 that no interface or route of this
// machine uses.
func freeSubnet() (netip.Prefix, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("hosts: ip route: %w", err)
	}
	used := string(out)
	for range 100 {
		a, _ := rand.Int(rand.Reader, big.NewInt(200))
		b, _ := rand.Int(rand.Reader, big.NewInt(250))
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(30 + a.Int64()), byte(1 + b.Int64()), 0}), 24)
		if !strings.Contains(used, strings.TrimSuffix(p.Addr().String(), ".0")+".") {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("hosts: no free 10.x.y.0/24 subnet")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Alive reports whether host i's agent process runs.
func (s *State) Alive(i int) bool { return alive(s.Hosts[i].PID) }

// Names lists the hosts' names.
func (s *State) Names() []string {
	out := make([]string, len(s.Hosts))
	for i, h := range s.Hosts {
		out[i] = h.Name
	}
	return slices.Clip(out)
}
