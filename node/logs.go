package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/gossip"
	nodepeer "github.com/shoalmesh/shoal/node/peer"
	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
)

// Logs: GET /v1/logs/{service} on any node asks every node that runs a
// replica of the service (from the status view and placement) for its
// containers' logs, over a streaming peer-plane protocol (logsProto), and
// copies the lines to the HTTP answer as they arrive, each prefixed with
// "[service/slot@node] ". The node that runs the container reads it with
// Driver.Logs.
//
// Wire format of logsProto: the client writes one frame (FrameOK, a JSON
// logsRequest) and keeps its side open; the server answers with one
// FrameOK frame per line (prefix included, no newline) or a FrameError
// frame with a message, then closes. The client ends a follow by closing
// or resetting the stream; the server notices when its read of the
// client's side returns.

// logsProto is the peer-plane protocol for log streams.
const logsProto = protocol.ID("/shoal/logs/1")

// maxLogLine caps one log line; the rest of a longer line is dropped.
const maxLogLine = 16 << 10

// logsRequest asks a node for the logs of its containers of a service.
type logsRequest struct {
	Service string `json:"service"`
	// Tail is the number of last lines per container (< 0: all kept).
	Tail   int  `json:"tail"`
	Follow bool `json:"follow,omitempty"`
}

// decodeLogsRequest parses and checks a peer's request.
func decodeLogsRequest(b []byte) (logsRequest, error) {
	var r logsRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	if err := spec.ValidName(r.Service); err != nil {
		return r, fmt.Errorf("%w: logs of %q: %v", errBadMessage, r.Service, err)
	}
	return r, nil
}

