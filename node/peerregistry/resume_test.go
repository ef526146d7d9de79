package peerregistry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// cutter interrupts the first full GET of one blob after n body bytes.
// mode "abort" then ends the response (the stream is closed with the body
// short); mode "hold" blocks until release is closed, while the test cuts
// the connection, and fails the rest. Once it has cut, every later GET of
// the blob gets refused (503) if refuseAfter is set.
type cutter struct {
	next        http.Handler
	suffix      string
	n           int64
	mode        string
	refuseAfter bool
	fired       atomic.Bool
	cut         chan struct{} // closed once the n bytes are out
	release     chan struct{} // hold mode: the test closes it (free)
	freed       sync.Once
}

// free releases a held cut; it may be called more than once (the test's
// cleanup calls it too, so a test that failed early does not leave the
// handler, and so the server's shutdown, waiting).
func (c *cutter) free() { c.freed.Do(func() { close(c.release) }) }

func newCutter(next http.Handler, d digest.Digest, n int64, mode string) *cutter {
	return &cutter{next: next, suffix: d.String(), n: n, mode: mode, cut: make(chan struct{}), release: make(chan struct{})}
}

func (c *cutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, c.suffix) {
		c.next.ServeHTTP(w, r)
		return
	}
	if c.fired.Load() && c.refuseAfter {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if r.Header.Get("Range") != "" || c.fired.Swap(true) {
		c.next.ServeHTTP(w, r)
		return
	}
	c.next.ServeHTTP(&cutWriter{ResponseWriter: w, c: c, left: c.n}, r)
}

type cutWriter struct {
	http.ResponseWriter
	c    *cutter
	left int64
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= w.left {
		w.left -= int64(len(p))
		return w.ResponseWriter.Write(p)
	}
	n, err := w.ResponseWriter.Write(p[:w.left])
	w.left -= int64(n)
	if err != nil {
		return n, err
	}
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
		return n, err
	}
	close(w.c.cut)
	if w.c.mode == "abort" {
		panic(http.ErrAbortHandler) // http.Server closes the stream, body short
	}
	<-w.c.release
	return n, errors.New("cut")
}

