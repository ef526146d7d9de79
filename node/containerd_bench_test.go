package node_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/testenv"
)

// BenchmarkSlotToHealthy measures, on a real containerd, the time from the
// API write of a one-replica service to its replica running and healthy
// (the slot is owned at once: one node), in bridge and host networking,
// and the same image started with `ctr run --net-host` on the same daemon
// until it answers its health check. Run it with a fixed count:
//
//	go test ./node -run '^$' -bench SlotToHealthy -benchtime 30x
func BenchmarkSlotToHealthy(b *testing.B) {
	c, _, sock := containerdCluster(b, 1)
	n := c.Nodes[0]
	ctx := context.Background()
	if _, err := loadArchive(ctx, n, testenv.DemoArchive(b)); err != nil {
		b.Fatal(err)
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
	}
	for _, network := range []string{"bridge", "host"} {
		b.Run("shoal-"+network, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("b%s%d", network[:1], i)
				s := spec.Spec{Name: name, Image: "shoal-demo:latest", Replicas: 1, Network: network,
					Ports:  []spec.Port{{Published: 8080, Target: 8080}},
					Health: &spec.Health{HTTP: "/healthz"}}
				start := time.Now()
				if _, err := n.Client.PutService(ctx, s, ""); err != nil {
					b.Fatal(err)
				}
				if err := pollFast(time.Minute, func() error {
					for _, r := range n.Agent().ReplicaStatus() {
						if r.Service == name && r.State == "running" && r.Healthy {
							return nil
						}
					}
					return fmt.Errorf("%s not healthy", name)
				}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				b.StopTimer()
				if _, err := n.Client.DeleteService(ctx, name); err != nil {
					b.Fatal(err)
				}
				if err := testenv.Poll(time.Minute, func() error {
					if len(n.Agent().ReplicaStatus()) != 0 {
						return fmt.Errorf("%s still running", name)
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			report(b, lat)
		})
	}
	b.Run("ctr-run-host", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			id := fmt.Sprintf("ctr-bench-%d", i)
			ctr := func(args ...string) *exec.Cmd {
				return exec.Command("ctr", append([]string{"--address", sock, "--namespace", e2eNamespace(n)}, args...)...)
			}
			start := time.Now()
			if out, err := ctr("run", "-d", "--net-host", "--env", fmt.Sprintf("PORT=%d", port), "docker.io/library/shoal-demo:latest", id).CombinedOutput(); err != nil {
				b.Fatalf("ctr run: %v: %s", err, out)
			}
			if err := pollFast(time.Minute, func() error {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			b.StopTimer()
			_ = ctr("task", "kill", "-s", "SIGKILL", id).Run()
			_ = testenv.Poll(10*time.Second, func() error { return ctr("task", "delete", id).Run() })
			if out, err := ctr("container", "delete", id).CombinedOutput(); err != nil {
				b.Fatalf("ctr container delete: %v: %s", err, out)
			}
			b.StartTimer()
		}
		report(b, lat)
	})
}

// pollFast polls cond every millisecond: the benchmarks time what they
// wait for, so the poll must not add testenv.Poll's backoff.
func pollFast(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}
