package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
)

func newPlacementCmd(g *globals) *cobra.Command {
	var slot int
	var explain bool
	cmd := &cobra.Command{
		Use:   "placement [SERVICE]",
		Short: "Show which node owns each replica slot",
		Long: `Show which node owns each replica slot, as the agent at --addr computes it.

Every node computes placement on its own from the members it sees and the
specs it holds (weighted rendezvous hashing with bounded loads); nodes with the
same view give the same answer. Slots no node can take are listed with the
reason.

With --explain, show for one slot every node's rank and score, and why each
node ranked above the owner was skipped (constraint, capacity, load bound, ...).`,
		Example: `  shoal placement
  shoal placement web -o json
  shoal placement web --slot 2 --explain`,
		Args: nArgs(0, 1, "at most one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			if explain && service == "" {
				return usageError(cmd, "--explain needs a SERVICE")
			}
			if cmd.Flags().Changed("slot") && !explain {
				return usageError(cmd, "--slot goes with --explain")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if explain {
				e, err := c.ExplainPlacement(ctx(cmd), service, slot)
				if err != nil {
					return err
				}
				if g.json() {
					return writeJSON(w, e)
				}
				if e.Node != "" {
					fmt.Fprintf(w, "%s/%d -> %s", e.Service, e.Slot, e.Node)
					if e.Relaxed != "" {
						fmt.Fprintf(w, " (relaxed: %s)", e.Relaxed)
					}
					fmt.Fprintln(w)
				} else {
					fmt.Fprintf(w, "%s/%d is unplaceable: %s\n", e.Service, e.Slot, e.Reason)
				}
				t := newTable(w, "RANK", "NODE", "SCORE", "LOAD", "", "WHY NOT")
				for _, cd := range e.Candidates {
					rank := "-"
					if cd.Rank >= 0 {
						rank = strconv.Itoa(cd.Rank)
					}
					mark := ""
					if cd.Chosen {
						mark = "chosen"
					}
					t.row(rank, cd.Node, strconv.FormatFloat(cd.Score, 'g', 4, 64), fmt.Sprintf("%d/%d", cd.Slots, cd.Limit), mark, cd.Skipped)
				}
				return t.flush()
			}
			p, err := c.Placement(ctx(cmd), service)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(w, p)
			}
			t := newTable(w, "SLOT", "NODE")
			for _, s := range p.Slots {
				t.row(fmt.Sprintf("%s/%d", s.Service, s.Slot), s.Node)
			}
			for _, s := range p.Unplaceable {
				t.row(fmt.Sprintf("%s/%d", s.Service, s.Slot), "<unplaceable: "+s.Reason+">")
			}
			return t.flush()
		},
	}
	cmd.Flags().IntVar(&slot, "slot", 0, "slot index to explain")
	cmd.Flags().BoolVar(&explain, "explain", false, "explain how one slot was placed")
	return cmd
}
