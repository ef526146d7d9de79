package peerregistry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// AbortIngests aborts every active ingest of d in im and returns how many
// it aborted. An ingest is d's if its Expected digest is d or its ref ends
// with d, which is how containerd's remotes.MakeRefKey names them
// ("layer-sha256:…", "manifest-sha256:…", "<name>@sha256:…"); containerd's
// stores do not all report Expected. Call it before retrying a pull that
// failed on d's content: an ingest left behind holds the bad bytes, and the
// retry would resume it and fail the same way.
func AbortIngests(ctx context.Context, im content.IngestManager, d digest.Digest) (int, error) {
	sts, err := im.ListStatuses(ctx)
	if err != nil {
		return 0, fmt.Errorf("peerregistry: list ingests: %w", err)
	}
	n := 0
	var errs []error
	for _, st := range sts {
		if st.Expected != d && !strings.HasSuffix(st.Ref, d.String()) {
			continue
		}
		if err := im.Abort(ctx, st.Ref); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("peerregistry: abort ingest %q: %w", st.Ref, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// commitMismatchRE matches the commit errors of containerd's content
// stores (local, and through the daemon's API, which keeps the message):
// "unexpected commit digest <got>, expected <want>".
var commitMismatchRE = regexp.MustCompile(`unexpected commit digest (\S+), expected ([^\s:]+:[a-zA-Z0-9=_-]+)`)

// commitRefRE matches the ref in content.Copy's "failed commit on ref
// \"<ref>\"", for a size mismatch.
var commitRefRE = regexp.MustCompile(`failed commit on ref "([^"]*)"`)

// BadDigest returns the digest whose content was bad in a failed pull's
// err: a *BadContentError's Digest (the body of a verified download did not
// match), or the expected digest of a failed commit (a resumed download did
// not match, or had the wrong size). ok is false for any other error
// (network, not found, cancellation ...), which a plain retry may cure.
func BadDigest(err error) (d digest.Digest, ok bool) {
	var bad *BadContentError
	if errors.As(err, &bad) {
		return bad.Digest, true
	}
	if err == nil || !errdefs.IsFailedPrecondition(err) {
		return "", false
	}
	msg := err.Error()
	if m := commitMismatchRE.FindStringSubmatch(msg); m != nil {
		if d, err := digest.Parse(m[2]); err == nil {
			return d, true
		}
	}
	if strings.Contains(msg, "unexpected commit size") {
		if m := commitRefRE.FindStringSubmatch(msg); m != nil {
			if d, ok := refDigest(m[1]); ok {
				return d, true
			}
		}
	}
	return "", false
}

// RetryBadContent runs pull (a containerd pull or fetch through r) up to
// attempts times. After a failure that BadDigest recognises it blames the
// last peer that sent that content unless verification already marked one
// (Blame), aborts the content's ingests in im (AbortIngests) and tries
// again; r then skips the bad peer. Any other error, or the last attempt's
// error, is returned as is. log nil means slog.Default().
func RetryBadContent(ctx context.Context, im content.IngestManager, r *Resolver, attempts int, log *slog.Logger,
	pull func(context.Context) error) error {
	if log == nil {
		log = slog.Default()
	}
	for i := 1; ; i++ {
		err := pull(ctx)
		if err == nil {
			return nil
		}
		d, ok := BadDigest(err)
		if !ok || i >= attempts || ctx.Err() != nil {
			return err
		}
		var bad *BadContentError
		if !errors.As(err, &bad) {
			r.Blame(d, err)
		}
		n, aerr := AbortIngests(ctx, im, d)
		if aerr != nil {
			return errors.Join(err, aerr)
		}
		log.Info("peerregistry: retrying pull after bad content", "digest", d, "attempt", i, "aborted_ingests", n, "err", err)
	}
}

// refDigest returns the digest a containerd ingest ref ends with
// ("layer-sha256:…", "name@sha256:…").
func refDigest(ref string) (digest.Digest, bool) {
	colon := strings.LastIndexByte(ref, ':')
	if colon < 0 {
		return "", false
	}
	start := strings.LastIndexAny(ref[:colon], "-@/") + 1
	d, err := digest.Parse(ref[start:])
	return d, err == nil
}
