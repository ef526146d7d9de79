package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/demo"
	"github.com/shoalmesh/shoal/testenv"
)

// tinyStaticBinary builds a tiny static Linux executable for this
// machine into a temporary directory, to pack into demo images: the test
// binary itself may be dynamically linked.
func tinyStaticBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain to build a static test binary")
	}
	dir := t.TempDir()
	files := map[string]string{"main.go": "package main\n\nfunc main() {}\n", "go.mod": "module tiny\n\ngo 1.22\n"}
	for f, src := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", "tiny", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goruntime.GOARCH, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return filepath.Join(dir, "tiny")
}

// platformHere is this machine's Linux platform.
func platformHere() v1.Platform { return v1.Platform{OS: "linux", Architecture: goruntime.GOARCH} }

// readTarFile returns the content of the regular file called name in a tar.
func readTarFile(r io.Reader, name string) ([]byte, error) {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%s in archive: %w", name, err)
		}
		if hdr.Name == name && hdr.Typeflag == tar.TypeReg {
			return io.ReadAll(tr)
		}
	}
}

// The image verbs against a real in-process node with a fake runtime
// (which takes an archive as whitespace-separated image names).
func TestImageLoadAndLs(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1})
	addr := "--addr=" + c.Nodes[0].Agent().APIAddr()
	dir := t.TempDir()
	archive := filepath.Join(dir, "images.tar")
	if err := os.WriteFile(archive, []byte("demo:1\nweb:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out := cli(t, nil, nil, addr, "image", "load", archive).ok(t).stdout
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "DIGEST") ||
		!strings.Contains(lines[0], "SIZE") || !strings.Contains(lines[0], "PLATFORMS") ||
		!strings.HasPrefix(lines[1], "demo:1 ") || !strings.HasPrefix(lines[2], "web:2 ") {
		t.Fatalf("load output:\n%s", out)
	}
	if !strings.Contains(lines[1], "sha256:000000000000 ") || strings.Contains(lines[1], strings.Repeat("0", 13)) {
		t.Errorf("digest not shortened to 12 hex digits:\n%s", out)
	}
	// The bytes reached the node's runtime.
	held, err := c.Nodes[0].Runtime().Images(context.Background())
	if err != nil || len(held) != 2 {
		t.Fatalf("runtime holds %+v, %v", held, err)
	}

	// From standard input, as JSON.
	var stdout, stderr bytes.Buffer
	root := newRootCmd(func(string) string { return "" })
	root.SetArgs([]string{addr, "image", "load", "-", "-o", "json"})
	root.SetIn(strings.NewReader("cache:3"))
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("load -: %v (%s)", err, stderr.String())
	}
	var loaded []api.Image
	if err := json.Unmarshal(stdout.Bytes(), &loaded); err != nil || len(loaded) != 1 || loaded[0].Name != "cache:3" {
		t.Fatalf("load - -o json: %q, %v", stdout.String(), err)
	}

	ls := cli(t, nil, nil, addr, "image", "ls").ok(t).stdout
	for _, n := range []string{"cache:3", "demo:1", "web:2", "linux/amd64", "NODES"} {
		if !strings.Contains(ls, n) {
			t.Errorf("ls does not show %s:\n%s", n, ls)
		}
	}
	// The cluster list names the node that holds each image; --local
	// lists the node's own images without the column.
	for _, line := range strings.Split(strings.TrimSpace(ls), "\n")[1:] {
		if !strings.HasSuffix(line, " "+c.Nodes[0].Name) {
			t.Errorf("ls line %q does not end with the node %s", line, c.Nodes[0].Name)
		}
	}
	local := cli(t, nil, nil, addr, "image", "ls", "--local").ok(t).stdout
	if strings.Contains(local, "NODES") || !strings.Contains(local, "demo:1") {
		t.Errorf("ls --local:\n%s", local)
	}
	var list []api.Image
	if err := json.Unmarshal([]byte(cli(t, nil, nil, addr, "image", "ls", "-o", "json").ok(t).stdout), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, img := range list {
		names = append(names, img.Name)
		if len(img.Digest) != len("sha256:")+64 {
			t.Errorf("JSON digest %q is not full", img.Digest)
		}
	}
	if !slices.Equal(names, []string{"cache:3", "demo:1", "web:2"}) {
		t.Errorf("ls -o json names %v", names)
	}

	// Failures are one line.
	empty := filepath.Join(dir, "empty.tar")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cli(t, nil, nil, addr, "image", "load", empty).failed(t, "malformed image")
	cli(t, nil, nil, addr, "image", "load", filepath.Join(dir, "nope.tar")).failed(t, "no such file")
	cli(t, nil, nil, addr, "image", "load", dir).failed(t, "is a directory")
}