func (w *cutWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ingestOffset returns the offset of the only ingest in st whose ref ends
// with d, or -1 (also when the store cannot list its ingests just now: the
// local store reads ingests that are being written, and callers poll).
func ingestOffset(t *testing.T, st content.Store, d digest.Digest) int64 {
	sts, err := st.ListStatuses(context.Background())
	if err != nil {
		t.Logf("listing ingests: %v", err)
		return -1
	}
	for _, s := range sts {
		if strings.HasSuffix(s.Ref, d.String()) {
			return s.Offset
		}
	}
	return -1
}

// TestResumeInterruptedTransfer interrupts the download of an 8 MiB layer
// after 3 MiB and checks the transfer resumes with a Range request for the
// rest instead of starting over, and that the final content is intact.
//
//   - abort: the server ends the stream with the body short. containerd's
//     fetcher sees an unexpected EOF and reopens at its offset within the
//     same fetch.
//   - reset: the connection is cut (the client closes it, as a network
//     failure would). The fetch fails and leaves a 3 MiB ingest; the next
//     fetch resumes it: content.Copy seeks to the ingest's offset, which
//     becomes the Range.
func TestResumeInterruptedTransfer(t *testing.T) {
	const size, cutAt = 8 << 20, 3 << 20
	for _, mode := range []string{"abort", "hold"} {
		t.Run(map[string]string{"abort": "abort", "hold": "reset"}[mode], func(t *testing.T) {
			a, b := newNode(t), newNode(t)
			befriend(a, b)
			im := buildImage(t, a.store, 64<<10, size)
			target := im.layers[1]
			var cut *cutter
			a.serve(t, nil, nil, func(h http.Handler) http.Handler {
				cut = newCutter(h, target.Digest, cutAt, mode)
				return cut
			})
			t.Cleanup(cut.free) // runs before the server's cleanup
			ctx := testCtx(t)
			r := NewResolver(ResolverConfig{Transport: b.transport(t, a), Peers: []lpeer.ID{a.ID()}, Upstream: noUpstream, Logger: discard})
			ref := demoRef + "@" + im.index.Digest.String()

			if mode == "hold" {
				errc := make(chan error, 1)
				go func() { errc <- fetchImage(ctx, r, ref, b.store) }()
				<-cut.cut
				eventually(t, "3 MiB in the ingest", func() bool { return ingestOffset(t, b.store, target.Digest) == cutAt })
				if err := b.ClosePeer(a.ID()); err != nil {
					t.Fatal(err)
				}
				err := <-errc
				cut.free()
				if err == nil {
					t.Fatal("the fetch survived a cut connection")
				}
				if got := ingestOffset(t, b.store, target.Digest); got != cutAt {
					t.Fatalf("ingest offset after the cut: %d, want %d", got, cutAt)
				}
			}
			if err := fetchImage(ctx, r, ref, b.store); err != nil {
				t.Fatalf("fetch: %v", err)
			}
			checkImage(t, b.store, im)

			gets := a.rec.gets(target.Digest.String())
			if len(gets) != 2 {
				t.Fatalf("GETs of the layer: %+v, want 2", gets)
			}
			if g := gets[0]; g.rangeHdr != "" || g.bytes != cutAt {
				t.Errorf("first GET: %+v, want a full GET cut at %d bytes", g, cutAt)
			}
			if g := gets[1]; g.rangeHdr != fmt.Sprintf("bytes=%d-", cutAt) || g.status != http.StatusPartialContent || g.bytes != size-cutAt {
				t.Errorf("second GET: %+v, want Range bytes=%d- answered 206 with %d bytes", g, cutAt, size-cutAt)
			}
			s := r.Stats()
			if s.Ranged != 1 || s.BadContent != 0 || s.Verified != 4 {
				t.Errorf("Stats %+v, want 1 ranged, 4 verified, no bad content", s)
			}
		})
	}
}

// TestBlameAfterResumedCommitMismatch: a transfer from peer A is cut after
// 3 MiB and A then refuses the blob; the resume goes to peer C, whose
// ranged answer is corrupt past the cut. A ranged body cannot be verified,
// so containerd's commit fails ("unexpected commit digest"); BadDigest
// recognises it, RetryBadContent blames C (the last source), aborts the
// ingest and pulls again, and the good peer D serves the whole layer.
func TestBlameAfterResumedCommitMismatch(t *testing.T) {
	const size, cutAt = 8 << 20, 3 << 20
	a, c, d, b := newNode(t), newNode(t), newNode(t), newNode(t)
	befriend(a, c, d, b)
	im := buildImage(t, a.store, 64<<10, size)
	copyImage(t, a.store, c.store, im)
	copyImage(t, a.store, d.store, im)
	target := im.layers[1]
	var cut *cutter
	a.serve(t, nil, nil, func(h http.Handler) http.Handler {
		cut = newCutter(h, target.Digest, cutAt, "hold")
		cut.refuseAfter = true
		return cut
	})
	t.Cleanup(cut.free) // runs before the server's cleanup
	c.serve(t, &tamperedStore{Store: c.store, bad: target.Digest, at: cutAt + 4321}, nil, nil)
	d.serve(t, nil, nil, nil)
	ctx := testCtx(t)
	r := NewResolver(ResolverConfig{Transport: b.transport(t, a, c, d), Peers: []lpeer.ID{a.ID(), c.ID(), d.ID()}, Upstream: noUpstream, Logger: discard})
	ref := demoRef + "@" + im.index.Digest.String()

	errc := make(chan error, 1)
	go func() { errc <- fetchImage(ctx, r, ref, b.store) }()
	<-cut.cut
	eventually(t, "3 MiB in the ingest", func() bool { return ingestOffset(t, b.store, target.Digest) == cutAt })
	if err := b.ClosePeer(a.ID()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Fatal("the fetch survived a cut connection")
	}
	cut.free()

	var errs []error
	err := RetryBadContent(ctx, b.store, r, 3, discard, func(ctx context.Context) error {
		err := fetchImage(ctx, r, ref, b.store)
		errs = append(errs, err)
		return err
	})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if len(errs) != 2 || !errdefs.IsFailedPrecondition(errs[0]) || !strings.Contains(errs[0].Error(), "unexpected commit digest") {
		t.Fatalf("attempts: %v, want a commit mismatch then success", errs)
	}
	checkImage(t, b.store, im)
	if gets := c.rec.gets(target.Digest.String()); len(gets) != 1 || gets[0].rangeHdr != fmt.Sprintf("bytes=%d-", cutAt) {
		t.Errorf("C's GETs of the layer: %+v, want one ranged GET", gets)
	}
	if gets := d.rec.gets(target.Digest.String()); len(gets) != 1 || gets[0].rangeHdr != "" || gets[0].bytes != size {
		t.Errorf("D's GETs of the layer: %+v, want one full GET", gets)
	}
	s := r.Stats()
	if s.Blamed != 1 || s.BadContent != 0 || s.BadPeers != 1 {
		t.Errorf("Stats %+v, want C blamed and nothing else bad", s)
	}
	if bad := r.BadPeers(); len(bad) != 1 || bad[0] != c.ID() {
		t.Errorf("BadPeers %v, want [%s]", bad, c.ID())
	}
	if p, ok := r.LastSource(target.Digest); !ok || p != d.ID() {
		t.Errorf("LastSource = %s, %v; want %s", p, ok, d.ID())
	}
}

// TestBadDigest checks which errors BadDigest recognises: the verifier's,
// a real commit mismatch from containerd's local store, the same message
// as it comes back through containerd's API, and a size mismatch.
func TestBadDigest(t *testing.T) {
	st, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	want := digest.FromString("the real thing")
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: want, Size: 14}
	commitErr := content.WriteBlob(ctx, st, remotes.MakeRefKey(ctx, desc), strings.NewReader("a fake thing.."), desc)
	if commitErr == nil {
		t.Fatal("committing the wrong content succeeded")
	}
	tests := []struct {
		name string
		err  error
		want digest.Digest
	}{
		{"verifier", fmt.Errorf("failed to copy: %w", &BadContentError{Digest: want}), want},
		{"local commit", commitErr, want},
		{"through the API", fmt.Errorf("failed commit on ref \"layer-%s\": unexpected commit digest sha256:%s, expected %s: %w", want, hexA, want, errdefs.ErrFailedPrecondition), want},
		{"size", fmt.Errorf("failed commit on ref \"layer-%s\": unexpected commit size 3, expected 14: %w", want, errdefs.ErrFailedPrecondition), want},
		{"size, named ref", fmt.Errorf("failed commit on ref \"docker.io/x/y@%s\": unexpected commit size 3, expected 14: %w", want, errdefs.ErrFailedPrecondition), want},
		{"size, no digest in ref", fmt.Errorf("failed commit on ref \"foo\": unexpected commit size 3, expected 14: %w", errdefs.ErrFailedPrecondition), ""},
		{"unclassified text", fmt.Errorf("unexpected commit digest sha256:%s, expected %s", hexA, want), ""},
		{"not found", fmt.Errorf("blob: %w", errdefs.ErrNotFound), ""},
		{"nil", nil, ""},
	}
	for _, tc := range tests {
		got, ok := BadDigest(tc.err)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: BadDigest(%v) = %s, %v; want %s", tc.name, tc.err, got, ok, tc.want)
		}
	}
}

// TestAbortIngests aborts the ingests of one digest and leaves the others.
func TestAbortIngests(t *testing.T) {
	st, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	open := func(ref string, d digest.Digest) {
		w, err := content.OpenWriter(ctx, st, content.WithRef(ref), content.WithDescriptor(ocispec.Descriptor{Digest: d, Size: 100}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("partial")); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	bad, other := digest.FromString("bad"), digest.FromString("other")
	open("layer-"+bad.String(), bad)
	open("docker.io/library/demo@"+bad.String(), bad)
	open("layer-"+other.String(), other)
	n, err := AbortIngests(ctx, st, bad)
	if err != nil || n != 2 {
		t.Fatalf("AbortIngests = %d, %v; want 2", n, err)
	}
	sts, err := st.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Ref != "layer-"+other.String() {
		t.Errorf("ingests left: %+v, want only the other digest's", sts)
	}
}
