package main

import (
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/api"
)

func newPsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ps [SERVICE]",
		Short: "List the replicas running in the cluster",
		Long: `List every replica in the cluster, as the agent at --addr knows it: each node
publishes the status of the replicas it runs, and every node holds all of them.

STATE is pending (owned, not started yet), starting (running, health check not
passed yet), running, unhealthy, failed (exited; a restart is scheduled) or
unknown. ENDPOINT is the node address and host port of the replica's first
published port; the load balancers route to it while it is healthy. During an
update a slot briefly shows two replicas: the new one and the old one it
replaces.`,
		Example: `  shoal ps
  shoal ps web -o json`,
		Args: nArgs(0, 1, "at most one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			reps, err := c.Replicas(ctx(cmd), service)
			if err != nil {
				return notFound(err, service)
			}
			return printReplicas(cmd.OutOrStdout(), g.json(), reps, time.Now())
		},
	}
}

// printReplicas prints replicas as JSON (a list) or as the ps table.
func printReplicas(w io.Writer, asJSON bool, reps []api.Replica, now time.Time) error {
	if asJSON {
		if reps == nil {
			reps = []api.Replica{}
		}
		return writeJSON(w, reps)
	}
	t := newTable(w, "SERVICE", "SLOT", "NODE", "STATE", "HEALTHY", "ENDPOINT", "RESTARTS", "AGE")
	for _, r := range reps {
		healthy := "no"
		if r.Healthy {
			healthy = "yes"
		}
		state := r.State
		switch {
		case r.LastError != "" && r.State != "running":
			state += " (" + oneLine(r.LastError, 60) + ")"
		case r.Leaving && r.State != "stopping":
			state += " (leaving)" // its node hands the slot over
		}
		t.row(r.Service, strconv.Itoa(r.Slot), r.Node, state, healthy, r.Endpoint,
			strconv.Itoa(r.Restarts), strings.TrimSuffix(ago(now, r.StartedAt), " ago"))
	}
	return t.flush()
}

// oneLine shortens s to at most n runes on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
