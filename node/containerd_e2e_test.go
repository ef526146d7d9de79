package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
	ctrd "github.com/shoalmesh/shoal/runtime/containerd"
	"github.com/shoalmesh/shoal/runtime/demo"
	"github.com/shoalmesh/shoal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupDemo()
	os.Exit(code)
}

// containerdCluster starts n in-process agents that share one private
// containerd daemon, each in its own containerd namespace with its own
// bridge and subnet, publishing host ports on its own loopback address.
func containerdCluster(t testing.TB, n int, configure ...func(i int, c *node.Config)) (*testenv.Cluster, []*ctrd.Driver, string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "containerd", "runc", "iptables")
	sock := testenv.StartContainerd(t)
	tag := rand.IntN(9000) + 1000
	third := 1 + rand.IntN(200)
	drivers := make([]*ctrd.Driver, n)
	c := testenv.New(t, testenv.Options{
		Nodes: n,
		Configure: func(i int, c *node.Config) {
			for _, f := range configure {
				f(i, c)
			}
		},
		Runtime: func(node *testenv.Node) runtime.Driver {
			bridge := fmt.Sprintf("se%d-%d", tag, node.Index)
			d, err := ctrd.New(context.Background(), ctrd.Config{
				Socket:    sock,
				Namespace: e2eNamespace(node),
				Node:      node.Name,
				DataDir:   filepath.Join(node.DataDir, "runtime"),
				Bridge:    bridge,
				Subnet:    netip.MustParsePrefix(fmt.Sprintf("10.214.%d.%d/28", third, 16*node.Index)),
				HostIP:    node.Addr,
				Logger:    slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = d.Close()
				if err := ctrd.RemoveBridge(bridge); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			drivers[node.Index] = d
			return d
		},
	})
	return c, drivers, sock
}

// loadArchive loads the image archive at path on node n through its API.
func loadArchive(ctx context.Context, n *testenv.Node, path string) ([]api.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	imgs, err := n.Client.LoadImage(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("load on %s: %w", n.Name, err)
	}
	return imgs, nil
}

// waitNoContainers waits until no node's driver holds a container.
func waitNoContainers(ctx context.Context, c *testenv.Cluster, drivers []*ctrd.Driver) {
	c.Eventually(time.Minute, func() error {
		for i, d := range drivers {
			got, err := d.List(ctx)
			if err != nil {
				return err
			}
			if len(got) != 0 {
				return fmt.Errorf("%s still has %d containers", c.Nodes[i].Name, len(got))
			}
		}
		return nil
	})
}

// e2eNamespace is a node's containerd namespace: per test process, since
// runc keeps its state under /run/containerd/runc/<namespace> whatever the
// daemon, and two test processes with private daemons would share it.
func e2eNamespace(n *testenv.Node) string { return fmt.Sprintf("e2e-%d-%s", os.Getpid(), n.Name) }

func TestServiceRunsOnContainerd(t *testing.T) {
	c, drivers, _ := containerdCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	archive := testenv.DemoArchive(t)
	for _, n := range c.Nodes {
		imgs, err := loadArchive(ctx, n, archive)
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 1 || !strings.HasSuffix(imgs[0].Name, "shoal-demo:latest") {
			t.Fatalf("%s imported %+v", n.Name, imgs)
		}
	}

	web := spec.Spec{
		Name: "web", Image: "shoal-demo:latest", Replicas: 3,
		Ports:  []spec.Port{{Published: 18080, Target: 8080, Protocol: "http"}, {Published: 18081, Target: 8080}},
		Health: &spec.Health{HTTP: "/healthz"},
	}
	if _, err := c.Nodes[0].Client.PutService(ctx, web, ""); err != nil {
		t.Fatal(err)
	}

	// Every node sees three healthy replicas, one per node.
	var reps []api.Replica
	c.Eventually(2*time.Minute, func() error {
		for _, n := range c.Nodes {
			got, err := n.Client.Replicas(ctx, "web")
			if err != nil {
				return err
			}
			nodes := map[string]bool{}
			for _, r := range got {
				if r.State != "running" || !r.Healthy || r.Endpoint == "" {
					return fmt.Errorf("%s sees %s/%d on %s %s healthy=%v %s", n.Name, r.Service, r.Slot, r.Node, r.State, r.Healthy, r.LastError)
				}
				nodes[r.Node] = true
			}
			if len(got) != 3 || len(nodes) != 3 {
				return fmt.Errorf("%s sees %d replicas on %d nodes", n.Name, len(got), len(nodes))
			}
			reps = got
		}
		return nil
	})

	// Each endpoint answers as the demo server of its slot and node.
	for _, r := range reps {
		resp, err := http.Get("http://" + r.Endpoint + "/")
		if err != nil {
			t.Fatalf("GET %s: %v", r.Endpoint, err)
		}
		var body struct{ Service, Slot, Node, Hostname string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: %v", r.Endpoint, err)
		}
		if body.Service != "web" || body.Slot != strconv.Itoa(r.Slot) || body.Node != r.Node || body.Hostname != r.Container {
			t.Errorf("replica %s/%d@%s answered %+v", r.Service, r.Slot, r.Node, body)
		}
	}

	// The routing mesh: every node's load balancer serves both published
	// ports (L7 on 18080, L4 on 18081) and spreads requests (L7) and
	// connections (L4: one per request here) over the replicas of every
	// node.
	oneShot := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, n := range c.Nodes {
		for _, port := range []int{18080, 18081} {
			url := fmt.Sprintf("http://%s:%d/", n.Addr, port)
			seen := map[string]int{}
			c.Eventually(30*time.Second, func() error {
				for range 30 {
					resp, err := oneShot.Get(url)
					if err != nil {
						return err
					}
					var body struct{ Slot, Node string }
					err = json.NewDecoder(resp.Body).Decode(&body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 {
						return fmt.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
					}
					seen[body.Slot+"@"+body.Node]++
				}
				if len(seen) != 3 {
					return fmt.Errorf("GET %s reached %v, want all 3 replicas", url, seen)
				}
				return nil
			})
		}
	}

	// Logs of every replica, from any node, over the peer plane.
	var logs strings.Builder
	if err := c.Nodes[0].Client.Logs(ctx, "web", client.LogsOptions{Tail: -1}, &logs); err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		want := fmt.Sprintf("[web/%d@%s] demo-server listening on [::]:8080", r.Slot, r.Node)
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}

	// An agent restart adopts its containers: same IDs, same start times.
	n3 := c.Nodes[2]
	before, err := drivers[2].List(ctx)
	if err != nil || len(before) != 1 {
		t.Fatalf("node-3 runs %+v (%v), want one container", before, err)
	}
	if err := n3.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := n3.Start(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(time.Minute, func() error {
		got, err := n3.Client.Replicas(ctx, "web")
		if err != nil {
			return err
		}
		healthy := 0
		for _, r := range got {
			if r.Node == n3.Name && r.State == "running" && r.Healthy {
				healthy++
			}
		}
		if healthy != 1 {
			return fmt.Errorf("node-3 reports %d healthy replicas of its own", healthy)
		}
		return nil
	})
	after, err := drivers[2].List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 1 || after[0].ID != before[0].ID || !after[0].StartedAt.Equal(before[0].StartedAt) {
		t.Errorf("after the agent restart node-3 runs %+v, before %+v: the container was replaced", after, before)
	}

	// Deleting the service removes every container and its host port rule.
	if _, err := c.Nodes[1].Client.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	waitNoContainers(ctx, c, drivers)
	// ... and every node closes the published ports.
	c.Eventually(30*time.Second, func() error {
		for _, n := range c.Nodes {
			for _, port := range []int{18080, 18081} {
				if conn, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", n.Addr, port), time.Second); err == nil {
					conn.Close()
					return fmt.Errorf("%s still listens on %d", n.Name, port)
				}
			}
		}
		return nil
	})
	// ... and no host port is mapped any more: a connect is refused by
	// the host itself (a stale DNAT rule would send it to a container
	// address nobody has, and the connect would time out).
	for _, r := range reps {
		conn, err := net.DialTimeout("tcp", r.Endpoint, 2*time.Second)
		if err == nil {
			conn.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("host port %s of %s/%d: dial = %v, want connection refused", r.Endpoint, r.Service, r.Slot, err)
		}
	}
}

func TestServiceImageIsPulledFromARegistry(t *testing.T) {
	testenv.RequireBinaries(t, "docker-registry")
	c, _, _ := containerdCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Push the demo image to a registry on loopback; the node never saw it.
	reg := testenv.StartRegistry(t)
	img, err := tarball.ImageFromPath(dockerDemoArchive(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg + "/team/shoal-demo:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}

	web := spec.Spec{Name: "pulled", Image: ref.String(), Replicas: 1,
		Ports: []spec.Port{{Published: 18081, Target: 8080}}, Health: &spec.Health{HTTP: "/healthz"}}
	if _, err := c.Nodes[0].Client.PutService(ctx, web, ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(time.Minute, func() error {
		reps, err := c.Nodes[0].Client.Replicas(ctx, "pulled")
		if err != nil {
			return err
		}
		if len(reps) != 1 || reps[0].State != "running" || !reps[0].Healthy {
			return fmt.Errorf("replicas %+v", reps)
		}
		return nil
	})
	imgs, err := c.Nodes[0].Client.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, i := range imgs {
		found = found || strings.Contains(i.Name, "team/shoal-demo:v1")
	}
	if !found {
		t.Errorf("pulled image not listed: %+v", imgs)
	}
	if _, err := c.Nodes[0].Client.DeleteService(ctx, "pulled"); err != nil {
		t.Fatal(err)
	}
	c.Eventually(time.Minute, func() error {
		if reps, _ := c.Nodes[0].Client.Replicas(ctx, "pulled"); len(reps) != 0 {
			return fmt.Errorf("%d replicas left", len(reps))
		}
		return nil
	})
}

// dockerDemoArchive writes the demo image as a `docker save` tarball.
func dockerDemoArchive(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(testenv.DemoArchive(t)), "shoal")
	path := filepath.Join(t.TempDir(), "demo-docker.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := demo.WriteArchive(f, demo.Options{Binary: bin, Format: "docker"}); err != nil {
		t.Fatal(err)
	}
	return path
}