func TestImageNoRuntime(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 1, Runtime: func(*testenv.Node) runtime.Driver { return nil }})
	addr := "--addr=" + c.Nodes[0].Agent().APIAddr()
	archive := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(archive, []byte("demo:1"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli(t, nil, nil, addr, "image", "load", archive).failed(t, "no container runtime (503")
	cli(t, nil, nil, addr, "image", "ls").failed(t, "no container runtime (503")
}

func TestImageBadArgs(t *testing.T) {
	f := newFakeAPI(t)
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"image", "load"}, "wants one archive FILE"},
		{[]string{"image", "load", "a", "b"}, "wants one archive FILE"},
		{[]string{"image", "ls", "x"}, "wants no arguments"},
		{[]string{"image", "bogus"}, "wants a subcommand"},
		{[]string{"image", "build-demo"}, "needs -o FILE"},
		{[]string{"image", "build-demo", "-o", filepath.Join(dir, "x.tar"), "extra"}, "wants no arguments"},
		{[]string{"image", "build-demo", "-o", filepath.Join(dir, "x.tar"), "--format", "zip"}, `format "zip"`},
		{[]string{"image", "build-demo", "-o", filepath.Join(dir, "x.tar"), "--platform", "linux/vax"}, "unsupported architecture"},
		{[]string{"image", "build-demo", "-o", filepath.Join(dir, "x.tar"), "--name", "UPPER:case"}, "image name"},
		{[]string{"image", "build-demo", "-o", filepath.Join(dir, "x.tar"), "--binary", filepath.Join(dir, "nope")}, "no such file"},
		{[]string{"image", "build-demo", "-o", filepath.Join(dir, "no", "such", "dir.tar"), "--binary", "/bin/true"}, "no such file"},
		{[]string{"image", "load", "--bogus", "x"}, "unknown flag"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(strings.Join(tc.args, " "), dir, "DIR"), func(t *testing.T) {
			cli(t, f, nil, tc.args...).failed(t, tc.want)
		})
	}
	if n := len(f.reqs()); n != 0 {
		t.Errorf("bad arguments made %d API requests", n)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("failed builds left files: %v", left)
	}
}

