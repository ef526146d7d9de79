package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/testenv/hosts"
)

// defaultDevDir is where `shoal dev` keeps a cluster when --dir is absent.
const defaultDevDir = "/tmp/shoal-dev"

// devRow is one host in `shoal dev ls`.
type devRow struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	API     string `json:"api"`
	Token   string `json:"token"`
	Status  string `json:"status"`
	PID     int    `json:"pid,omitempty"`
	Log     string `json:"log"`
}

func newDevCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a multi-host cluster on this machine and break it",
		Long: `A local cluster of real agents: each host is a network namespace with its
own address on a bridge and runs 'shoal agent' (own data dir, own containerd
namespace; one containerd daemon is shared). The verbs do to a host what
happens to machines. State lives in --dir, so the verbs work across
invocations; 'shoal dev down' removes every namespace, veth, bridge,
iptables rule, container and process that dev made. Needs root.`,
		Example: `  shoal dev up --nodes 3
  shoal dev ls
  SHOAL_ADDR=$(shoal dev addr 1) SHOAL_TOKEN=$(shoal dev token) shoal nodes
  shoal dev kill host-2
  shoal dev partition 1,2 3
  shoal dev heal
  shoal dev down`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", defaultDevDir, "directory that holds the cluster's state, data and logs")
	load := func() (*hosts.State, error) { return hosts.Load(dir) }

	up := &cobra.Command{
		Use:   "up",
		Short: "Create the cluster and start its agents",
		Args:  nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodes, _ := cmd.Flags().GetInt("nodes")
			socket, _ := cmd.Flags().GetString("containerd")
			image, _ := cmd.Flags().GetString("image")
			profile, _ := cmd.Flags().GetString("profile")
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if socket != "" && exec.Command("ctr", "--address", socket, "version").Run() != nil {
				return fmt.Errorf("dev up: no containerd answers on %s (leave --containerd out to start a private one)", socket)
			}
			s, err := hosts.Up(ctx(cmd), hosts.Options{Nodes: nodes, Dir: dir, Binary: self, Containerd: socket, Profile: profile})
			if err != nil {
				return err
			}
			if err := s.WaitMembers(ctx(cmd), 60*time.Second); err != nil {
				return err
			}
			if image != "" {
				for i := range s.Hosts {
					if err := loadImage(g, s, i, image); err != nil {
						return err
					}
				}
			}
			return printDev(cmd, g, s)
		},
	}
	up.Flags().Int("nodes", 3, "number of hosts")
	up.Flags().String("containerd", "", "containerd socket to share (default: start a private daemon under --dir)")
	up.Flags().String("image", "", "image archive to load on every host")
	up.Flags().String("profile", "fast", "gossip profile of the agents (fast: failure detection in about 1.3 s)")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the hosts: name, address, API, token, status",
		Args:  nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			return printDev(cmd, g, s)
		},
	}
	token := &cobra.Command{
		Use:   "token",
		Short: "Print the cluster's API token (for SHOAL_TOKEN)",
		Args:  nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s.Token)
			return nil
		},
	}
	// hostVerb builds a verb that acts on one host.
	hostVerb := func(use, short string, act func(cmd *cobra.Command, s *hosts.State, i int) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " HOST",
			Short: short,
			Args:  nArgs(1, 1, "a HOST (host-2, or 2)"),
			RunE: func(cmd *cobra.Command, args []string) error {
				s, err := load()
				if err != nil {
					return err
				}
				i, err := s.Host(args[0])
				if err != nil {
					return err
				}
				return act(cmd, s, i)
			},
		}
	}
	addr := hostVerb("addr", "Print a host's API address (for SHOAL_ADDR)", func(cmd *cobra.Command, s *hosts.State, i int) error {
		_, err := fmt.Fprintln(cmd.OutOrStdout(), s.Hosts[i].API)
		return err
	})
	kill := hostVerb("kill", "Crash a host: SIGKILL its agent and its containers", func(cmd *cobra.Command, s *hosts.State, i int) error {
		return s.Kill(ctx(cmd), i)
	})
	stop := hostVerb("stop", "Stop a host's agent cleanly (it leaves; containers stay)", func(_ *cobra.Command, s *hosts.State, i int) error {
		return s.Stop(i)
	})
	start := hostVerb("start", "Start a stopped or killed host's agent again", func(cmd *cobra.Command, s *hosts.State, i int) error {
		return s.Start(ctx(cmd), i)
	})
	pause := hostVerb("pause", "Freeze a host's agent (SIGSTOP)", func(_ *cobra.Command, s *hosts.State, i int) error {
		return s.Pause(i)
	})
	resume := hostVerb("resume", "Unfreeze a paused agent (SIGCONT)", func(_ *cobra.Command, s *hosts.State, i int) error {
		return s.Resume(i)
	})
	netem := hostVerb("netem", "Delay and drop a host's outgoing packets (tc netem); no flags removes it", func(cmd *cobra.Command, s *hosts.State, i int) error {
		delay, _ := cmd.Flags().GetDuration("delay")
		loss, _ := cmd.Flags().GetFloat64("loss")
		if delay < 0 || loss < 0 || loss > 100 {
			return errors.New("dev netem: --delay must be >= 0 and --loss between 0 and 100")
		}
		return s.Netem(i, delay, loss)
	})
	netem.Flags().Duration("delay", 0, "added delay, e.g. 50ms")
	netem.Flags().Float64("loss", 0, "packet loss in percent")

	partition := &cobra.Command{
		Use:   "partition GROUP GROUP...",
		Short: "Cut the hosts into groups that cannot reach each other (GROUP: 1,2 or host-1,host-2)",
		Args:  nArgs(2, 100, "two or more GROUPs"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			var groups [][]int
			for _, a := range args {
				var grp []int
				for _, name := range strings.Split(a, ",") {
					i, err := s.Host(name)
					if err != nil {
						return err
					}
					grp = append(grp, i)
				}
				groups = append(groups, grp)
			}
			return s.Partition(groups...)
		},
	}
	heal := &cobra.Command{
		Use:   "heal",
		Short: "Remove every partition",
		Args:  nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			return s.Heal()
		},
	}
	execCmd := &cobra.Command{
		Use:   "exec HOST -- COMMAND [ARG...]",
		Short: "Run a command in a host's network namespace",
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 || len(args) < 2 {
				return usageError(cmd, "exec wants HOST -- COMMAND")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			i, err := s.Host(args[0])
			if err != nil {
				return err
			}
			if err := s.Exec(ctx(cmd), i, args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return fmt.Errorf("dev exec: %s exited with %d", args[1], ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Remove the cluster and everything it made",
		Args:  nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			return s.Down(ctx(cmd))
		},
	}
	cmd.AddCommand(up, ls, addr, token, kill, stop, start, pause, resume, netem, partition, heal, execCmd, down)
	return cmd
}

// loadImage loads an image archive on host i through its API.
func loadImage(g *globals, s *hosts.State, i int, path string) error {
	gg := *g
	gg.addr, gg.token = s.Hosts[i].API, s.Token
	c, err := gg.client()
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("dev up --image: %w", err)
	}
	defer f.Close()
	if _, err := c.LoadImage(context.Background(), f); err != nil {
		return fmt.Errorf("dev up: loading %s on %s: %w", filepath.Base(path), s.Hosts[i].Name, err)
	}
	return nil
}

func printDev(cmd *cobra.Command, g *globals, s *hosts.State) error {
	rows := make([]devRow, len(s.Hosts))
	for i, h := range s.Hosts {
		rows[i] = devRow{Name: h.Name, Address: h.Addr.String(), API: h.API, Token: s.Token, Status: s.Status(i), PID: h.PID, Log: h.Log}
	}
	if g.json() {
		return writeJSON(cmd.OutOrStdout(), rows)
	}
	t := newTable(cmd.OutOrStdout(), "NAME", "ADDRESS", "API", "STATUS", "PID", "LOG")
	for _, r := range rows {
		pid := ""
		if r.PID > 0 {
			pid = strconv.Itoa(r.PID)
		}
		t.row(r.Name, r.Address, r.API, r.Status, pid, r.Log)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "\nexport SHOAL_ADDR=%s SHOAL_TOKEN=%s\n", s.Hosts[0].API, s.Token)
	return nil
}
