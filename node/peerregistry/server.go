package peerregistry

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol is the libp2p protocol ID the registry is served under: HTTP/1.1
// on a libp2p stream, one stream per HTTP connection (kept alive between
// requests like a TCP connection).
const Protocol protocol.ID = "/shoal/registry/1"

// Timeouts of the server and the client side. A variable so that tests can
// shorten them.
var (
	// stallTimeout bounds one Write on the server and one Read on the
	// client that makes no progress (see streamConn).
	stallTimeout = time.Minute
	// readHeaderTimeout bounds reading a request's headers.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes a kept-alive stream with no request.
	idleTimeout = 90 * time.Second
)

// Server serves an http.Handler (normally a *Handler) to peers over a
// libp2p host under Protocol. Admission is the host's: node/peer's
// connection gater lets only current members connect, so a Server answers
// members only. Create it with NewServer and run it with Run.
type Server struct {
	h       host.Host
	handler http.Handler
	log     *slog.Logger
}

// NewServer returns a Server for handler on h; log nil means slog.Default().
// It does not touch h until Run.
func NewServer(h host.Host, handler http.Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{h: h, handler: handler, log: log}
}

// Run registers the stream handler for Protocol on the host and serves
// until ctx is done. Every request's context derives from ctx, so values in
// it reach the handler and its content store: a containerd client's store
// needs the namespace there (namespaces.WithNamespace). When ctx is done Run
// removes the handler, resets every stream in
// flight, waits for running handlers to return and returns nil. Peers that
// ask before Run has registered, or after it returned, get "protocol not
// supported" and move on to their next host. Run it once; it returns an
// error only if serving failed.
func (s *Server) Run(ctx context.Context) error {
	ln := &listener{h: s.h, streams: make(chan network.Stream), done: make(chan struct{})}
	var handlers handlerGroup
	srv := &http.Server{
		Handler:           handlers.wrap(s.handler),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// Requests' contexts derive from Run's: its values (containerd's
		// namespace) reach the content store, and stopping cancels them.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	s.h.SetStreamHandler(Protocol, ln.accept)
	s.log.Debug("peerregistry: serving", "proto", Protocol)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	stop := func() {
		s.h.RemoveStreamHandler(Protocol)
		ln.shutdown.Store(true)
		_ = srv.Close() // closes the listener and resets every connection
		handlers.closeAndWait()
	}
	var err error
	select {
	case <-ctx.Done():
		stop()
		err = <-errc
	case err = <-errc:
		stop()
	}
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// listener hands inbound streams to http.Server as connections.
type listener struct {
	h        host.Host
	streams  chan network.Stream
	done     chan struct{} // closed by Close
	once     sync.Once
	shutdown atomic.Bool // once set, conns reset on Close
}

var _ net.Listener = (*listener)(nil)

// accept is the libp2p stream handler: it waits for Serve to take the
// stream, or resets it once the listener is closed.
func (l *listener) accept(s network.Stream) {
	select {
	case l.streams <- s:
	case <-l.done:
		_ = s.Reset()
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case s := <-l.streams:
		return &streamConn{Stream: s, stall: stallTimeout, shutdown: &l.shutdown}, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *listener) Addr() net.Addr { return peerAddr(l.h.ID()) }

// handlerGroup tracks running handlers so that Run returns only after they
// did (http.Server.Close does not wait for them).
type handlerGroup struct {
	mu     sync.Mutex // guards closed and the Add side of wg
	closed bool
	wg     sync.WaitGroup
}

func (g *handlerGroup) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		g.wg.Add(1)
		g.mu.Unlock()
		defer g.wg.Done()
		next.ServeHTTP(w, r)
	})
}

func (g *handlerGroup) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
