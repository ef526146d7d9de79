package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime/demo"
	"github.com/shoalmesh/shoal/testenv"
	"github.com/shoalmesh/shoal/testenv/hosts"
)

// BenchmarkFailover kills a host of a 5-host `shoal dev` cluster (real
// agents in network namespaces, real containers) per iteration and
// measures, from the SIGKILL: detection (every survivor reports the host
// failed), and recovery (every service runs its replica count healthy on
// the survivors), while a client sends HTTP requests through a survivor's
// load balancer every 10 ms. The killed host is started again between
// iterations, and the cluster settles before the next kill. The gossip
// profile is $SHOAL_BENCH_PROFILE (default "fast"); $SHOAL_BENCH_AGENT_ARGS
// adds agent flags (e.g. --standby=false); $SHOAL_BENCH_DIR keeps the
// cluster's directory and logs there. Run it with a count:
//
//	go test ./cmd/shoal -run '^$' -bench Failover -benchtime 20x -timeout 30m
func BenchmarkFailover(b *testing.B) {
	testenv.RequireRoot(b)
	testenv.RequireBinaries(b, "ip", "iptables", "containerd", "runc", "ctr")
	bin := shoalBinary(b)
	ctx := context.Background()
	profile := os.Getenv("SHOAL_BENCH_PROFILE")
	if profile == "" {
		profile = "fast"
	}
	dir := os.Getenv("SHOAL_BENCH_DIR") // kept, with the agents' logs
	if dir == "" {
		dir = filepath.Join(b.TempDir(), "dev")
	}
	s, err := hosts.Up(ctx, hosts.Options{Nodes: 5, Dir: dir, Binary: bin, Profile: profile,
		AgentArgs: strings.Fields(os.Getenv("SHOAL_BENCH_AGENT_ARGS"))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Down(context.Background()) })
	if err := s.WaitMembers(ctx, time.Minute); err != nil {
		b.Fatal(err)
	}
	clients := make([]*client.Client, len(s.Hosts))
	archive := filepath.Join(b.TempDir(), "demo.tar")
	f, err := os.Create(archive)
	if err != nil {
		b.Fatal(err)
	}
	if err := demo.WriteArchive(f, demo.Options{Binary: bin}); err != nil {
		b.Fatal(err)
	}
	f.Close()
	for i, h := range s.Hosts {
		if clients[i], err = client.New(h.API, s.Token); err != nil {
			b.Fatal(err)
		}
		f, _ := os.Open(archive)
		_, err := clients[i].LoadImage(ctx, f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	health := &spec.Health{HTTP: "/healthz", Interval: spec.Duration(time.Second), Timeout: spec.Duration(500 * time.Millisecond)}
	services := []spec.Spec{
		{Name: "web", Image: "shoal-demo:latest", Replicas: 3, Health: health, Ports: []spec.Port{{Published: 8080, Target: 8080, Protocol: "http"}}},
		{Name: "api", Image: "shoal-demo:latest", Replicas: 2, Health: health, Ports: []spec.Port{{Published: 8081, Target: 8080}}},
		{Name: "jobs", Image: "shoal-demo:latest", Replicas: 4, Health: health, Ports: []spec.Port{{Published: 8082, Target: 8080}}},
	}
	for _, sp := range services {
		if _, err := clients[0].PutService(ctx, sp, ""); err != nil {
			b.Fatal(err)
		}
	}
	// settled: every service has its count healthy, none on down hosts.
	settled := func(c *client.Client, down int) bool {
		reps, err := c.Replicas(ctx, "")
		if err != nil {
			return false
		}
		healthy := map[string]int{}
		for _, r := range reps {
			if r.Healthy && r.State == "running" && (down < 0 || r.Node != s.Hosts[down].Name) {
				healthy[r.Service]++
			}
		}
		for _, sp := range services {
			if healthy[sp.Name] != sp.Replicas {
				return false
			}
		}
		return true
	}
	// placed: settled, and every slot runs exactly once, on the owner
	// placement gives it (no hand-off under way).
	placed := func(c *client.Client) bool {
		if !settled(c, -1) {
			return false
		}
		pl, err := c.Placement(ctx, "")
		if err != nil {
			return false
		}
		reps, err := c.Replicas(ctx, "")
		if err != nil || len(reps) != len(pl.Slots) {
			return false
		}
		for _, r := range reps {
			if !slices.Contains(pl.Slots, api.PlacedSlot{Service: r.Service, Slot: r.Slot, Node: r.Node}) {
				return false
			}
		}
		return true
	}
	waitUntil := func(what string, timeout time.Duration, cond func() bool) time.Time {
		deadline := time.Now().Add(timeout)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("timed out after %v waiting for %s", timeout, what)
			}
			<-tick.C
		}
		return time.Now()
	}
	waitUntil("all services healthy", 2*time.Minute, func() bool { return placed(clients[0]) })

	var detect, recover []time.Duration
	var sent, failed atomic.Int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		victim := 1 + i%(len(s.Hosts)-1) // host-1 carries the load
		survivor := clients[0]
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // steady load through host-1's load balancer
			defer wg.Done()
			hc := &http.Client{Timeout: 5 * time.Second}
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				sent.Add(1)
				resp, err := hc.Get("http://" + s.Hosts[0].Addr.String() + ":8080/")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
				}
			}
		}()
		t0 := time.Now()
		if err := s.Kill(ctx, victim); err != nil {
			b.Fatal(err)
		}
		name := s.Hosts[victim].Name
		tDetect := waitUntil("detection", time.Minute, func() bool {
			for j, c := range clients {
				if j == victim {
					continue
				}
				ns, err := c.Nodes(ctx)
				if err != nil || !slices.ContainsFunc(ns, func(n api.Node) bool { return n.Name == name && n.Status == "failed" }) {
					return false
				}
			}
			return true
		})
		tRecover := waitUntil("recovery", time.Minute, func() bool { return settled(survivor, victim) })
		detect = append(detect, tDetect.Sub(t0))
		recover = append(recover, tRecover.Sub(t0))
		close(stop)
		wg.Wait()
		b.StopTimer()
		if err := s.Start(ctx, victim); err != nil {
			b.Fatal(err)
		}
		if err := s.WaitMembers(ctx, time.Minute); err != nil {
			b.Fatal(err)
		}
		b.Logf("kill %d (%s): detected %v, recovered %v", i+1, name, tDetect.Sub(t0).Round(time.Millisecond), tRecover.Sub(t0).Round(time.Millisecond))
		waitUntil("settling after the restart", 2*time.Minute, func() bool { return placed(clients[0]) })
		b.StartTimer()
	}
	b.StopTimer()
	q := func(d []time.Duration, p float64) float64 { // nearest rank: p99 of 20 is the maximum
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[max(int(math.Ceil(p*float64(len(d))))-1, 0)]) / 1e6
	}
	b.ReportMetric(q(detect, 0.5), "detect-p50-ms")
	b.ReportMetric(q(detect, 0.99), "detect-p99-ms")
	b.ReportMetric(q(recover, 0.5), "recover-p50-ms")
	b.ReportMetric(q(recover, 0.99), "recover-p99-ms")
	b.ReportMetric(float64(failed.Load()), "failed-requests")
	b.ReportMetric(float64(sent.Load()), "requests")
}
