package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/testenv"
	"github.com/shoalmesh/shoal/testenv/hosts"
)

// TestDevCluster drives `shoal dev` end to end: three hosts in network
// namespaces with real agents and a private containerd; every verb acts
// on the real processes and network, and down leaves nothing behind.
func TestDevCluster(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "ip", "iptables", "containerd", "runc", "ctr")
	bin := shoalBinary(t)
	dir := filepath.Join(t.TempDir(), "dev")
	ctx := context.Background()
	dev := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"dev", "--dir", dir}, args...)...).CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := dev(args...)
		if err != nil {
			t.Fatalf("shoal dev %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	must("up", "--nodes", "3")
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
			if out, err := dev("down"); err != nil {
				t.Errorf("cleanup: dev down: %v\n%s", err, out)
			}
		}
	})
	s, err := hosts.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	logs := func() {
		for _, h := range s.Hosts {
			b, _ := os.ReadFile(h.Log)
			t.Logf("%s log:\n%s", h.Name, b)
		}
	}
	wait := func(what string, want func(i, j int) string) {
		t.Helper()
		if err := s.WaitView(ctx, 90*time.Second, want); err != nil {
			logs()
			t.Fatalf("%s: %v", what, err)
		}
	}
	reload := func() {
		t.Helper()
		if s, err = hosts.Load(dir); err != nil {
			t.Fatal(err)
		}
	}
	allAlive := func(_, _ int) string { return "alive" }
	wait("membership after up", allAlive)

	var rows []devRow
	if err := json.Unmarshal([]byte(must("ls", "-o", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("dev ls: %+v", rows)
	}
	for i, r := range rows {
		if r.Name != s.Hosts[i].Name || r.Address != s.Hosts[i].Addr.String() || r.API != s.Hosts[i].API ||
			r.Token != s.Token || r.Status != "running" {
			t.Errorf("dev ls row %d: %+v", i, r)
		}
	}

	if out := strings.TrimSpace(must("addr", "2")); out != s.Hosts[1].API {
		t.Errorf("dev addr 2 = %q, want %q", out, s.Hosts[1].API)
	}
	if out := strings.TrimSpace(must("token")); out != s.Token {
		t.Errorf("dev token = %q", out)
	}

	// dev exec runs in the host's namespace: it has the host's address.
	if out := must("exec", "host-2", "--", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(out, s.Hosts[1].Addr.String()+"/") {
		t.Errorf("dev exec host-2 ip addr: %s", out)
	}

	// A partition: host-1 alone against hosts 2 and 3, then healed.
	must("partition", "1", "2,3")
	wait("partition 1 | 2,3", func(i, j int) string {
		if (i == 0) != (j == 0) {
			return ""
		}
		return "alive"
	})
	must("heal")
	wait("heal", allAlive)

	// A crash, and the restart with the same data dir.
	must("kill", "host-3")
	reload()
	if s.Hosts[2].PID != 0 {
		t.Fatalf("after kill, host-3 pid %d", s.Hosts[2].PID)
	}
	wait("kill host-3", func(_, j int) string {
		if j == 2 {
			return "failed"
		}
		return "alive"
	})
	must("start", "3")
	reload()
	wait("start host-3", allAlive)

	// A paused agent is declared failed, and comes back when resumed.
	must("pause", "host-2")
	reload()
	wait("pause host-2", func(_, j int) string {
		if j == 1 {
			return "failed"
		}
		return "alive"
	})
	must("resume", "host-2")
	reload()
	wait("resume host-2", allAlive)

	// netem works where the kernel has sch_netem, and says why where not.
	if out, err := dev("netem", "host-1", "--delay", "5ms"); err != nil && !strings.Contains(out, "sch_netem") {
		t.Errorf("dev netem failed without naming sch_netem: %v\n%s", err, out)
	} else if err == nil {
		must("netem", "host-1")
	}
	if out, err := dev("kill", "host-9"); err == nil || !strings.Contains(out, `no host "host-9"`) {
		t.Errorf("dev kill host-9: %v\n%s", err, out)
	}

	// down removes every process, namespace, link, rule and the dir.
	pids := []int{s.Hosts[0].PID, s.Hosts[1].PID, s.Hosts[2].PID, s.ContainerdPID}
	must("down")
	for _, pid := range pids {
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat")); err == nil && !strings.Contains(string(b), ") Z") {
			t.Errorf("process %d still runs after down", pid)
		}
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "shoal-"+s.ID+"-") {
		t.Errorf("namespaces left: %s", out)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), s.Bridge) || strings.Contains(string(out), "shv"+s.ID) {
		t.Errorf("links left: %s", out)
	}
	if out, _ := exec.Command("iptables", "-S", "FORWARD").Output(); strings.Contains(string(out), "shoal-dev-"+s.ID) {
		t.Errorf("FORWARD rule left: %s", out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir left: %v", err)
	}
}
