package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalmesh/shoal/runtime"
)

// snapshotter is the snapshotter images are unpacked into and containers
// run on.
const snapshotter = containerd.DefaultSnapshotter

// unnamedPrefix names imported images that carry no name: "import@sha256:...".
const unnamedPrefix = "import"

// ImportImage imports a `docker save` tarball or an OCI image archive and
// unpacks its images for this platform. Names are normalised (see the
// package doc). When an image in the archive has no variant for this
// platform, the images the archive named are removed again and the error
// wraps runtime.ErrPlatform; a malformed archive wraps runtime.ErrBadImage.
func (d *Driver) ImportImage(ctx context.Context, r io.Reader) ([]runtime.Image, error) {
	ctx = d.nsCtx(ctx)
	imgs, err := d.client.Import(ctx, r,
		containerd.WithImageRefTranslator(normalizeOCIName),
		containerd.WithDigestRef(func(dg digest.Digest) string { return unnamedPrefix + "@" + dg.String() }),
		containerd.WithSkipDigestRef(func(name string) bool { return name != "" }),
		// Store every platform, so a foreign image is reported as such
		// (ErrPlatform) rather than as an empty archive.
		containerd.WithAllPlatforms(true),
	)
	if err != nil {
		if errdefs.IsUnavailable(err) || ctx.Err() != nil {
			return nil, classify(err, "import")
		}
		return nil, fmt.Errorf("containerd: import: %w: %w", runtime.ErrBadImage, err)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("containerd: import: %w: the archive holds no image", runtime.ErrBadImage)
	}
	undo := func() {
		for _, img := range imgs {
			if err := d.client.ImageService().Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
				d.log.Warn("removing rejected image", "image", img.Name, "err", err)
			}
		}
	}
	want := platforms.Default()
	for _, img := range imgs {
		ps, err := images.Platforms(ctx, d.client.ContentStore(), img.Target)
		if err != nil {
			undo()
			return nil, fmt.Errorf("containerd: import %s: %w: %w", img.Name, runtime.ErrBadImage, err)
		}
		if !slices.ContainsFunc(ps, want.Match) {
			undo()
			return nil, platformError(img.Name, ps)
		}
	}
	out := make([]runtime.Image, 0, len(imgs))
	for _, img := range imgs {
		image := containerd.NewImageWithPlatform(d.client, img, want)
		if err := image.Unpack(ctx, snapshotter); err != nil {
			undo()
			if errdefs.IsUnavailable(err) {
				return nil, classify(err, "unpack %s", img.Name)
			}
			return nil, fmt.Errorf("containerd: unpack %s: %w: %w", img.Name, runtime.ErrBadImage, err)
		}
		ri, err := d.describe(ctx, img)
		if err != nil {
			return nil, err
		}
		out = append(out, ri)
		d.log.Info("image imported", "image", img.Name, "digest", img.Target.Digest)
	}
	return out, nil
}

