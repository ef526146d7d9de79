package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/client"
)

func newLogsCmd(g *globals) *cobra.Command {
	var (
		follow bool
		tail   int
	)
	cmd := &cobra.Command{
		Use:   "logs SERVICE",
		Short: "Print the logs of a service's replicas",
		Long: `Print the logs of every replica of a service, wherever it runs: the agent at
--addr fetches them from the nodes that run the replicas over the peer plane.
Each line is prefixed with [service/slot@node].

With -f, keep printing new lines until interrupted (Ctrl-C).`,
		Example: `  shoal logs web
  shoal logs web -f --tail 20`,
		Args: nArgs(1, 1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < -1 {
				return usageError(cmd, "--tail must be -1 (all) or more, got %d", tail)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := ctx(cmd)
			err = c.Logs(ctx, args[0], client.LogsOptions{Tail: tail, Follow: follow}, cmd.OutOrStdout())
			if follow && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return nil // interrupted: the normal end of a follow
			}
			return notFound(err, args[0])
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new lines")
	cmd.Flags().IntVar(&tail, "tail", -1, "number of last lines per replica (-1: all)")
	return cmd
}
