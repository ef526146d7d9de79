package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/spec"
)

// runFlags are the flags of `shoal run`.
type runFlags struct {
	image          string
	replicas       int
	publish        []string
	env            []string
	constraints    []string
	network        string
	healthHTTP     string
	healthTCP      int
	healthExec     string
	healthInterval time.Duration
	healthTimeout  time.Duration
	cpus           float64
	memory         string
	lbPolicy       string
	lbHashOn       string
	proxyProtocol  bool
}

func newRunCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run NAME --image IMAGE [flags] [-- COMMAND [ARG...]]",
		Short: "Create or replace a service",
		Long: `Create a service, or replace it if it exists (like 'kubectl apply': the
whole spec is replaced by the one these flags describe, it is not merged).

The spec is checked locally first; an invalid one is reported and nothing is
sent. Arguments after -- replace the image's entrypoint and command.

--health-exec takes one string, split into words like a shell would (quotes
and backslashes work) but without running a shell: no $VAR or glob
expansion. For shell features, use --health-exec 'sh -c "..."'.

With --network host the replica shares the node's network and must listen on
the port given in $PORT; the target port is informational and at most one
--publish is allowed.`,
		Example: `  shoal run web --image demo:1 --replicas 3 --publish 8080:80/http --health-http /healthz
  shoal run db --image postgres:16 --env POSTGRES_PASSWORD=x --memory 512Mi --health-exec 'pg_isready -U postgres'
  shoal run worker --image busybox:1 -- sh -c 'while true; do date; sleep 5; done'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				if dash != 1 {
					return usageError(cmd, "run wants exactly one NAME before --, got %d", dash)
				}
				if len(args) == 1 {
					return usageError(cmd, "no command after --")
				}
				return nil
			}
			if len(args) != 1 {
				return usageError(cmd, "run wants exactly one NAME, got %d argument(s) (put the container's command after --)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.spec(cmd, args)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			svc, err := c.PutService(ctx(cmd), s, "")
			if err != nil {
				return fmt.Errorf("run %s: %w", s.Name, err)
			}
			return printService(cmd.OutOrStdout(), g.json(), svc)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.image, "image", "", "container image reference (required)")
	fl.IntVar(&f.replicas, "replicas", 1, "number of replicas, 0 to 1000")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port on every node: PUBLISHED:TARGET[/tcp|/http] or PORT (repeatable)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	fl.StringArrayVar(&f.constraints, "constraint", nil, "run only on nodes with label KEY=VALUE (repeatable)")
	fl.StringVar(&f.network, "network", spec.NetworkBridge, "network mode: bridge or host")
	fl.StringVar(&f.healthHTTP, "health-http", "", "health probe: HTTP GET of this path on the first target port")
	fl.IntVar(&f.healthTCP, "health-tcp", 0, "health probe: TCP connect to this container port")
	fl.StringVar(&f.healthExec, "health-exec", "", "health probe: command run in the container, split like a shell would")
	fl.DurationVar(&f.healthInterval, "health-interval", 0, "time between health probes (default 5s)")
	fl.DurationVar(&f.healthTimeout, "health-timeout", 0, "timeout of one health probe (default 2s or the interval)")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit in cores, e.g. 0.5 (0 = unlimited)")
	fl.StringVarP(&f.memory, "memory", "m", "", "memory limit, e.g. 512Mi, 1g, 64MB (empty = unlimited)")
	fl.StringVar(&f.lbPolicy, "lb-policy", "", "load balancing over replicas: least_request (default), round_robin or maglev")
	fl.StringVar(&f.lbHashOn, "lb-hash-on", "", "what maglev hashes: client_ip (default) or header:NAME")
	fl.BoolVar(&f.proxyProtocol, "proxy-protocol", false, "send a PROXY protocol v2 header with the client address to replicas (tcp ports)")
	_ = cmd.MarkFlagRequired("image")
	_ = cmd.RegisterFlagCompletionFunc("lb-policy", cobra.FixedCompletions([]string{spec.PolicyLeastRequest, spec.PolicyRoundRobin, spec.PolicyMaglev}, cobra.ShellCompDirectiveNoFileComp))
	cmd.MarkFlagsMutuallyExclusive("health-http", "health-tcp", "health-exec")
	_ = cmd.RegisterFlagCompletionFunc("network", cobra.FixedCompletions([]string{spec.NetworkBridge, spec.NetworkHost}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// spec builds, normalizes and validates the spec the flags describe.
func (f *runFlags) spec(cmd *cobra.Command, args []string) (spec.Spec, error) {
	s := spec.Spec{
		Name:      args[0],
		Image:     f.image,
		Replicas:  f.replicas,
		Network:   f.network,
		Resources: spec.Resources{CPUs: f.cpus},
	}
	if dash := cmd.ArgsLenAtDash(); dash >= 0 {
		s.Command = args[dash:]
	}
	if f.lbPolicy != "" || f.lbHashOn != "" || f.proxyProtocol {
		s.Balance = &spec.Balance{Policy: f.lbPolicy, HashOn: f.lbHashOn, ProxyProtocol: f.proxyProtocol}
	}
	for _, p := range f.publish {
		port, err := spec.ParsePublish(p)
		if err != nil {
			return s, fmt.Errorf("--publish: %w", err)
		}
		s.Ports = append(s.Ports, port)
	}
	for _, e := range f.env {
		k, v, err := spec.ParseKV(e)
		if err != nil {
			return s, fmt.Errorf("--env: %w", err)
		}
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		s.Env[k] = v // the last one wins, as with docker run
	}
	for _, c := range f.constraints {
		k, v, err := spec.ParseKV(c)
		if err != nil {
			return s, fmt.Errorf("--constraint: %w", err)
		}
		if old, ok := s.Constraints[k]; ok && old != v {
			return s, fmt.Errorf("--constraint: %s=%s contradicts %s=%s", k, v, k, old)
		}
		if s.Constraints == nil {
			s.Constraints = map[string]string{}
		}
		s.Constraints[k] = v
	}
	if f.memory != "" {
		m, err := spec.ParseBytes(f.memory)
		if err != nil {
			return s, fmt.Errorf("--memory: %w", err)
		}
		s.Resources.Memory = m
	}
	fl := cmd.Flags()
	probe := fl.Changed("health-http") || fl.Changed("health-tcp") || fl.Changed("health-exec")
	if !probe && (fl.Changed("health-interval") || fl.Changed("health-timeout")) {
		return s, fmt.Errorf("--health-interval and --health-timeout need a probe: --health-http, --health-tcp or --health-exec")
	}
	if probe {
		h := &spec.Health{
			HTTP:     f.healthHTTP,
			TCP:      f.healthTCP,
			Interval: spec.Duration(f.healthInterval),
			Timeout:  spec.Duration(f.healthTimeout),
		}
		switch {
		case fl.Changed("health-tcp") && (f.healthTCP < 1 || f.healthTCP > 65535):
			return s, fmt.Errorf("--health-tcp: must be a port between 1 and 65535, got %d", f.healthTCP)
		case fl.Changed("health-http") && f.healthHTTP == "":
			return s, fmt.Errorf("--health-http: must be a path such as /healthz")
		case fl.Changed("health-exec"):
			words, err := splitWords(f.healthExec)
			if err != nil {
				return s, fmt.Errorf("--health-exec %q: %w", f.healthExec, err)
			}
			if len(words) == 0 {
				return s, fmt.Errorf("--health-exec: must not be empty")
			}
			h.Exec = words
		}
		s.Health = h
	}
	s.Normalize()
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("invalid service %q: %w", s.Name, err)
	}
	return s, nil
}
