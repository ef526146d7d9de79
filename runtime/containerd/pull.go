package containerd

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalmesh/shoal/runtime"
)

// resolverFunc returns the resolver for one pull of ref.
type resolverFunc = func(ctx context.Context, ref string) (remotes.Resolver, error)

// SetImageResolver makes pulls go through the resolvers fn returns (the
// agent's: peers that hold the image first, the registry last) instead of
// straight to the registry. It is called once per pull, and again for each
// retry, so fn may leave out sources that failed. Nil restores the
// registry.
func (d *Driver) SetImageResolver(fn func(ctx context.Context, ref string) (remotes.Resolver, error)) {
	if fn == nil {
		d.resolver.Store(nil)
		return
	}
	f := resolverFunc(fn)
	d.resolver.Store(&f)
}

// ContentStore is the daemon's content store in the driver's namespace,
// for serving this node's image content to peers. Callers must use
// contexts from WithNamespace.
func (d *Driver) ContentStore() content.Store { return d.client.ContentStore() }

// WithNamespace returns ctx in the driver's containerd namespace.
func (d *Driver) WithNamespace(ctx context.Context) context.Context { return d.nsCtx(ctx) }

// LookupImage returns the target of the stored image called name (a tag
// such as "demo:1", normalised), for peers that ask for a tag.
func (d *Driver) LookupImage(ctx context.Context, name string) (ocispec.Descriptor, bool) {
	img, err := d.localImage(d.nsCtx(ctx), name)
	if err != nil {
		return ocispec.Descriptor{}, false
	}
	return img.Target, true
}

// Pull attempts and the lease that keeps partial downloads.
const (
	// pullAttempts bounds the pulls of one EnsureImage. A failed attempt
	// keeps what it fetched, so the next one resumes; one that got bad
	// data from a source drops that blob and asks for a new resolver.
	pullAttempts = 4
	// pullLeaseTTL is how long fetched content of an unfinished pull is
	// kept from garbage collection for a later attempt to resume.
	pullLeaseTTL = 24 * time.Hour
)

// commitMismatch matches containerd's error for a blob whose content does
// not hash to its digest ("unexpected commit digest X, expected Y").
var commitMismatch = regexp.MustCompile(`expected (sha256:[0-9a-f]{64})`)

// contentJudge is implemented by resolvers that verify what their sources
// send and know which source sent what (the agent's peer resolver).
type contentJudge interface {
	// BadDigest returns the blob whose content was bad in a failed pull's
	// error, if that is why it failed.
	BadDigest(err error) (digest.Digest, bool)
	// BlameSource skips, from now on, the source that last sent d.
	BlameSource(d digest.Digest, reason error) bool
}

// badDigest returns the digest of a blob that failed verification in err:
// as the resolver judges it, or from containerd's commit check.
func badDigest(resolver remotes.Resolver, err error) (digest.Digest, bool) {
	if j, ok := resolver.(contentJudge); ok {
		return j.BadDigest(err)
	}
	if m := commitMismatch.FindStringSubmatch(err.Error()); m != nil && strings.Contains(err.Error(), "unexpected commit digest") {
		return digest.Digest(m[1]), true
	}
	return "", false
}

// pull fetches ref and unpacks it for this platform, under a lease that
// keeps partial content for a later attempt. It checks the platforms
// first, so a foreign image downloads no layers. A ref pinned to a digest
// is stored under its tag ("demo:1@sha256:..." becomes "demo:1") unless
// that tag names other content here (see nameByTag).
func (d *Driver) pull(ctx context.Context, ref string) (runtime.Image, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return runtime.Image{}, fmt.Errorf("containerd: image reference %q: %w", ref, err)
	}
	name := named.String()
	// Lease IDs are short identifiers: name the lease by a hash of the ref.
	lease := "shoal-pull-" + digest.FromString(name).Encoded()[:24]
	lctx, err := d.pullLease(ctx, lease)
	if err != nil {
		return runtime.Image{}, classify(err, "pull %s: lease", name)
	}
	var image containerd.Image
	for attempt := 1; ; attempt++ {
		var resolver remotes.Resolver
		image, resolver, err = d.pullOnce(lctx, name)
		if err == nil {
			break
		}
		if attempt == pullAttempts || ctx.Err() != nil || errors.Is(err, runtime.ErrPlatform) ||
			errdefs.IsNotFound(err) || errors.Is(err, runtime.ErrNotFound) {
			return runtime.Image{}, err
		}
		if dg, ok := badDigest(resolver, err); ok {
			d.log.Warn("image pull got bad content; dropping it and retrying", "image", name, "blob", dg, "attempt", attempt, "err", err)
			d.abortIngests(lctx, dg)
			// The source of a resumed blob that failed the commit check
			// is skipped from now on (a verified one already is).
			if j, ok := resolver.(contentJudge); ok {
				j.BlameSource(dg, err)
			}
		} else {
			d.log.Warn("image pull failed; retrying, keeping what arrived", "image", name, "attempt", attempt, "err", err)
		}
	}
	// The image record now holds its content; the lease has done its job.
	if err := d.client.LeasesService().Delete(d.nsCtx(context.WithoutCancel(ctx)), leases.Lease{ID: lease}); err != nil && !errdefs.IsNotFound(err) {
		d.log.Warn("removing pull lease", "lease", lease, "err", err)
	}
	img := image.Metadata()
	if tagged, ok := tagOf(ref); ok && tagged != img.Name {
		img = d.nameByTag(ctx, img, tagged)
	}
	d.log.Info("image pulled", "image", name, "digest", img.Target.Digest)
	return d.describe(ctx, img)
}

