package node_test

import (
	"context"
	"fmt"
	mathrand "math/rand"
	"math/rand/v2"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/node/api"
)

// Issue #7's benchmark: a 100 MB image (4 layers of 25 MB of random,
// incompressible bytes) to 4 peers. Each op, on a 5-node cluster with one
// containerd daemon and content isolated per node:
//
//   - import: the tarball loaded on the 4 peers at once (what an operator
//     without a registry does today: copy the archive, load it on each);
//   - p2p: the tarball loaded on node 0 only, then `shoal image prefetch`
//     to the other 4 over the peer plane (timed from the prefetch).
//
// Reported: both wall times (median over the ops), their ratio, and the
// peer plane's aggregate throughput (4 x image size / p2p time).
//
// $SHOAL_BENCH_IMAGE_TRANSFER sets every node's Config.ImageTransfer
// ("plain" for blob bodies over plain HTTP).
//
//	go test ./node -run '^$' -bench ImageToFourPeers -benchtime 5x -timeout 30m
func BenchmarkImageToFourPeers(b *testing.B) {
	c, _, sock := containerdCluster(b, 5, func(_ int, cfg *node.Config) {
		cfg.ImageTransfer = os.Getenv("SHOAL_BENCH_IMAGE_TRANSFER")
	})
	cl, err := containerd.New(sock)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	dir := b.TempDir()
	var importTimes, p2pTimes []time.Duration
	var size int64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ref := fmt.Sprintf("bench/big:%d", i)
		archive := filepath.Join(dir, fmt.Sprintf("big-%d.tar", i))
		size = writeRandomImage(b, archive, ref, 25<<20, 4)

		// Import on the 4 peers at once.
		start := time.Now()
		var wg sync.WaitGroup
		for _, n := range c.Nodes[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := loadArchive(ctx, n, archive); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		importTimes = append(importTimes, time.Since(start))
		for _, n := range c.Nodes[1:] {
			deleteImages(b, cl, e2eNamespace(n))
		}

		// Load on node 0, prefetch to the others.
		if _, err := loadArchive(ctx, c.Nodes[0], archive); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start = time.Now()
		failed := false
		var perNode []string
		err = c.Nodes[0].Client.Prefetch(ctx, ref, func(p api.PrefetchProgress) {
			switch p.State {
			case "failed":
				failed = true
				b.Errorf("prefetch on %s: %s", p.Node, p.Error)
			case "done":
				perNode = append(perNode, fmt.Sprintf("%s %.2fs", p.Node, p.Seconds))
			}
		})
		b.Logf("prefetch %d: %v", i, perNode)
		p2pTimes = append(p2pTimes, time.Since(start))
		b.StopTimer()
		if err != nil || failed {
			b.Fatalf("prefetch: %v", err)
		}
		for _, n := range c.Nodes {
			deleteImages(b, cl, e2eNamespace(n))
		}
		_ = os.Remove(archive)
	}
	imp, p2p := median(importTimes), median(p2pTimes)
	b.ReportMetric(imp.Seconds(), "import-s")
	b.ReportMetric(p2p.Seconds(), "p2p-s")
	b.ReportMetric(p2p.Seconds()/imp.Seconds(), "p2p/import")
	b.ReportMetric(float64(4*size)/p2p.Seconds()/1e6, "p2p-MB/s")
	b.ReportMetric(float64(size)/1e6, "image-MB")
	b.Logf("import on 4 peers %v, p2p to 4 peers %v (ops: %v / %v)", imp, p2p, importTimes, p2pTimes)
}

// median of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// writeRandomImage writes a docker-save archive of an image called ref
// with layers layers of layerSize random bytes, for this machine's
// platform, and returns the image's content size (manifest, config and
// compressed layers).
func writeRandomImage(tb testing.TB, path, ref string, layerSize, layers int64) int64 {
	tb.Helper()
	img, err := random.Image(layerSize, layers, random.WithSource(mathrand.NewSource(rand.Int64())))
	if err != nil {
		tb.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		tb.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		tb.Fatal(err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		tb.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		tb.Fatal(err)
	}
	raw, _ := img.RawManifest()
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}

// deleteImages removes every image of namespace ns and waits for the
// garbage collection of their content.
func deleteImages(tb testing.TB, cl *containerd.Client, ns string) {
	tb.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	imgs, err := cl.ImageService().List(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for i, img := range imgs {
		opts := []images.DeleteOpt{}
		if i == len(imgs)-1 {
			opts = append(opts, images.SynchronousDelete())
		}
		if err := cl.ImageService().Delete(ctx, img.Name, opts...); err != nil {
			tb.Fatal(err)
		}
	}
}
