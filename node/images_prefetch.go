package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/gossip"
	"github.com/shoalmesh/shoal/node/api"
	nodepeer "github.com/shoalmesh/shoal/node/peer"
	"github.com/shoalmesh/shoal/runtime"
)

// Prefetch: POST /v1/images/prefetch copies an image to every live node
// ahead of need. The node that takes the request pins the image to a
// digest (its own copy, else its peers'), then has every node, itself
// included, pull that digest the usual way (peers that hold it first) and
// streams their progress to the client as JSON lines.
//
// Between nodes a pull runs on a peer-plane stream (pullProto): the
// requester writes one frame with the image; the puller answers with a
// progress frame every prefetchTick and ends with a final frame (the
// image) or an error frame. Closing the stream cancels the pull.

// pullProto is the peer-plane protocol of prefetch.
const pullProto = protocol.ID("/shoal/image-pull/1")

// prefetchTick is how often progress is reported.
const prefetchTick = 250 * time.Millisecond

// maxPullFrame bounds a frame of pullProto.
const maxPullFrame = 64 << 10

// pullRequest is the request frame of pullProto.
type pullRequest struct {
	Image string `json:"image"`
}

// pullFrame is a progress or final frame of pullProto.
type pullFrame struct {
	Done  int64      `json:"done"`
	Total int64      `json:"total"`
	Image *api.Image `json:"image,omitempty"` // set on the final frame
}

// decodePullRequest decodes and checks a pull request from a peer.
func decodePullRequest(b []byte) (pullRequest, error) {
	var r pullRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: pull request: %v", errBadMessage, err)
	}
	if _, ok := manifestPath(r.Image); !ok || !strings.Contains(r.Image, "@") || len(r.Image) > 512 {
		return r, fmt.Errorf("%w: pull request for %.80q: want a reference pinned to a digest", errBadMessage, r.Image)
	}
	return r, nil
}

// decodePullFrame decodes and checks a progress frame from a peer.
func decodePullFrame(b []byte) (pullFrame, error) {
	var f pullFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: pull progress: %v", errBadMessage, err)
	}
	if f.Done < 0 || f.Total < 0 || f.Done > f.Total && f.Total > 0 {
		return f, fmt.Errorf("%w: pull progress %d of %d", errBadMessage, f.Done, f.Total)
	}
	if f.Image != nil && (f.Image.Name == "" || len(f.Image.Name) > 512) {
		return f, fmt.Errorf("%w: pulled image %.80q", errBadMessage, f.Image.Name)
	}
	return f, nil
}

// servePull answers a pullProto stream from a member.
func (a *Agent) servePull(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	kind, b, err := nodepeer.ReadFrame(s, maxPullFrame)
	_ = s.SetReadDeadline(time.Time{})
	if err != nil || kind != nodepeer.FrameOK {
		a.metrics.droppedPeer.Inc()
		a.log.Warn("dropped a bad image pull request", "from", from, "err", err, "kind", kind)
		_ = s.Reset()
		return
	}
	req, err := decodePullRequest(b)
	if err != nil {
		a.metrics.droppedPeer.Inc()
		a.log.Warn("dropped a bad image pull request", "from", from, "err", err)
		_ = nodepeer.WriteFrame(s, nodepeer.FrameError, []byte(err.Error()))
		return
	}
	// The requester closing its side cancels the pull.
	ctx, cancel := context.WithCancel(a.runCtx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, s)
		cancel()
	}()
	var wmu sync.Mutex
	write := func(kind byte, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		wmu.Lock()
		defer wmu.Unlock()
		_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return nodepeer.WriteFrame(s, kind, b)
	}
	img, err := a.pullImage(ctx, req.Image, func(f pullFrame) error { return write(nodepeer.FrameOK, f) })
	if err != nil {
		wmu.Lock()
		_ = nodepeer.WriteFrame(s, nodepeer.FrameError, []byte(err.Error()))
		wmu.Unlock()
		return
	}
	_ = write(nodepeer.FrameOK, pullFrame{Done: img.Size, Total: img.Size, Image: &img})
}

