// Command shoal is Shoal's single binary: `shoal agent` runs a node, and the
// other verbs (nodes, run, ls, inspect, scale, rm, keygen, version,
// completion) drive a cluster through any node's HTTP API.
//
// Every verb exits 0 on success and 1 on any failure, usage errors included
// (kubectl's convention), after printing one line, "shoal: <reason>", to
// stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/shoalmesh/shoal/node/client"
)

// version is the release version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// execute runs the CLI with args and returns the process exit code. getenv
// reads the environment (SHOAL_ADDR, SHOAL_TOKEN).
func execute(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	root := newRootCmd(getenv)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "shoal: %s\n", describe(err))
		return 1
	}
	return 0
}

// describe turns err into the one-line reason main prints, with a hint for
// the failures a user can fix.
func describe(err error) string {
	var (
		apiErr *client.Error
		opErr  *net.OpError
		dnsErr *net.DNSError
		msg    string
	)
	switch {
	case errors.As(err, &apiErr) && client.IsUnauthorized(err):
		msg = fmt.Sprintf("unauthorized: %s; set --token or SHOAL_TOKEN", apiErr.Message)
	case errors.As(err, &opErr) || errors.As(err, &dnsErr):
		msg = fmt.Sprintf("%v (is `shoal agent` running there? set --addr or SHOAL_ADDR)", err)
	default:
		msg = err.Error()
	}
	if strings.ContainsAny(msg, "\r\n") {
		msg = strings.Join(strings.Fields(msg), " ")
	}
	return msg
}
