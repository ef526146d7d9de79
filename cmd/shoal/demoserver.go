package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/runtime/demo"
)

// demoShutdownTimeout bounds the demo server's graceful shutdown.
const demoShutdownTimeout = 5 * time.Second

// newDemoServerCmd is the hidden `shoal demo-server`, the process of the
// demo image (entrypoint ["/shoal", "demo-server"]).
func newDemoServerCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    "demo-server",
		Short:  "Serve the demo workload (the demo image's entrypoint)",
		Hidden: true,
		Long: `Serve the demo workload: GET / answers JSON naming the replica (service,
slot, node, hostname, time), GET /healthz answers "ok".

It listens on :$PORT (default 8080) and reads SHOAL_SERVICE, SHOAL_SLOT and
SHOAL_NODE, which the agent sets in every replica. SIGTERM or SIGINT shuts it
down gracefully, exit status 0.`,
		Args: nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listen == "" {
				port := strconv.Itoa(demo.Port)
				if p := g.getenv("PORT"); p != "" {
					n, err := strconv.Atoi(p)
					if err != nil || n < 1 || n > 65535 {
						return fmt.Errorf("invalid PORT %q: want a port number from 1 to 65535", p)
					}
					port = p
				}
				listen = ":" + port
			}
			h := demo.Handler(g.getenv("SHOAL_SERVICE"), g.getenv("SHOAL_SLOT"), g.getenv("SHOAL_NODE"))
			return serveDemo(ctx(cmd), listen, h, func(addr net.Addr) {
				fmt.Fprintf(cmd.OutOrStdout(), "demo-server listening on %s\n", addr)
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen address (default \":$PORT\")")
	_ = cmd.Flags().MarkHidden("listen")
	return cmd
}

// serveDemo serves h on addr until ctx ends, then shuts down gracefully
// and returns nil. ready is called with the bound address.
func serveDemo(ctx context.Context, addr string, h http.Handler, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo-server: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ready(ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("demo-server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), demoShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("demo-server: shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("demo-server: %w", err)
	}
	return nil
}
