package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/testenv"
	"github.com/shoalmesh/shoal/testenv/hosts"
)

// TestMDNSJoin: three hosts in network namespaces on one bridge, each
// running a real `shoal agent --join mdns` with no seed address (and a
// fresh data dir, so no remembered peers), find each other by multicast
// DNS on their eth0 and form one cluster: every agent's API lists all
// three alive. Then one stops gracefully (discovery stops with it) and
// comes back with an empty data dir: it finds the others through their
// advertisements alone.
func TestMDNSJoin(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "ip", "iptables", "containerd", "runc", "ctr")
	bin := shoalBinary(t)
	ctx := context.Background()
	s, err := hosts.Up(ctx, hosts.Options{
		Nodes: 3, Dir: filepath.Join(t.TempDir(), "dev"), Binary: bin,
		Join: []string{"mdns"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Down(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	started := time.Now()
	logs := func() {
		for _, h := range s.Hosts {
			b, _ := os.ReadFile(h.Log)
			t.Logf("%s log:\n%s", h.Name, b)
		}
	}

	// The agents were given mdns and nothing else to join.
	for _, h := range s.Hosts {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/cmdline")
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		var joins []string
		for i, a := range args {
			if a == "--join" && i+1 < len(args) {
				joins = append(joins, args[i+1])
			}
		}
		if !slices.Equal(joins, []string{"mdns"}) {
			t.Fatalf("%s runs with --join %q, want only mdns", h.Name, joins)
		}
	}

	if err := s.WaitView(ctx, 60*time.Second, func(_, _ int) string { return "alive" }); err != nil {
		logs()
		t.Fatalf("membership by mDNS: %v", err)
	}
	t.Logf("3 agents formed one cluster by mDNS %v after their APIs answered", time.Since(started).Round(time.Millisecond))

	// Every agent advertised on its namespace's eth0 alone, and at least
	// one join went through a node found by mDNS.
	joined := 0
	for _, h := range s.Hosts {
		b, err := os.ReadFile(h.Log)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`msg="advertising on mDNS"`)) || !bytes.Contains(b, []byte("interfaces=[eth0]")) {
			logs()
			t.Fatalf("%s did not advertise on eth0", h.Name)
		}
		joined += bytes.Count(b, []byte(`msg="joined a node found by mDNS"`))
	}
	if joined == 0 {
		logs()
		t.Fatal("no agent logged a join through mDNS")
	}

	// A graceful stop ends discovery too: the agent gets as far as leaving
	// gossip (after every goroutine of Run has returned), and the others
	// see it left.
	const late = 2
	h := &s.Hosts[late]
	if err := s.Stop(late); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(h.Log); !bytes.Contains(b, []byte(`msg=leaving component=gossip`)) {
		logs()
		t.Fatalf("%s did not leave gracefully", h.Name)
	}
	wantLeft := func(_, j int) string {
		if j == late {
			return "left"
		}
		return "alive"
	}
	if err := s.WaitView(ctx, 30*time.Second, wantLeft); err != nil {
		logs()
		t.Fatalf("after stopping %s: %v", h.Name, err)
	}

	// A later node with a fresh data dir (no snapshot, no remembered
	// peers, a new identity) finds the others, which stopped browsing
	// long ago but still advertise.
	if err := os.RemoveAll(h.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(h.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(h.Log)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx, late); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitView(ctx, 60*time.Second, func(_, _ int) string { return "alive" }); err != nil {
		logs()
		t.Fatalf("late node by mDNS: %v", err)
	}
	b, err := os.ReadFile(h.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b[fi.Size():], []byte(`msg="joined a node found by mDNS"`)) {
		logs()
		t.Fatalf("the restarted %s did not join through mDNS", h.Name)
	}
}
