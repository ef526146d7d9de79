package demo

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Defaults of Options.
const (
	// DefaultName is the image name when Options.Name is empty.
	DefaultName = "shoal-demo:latest"
	// FormatOCI is an OCI image layout in a tar (what `ctr export` writes).
	FormatOCI = "oci"
	// FormatDocker is a `docker save` tarball.
	FormatDocker = "docker"
	// Port is the port the image's server listens on ($PORT in the image).
	Port = 8080
	// BinaryPath is where the binary sits in the image.
	BinaryPath = "/shoal"
)

// Annotations on the image's descriptor in an OCI archive's index.json.
// containerd's importer (images/archive, and Client.Import) names the
// image after AnnotationImageName, the full normalized reference
// ("docker.io/library/shoal-demo:latest"), and falls back to
// AnnotationRefName, which the OCI image spec defines as the tag only
// ("latest"). Both are set as containerd's own exporter sets them.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// Errors of WriteArchive, wrapped with details and checked with errors.Is.
var (
	// ErrBadBinary: the binary cannot run in the image (not an ELF
	// executable, dynamically linked, or built for another platform).
	ErrBadBinary = errors.New("demo: binary cannot run in the image")
	// ErrBadOptions: a name, format or platform that is not valid.
	ErrBadOptions = errors.New("demo: invalid options")
)

// Entrypoint is the image's entrypoint.
var Entrypoint = []string{BinaryPath, "demo-server"}

// epoch is the time stamp of every file in the archives, so that the same
// binary always gives the same image digest.
var epoch = time.Unix(0, 0).UTC()

// Options say what WriteArchive builds. Zero values take the defaults.
type Options struct {
	// Name is the reference the image is stored under when imported
	// (default DefaultName). It must be a tag, not a digest.
	Name string
	// Binary is the path of the static Linux executable to pack as
	// /shoal (default: the running executable, os.Executable()). It must
	// run `demo-server`, that is be a shoal binary.
	Binary string
	// Platform is the image's "os/arch[/variant]" (default
	// runtime.GOOS/runtime.GOARCH). Only linux is accepted, and Binary
	// must be built for it.
	Platform string
	// Format is FormatOCI (default) or FormatDocker.
	Format string
}

// withDefaults fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Platform == "" {
		o.Platform = goruntime.GOOS + "/" + goruntime.GOARCH
	}
	if o.Format == "" {
		o.Format = FormatOCI
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("demo: finding the running executable: %w", err)
		}
		o.Binary = exe
	}
	return o, nil
}

// WriteArchive builds the demo image from opts and writes it to w as an
// OCI image archive or a `docker save` tarball, ready for `shoal image
// load` (or `ctr image import`, `docker load`). The image has one layer
// holding the binary at /shoal (mode 0755), entrypoint ["/shoal",
// "demo-server"], PORT=8080 in its environment and 8080/tcp exposed.
//
// The binary must be a static ELF executable for the platform (errors
// wrap ErrBadBinary); invalid options wrap ErrBadOptions. Nothing is
// written to w when the options or the binary are refused. The binary is
// streamed, never held in memory whole; its compressed layer is (a few
// tens of MB for shoal).
func WriteArchive(w io.Writer, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	named, err := parseName(opts.Name)
	if err != nil {
		return err
	}
	plat, err := parsePlatform(opts.Platform)
	if err != nil {
		return err
	}
	if opts.Format != FormatOCI && opts.Format != FormatDocker {
		return fmt.Errorf("%w: format %q: want %s or %s", ErrBadOptions, opts.Format, FormatOCI, FormatDocker)
	}
	if err := CheckBinary(opts.Binary, plat); err != nil {
		return err
	}
	img, err := buildImage(opts.Binary, plat, opts.Format)
	if err != nil {
		return err
	}
	if opts.Format == FormatDocker {
		// The familiar name ("shoal-demo:latest") is what `docker save`
		// writes in RepoTags; importers normalize it.
		tag, err := name.NewTag(reference.FamiliarString(named))
		if err != nil {
			return fmt.Errorf("%w: name %q: %w", ErrBadOptions, opts.Name, err)
		}
		if err := tarball.Write(tag, img, w); err != nil {
			return fmt.Errorf("demo: writing docker archive: %w", err)
		}
		return nil
	}
	return writeOCI(w, img, named, plat)
}

