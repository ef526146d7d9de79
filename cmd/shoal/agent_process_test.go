package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/testenv"
)

// These tests run the real binary: `shoal agent` processes on loopback
// addresses, driven by signals and by the CLI.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// shoalBinary builds cmd/shoal once per test run.
func shoalBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shoal-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "shoal")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is one agent process.
type proc struct {
	name, ip, dir string
	cmd           *exec.Cmd
	log           *bytes.Buffer
	done          chan error
}

// subnet picks a random 127.a.b.0 prefix whose .1 gossip port is free.
func subnet(t *testing.T) string {
	for range 50 {
		p := fmt.Sprintf("127.%d.%d.", 1+rand.IntN(250), 1+rand.IntN(250))
		ln, err := net.Listen("tcp", p+"1:7946")
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free loopback subnet")
	return ""
}

func startAgent(t *testing.T, bin, name, ip, dir string, extra ...string) *proc {
	t.Helper()
	p := &proc{name: name, ip: ip, dir: dir, log: &bytes.Buffer{}, done: make(chan error, 1)}
	args := append([]string{"agent", "--name", name, "--data-dir", dir, "--bind", ip,
		"--api", ip + ":7070", "--profile", "local", "--log-level", "debug"}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, p.log.String())
		}
	})
	return p
}

// nodesOf asks an agent for its member list through the CLI.
func nodesOf(t *testing.T, bin, ip string) ([]api.Node, error) {
	out, err := exec.Command(bin, "--addr", ip+":7070", "nodes", "-o", "json").Output()
	if err != nil {
		return nil, err
	}
	var nodes []api.Node
	return nodes, json.Unmarshal(out, &nodes)
}

func statusOf(nodes []api.Node, name string) string {
	for _, n := range nodes {
		if n.Name == name {
			return n.Status
		}
	}
	return "absent"
}

func waitStatus(t *testing.T, bin, ip, name, want string) {
	t.Helper()
	err := testenv.Poll(30*time.Second, func() error {
		nodes, err := nodesOf(t, bin, ip)
		if err != nil {
			return err
		}
		if got := statusOf(nodes, name); got != want {
			return fmt.Errorf("%s sees %s %s, want %s", ip, name, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAgentProcessesSignalsAndRejoin(t *testing.T) {
	bin := shoalBinary(t)
	net := subnet(t)
	root := t.TempDir()
	key := strings.TrimSpace(run(t, bin, "keygen"))
	a := startAgent(t, bin, "a", net+"1", filepath.Join(root, "a"), "--encrypt", key)
	b := startAgent(t, bin, "b", net+"2", filepath.Join(root, "b"), "--encrypt", key, "--join", net+"1:7946")
	c := startAgent(t, bin, "c", net+"3", filepath.Join(root, "c"), "--encrypt", key, "--join", net+"1:7946")
	for _, n := range []string{"a", "b", "c"} {
		waitStatus(t, bin, a.ip, n, "alive")
	}
	// No containerd answers at the default socket: every node is a member
	// that says why it cannot run containers.
	nodes, err := nodesOf(t, bin, a.ip)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Runtime.Ready || !strings.Contains(n.Runtime.Reason, "containerd") {
			t.Errorf("node %s runtime %+v, want not ready with a reason naming containerd", n.Name, n.Runtime)
		}
	}

	// A write through the CLI on c is visible on a.
	run(t, bin, "--addr", c.ip+":7070", "run", "web", "--image", "demo:1", "--replicas", "2")
	if err := testenv.Poll(10*time.Second, func() error {
		_, err := exec.Command(bin, "--addr", a.ip+":7070", "inspect", "web").Output()
		return err
	}); err != nil {
		t.Fatalf("web not visible on a: %v", err)
	}

	// SIGTERM: a graceful leave, seen as "left", and a clean exit.
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-b.done:
		if err != nil {
			t.Fatalf("b exited with %v after SIGTERM", err)
		}
		b.done <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("b did not exit within 30s of SIGTERM")
	}
	waitStatus(t, bin, a.ip, "b", "left")

	// SIGKILL: a crash, detected as a failure.
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, bin, a.ip, "c", "failed")

	// Both come back with their data dirs and no --join.
	startAgent(t, bin, "b", net+"2", filepath.Join(root, "b"))
	startAgent(t, bin, "c", net+"3", filepath.Join(root, "c"))
	waitStatus(t, bin, a.ip, "b", "alive")
	waitStatus(t, bin, a.ip, "c", "alive")
	// ... with the state they had, and the key they were given before.
	out := run(t, bin, "--addr", net+"3:7070", "ls", "-o", "json")
	if !strings.Contains(out, `"web"`) {
		t.Errorf("restarted c lists %s", out)
	}
}

func TestAgentRefusesBadStarts(t *testing.T) {
	bin := shoalBinary(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"api beyond loopback without token", []string{"--api", "0.0.0.0:0"}, "--token is required"},
		{"bad bind", []string{"--bind", "nowhere"}, "--bind"},
		{"bad key", []string{"--encrypt", "c2hvcnQ="}, "--encrypt"},
		{"bad label", []string{"--label", "zone"}, "--label"},
		{"bad profile", []string{"--profile", "turbo"}, "--profile"},
		{"bad name", []string{"--name", "Node_1"}, "name"},
		{"bad image transfer", []string{"--image-transfer", "fast"}, "image transfer"},
		{"image port without plain transfer", []string{"--image-port", "9000"}, "image port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"agent", "--data-dir", t.TempDir(), "--bind", "127.0.0.1", "--gossip-port", "0", "--peer-port", "0", "--api", "127.0.0.1:0"}, tc.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("agent %v: err %v (ctx %v), want a quick failure", tc.args, err, ctx.Err())
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "shoal: ") || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
				t.Errorf("stderr %q: want one line starting with \"shoal: \" mentioning %q", msg, tc.want)
			}
		})
	}
}

// run runs the binary and returns stdout, failing the test on error.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("shoal %v: %v: %s", args, err, stderr.String())
	}
	return string(out)
}

// TestMain removes the binary the process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
