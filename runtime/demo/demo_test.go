package demo_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/images/archive"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalmesh/shoal/runtime/demo"
)

var (
	staticOnce sync.Once
	staticPath string
	staticErr  error
)

// staticBinary builds (once per test run) a tiny static Linux executable
// for this machine's architecture.
func staticBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain to build a static test binary")
	}
	staticOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shoal-demo-test-")
		if err != nil {
			staticErr = err
			return
		}
		src := "package main\n\nfunc main() {}\n"
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
			staticErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module tiny\n\ngo 1.22\n"), 0o644); err != nil {
			staticErr = err
			return
		}
		staticPath = filepath.Join(dir, "tiny")
		cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", staticPath, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goruntime.GOARCH, "GOFLAGS=", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = errors.New("go build: " + err.Error() + ": " + string(out))
		}
	})
	if staticErr != nil {
		t.Fatal(staticErr)
	}
	return staticPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if staticPath != "" {
		os.RemoveAll(filepath.Dir(staticPath))
	}
	os.Exit(code)
}

// otherArch is a supported architecture that is not this machine's.
func otherArch() string {
	if goruntime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// writeArchive builds an archive into a file and returns its path.
func writeArchive(t *testing.T, opts demo.Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "demo.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := demo.WriteArchive(f, opts); err != nil {
		t.Fatalf("WriteArchive(%+v): %v", opts, err)
	}
	return path
}

// untar extracts a tar file into a new directory.
func untar(t *testing.T, path string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected entry %s of type %c", hdr.Name, hdr.Typeflag)
		}
	}
}

// checkImage asserts the demo image's config and its single layer.
func checkImage(t *testing.T, img v1.Image, binary, platform string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.OS + "/" + cf.Architecture; got != platform {
		t.Errorf("platform %s, want %s", got, platform)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/shoal", "demo-server"}) {
		t.Errorf("entrypoint %q", cf.Config.Entrypoint)
	}
	if !slices.Contains(cf.Config.Env, "PORT=8080") {
		t.Errorf("env %q lacks PORT=8080", cf.Config.Env)
	}
	if _, ok := cf.Config.ExposedPorts["8080/tcp"]; !ok || len(cf.Config.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v", cf.Config.ExposedPorts)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if len(cf.RootFS.DiffIDs) != 1 {
		t.Fatalf("rootfs has %d diff IDs", len(cf.RootFS.DiffIDs))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Name != "shoal" || hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o755 || hdr.Uid != 0 || hdr.Gid != 0 {
		t.Errorf("layer entry %q type %c mode %o uid %d gid %d", hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid)
	}
	got, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("layer holds %d bytes that differ from the %d-byte binary", len(got), len(want))
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("layer has more than one entry (%v)", err)
	}
}

// containerdIndex runs containerd's own archive importer over the file
// and returns the image names and platforms its index gives.
func containerdIndex(t *testing.T, path string) (names, platforms []string) {
	t.Helper()
	ctx := context.Background()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	desc, err := archive.ImportIndex(ctx, cs, f)
	if err != nil {
		t.Fatalf("containerd import: %v", err)
	}
	b, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	for _, m := range idx.Manifests {
		// containerd's Client.Import names the image after this
		// annotation, falling back to the OCI ref name.
		n := m.Annotations["io.containerd.image.name"]
		if n == "" {
			n = m.Annotations[ocispec.AnnotationRefName]
		}
		names = append(names, n)
		if m.Platform != nil {
			platforms = append(platforms, m.Platform.OS+"/"+m.Platform.Architecture)
		}
	}
	return names, platforms
}

