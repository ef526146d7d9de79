package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// StartRegistry starts a private OCI registry (Debian's docker-registry,
// distribution v2) on a free loopback port for tb, with storage under a
// temp dir and no auth, and returns its "127.0.0.1:port". It is killed by
// its PID when tb ends. Without /usr/bin/docker-registry tb is skipped
// (failed when CI=true).
func StartRegistry(tb testing.TB) (hostport string) {
	tb.Helper()
	RequireBinaries(tb, "docker-registry")

	dir := tb.TempDir()
	// Pick a free port; the registry binds it right after. A clash with
	// another process in between shows as a failed start below.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("registry: %v", err)
	}
	hostport = l.Addr().String()
	l.Close()

	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), hostport)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		tb.Fatalf("registry: %v", err)
	}
	logPath := filepath.Join(dir, "registry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatalf("registry: %v", err)
	}
	cmd := exec.Command("docker-registry", "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("registry: start: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	client := &http.Client{Timeout: time.Second}
	err = Poll(10*time.Second, func() error {
		select {
		case <-exited:
			return errors.New("registry exited")
		default:
		}
		resp, err := client.Get("http://" + hostport + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("registry did not start: %v\n%s", err, fileTail(logPath, 20))
	}
	return hostport
}
