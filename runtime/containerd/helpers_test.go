package containerd_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/containerd"
	"github.com/shoalmesh/shoal/testenv"
)

// busyboxPath is Debian's busybox-static binary, the whole userland of
// the test image.
const busyboxPath = "/bin/busybox"

// applets are the busybox applets the test image links in /bin.
var applets = []string{"sh", "echo", "cat", "sleep", "mkdir", "httpd", "true", "false", "wget", "test", "seq"}

// serveCmd is the test image's default command: an HTTP server on $PORT
// (default 80) answering "hello".
const serveCmd = `mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p "${PORT:-80}" -h /www`

// busyboxLayer is the uncompressed tar of the test image's only layer.
var busyboxLayer = sync.OnceValues(func() ([]byte, error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bin); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range applets {
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
})

// testImage builds the busybox test image for arch, with OCI or docker
// media types.
func testImage(t testing.TB, arch string, oci bool) v1.Image {
	t.Helper()
	layerTar, err := busyboxLayer()
	if err != nil {
		t.Skipf("test image needs %s (busybox-static): %v", busyboxPath, err)
	}
	var lopts []tarball.LayerOption
	base := empty.Image
	if oci {
		lopts = append(lopts, tarball.WithMediaType(types.OCILayer))
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, lopts...)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.Cmd = []string{"/bin/sh", "-c", serveCmd}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// dockerArchive is img as a `docker save` tarball tagged ref.
func dockerArchive(t testing.TB, ref string, img v1.Image) []byte {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ociArchive is img as an OCI image layout tarball whose index names it
// ref (org.opencontainers.image.ref.name), or leaves it unnamed.
func ociArchive(t testing.TB, ref string, img v1.Image, arch string) []byte {
	t.Helper()
	var ann map[string]string
	if ref != "" {
		ann = map[string]string{"org.opencontainers.image.ref.name": ref}
	}
	return ociArchiveAnnotated(t, ann, img, arch)
}

// ociArchiveAnnotated is img as an OCI image layout tarball with the
// given annotations on its index entry.
func ociArchiveAnnotated(t testing.TB, ann map[string]string, img v1.Image, arch string) []byte {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	opts := []layout.Option{layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch})}
	if len(ann) > 0 {
		opts = append(opts, layout.WithAnnotations(ann))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// env is a private containerd with a Driver on its own bridge and subnet.
type env struct {
	socket string
	cfg    containerd.Config
	d      *containerd.Driver
	client *ctd.Client // for checks behind the driver's back
}

// newEnv starts containerd and a Driver for t. The bridge is removed at
// cleanup; every test stops the containers it starts.
func newEnv(t *testing.T) *env {
	t.Helper()
	socket := testenv.StartContainerd(t)
	bridge := fmt.Sprintf("shtest%06x", rand.IntN(1<<24))
	// A random /24 in 10.213.128.0/17, away from the default subnet.
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(128 + rand.IntN(127)), 0}), 24)
	cfg := containerd.Config{
		Socket: socket,
		// Per test process: runc keeps its state under
		// /run/containerd/runc/<namespace> whatever the daemon, so two test
		// processes with private daemons would share it.
		Namespace: fmt.Sprintf("shoaltest-%d", os.Getpid()),
		Node:      "n1",
		DataDir:   t.TempDir(),
		Bridge:    bridge,
		Subnet:    subnet,
		HostIP:    netip.MustParseAddr("127.0.0.1"),
		PortRange: [2]int{42000, 42999},
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	e := &env{socket: socket, cfg: cfg}
	e.d = e.newDriver(t, cfg)
	t.Cleanup(func() {
		if err := containerd.RemoveBridge(bridge); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	client, err := ctd.New(socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	e.client = client
	if err := e.d.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	return e
}

// newDriver returns a Driver for cfg, closed at cleanup.
func (e *env) newDriver(t *testing.T, cfg containerd.Config) *containerd.Driver {
	t.Helper()
	d, err := containerd.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// nsctx is a context in the driver's namespace, for raw client checks.
func (e *env) nsctx() context.Context {
	return namespaces.WithNamespace(context.Background(), e.cfg.Namespace)
}

// importImage imports the amd64 test image as docker save "ref".
func (e *env) importImage(t *testing.T, ref string) runtime.Image {
	t.Helper()
	imgs, err := e.d.ImportImage(context.Background(), bytes.NewReader(dockerArchive(t, ref, testImage(t, "amd64", false))))
	if err != nil {
		t.Fatalf("ImportImage: %v", err)
	}
	return imgs[0]
}

// start starts spec and stops it at cleanup (idempotent with explicit Stops).
func (e *env) start(t *testing.T, spec runtime.ReplicaSpec) runtime.Replica {
	t.Helper()
	r, err := e.d.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start %s: %v", spec.ID, err)
	}
	t.Cleanup(func() {
		if err := e.d.Stop(context.Background(), spec.ID, time.Second); err != nil {
			t.Errorf("cleanup Stop %s: %v", spec.ID, err)
		}
	})
	return r
}

// replica returns the listed replica id.
func (e *env) replica(t *testing.T, id string) (runtime.Replica, bool) {
	t.Helper()
	rs, err := e.d.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, r := range rs {
		if r.ID == id {
			return r, true
		}
	}
	return runtime.Replica{}, false
}

// readLogs returns the last tail lines of id's log.
func readLogs(t *testing.T, d *containerd.Driver, id string, tail int) string {
	t.Helper()
	rc, err := d.Logs(context.Background(), id, tail, false)
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Logs read: %v", err)
	}
	return string(b)
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ipamFiles lists host-local's allocation files for the driver's network.
func (e *env) ipamFiles(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(e.cfg.DataDir, "cni", "ipam", "shoal-"+e.cfg.Bridge)
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		if e.cfg.Subnet.Contains(parseAddr(en.Name())) {
			out = append(out, en.Name())
		}
	}
	return out
}

func parseAddr(s string) netip.Addr { a, _ := netip.ParseAddr(s); return a }