// parseName checks an image name and returns it normalized the way
// containerd normalizes references (docker.io/library/..., :latest).
func parseName(s string) (reference.NamedTagged, error) {
	ref, err := reference.ParseDockerRef(s)
	if err != nil {
		return nil, fmt.Errorf("%w: image name %q: %w", ErrBadOptions, s, err)
	}
	if _, ok := ref.(reference.Digested); ok {
		return nil, fmt.Errorf("%w: image name %q: want a tag, not a digest", ErrBadOptions, s)
	}
	tagged, ok := ref.(reference.NamedTagged)
	if !ok { // ParseDockerRef adds :latest to a bare name
		return nil, fmt.Errorf("%w: image name %q has no tag", ErrBadOptions, s)
	}
	return tagged, nil
}

// parsePlatform parses "linux/arch[/variant]".
func parsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return v1.Platform{}, fmt.Errorf("%w: platform %q: want os/arch or os/arch/variant", ErrBadOptions, s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	if p.OS != "linux" {
		return p, fmt.Errorf("%w: platform %q: only linux images are supported", ErrBadOptions, s)
	}
	if _, ok := elfMachines[p.Architecture]; !ok {
		return p, fmt.Errorf("%w: platform %q: unsupported architecture %q", ErrBadOptions, s, p.Architecture)
	}
	return p, nil
}

// elfMachine is what an ELF header says for a GOARCH.
type elfMachine struct {
	machine elf.Machine
	class   elf.Class
	order   string // "little" or "big"
}

// elfMachines maps the GOARCH values Go builds static Linux binaries for
// to their ELF header fields.
var elfMachines = map[string]elfMachine{
	"amd64":   {elf.EM_X86_64, elf.ELFCLASS64, "little"},
	"arm64":   {elf.EM_AARCH64, elf.ELFCLASS64, "little"},
	"arm":     {elf.EM_ARM, elf.ELFCLASS32, "little"},
	"386":     {elf.EM_386, elf.ELFCLASS32, "little"},
	"riscv64": {elf.EM_RISCV, elf.ELFCLASS64, "little"},
	"ppc64le": {elf.EM_PPC64, elf.ELFCLASS64, "little"},
	"s390x":   {elf.EM_S390, elf.ELFCLASS64, "big"},
	"loong64": {elf.EM_LOONGARCH, elf.ELFCLASS64, "little"},
}

// CheckBinary returns nil if path is a statically linked ELF executable
// for platform p: no program interpreter (PT_INTERP) and no shared library
// dependencies (DT_NEEDED). Errors wrap ErrBadBinary, except a file that
// cannot be read.
func CheckBinary(path string, p v1.Platform) error {
	want, ok := elfMachines[p.Architecture]
	if !ok || p.OS != "linux" {
		return fmt.Errorf("%w: no static binary check for platform %s", ErrBadBinary, p.String())
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("demo: binary: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrBadBinary, path)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %s is not an ELF executable: %w", ErrBadBinary, path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%w: %s is an ELF %s, not an executable", ErrBadBinary, path, f.Type)
	}
	order := "little"
	if f.Data == elf.ELFDATA2MSB {
		order = "big"
	}
	if f.Machine != want.machine || f.Class != want.class || order != want.order {
		return fmt.Errorf("%w: %s is built for %s (%s), not for %s", ErrBadBinary, path, f.Machine, f.Class, p.String())
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		interp, _ := io.ReadAll(io.LimitReader(prog.Open(), 4096))
		return fmt.Errorf("%w: %s is dynamically linked (interpreter %s); build shoal with CGO_ENABLED=0",
			ErrBadBinary, path, strings.TrimRight(string(interp), "\x00"))
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%w: %s: reading its dynamic section: %w", ErrBadBinary, path, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("%w: %s needs shared libraries (%s); build shoal with CGO_ENABLED=0",
			ErrBadBinary, path, strings.Join(libs, ", "))
	}
	return nil
}