func TestImageBuildDemo(t *testing.T) {
	bin := tinyStaticBinary(t)
	dir := t.TempDir()

	oci := filepath.Join(dir, "demo.tar")
	out := cli(t, nil, nil, "image", "build-demo", "-o", oci, "--binary", bin).ok(t).stdout
	if !strings.HasPrefix(out, "wrote "+oci+": shoal-demo:latest (oci archive, ") {
		t.Errorf("output %q", out)
	}
	// An OCI archive: index.json names the image for containerd.
	if idx := ociIndex(t, oci); idx.Manifests[0].Annotations[demo.AnnotationImageName] != "docker.io/library/shoal-demo:latest" {
		t.Errorf("index.json %+v", idx)
	}

	docker := filepath.Join(dir, "demo-docker.tar")
	cli(t, nil, nil, "image", "build-demo", "-o", docker, "--binary", bin, "--format", "docker", "--name", "demo:1", "--platform", "linux/"+goruntime.GOARCH).ok(t)
	tag, _ := name.NewTag("demo:1")
	img, err := tarball.ImageFromPath(docker, &tag)
	if err != nil {
		t.Fatalf("reading the docker archive as demo:1: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/shoal", "demo-server"}) || cf.Architecture != goruntime.GOARCH || cf.OS != "linux" {
		t.Errorf("config: entrypoint %q, platform %s/%s", cf.Config.Entrypoint, cf.OS, cf.Architecture)
	}

	// -o - writes the archive itself to standard output, nothing else.
	r := cli(t, nil, nil, "image", "build-demo", "-o", "-", "--binary", bin).ok(t)
	ociBytes, err := os.ReadFile(oci)
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != string(ociBytes) {
		t.Errorf("-o - wrote %d bytes, not the %d-byte archive", len(r.stdout), len(ociBytes))
	}

	// A dynamically linked binary is refused and leaves nothing behind.
	if _, err := os.Stat("/bin/true"); err == nil {
		if demo.CheckBinary("/bin/true", platformHere()) != nil {
			bad := filepath.Join(dir, "bad.tar")
			cli(t, nil, nil, "image", "build-demo", "-o", bad, "--binary", "/bin/true").failed(t, "CGO_ENABLED=0")
			if _, err := os.Stat(bad); !os.IsNotExist(err) {
				t.Errorf("refused build left %s (%v)", bad, err)
			}
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want the 2 archives (no temporary files)", len(entries))
	}
}

// ociIndex reads index.json out of an OCI archive.
func ociIndex(t *testing.T, path string) struct {
	Manifests []struct {
		Annotations map[string]string `json:"annotations"`
	} `json:"manifests"`
} {
	t.Helper()
	var idx struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := readTarFile(f, "index.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json %q: %v", b, err)
	}
	return idx
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestDemoServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{"SHOAL_SERVICE": "web", "SHOAL_SLOT": "3", "SHOAL_NODE": "node-2", "PORT": "1"}
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, []string{"demo-server", "--listen", "127.0.0.1:0"}, &stdout, &stderr, func(k string) string { return env[k] })
	}()

	var addr string
	err := testenv.Poll(10*time.Second, func() error {
		out := stdout.String()
		if _, a, ok := strings.Cut(strings.TrimSpace(out), "listening on "); ok {
			addr = a
			return nil
		}
		select {
		case code := <-done:
			t.Fatalf("demo-server exited %d: %s", code, stderr.String())
		default:
		}
		return errors.New("not listening yet")
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	var reply demo.Reply
	err = json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close()
	if err != nil || reply.Service != "web" || reply.Slot != "3" || reply.Node != "node-2" {
		t.Fatalf("reply %+v, %v", reply, err)
	}
	resp, err = http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}

	cancel() // what SIGTERM does through main's signal context
	select {
	case code := <-done:
		if code != 0 || stderr.String() != "" {
			t.Errorf("exit %d after shutdown, stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo-server did not stop")
	}
	if _, err := http.Get("http://" + addr + "/"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestDemoServerBadPort(t *testing.T) {
	for _, port := range []string{"http", "0", "70000"} {
		cli(t, nil, map[string]string{"PORT": port}, "demo-server").failed(t, "invalid PORT")
	}
}

func TestFormatSize(t *testing.T) {
	cases := map[int64]string{0: "0B", 812: "812B", 1000: "1kB", 6_100_000: "6.1MB", 22_739_968: "22.7MB", 1_234_567_890: "1.23GB", 999_960: "1000kB", 9_999: "10kB", 5e15: "5000TB"}
	for n, want := range cases {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// Prefetch progress off a terminal: a line when each node starts and one
// when it ends; a failed node fails the command.
func TestPrefetchProgressLines(t *testing.T) {
	var buf bytes.Buffer
	b := newBarProgress(&buf, false)
	img := "demo:1@sha256:" + strings.Repeat("0", 64)
	for _, p := range []api.PrefetchProgress{
		{Node: "n2", Image: img, State: "pulling"},
		{Node: "n1", Image: img, State: "pulling"},
		{Node: "n1", Image: img, State: "pulling", Done: 512, Total: 2048},
		{Node: "n2", Image: img, State: "pulling", Done: 1024, Total: 2048},
		{Node: "n1", Image: img, State: "done", Done: 2048, Total: 2048, Seconds: 1.25},
		{Node: "n2", Image: img, State: "failed", Error: "peer went away"},
	} {
		b.update(p)
	}
	err := b.finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "n2 ") || !strings.HasPrefix(lines[1], "n1 ") ||
		!strings.Contains(lines[2], "["+strings.Repeat("=", 30)+"] 2.05kB done in 1.2s") ||
		!strings.HasSuffix(lines[3], "failed: peer went away") {
		t.Errorf("progress lines:\n%s", buf.String())
	}
	if err == nil || err.Error() != "prefetch failed on n2" {
		t.Errorf("finish = %v, want the failed node", err)
	}
	// On a terminal the bars are redrawn in place.
	buf.Reset()
	tty := newBarProgress(&buf, true)
	tty.update(api.PrefetchProgress{Node: "n1", Image: img, State: "pulling", Done: 1024, Total: 2048})
	tty.update(api.PrefetchProgress{Node: "n1", Image: img, State: "done", Done: 2048, Total: 2048})
	if err := tty.finish(); err != nil || !strings.Contains(buf.String(), "\x1b[1A") ||
		!strings.Contains(buf.String(), "[==============>               ]") || !strings.Contains(buf.String(), "is on 1 node\n") {
		t.Errorf("terminal output %q, finish %v", buf.String(), err)
	}
}