func TestWriteArchive(t *testing.T) {
	bin := staticBinary(t)
	here := "linux/" + goruntime.GOARCH
	cases := []struct {
		name     string
		opts     demo.Options
		wantName string // as containerd names it on import
		platform string
	}{
		{"oci defaults", demo.Options{Binary: bin}, "docker.io/library/shoal-demo:latest", here},
		{"docker defaults", demo.Options{Binary: bin, Format: "docker"}, "docker.io/library/shoal-demo:latest", here},
		{"oci named", demo.Options{Binary: bin, Name: "demo:1", Format: "oci", Platform: here}, "docker.io/library/demo:1", here},
		{"docker named with registry", demo.Options{Binary: bin, Name: "localhost:5000/team/demo:v2", Format: "docker"}, "localhost:5000/team/demo:v2", here},
		{"oci bare name gets latest", demo.Options{Binary: bin, Name: "web"}, "docker.io/library/web:latest", here},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeArchive(t, tc.opts)
			names, plats := containerdIndex(t, path)
			if !slices.Equal(names, []string{tc.wantName}) {
				t.Errorf("containerd names the image %q, want %q", names, tc.wantName)
			}
			if !slices.Equal(plats, []string{tc.platform}) {
				t.Errorf("containerd sees platforms %q, want %s", plats, tc.platform)
			}

			var img v1.Image
			if tc.opts.Format == "docker" {
				tag, err := name.NewTag(tc.wantName)
				if err != nil {
					t.Fatal(err)
				}
				img, err = tarball.ImageFromPath(path, &tag)
				if err != nil {
					t.Fatalf("reading docker archive as %s: %v", tag, err)
				}
				m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
				if err != nil {
					t.Fatal(err)
				}
				if len(m) != 1 || len(m[0].RepoTags) != 1 {
					t.Fatalf("manifest.json %+v", m)
				}
			} else {
				dir := untar(t, path)
				idx, err := layout.ImageIndexFromPath(dir)
				if err != nil {
					t.Fatalf("reading OCI layout: %v", err)
				}
				im, err := idx.IndexManifest()
				if err != nil {
					t.Fatal(err)
				}
				if len(im.Manifests) != 1 {
					t.Fatalf("index has %d manifests", len(im.Manifests))
				}
				d := im.Manifests[0]
				ref, _ := name.NewTag(tc.wantName)
				if got := d.Annotations["org.opencontainers.image.ref.name"]; got != ref.TagStr() {
					t.Errorf("ref.name annotation %q, want the tag %q", got, ref.TagStr())
				}
				if d.Platform == nil || d.Platform.OS+"/"+d.Platform.Architecture != tc.platform {
					t.Errorf("descriptor platform %v", d.Platform)
				}
				if string(d.MediaType) != ocispec.MediaTypeImageManifest {
					t.Errorf("manifest media type %s", d.MediaType)
				}
				img, err = idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				mf, err := img.Manifest()
				if err != nil {
					t.Fatal(err)
				}
				if string(mf.Config.MediaType) != ocispec.MediaTypeImageConfig || string(mf.Layers[0].MediaType) != ocispec.MediaTypeImageLayerGzip {
					t.Errorf("media types: config %s, layer %s", mf.Config.MediaType, mf.Layers[0].MediaType)
				}
			}
			checkImage(t, img, bin, tc.platform)
		})
	}
}

// The same binary gives the same image, byte for byte.
func TestWriteArchiveReproducible(t *testing.T) {
	bin := staticBinary(t)
	var a, b bytes.Buffer
	if err := demo.WriteArchive(&a, demo.Options{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	if err := demo.WriteArchive(&b, demo.Options{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two archives of the same binary differ")
	}
}

func TestWriteArchiveRefuses(t *testing.T) {
	bin := staticBinary(t)
	dir := t.TempDir()
	text := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	type tc struct {
		name string
		opts demo.Options
		is   error
		msg  string
	}
	cases := []tc{
		{"not elf", demo.Options{Binary: text}, demo.ErrBadBinary, "not an ELF"},
		{"directory", demo.Options{Binary: dir}, demo.ErrBadBinary, "not a regular file"},
		{"missing", demo.Options{Binary: filepath.Join(dir, "nope")}, os.ErrNotExist, "no such file"},
		{"other arch", demo.Options{Binary: bin, Platform: "linux/" + otherArch()}, demo.ErrBadBinary, "not for linux/" + otherArch()},
		{"windows", demo.Options{Binary: bin, Platform: "windows/amd64"}, demo.ErrBadOptions, "only linux"},
		{"bad platform", demo.Options{Binary: bin, Platform: "linux"}, demo.ErrBadOptions, "want os/arch"},
		{"unknown arch", demo.Options{Binary: bin, Platform: "linux/vax"}, demo.ErrBadOptions, "unsupported architecture"},
		{"bad format", demo.Options{Binary: bin, Format: "zip"}, demo.ErrBadOptions, "format"},
		{"bad name", demo.Options{Binary: bin, Name: "Bad Name!"}, demo.ErrBadOptions, "image name"},
		{"digest name", demo.Options{Binary: bin, Name: "demo@sha256:" + strings.Repeat("a", 64)}, demo.ErrBadOptions, "not a digest"},
	}
	// Debian's /bin/true is dynamically linked against libc.
	if f, err := os.Stat("/bin/true"); err == nil && f.Mode().IsRegular() {
		if err := demo.CheckBinary("/bin/true", v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}); err != nil {
			cases = append(cases, tc{"dynamic", demo.Options{Binary: "/bin/true"}, demo.ErrBadBinary, "CGO_ENABLED=0"})
		} else {
			t.Log("/bin/true is static here; dynamic case skipped")
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := demo.WriteArchive(&buf, c.opts)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q, want %v containing %q", err, c.is, c.msg)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written despite the error", buf.Len())
			}
		})
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(demo.Handler("web", "2", "node-1"))
	defer srv.Close()
	host, _ := os.Hostname()

	before := time.Now().UTC().Add(-time.Second)
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	var r demo.Reply
	err = json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if r.Service != "web" || r.Slot != "2" || r.Node != "node-1" || r.Hostname != host {
		t.Errorf("reply %+v", r)
	}
	if r.Time.Before(before) || r.Time.After(time.Now().UTC().Add(time.Second)) {
		t.Errorf("reply time %s is not now", r.Time)
	}
	var raw map[string]any
	resp, err = http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	for _, k := range []string{"service", "slot", "node", "hostname", "time"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("reply lacks %q: %v", k, raw)
		}
	}

	cases := []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"HEAD", "/healthz", 200, ""},
		{"GET", "/nope", 404, ""},
		{"POST", "/", 405, ""},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
		if c.body != "" && strings.TrimSpace(string(b)) != c.body {
			t.Errorf("%s %s: body %q, want %q", c.method, c.path, b, c.body)
		}
	}
}
