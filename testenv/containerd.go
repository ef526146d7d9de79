package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/testenv/hosts"
)

// RequireRoot skips tb when the test is not running as root, or fails it
// when the environment has CI=true: CI must run every test.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(tb, "needs root")
	}
}

// RequireBinaries skips tb (fails it under CI=true) when one of the named
// programs is not on PATH.
func RequireBinaries(tb testing.TB, names ...string) {
	tb.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			skipOrFail(tb, fmt.Sprintf("%s not installed (scripts/install-deps.sh installs it): %v", n, err))
		}
	}
}

// skipOrFail skips the test with reason, or fails it when CI=true.
func skipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true but: %s", reason)
	}
	tb.Skip(reason)
}

// StartContainerd starts a private containerd daemon for tb and returns
// its socket. The daemon's root, state, socket and log live in a fresh
// directory; the CRI plugin is disabled. It is stopped by its PID when tb
// ends, after any shims it left are killed and mounts under its
// directory are unmounted; then the directory is removed. Tests should
// still remove every container they create.
//
// Without root or without containerd and runc installed, tb is skipped
// (failed when CI=true).
func StartContainerd(tb testing.TB) (socket string) {
	tb.Helper()
	RequireRoot(tb)
	RequireBinaries(tb, "containerd", "runc")

	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "shoal-ctd-")
	if err != nil {
		tb.Fatalf("containerd: %v", err)
	}
	socket = filepath.Join(dir, "containerd.sock")
	config := hosts.ContainerdConfig(dir, filepath.Join(dir, "state"), socket)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		tb.Fatalf("containerd: %v", err)
	}
	logPath := filepath.Join(dir, "containerd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatalf("containerd: %v", err)
	}
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a signal to the test does not reach it
	// before cleanup does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		tb.Fatalf("containerd: start: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()

	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("containerd log (tail):\n%s", fileTail(logPath, 40))
		}
		killShims(tb, socket)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		unmountUnder(tb, dir)
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("containerd: remove %s: %v", dir, err)
		}
	})

	err = Poll(15*time.Second, func() error {
		select {
		case <-exited:
			return errors.New("containerd exited")
		default:
		}
		c, err := net.Dial("unix", socket)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		tb.Fatalf("containerd did not start: %v\n%s", err, fileTail(logPath, 40))
	}
	return socket
}

// killShims kills, by PID, the containerd shims serving the daemon at
// socket (they outlive the daemon when a container was left running).
func killShims(tb testing.TB, socket string) {
	tb.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		if !slices.Contains(args, socket) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		tb.Logf("containerd: killing leftover shim %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(tb testing.TB, dir string) {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if mp := unescapeMount(f[4]); mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range points {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			tb.Logf("containerd: unmount %s: %v", mp, err)
		}
	}
}

// unescapeMount undoes the octal escapes of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fileTail returns the last n lines of the file at path.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