// localLogs streams the logs of this node's containers of req.Service to
// emit (which must be safe for concurrent use) until they end or ctx does.
func (a *Agent) localLogs(ctx context.Context, req logsRequest, emit func(string) error) error {
	drv := a.cfg.Runtime
	if drv == nil {
		return errors.New("node: no container runtime")
	}
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	list, err := drv.List(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("node: list containers: %w", err)
	}
	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, c := range list {
		if c.Service != req.Service || c.State == runtime.StatePrepared {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.containerLogs(ctx, c, req, emit); err != nil && ctx.Err() == nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel() // the client is gone or the stream broke
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// containerLogs streams one container's log lines to emit.
func (a *Agent) containerLogs(ctx context.Context, c runtime.Replica, req logsRequest, emit func(string) error) error {
	rc, err := a.cfg.Runtime.Logs(ctx, c.ID, req.Tail, req.Follow)
	if errors.Is(err, runtime.ErrNotFound) {
		return nil // removed meanwhile
	}
	if err != nil {
		return fmt.Errorf("node: logs of %s: %w", c.ID, err)
	}
	defer rc.Close()
	stop := context.AfterFunc(ctx, func() { _ = rc.Close() })
	defer stop()
	prefix := "[" + c.Service + "/" + strconv.Itoa(c.Slot) + "@" + a.cfg.Name + "] "
	br := bufio.NewReaderSize(rc, 4096)
	for {
		line, err := readLine(br, maxLogLine)
		if len(line) > 0 || err == nil {
			if eerr := emit(prefix + line); eerr != nil {
				return eerr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("node: reading logs of %s: %w", c.ID, err)
		}
	}
}

// readLine reads one line without its newline (and \r), keeping at most
// limit bytes of it.
func readLine(br *bufio.Reader, limit int) (string, error) {
	var buf []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(buf) < limit {
			buf = append(buf, chunk[:min(len(chunk), limit-len(buf))]...)
		}
		if err != nil {
			return string(buf), err
		}
		if !isPrefix {
			return string(buf), nil
		}
	}
}

// registerLogsHandler serves logsProto. Streams end when ctx does.
func (a *Agent) registerLogsHandler(ctx context.Context) {
	a.host.Libp2p().SetStreamHandler(logsProto, func(s network.Stream) {
		done, ok := a.replicas.track()
		if !ok {
			_ = s.Reset()
			return
		}
		defer done()
		a.serveLogs(ctx, s)
	})
}

// serveLogs answers one logs stream.
func (a *Agent) serveLogs(ctx context.Context, s network.Stream) {
	from := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	kind, b, err := nodepeer.ReadFrame(s, 64<<10)
	if err == nil && kind != nodepeer.FrameOK {
		err = fmt.Errorf("%w: frame kind %d", errBadMessage, kind)
	}
	var req logsRequest
	if err == nil {
		req, err = decodeLogsRequest(b)
	}
	if err != nil {
		a.metrics.droppedPeer.Inc()
		a.log.Warn("dropped bad logs request", "from", from, "err", err)
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The client closes or resets its side to end the stream.
		_, _ = io.Copy(io.Discard, s)
		cancel()
	}()
	var mu sync.Mutex
	emit := func(line string) error {
		mu.Lock()
		defer mu.Unlock()
		_ = s.SetWriteDeadline(time.Now().Add(30 * time.Second))
		return nodepeer.WriteFrame(s, nodepeer.FrameOK, []byte(line))
	}
	if err := a.localLogs(ctx, req, emit); err != nil && ctx.Err() == nil {
		mu.Lock()
		_ = nodepeer.WriteFrame(s, nodepeer.FrameError, []byte(err.Error()))
		mu.Unlock()
	}
	_ = s.Close()
}

// remoteLogs streams req from member m to emit until m ends or ctx does.
func (a *Agent) remoteLogs(ctx context.Context, m gossip.Member, req logsRequest, emit func(string) error) error {
	s, err := a.openStream(ctx, m, logsProto)
	if err != nil {
		return fmt.Errorf("node: logs stream to %s: %w", m.Name, err)
	}
	defer func() { _ = s.Reset() }() // after a clean end, only frees the stream
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	b, _ := json.Marshal(req)
	_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := nodepeer.WriteFrame(s, nodepeer.FrameOK, b); err != nil {
		return fmt.Errorf("node: logs request to %s: %w", m.Name, err)
	}
	_ = s.SetWriteDeadline(time.Time{})
	for {
		kind, payload, err := nodepeer.ReadFrame(s, maxLogLine+1024)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("node: logs from %s: %w", m.Name, err)
		case kind == nodepeer.FrameError:
			return fmt.Errorf("node: logs from %s: %s", m.Name, payload)
		case kind != nodepeer.FrameOK:
			a.metrics.droppedPeer.Inc()
			return fmt.Errorf("node: logs from %s: %w: frame kind %d", m.Name, errBadMessage, kind)
		}
		if err := emit(string(payload)); err != nil {
			return err
		}
	}
}

// logSources are the members that may hold replicas of service: those
// that report some, and the owners of its slots.
func (a *Agent) logSources(service string) []gossip.Member {
	names := map[string]bool{}
	for _, r := range a.ReplicaStatus() {
		if r.Service == service && r.Container != "" {
			names[r.Node] = true
		}
	}
	for _, as := range a.Placement().Assignments {
		if as.Service == service {
			names[as.Node] = true
		}
	}
	var out []gossip.Member
	for _, m := range a.members.Load().list {
		if names[m.Name] && m.Alive() {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(x, y gossip.Member) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// getLogs serves GET /v1/logs/{service}?tail=N&follow=1: the logs of
// every replica of the service, from the nodes that run them, as plain
// text lines prefixed with "[service/slot@node] ".
func (a *Agent) getLogs(w http.ResponseWriter, r *http.Request) {
	svc := r.PathValue("service")
	if err := spec.ValidName(svc); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("service name %q: %v", svc, err))
		return
	}
	q := r.URL.Query()
	req := logsRequest{Service: svc, Tail: -1}
	if t := q.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < -1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tail must be a number of lines, got %q", t))
			return
		}
		req.Tail = n
	}
	if f := q.Get("follow"); f != "" {
		b, err := strconv.ParseBool(f)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("follow must be 0 or 1, got %q", f))
			return
		}
		req.Follow = b
	}
	sources := a.logSources(svc)
	if _, ok := a.store.Get(svc); !ok && len(sources) == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %q not found", svc))
		return
	}

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var mu sync.Mutex
	emit := func(line string) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			cancel()
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	var wg sync.WaitGroup
	for _, m := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if m.Name == a.cfg.Name {
				err = a.localLogs(ctx, req, emit)
			} else {
				err = a.remoteLogs(ctx, m, req, emit)
			}
			if err != nil && ctx.Err() == nil {
				a.log.Warn("logs stream failed", "service", svc, "node", m.Name, "err", err)
				_ = emit(fmt.Sprintf("[shoal@%s] error: %v", m.Name, err))
			}
		}()
	}
	wg.Wait()
}