// nameByTag stores img, pulled by digest, under its tag instead: the tag
// is created when no image has it, and the digest-named record is then
// dropped (the tag holds the content), so lists show the image once. A
// tag that names other content is left alone, and img keeps its name.
func (d *Driver) nameByTag(ctx context.Context, img images.Image, tagged string) images.Image {
	is := d.client.ImageService()
	byTag, err := is.Create(ctx, images.Image{Name: tagged, Target: img.Target})
	if errdefs.IsAlreadyExists(err) {
		byTag, err = is.Get(ctx, tagged)
	}
	if err != nil {
		d.log.Warn("naming pulled image", "image", img.Name, "name", tagged, "err", err)
		return img
	}
	if byTag.Target.Digest != img.Target.Digest {
		return img
	}
	if err := is.Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
		d.log.Warn("dropping the digest name of a pulled image", "image", img.Name, "err", err)
	}
	return byTag
}

// pullOnce is one attempt of pull, through a fresh resolver, which it
// returns.
func (d *Driver) pullOnce(ctx context.Context, name string) (containerd.Image, remotes.Resolver, error) {
	var resolver remotes.Resolver
	if fn := d.resolver.Load(); fn != nil {
		r, err := (*fn)(ctx, name)
		if err != nil {
			return nil, nil, fmt.Errorf("containerd: pull %s: %w", name, err)
		}
		resolver = r
	} else {
		resolver = docker.NewResolver(docker.ResolverOptions{
			Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(isLoopbackHost)),
		})
	}
	ps, err := remotePlatforms(ctx, resolver, name)
	if err != nil {
		return nil, resolver, classify(err, "pull %s", name)
	}
	if len(ps) > 0 && !slices.ContainsFunc(ps, platforms.Default().Match) {
		return nil, resolver, platformError(name, ps)
	}
	image, err := d.client.Pull(ctx, name,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithPlatformMatcher(platforms.Default()))
	if err != nil {
		return nil, resolver, classify(err, "pull %s", name)
	}
	return image, resolver, nil
}

// pullLease returns ctx (in the namespace) with the lease id, created with
// pullLeaseTTL if it does not exist yet.
func (d *Driver) pullLease(ctx context.Context, id string) (context.Context, error) {
	ctx = d.nsCtx(ctx)
	_, err := d.client.LeasesService().Create(ctx, leases.WithID(id), leases.WithExpiration(pullLeaseTTL))
	if err != nil && !errdefs.IsAlreadyExists(err) {
		return nil, err
	}
	return leases.WithLease(ctx, id), nil
}

// abortIngests drops the partial downloads of blob dg, so that the next
// attempt fetches it from the start instead of resuming bad data.
func (d *Driver) abortIngests(ctx context.Context, dg digest.Digest) {
	cs := d.client.ContentStore()
	sts, err := cs.ListStatuses(ctx)
	if err != nil {
		d.log.Warn("listing downloads", "err", err)
		return
	}
	for _, st := range sts {
		if ingestDigest(st) != dg {
			continue
		}
		if err := cs.Abort(ctx, st.Ref); err != nil && !errdefs.IsNotFound(err) {
			d.log.Warn("dropping bad download", "ref", st.Ref, "err", err)
		}
	}
}

// tagOf returns ref's normalised name with its tag when ref has both a
// tag and a digest ("demo:1@sha256:..." gives "docker.io/library/demo:1").
func tagOf(ref string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", false
	}
	tagged, ok := named.(reference.Tagged)
	if _, pinned := named.(reference.Digested); !ok || !pinned {
		return "", false
	}
	t, err := reference.WithTag(reference.TrimNamed(named), tagged.Tag())
	if err != nil {
		return "", false
	}
	return t.String(), true
}

// PullProgress reports how far a pull of ref, pinned to a digest, has
// come: bytes held of the content this node's platform needs (committed
// blobs whole, downloads in progress by their offset) and the total.
// Total is 0 while the manifest itself has not arrived.
func (d *Driver) PullProgress(ctx context.Context, ref string) (done, total int64) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return 0, 0
	}
	dg, ok := named.(reference.Digested)
	if !ok {
		return 0, 0
	}
	ctx = d.nsCtx(ctx)
	cs := d.client.ContentStore()
	root, err := cs.Info(ctx, dg.Digest())
	if err != nil {
		return 0, 0
	}
	// The media type is not stored with the blob: try both kinds.
	var m ocispec.Manifest
	var manifestDesc ocispec.Descriptor
	for _, mt := range []string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		images.MediaTypeDockerSchema2ManifestList, images.MediaTypeDockerSchema2Manifest} {
		manifestDesc = ocispec.Descriptor{MediaType: mt, Digest: root.Digest, Size: root.Size}
		if m, err = images.Manifest(ctx, cs, manifestDesc, platforms.Default()); err == nil {
			break
		}
	}
	if err != nil {
		return 0, 0
	}
	offsets := map[digest.Digest]int64{}
	if sts, err := cs.ListStatuses(ctx); err == nil {
		for _, st := range sts {
			dg := ingestDigest(st)
			offsets[dg] = max(offsets[dg], st.Offset)
		}
	}
	for _, desc := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		total += desc.Size
		if _, err := cs.Info(ctx, desc.Digest); err == nil {
			done += desc.Size
		} else {
			done += min(offsets[desc.Digest], desc.Size)
		}
	}
	return done, total
}

// ingestDigest is the digest a download is for: its Expected digest, which
// containerd's stores do not always report, else the end of its ref
// (remotes.MakeRefKey names them "layer-sha256:...", "manifest-sha256:...").
func ingestDigest(st content.Status) digest.Digest {
	if st.Expected != "" {
		return st.Expected
	}
	if i := strings.LastIndexAny(st.Ref, "-@"); i >= 0 {
		if dg, err := digest.Parse(st.Ref[i+1:]); err == nil {
			return dg
		}
	}
	return ""
}
