package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/client"
)

// Defaults and environment variables of the global flags.
const (
	defaultAddr = "http://127.0.0.1:7070"
	envAddr     = "SHOAL_ADDR"
	envToken    = "SHOAL_TOKEN"
)

// globals are the root command's persistent flags, shared by every verb.
type globals struct {
	addr   string // --addr
	token  string // --token
	output string // -o/--output: "table" or "json"
	getenv func(string) string
}

// newRootCmd builds the whole command tree. getenv reads the environment.
func newRootCmd(getenv func(string) string) *cobra.Command {
	g := &globals{getenv: getenv}
	root := &cobra.Command{
		Use:   "shoal",
		Short: "Shoal: a masterless container mesh",
		Long: `Shoal runs containers on a masterless mesh of identical nodes.

Run 'shoal agent' on every machine; use the other verbs against any node's API
(--addr, or SHOAL_ADDR). When the API requires a token, set --token or
SHOAL_TOKEN.`,
		Version:           version,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: g.preRun,
	}
	root.SetVersionTemplate("shoal {{.Version}}\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", defaultAddr, "agent API address: http://HOST:PORT, https://HOST:PORT or HOST:PORT (env "+envAddr+")")
	pf.StringVar(&g.token, "token", "", "API bearer token (env "+envToken+")")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		newAgentCmd(),
		newNodesCmd(g),
		newRunCmd(g),
		newLsCmd(g),
		newInspectCmd(g),
		newScaleCmd(g),
		newRmCmd(g),
		newPlacementCmd(g),
		newPsCmd(g),
		newLogsCmd(g),
		newImageCmd(g),
		newDemoServerCmd(g),
		newKeygenCmd(g),
		newVersionCmd(g),
		newDevCmd(g),
	)
	return root
}

// preRun applies the environment to unset global flags (so every verb,
// `shoal agent` included, sees SHOAL_ADDR and SHOAL_TOKEN through the flags,
// without the token ever showing in --help) and checks --output.
func (g *globals) preRun(cmd *cobra.Command, _ []string) error {
	for flag, env := range map[string]string{"addr": envAddr, "token": envToken} {
		f := cmd.Flags().Lookup(flag)
		if f == nil || f.Changed {
			continue
		}
		if v := g.getenv(env); v != "" {
			if err := cmd.Flags().Set(flag, v); err != nil {
				return fmt.Errorf("%s: %w", env, err)
			}
		}
	}
	if g.output != "table" && g.output != "json" {
		return fmt.Errorf("invalid --output %q: want table or json", g.output)
	}
	return nil
}

// client returns an API client for --addr and --token.
func (g *globals) client() (*client.Client, error) {
	return client.New(g.addr, g.token, client.WithUserAgent("shoal/"+version))
}

// json reports whether -o json was asked for.
func (g *globals) json() bool { return g.output == "json" }

// ctx returns the command's context (never nil).
func ctx(cmd *cobra.Command) context.Context {
	if c := cmd.Context(); c != nil {
		return c
	}
	return context.Background()
}

// usageError reports wrong arguments with the command's usage line.
func usageError(cmd *cobra.Command, format string, args ...any) error {
	return fmt.Errorf("%s (usage: %s)", fmt.Sprintf(format, args...), cmd.UseLine())
}

// nArgs accepts between min and max positional arguments (max < 0: no
// limit), naming them in the error.
func nArgs(min, max int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return usageError(cmd, "%s wants %s, got %d argument(s)", cmd.Name(), what, len(args))
		}
		return nil
	}
}