// Images lists the images in the driver's namespace, sorted by name.
func (d *Driver) Images(ctx context.Context) ([]runtime.Image, error) {
	ctx = d.nsCtx(ctx)
	imgs, err := d.client.ImageService().List(ctx)
	if err != nil {
		return nil, classify(err, "list images")
	}
	out := make([]runtime.Image, 0, len(imgs))
	for _, img := range imgs {
		ri, err := d.describe(ctx, img)
		if err != nil {
			d.log.Warn("skipping unreadable image", "image", img.Name, "err", err)
			continue
		}
		out = append(out, ri)
	}
	slices.SortFunc(out, func(a, b runtime.Image) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// EnsureImage returns ref when it is held and unpacked for this platform,
// unpacking it when only that is missing, and pulls it otherwise: through
// the resolver set with SetImageResolver (Shoal's peers first) when there
// is one, else from its registry (plain HTTP for registries on loopback).
// A ref pinned to a digest ("demo:1@sha256:...") is held when any stored
// image has that target, whatever its name. An image without a variant
// for this platform is an error wrapping runtime.ErrPlatform; an unknown
// one wraps runtime.ErrNotFound.
func (d *Driver) EnsureImage(ctx context.Context, ref string) (runtime.Image, error) {
	ctx = d.nsCtx(ctx)
	img, err := d.localImage(ctx, ref)
	switch {
	case err == nil:
		ps, err := images.Platforms(ctx, d.client.ContentStore(), img.Target)
		if err != nil {
			return runtime.Image{}, fmt.Errorf("containerd: image %s: %w: %w", img.Name, runtime.ErrBadImage, err)
		}
		if !slices.ContainsFunc(ps, platforms.Default().Match) {
			return runtime.Image{}, platformError(img.Name, ps)
		}
		image := containerd.NewImageWithPlatform(d.client, img, platforms.Default())
		ok, err := image.IsUnpacked(ctx, snapshotter)
		if err != nil {
			return runtime.Image{}, classify(err, "image %s", img.Name)
		}
		if ok {
			return d.describe(ctx, img)
		}
		if err := image.Unpack(ctx, snapshotter); err == nil {
			return d.describe(ctx, img)
		} else if !errdefs.IsNotFound(err) {
			return runtime.Image{}, classify(err, "unpack %s", img.Name)
		}
		// Content for this platform is missing: pull it.
	case !errors.Is(err, runtime.ErrNotFound):
		return runtime.Image{}, err
	}
	return d.pull(ctx, ref)
}

// localImage finds ref among the stored images: by target digest when ref
// is pinned to one, else normalised ("busybox" is
// docker.io/library/busybox:latest), then as written.
func (d *Driver) localImage(ctx context.Context, ref string) (images.Image, error) {
	is := d.client.ImageService()
	var names []string
	if named, err := reference.ParseDockerRef(ref); err == nil {
		if dg, ok := named.(reference.Digested); ok {
			return d.imageByDigest(ctx, ref, dg.Digest())
		}
		names = append(names, named.String())
	}
	if len(names) == 0 || names[0] != ref {
		names = append(names, ref)
	}
	for _, n := range names {
		img, err := is.Get(ctx, n)
		if err == nil {
			return img, nil
		}
		if !errdefs.IsNotFound(err) {
			return images.Image{}, classify(err, "image %s", ref)
		}
	}
	return images.Image{}, fmt.Errorf("containerd: image %s: %w", ref, runtime.ErrNotFound)
}

// imageByDigest finds a stored image whose target is dg. Among several,
// one named like ref wins, then the first by name.
func (d *Driver) imageByDigest(ctx context.Context, ref string, dg digest.Digest) (images.Image, error) {
	if err := dg.Validate(); err != nil {
		return images.Image{}, fmt.Errorf("containerd: image reference %q: %w", ref, err)
	}
	imgs, err := d.client.ImageService().List(ctx, "target.digest=="+dg.String())
	if err != nil {
		return images.Image{}, classify(err, "image %s", ref)
	}
	if len(imgs) == 0 {
		return images.Image{}, fmt.Errorf("containerd: image %s: %w", ref, runtime.ErrNotFound)
	}
	want := ""
	if named, err := reference.ParseNormalizedNamed(ref); err == nil {
		if tagged, ok := named.(reference.Tagged); ok {
			if t, err := reference.WithTag(reference.TrimNamed(named), tagged.Tag()); err == nil {
				want = t.String()
			}
		}
	}
	slices.SortFunc(imgs, func(a, b images.Image) int {
		if (a.Name == want) != (b.Name == want) {
			if a.Name == want {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return imgs[0], nil
}

// describe turns a stored image into a runtime.Image.
func (d *Driver) describe(ctx context.Context, img images.Image) (runtime.Image, error) {
	cs := d.client.ContentStore()
	ps, err := images.Platforms(ctx, cs, img.Target)
	if err != nil {
		return runtime.Image{}, classify(err, "image %s", img.Name)
	}
	size, err := containerd.NewImageWithPlatform(d.client, img, platforms.Default()).Size(ctx)
	if err != nil {
		return runtime.Image{}, classify(err, "image %s size", img.Name)
	}
	return runtime.Image{
		Name:      img.Name,
		Digest:    img.Target.Digest.String(),
		Size:      size,
		Platforms: formatPlatforms(ps),
	}, nil
}

// platformError is the ErrPlatform error for image with platforms ps.
func platformError(image string, ps []ocispec.Platform) error {
	have := "none"
	if f := formatPlatforms(ps); len(f) > 0 {
		have = strings.Join(f, ", ")
	}
	return fmt.Errorf("containerd: image %s is for %s, this node is %s: %w",
		image, have, platforms.Format(platforms.DefaultSpec()), runtime.ErrPlatform)
}

// formatPlatforms returns ps as sorted, distinct "os/arch[/variant]".
func formatPlatforms(ps []ocispec.Platform) []string {
	var out []string
	for _, p := range ps {
		out = append(out, platforms.Format(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// normalizeOCIName turns an OCI "org.opencontainers.image.ref.name"
// annotation into the name the image is stored under: normalised like a
// docker reference, or "" (skipped) when it is not a valid reference.
func normalizeOCIName(name string) string {
	named, err := reference.ParseDockerRef(name)
	if err != nil {
		return ""
	}
	return named.String()
}

// isLoopbackHost reports whether a registry host ("host[:port]") is on
// loopback and therefore spoken to in plain HTTP.
func isLoopbackHost(host string) (bool, error) {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if h == "localhost" {
		return true, nil
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback(), nil
}

// maxManifestBytes bounds the manifests and configs read from a registry.
const maxManifestBytes = 4 << 20

// remotePlatforms resolves name and returns the platforms its index (or
// its manifest's config) declares, reading no layers.
func remotePlatforms(ctx context.Context, resolver remotes.Resolver, name string) ([]ocispec.Platform, error) {
	_, desc, err := resolver.Resolve(ctx, name)
	if err != nil {
		return nil, err
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		return nil, err
	}
	read := func(desc ocispec.Descriptor, v any) error {
		if desc.Size > maxManifestBytes {
			return fmt.Errorf("%s is %d bytes: %w", desc.Digest, desc.Size, runtime.ErrBadImage)
		}
		rc, err := fetcher.Fetch(ctx, desc)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("%s: %w: %w", desc.Digest, runtime.ErrBadImage, err)
		}
		return nil
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageIndex, images.MediaTypeDockerSchema2ManifestList:
		var idx ocispec.Index
		if err := read(desc, &idx); err != nil {
			return nil, err
		}
		var ps []ocispec.Platform
		for _, m := range idx.Manifests {
			if m.Platform != nil {
				ps = append(ps, *m.Platform)
			}
		}
		return ps, nil
	case ocispec.MediaTypeImageManifest, images.MediaTypeDockerSchema2Manifest:
		var m ocispec.Manifest
		if err := read(desc, &m); err != nil {
			return nil, err
		}
		var cfg ocispec.Image
		if err := read(m.Config, &cfg); err != nil {
			return nil, err
		}
		return []ocispec.Platform{platforms.Normalize(ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})}, nil
	}
	return nil, nil // unknown media type: let the pull decide
}
