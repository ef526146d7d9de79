package node_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/images"
	"github.com/containerd/platforms"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/testenv"
)

// Issue #7: an image loaded on one node only runs on every node (the
// others pull it from its content store over the peer plane), the service
// is pinned to the image's digest, the cluster's image list says who holds
// it, and when the node that had it first dies its replica restarts on a
// survivor from the copies the others now hold.
func TestImageLoadedOnOneNodeRunsEverywhere(t *testing.T) {
	c, drivers, _ := containerdCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	loaded, err := loadArchive(ctx, c.Nodes[0], testenv.DemoArchive(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 {
		t.Fatalf("loaded %+v", loaded)
	}
	want := loaded[0]
	for _, n := range c.Nodes[1:] {
		if imgs, err := n.Client.LocalImages(ctx); err != nil || len(imgs) != 0 {
			t.Fatalf("%s holds %+v before the service (%v)", n.Name, imgs, err)
		}
	}

	web := spec.Spec{
		Name: "web", Image: "shoal-demo:latest", Replicas: 3,
		Ports:  []spec.Port{{Published: 18090, Target: 8080, Protocol: "http"}},
		Health: &spec.Health{HTTP: "/healthz"},
	}
	// Written on a node that does not hold the image: the digest comes
	// from the peer that does.
	out, err := c.Nodes[2].Client.PutService(ctx, web, "")
	if err != nil {
		t.Fatal(err)
	}
	if out.ImageDigest != want.Digest {
		t.Fatalf("service pinned to %q, want %q from %s", out.ImageDigest, want.Digest, c.Nodes[0].Name)
	}

	healthyOn := func(nodes []string) error {
		for _, name := range nodes {
			n := c.Nodes[slices.IndexFunc(c.Nodes, func(n *testenv.Node) bool { return n.Name == name })]
			got, err := n.Client.Replicas(ctx, "web")
			if err != nil {
				return err
			}
			on := map[string]int{}
			for _, r := range got {
				if r.State != "running" || !r.Healthy {
					return fmt.Errorf("%s sees %s/%d on %s %s healthy=%v %s", n.Name, r.Service, r.Slot, r.Node, r.State, r.Healthy, r.LastError)
				}
				on[r.Node]++
			}
			if len(got) != 3 {
				return fmt.Errorf("%s sees %d replicas, want 3", n.Name, len(got))
			}
			for node := range on {
				if !slices.Contains(nodes, node) {
					return fmt.Errorf("%s sees a replica on %s", n.Name, node)
				}
			}
			if len(on) != len(nodes) {
				return fmt.Errorf("%s sees replicas on %d nodes, want %d", n.Name, len(on), len(nodes))
			}
		}
		return nil
	}
	all := []string{c.Nodes[0].Name, c.Nodes[1].Name, c.Nodes[2].Name}
	c.Eventually(3*time.Minute, func() error { return healthyOn(all) })

	// The replicas run the pinned digest, and every node holds it now.
	for _, n := range c.Nodes {
		imgs, err := n.Client.LocalImages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(imgs, func(i api.Image) bool { return i.Digest == want.Digest }) {
			t.Fatalf("%s holds %+v, not %s", n.Name, imgs, want.Digest)
		}
	}
	// Every layer stays in the pullers' content stores after the unpack,
	// so they can serve the image on.
	target, ok := drivers[0].LookupImage(ctx, want.Name)
	if !ok {
		t.Fatalf("%s does not find %s", c.Nodes[0].Name, want.Name)
	}
	m, err := images.Manifest(drivers[0].WithNamespace(ctx), drivers[0].ContentStore(), target, platforms.Default())
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range drivers[1:] {
		for _, l := range m.Layers {
			if _, err := d.ContentStore().Info(d.WithNamespace(ctx), l.Digest); err != nil {
				t.Errorf("%s lacks layer %s after the pull: %v", c.Nodes[i+1].Name, l.Digest, err)
			}
		}
	}
	// The two copies came from node 0's content store: at least the
	// image's size twice over the peer plane (the others held nothing).
	if got := c.Nodes[0].Agent().PeerImageBytes(); got < 2*uint64(want.Size) {
		t.Fatalf("%s served %d bytes of images, want at least 2 x %d", c.Nodes[0].Name, got, want.Size)
	}
	imgs, err := c.Nodes[1].Client.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(imgs, func(i api.Image) bool { return i.Name == want.Name && i.Digest == want.Digest })
	if i < 0 || !slices.Equal(imgs[i].Nodes, all) {
		t.Fatalf("cluster image list %+v: want %s on %s", imgs, want.Name, strings.Join(all, ","))
	}

	// The node that had the image first dies: its replica comes back on a
	// survivor, from the survivors' own copies.
	if err := c.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(2*time.Minute, func() error { return healthyOn(all[1:]) })

	// Bring it back and delete the service: nothing is left running.
	if err := c.Nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nodes[1].Client.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	waitNoContainers(ctx, c, drivers)
}

// shoal image prefetch: an image loaded on one node is copied to every
// node at once, with progress per node; bad requests change nothing.
func TestImagePrefetchCopiesToEveryNode(t *testing.T) {
	// The holder sends blob bodies over plain HTTP (--image-transfer
	// plain); the others keep the default.
	c, _, _ := containerdCluster(t, 3, func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.ImageTransfer = node.ImageTransferPlain
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	loaded, err := loadArchive(ctx, c.Nodes[0], testenv.DemoArchive(t))
	if err != nil {
		t.Fatal(err)
	}
	want := loaded[0]

	// Bad input: an unknown image, a malformed reference.
	err = c.Nodes[1].Client.Prefetch(ctx, "nowhere:1", func(api.PrefetchProgress) {})
	if !client.IsNotFound(err) || !strings.Contains(err.Error(), "no node holds it") {
		t.Fatalf("prefetch of an unknown image: %v", err)
	}
	var ce *client.Error
	if err := c.Nodes[1].Client.Prefetch(ctx, "Bad Ref", func(api.PrefetchProgress) {}); !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("prefetch of a malformed reference: %v", err)
	}

	// From a node that does not hold it.
	last := map[string]api.PrefetchProgress{}
	lines := 0
	if err := c.Nodes[1].Client.Prefetch(ctx, "shoal-demo:latest", func(p api.PrefetchProgress) {
		lines++
		if p.Image != "shoal-demo:latest@"+want.Digest {
			t.Errorf("progress for %q, want the pinned shoal-demo:latest@%s", p.Image, want.Digest)
		}
		if p.Total > 0 && p.Done > p.Total {
			t.Errorf("progress %+v: done beyond total", p)
		}
		last[p.Node] = p
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		p, ok := last[n.Name]
		if !ok || p.State != "done" || p.Total <= 0 || p.Done != p.Total {
			t.Errorf("%s: last progress %+v, want done", n.Name, p)
		}
		imgs, err := n.Client.LocalImages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(imgs, func(i api.Image) bool { return i.Digest == want.Digest }) {
			t.Errorf("%s holds %+v after the prefetch", n.Name, imgs)
		}
	}
	served := uint64(0)
	for _, n := range c.Nodes {
		served += n.Agent().PeerImageBytes()
	}
	if served < 2*uint64(want.Size) {
		t.Errorf("the nodes served %d bytes of images to each other, want at least 2 x %d", served, want.Size)
	}
	if got := c.Nodes[0].Agent().PlainImageRequests(); got == 0 {
		t.Errorf("the holder served no blob over its plain listener")
	}
	if lines < 2*len(c.Nodes) {
		t.Errorf("%d progress lines for %d nodes, want a start and an end each", lines, len(c.Nodes))
	}
}