// buildImage builds the one-layer image around the binary, with OCI or
// Docker media types.
func buildImage(binary string, p v1.Platform, format string) (v1.Image, error) {
	fi, err := os.Stat(binary)
	if err != nil {
		return nil, fmt.Errorf("demo: binary: %w", err)
	}
	size := fi.Size()
	layerType, manifestType, configType := types.DockerLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	if format == FormatOCI {
		layerType, manifestType, configType = types.OCILayer, types.OCIManifestSchema1, types.OCIConfigJSON
	}
	// The layer is a tar holding the binary, produced on the fly each
	// time it is read; the compressed form is kept (it is read for its
	// digest and again to be written).
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return layerTar(binary, size) },
		tarball.WithMediaType(layerType), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("demo: building the layer: %w", err)
	}
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint:   Entrypoint,
			Env:          []string{fmt.Sprintf("PORT=%d", Port)},
			ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", Port): {}},
			Labels: map[string]string{
				"org.opencontainers.image.title":       "shoal-demo",
				"org.opencontainers.image.description": "Shoal's demo server: answers which replica served the request",
			},
		},
	}
	img, err := mutate.ConfigFile(mutate.ConfigMediaType(mutate.MediaType(empty.Image, manifestType), configType), cfg)
	if err != nil {
		return nil, fmt.Errorf("demo: image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: layerType,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "shoal image build-demo", Comment: "the shoal binary"},
	})
	if err != nil {
		return nil, fmt.Errorf("demo: adding the layer: %w", err)
	}
	return img, nil
}

// layerTar streams a tar holding the binary as /shoal. It fails if the
// file no longer has the size it had when the image was planned.
func layerTar(binary string, size int64) (io.ReadCloser, error) {
	f, err := os.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("demo: binary: %w", err)
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg,
			Name:     strings.TrimPrefix(BinaryPath, "/"),
			Mode:     0o755,
			Size:     size,
			ModTime:  epoch,
			Uname:    "root",
			Gname:    "root",
			Format:   tar.FormatPAX,
		})
		if err == nil {
			var n int64
			n, err = io.Copy(tw, io.LimitReader(f, size))
			if err == nil && n != size {
				err = fmt.Errorf("demo: binary %s shrank while being packed", binary)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err) // nil: EOF
	}()
	return pr, nil
}

// writeOCI writes img as a tar of an OCI image layout whose index.json
// names it for containerd's importer.
func writeOCI(w io.Writer, img v1.Image, named reference.NamedTagged, p v1.Platform) error {
	manifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("demo: manifest: %w", err)
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("demo: config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("demo: layers: %w", err)
	}
	mdigest, msize, err := v1.SHA256(bytes.NewReader(manifest))
	if err != nil {
		return fmt.Errorf("demo: manifest digest: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return fmt.Errorf("demo: manifest media type: %w", err)
	}
	plat := p
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Size:      msize,
			Digest:    mdigest,
			Platform:  &plat,
			Annotations: map[string]string{
				AnnotationImageName: named.String(),
				AnnotationRefName:   named.Tag(),
			},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return fmt.Errorf("demo: index: %w", err)
	}

	tw := tar.NewWriter(w)
	file := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("demo: writing %s: %w", name, err)
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("demo: writing %s: %w", name, err)
		}
		return nil
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return fmt.Errorf("demo: writing %s: %w", dir, err)
		}
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	if err := file("oci-layout", int64(len(layout)), bytes.NewReader(layout)); err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("demo: layer digest: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("demo: layer size: %w", err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("demo: layer: %w", err)
		}
		err = file(blob(d), size, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	cdigest, csize, err := v1.SHA256(bytes.NewReader(config))
	if err != nil {
		return fmt.Errorf("demo: config digest: %w", err)
	}
	if err := file(blob(cdigest), csize, bytes.NewReader(config)); err != nil {
		return err
	}
	if err := file(blob(mdigest), msize, bytes.NewReader(manifest)); err != nil {
		return err
	}
	if err := file("index.json", int64(len(indexJSON)), bytes.NewReader(indexJSON)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("demo: finishing the archive: %w", err)
	}
	return nil
}
