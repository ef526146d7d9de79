package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/client"
	"github.com/shoalmesh/shoal/node/spec"
)

// scaleRetries is how many times scale retries after losing a race with
// another writer (HTTP 409).
const scaleRetries = 5

func newLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"services"},
		Short:   "List services",
		Long:    "List services. With -o json the output is a JSON list of services.",
		Args:    nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			svcs, err := c.Services(ctx(cmd))
			if err != nil {
				return err
			}
			slices.SortFunc(svcs, func(a, b api.Service) int { return strings.Compare(a.Name, b.Name) })
			return printServices(cmd.OutOrStdout(), g.json(), svcs)
		},
	}
}

func newInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a service in full",
		Long: `Show a service in full. The output is JSON unless -o table is given
explicitly, which prints a readable "key: value" view.`,
		Args: nArgs(1, 1, "one service NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			svc, err := c.Service(ctx(cmd), args[0])
			if err != nil {
				return notFound(err, args[0])
			}
			if cmd.Flags().Changed("output") && !g.json() {
				return printInspect(cmd.OutOrStdout(), svc)
			}
			return writeJSON(cmd.OutOrStdout(), svc)
		},
	}
}

// printInspect prints the "key: value" view of a service.
func printInspect(w io.Writer, s api.Service) error {
	t := newTable(w, "Name:", s.Name)
	t.row("Image:", s.Image)
	t.row("Replicas:", strconv.Itoa(s.Replicas))
	t.row("Command:", formatArgs(s.Command))
	t.row("Env:", joinKV(s.Env, ", "))
	t.row("Ports:", strings.ReplaceAll(formatPorts(s.Ports), ",", ", "))
	t.row("Health:", formatHealth(s.Health))
	t.row("Resources:", formatResources(s.Resources))
	t.row("Constraints:", joinKV(s.Constraints, ", "))
	t.row("Network:", s.Network)
	t.row("Balance:", formatBalance(s.Balance))
	t.row("Version:", s.Version)
	updated := ""
	if !s.UpdatedAt.IsZero() {
		updated = s.UpdatedAt.Format(time.RFC3339) + " by " + s.UpdatedBy
	}
	t.row("Updated:", updated)
	if s.Deleted {
		t.row("Deleted:", "true")
	}
	for _, p := range s.Problems {
		t.row("Problem:", p)
	}
	return t.flush()
}

// formatBalance describes the load-balancing settings ("" = defaults).
func formatBalance(b *spec.Balance) string {
	if b == nil {
		return ""
	}
	out := b.Policy
	if b.HashOn != "" {
		out += " on " + b.HashOn
	}
	if b.ProxyProtocol {
		out += ", PROXY protocol v2"
	}
	return out
}

func newScaleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "scale NAME REPLICAS",
		Short: "Change a service's replica count",
		Long: `Change a service's replica count, leaving the rest of its spec as it is.

The write is conditional on the version read (If-Match), so a concurrent
change to the service is never overwritten: on a conflict scale re-reads the
service and tries again, up to ` + strconv.Itoa(scaleRetries) + ` times.`,
		Args: nArgs(2, 2, "a service NAME and a REPLICAS count"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 0 || n > spec.MaxReplicas {
				return fmt.Errorf("invalid replica count %q: want a whole number from 0 to %d", args[1], spec.MaxReplicas)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			svc, err := scale(ctx(cmd), c, name, n)
			if err != nil {
				return err
			}
			return printService(cmd.OutOrStdout(), g.json(), svc)
		},
	}
}

// scale sets a service's replicas with a conditional write, re-reading and
// retrying on conflicts.
func scale(ctx context.Context, c *client.Client, name string, n int) (api.Service, error) {
	for attempt := 0; ; attempt++ {
		svc, err := c.Service(ctx, name)
		if err != nil {
			return api.Service{}, notFound(err, name)
		}
		if svc.Replicas == n {
			return svc, nil // nothing to write
		}
		s := svc.Spec
		s.Replicas = n
		out, err := c.PutService(ctx, s, svc.Version)
		if err == nil {
			return out, nil
		}
		if !client.IsConflict(err) {
			return api.Service{}, fmt.Errorf("scale %s: %w", name, notFound(err, name))
		}
		if attempt == scaleRetries {
			return api.Service{}, fmt.Errorf("scale %s: still conflicting with other writers after %d retries: %w", name, scaleRetries, err)
		}
		// Someone else wrote in between: back off a little (jittered, so
		// two scalers racing do not collide again) and re-read.
		wait := min(time.Duration(10+rand.IntN(20))*time.Millisecond<<attempt, 250*time.Millisecond)
		select {
		case <-ctx.Done():
			return api.Service{}, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func newRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Delete services",
		Long: `Delete services. Every name is tried; the names removed are printed, and
if any failed (a missing service included) the command fails after trying
the others. With -o json the output is a JSON list of the deleted services.`,
		Args: nArgs(1, -1, "at least one service NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var (
				removed []api.Service
				failed  []string
			)
			w := cmd.OutOrStdout()
			for _, name := range args {
				svc, err := c.DeleteService(ctx(cmd), name)
				if err != nil {
					if client.IsUnauthorized(err) {
						return err // the others would fail the same way
					}
					failed = append(failed, notFound(err, name).Error())
					continue
				}
				removed = append(removed, svc)
				if !g.json() {
					fmt.Fprintln(w, name)
				}
			}
			if g.json() {
				if removed == nil {
					removed = []api.Service{}
				}
				if err := writeJSON(w, removed); err != nil {
					return err
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("could not remove %d of %d service(s): %s", len(failed), len(args), strings.Join(failed, "; "))
			}
			return nil
		},
	}
}

// notFound rewrites an API 404 for service name as `service "name" not
// found`; other errors pass through.
func notFound(err error, name string) error {
	if client.IsNotFound(err) {
		return fmt.Errorf("service %q not found: %w", name, errNotFound)
	}
	return err
}

var errNotFound = errors.New("no such service")
