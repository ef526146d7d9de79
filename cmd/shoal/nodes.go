package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/api"
)

func newNodesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's nodes",
		Long: `List the cluster's nodes as the agent at --addr sees them.

STATUS is the membership status; "alive, filling" is a node that has just
started and takes its share of the replicas from the others (placement keeps
the containers it found running at start before any other copy), until it
alone runs every slot it owns. RUNTIME is "ready" when the node can run containers, otherwise the
reason it cannot. With -o json the output is a JSON list of nodes.`,
		Args: nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(ctx(cmd))
			if err != nil {
				return err
			}
			slices.SortFunc(nodes, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
			w := cmd.OutOrStdout()
			if g.json() {
				if nodes == nil {
					nodes = []api.Node{}
				}
				return writeJSON(w, nodes)
			}
			t := newTable(w, "NAME", "ADDRESS", "STATUS", "API", "LABELS", "RUNTIME")
			for _, n := range nodes {
				rt := "ready"
				if !n.Runtime.Ready {
					rt = "not ready"
					if n.Runtime.Reason != "" {
						rt += ": " + n.Runtime.Reason
					}
				}
				status := n.Status
				if n.Filling {
					status += ", filling"
				}
				t.row(n.Name, n.Address, status, n.API, joinKV(n.Labels, ","), rt)
			}
			return t.flush()
		},
	}
}
