package hosts

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// ContainerdConfig is the config.toml of a private containerd daemon:
// content, snapshots and the opt plugin under dir, runtime state under
// state, the CRI plugin off, gRPC and ttrpc on socket (and socket.ttrpc).
// Content is isolated per namespace: each host of a test cluster has its
// own namespace and must hold (fetch, import) its own copy of an image, as
// a separate machine would. With containerd's default ("shared"), a blob
// one namespace holds is handed to another without any transfer, and
// images would seem to travel between hosts when they do not.
func ContainerdConfig(dir, state, socket string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
`, filepath.Join(dir, "root"), state, socket, socket+".ttrpc", filepath.Join(dir, "opt"))
}

// startContainerd starts a private containerd daemon under the cluster's
// dir, detached, and waits until it answers.
func (s *State) startContainerd(ctx context.Context) error {
	for _, tool := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("hosts: %s not found (scripts/install-deps.sh installs it)", tool)
		}
	}
	// Unix socket paths are limited to 108 bytes: keep it short.
	run := filepath.Join(os.TempDir(), "shoal-dev-"+s.ID)
	if err := os.MkdirAll(run, 0o700); err != nil {
		return err
	}
	s.Containerd = filepath.Join(run, "containerd.sock")
	root := filepath.Join(s.Dir, "containerd")
	cfg := ContainerdConfig(root, filepath.Join(run, "state"), s.Containerd)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	cfgPath := filepath.Join(root, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(s.Dir, "containerd.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("hosts: containerd: %w", err)
	}
	s.ContainerdPID = cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	if err := s.Save(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for exec.CommandContext(ctx, "ctr", "--address", s.Containerd, "version").Run() != nil {
		if time.Now().After(deadline) || !alive(s.ContainerdPID) {
			return fmt.Errorf("hosts: containerd did not start (log: %s)", filepath.Join(s.Dir, "containerd.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// stopContainerd kills a private daemon's shims, then the daemon, and
// removes its runtime dir.
func stopContainerd(pid int, socket string) {
	if out, err := exec.Command("pgrep", "-f", "containerd-shim.*-address "+socket).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			var p int
			if _, err := fmt.Sscan(f, &p); err == nil {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(pid, 10*time.Second) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
	}
	dir := filepath.Dir(socket)
	unmountUnder(dir)
	_ = os.RemoveAll(dir)
}

// ctr runs ctr against the cluster's containerd in host h's namespace and
// returns its output.
func (s *State) ctr(ctx context.Context, h *Host, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", s.Containerd, "--namespace", "shoal-" + h.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// killTasks SIGKILLs every task of host h, as a crash would.
func (s *State) killTasks(ctx context.Context, h *Host) {
	out, err := s.ctr(ctx, h, "tasks", "ls", "-q")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(out) {
		_, _ = s.ctr(ctx, h, "tasks", "kill", "--signal", "SIGKILL", id)
	}
}

// removeContainers removes every task, container and image of host h and
// its containerd namespace.
func (s *State) removeContainers(ctx context.Context, h *Host) {
	if s.Containerd == "" {
		return
	}
	s.killTasks(ctx, h)
	out, _ := s.ctr(ctx, h, "containers", "ls", "-q")
	for _, id := range strings.Fields(out) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, _ = s.ctr(ctx, h, "tasks", "delete", "--force", id)
			if _, err := s.ctr(ctx, h, "containers", "rm", id); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	out, _ = s.ctr(ctx, h, "images", "ls", "-q")
	if imgs := strings.Fields(out); len(imgs) > 0 {
		_, _ = s.ctr(ctx, h, append([]string{"images", "rm"}, imgs...)...)
	}
	_, _ = exec.CommandContext(ctx, "ctr", "--address", s.Containerd, "namespaces", "rm", "shoal-"+h.Name).CombinedOutput()
}

// unmountUnder unmounts every mount below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			mounts = append(mounts, f[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// get fetches path from host i's API into out (nil: discard).
func (s *State) get(ctx context.Context, i int, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Hosts[i].API+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Member is a node as one host's agent sees it.
type Member struct {
	Name   string `json:"name"`
	Status string `json:"status"`
}

// Members returns the membership as host i's agent sees it.
func (s *State) Members(ctx context.Context, i int) ([]Member, error) {
	var ms []Member
	err := s.get(ctx, i, "/v1/nodes", &ms)
	return ms, err
}

// Status says what a host is doing: running, paused, stopped, or exited
// (its agent died on its own).
func (s *State) Status(i int) string {
	h := &s.Hosts[i]
	switch {
	case h.PID == 0:
		return "stopped"
	case !alive(h.PID):
		return "exited"
	case h.Paused:
		return "paused"
	}
	return "running"
}

// WaitMembers waits until every running host's agent sees every running
// host alive and every other host not alive.
func (s *State) WaitMembers(ctx context.Context, timeout time.Duration) error {
	return s.WaitView(ctx, timeout, func(_, j int) string {
		if s.Alive(j) && !s.Hosts[j].Paused {
			return "alive"
		}
		return ""
	})
}

// WaitView waits until every running, unpaused host i's agent sees each
// host j with status want(i, j) ("" = anything but alive).
func (s *State) WaitView(ctx context.Context, timeout time.Duration, want func(i, j int) string) error {
	deadline := time.Now().Add(timeout)
	for {
		err := s.checkView(ctx, want)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hosts: after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *State) checkView(ctx context.Context, want func(i, j int) string) error {
	for i := range s.Hosts {
		if !s.Alive(i) || s.Hosts[i].Paused {
			continue
		}
		ms, err := s.Members(ctx, i)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Hosts[i].Name, err)
		}
		status := map[string]string{}
		for _, m := range ms {
			status[m.Name] = m.Status
		}
		for j, h := range s.Hosts {
			w, got := want(i, j), status[h.Name]
			if w == "" && got == "alive" || w != "" && got != w {
				return fmt.Errorf("%s sees %s %q, want %q", s.Hosts[i].Name, h.Name, got, cmpOr(w, "not alive"))
			}
		}
	}
	return nil
}