// pullImage pulls ref on this node, calling report with its progress
// every prefetchTick until it ends.
func (a *Agent) pullImage(ctx context.Context, ref string, report func(pullFrame) error) (api.Image, error) {
	ctx, cancel := context.WithTimeout(ctx, imageTimeout)
	defer cancel()
	type result struct {
		img api.Image
		err error
	}
	done := make(chan result, 1)
	go func() {
		img, err := a.cfg.Runtime.EnsureImage(ctx, ref)
		done <- result{apiImages([]runtime.Image{img})[0], err}
	}()
	t := time.NewTicker(prefetchTick)
	defer t.Stop()
	for {
		select {
		case r := <-done:
			return r.img, r.err
		case <-t.C:
			d, total := a.images.Load().rt.PullProgress(ctx, ref)
			if err := report(pullFrame{Done: d, Total: total}); err != nil {
				cancel()
				r := <-done
				if r.err == nil {
					return r.img, nil
				}
				return api.Image{}, err
			}
		}
	}
}

// pullOn has member m pull ref, calling report with each progress frame.
func (a *Agent) pullOn(ctx context.Context, m gossip.Member, ref string, report func(pullFrame)) (api.Image, error) {
	s, err := a.openStream(ctx, m, pullProto)
	if err != nil {
		return api.Image{}, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	b, _ := json.Marshal(pullRequest{Image: ref})
	if err := nodepeer.WriteFrame(s, nodepeer.FrameOK, b); err != nil {
		return api.Image{}, err
	}
	for {
		// A silent puller is a dead one: frames come every prefetchTick.
		_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
		kind, b, err := nodepeer.ReadFrame(s, maxPullFrame)
		if err != nil {
			if ctx.Err() != nil {
				return api.Image{}, ctx.Err()
			}
			return api.Image{}, err
		}
		if kind == nodepeer.FrameError {
			return api.Image{}, errors.New(string(b))
		}
		f, err := decodePullFrame(b)
		if err != nil {
			a.metrics.droppedPeer.Inc()
			a.log.Warn("dropped bad pull progress", "from", m.Name, "err", err)
			return api.Image{}, err
		}
		if f.Image != nil {
			return *f.Image, nil
		}
		report(f)
	}
}

// prefetchImage answers POST /v1/images/prefetch.
func (a *Agent) prefetchImage(w http.ResponseWriter, r *http.Request) {
	if a.images.Load() == nil {
		writeError(w, http.StatusServiceUnavailable, "this node's runtime cannot share images")
		return
	}
	var req api.PrefetchRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "body: want {\"image\": REFERENCE}: "+err.Error())
		return
	}
	if _, ok := manifestPath(req.Image); !ok || req.Image == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("image %q is not a valid reference", req.Image))
		return
	}
	ref := req.Image
	if !strings.Contains(ref, "@") {
		dg, ok := a.resolveImage(r.Context(), ref)
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("image %s: no node holds it (load it with shoal image load)", ref))
			return
		}
		ref += "@" + dg
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var mu sync.Mutex
	emit := func(p api.PrefetchProgress) {
		b, _ := json.Marshal(p)
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write(append(b, '\n'))
		_ = rc.Flush()
	}
	var wg sync.WaitGroup
	run := func(node string, pull func(report func(pullFrame)) (api.Image, error)) {
		defer wg.Done()
		start := time.Now()
		emit(api.PrefetchProgress{Node: node, Image: ref, State: "pulling"})
		img, err := pull(func(f pullFrame) {
			emit(api.PrefetchProgress{Node: node, Image: ref, State: "pulling", Done: f.Done, Total: f.Total})
		})
		p := api.PrefetchProgress{Node: node, Image: ref, Seconds: time.Since(start).Seconds()}
		if err != nil {
			p.State, p.Error = "failed", err.Error()
		} else {
			p.State, p.Done, p.Total = "done", img.Size, img.Size
		}
		emit(p)
	}
	wg.Add(1)
	go run(a.cfg.Name, func(report func(pullFrame)) (api.Image, error) {
		return a.pullImage(r.Context(), ref, func(f pullFrame) error { report(f); return nil })
	})
	for _, m := range a.livePeers() {
		wg.Add(1)
		go run(m.Name, func(report func(pullFrame)) (api.Image, error) {
			return a.pullOn(r.Context(), m, ref, report)
		})
	}
	wg.Wait()
}
