package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"
)

func TestStartContainerd(t *testing.T) {
	var socket string
	t.Run("running", func(t *testing.T) {
		socket = StartContainerd(t)
		c, err := net.Dial("unix", socket)
		if err != nil {
			t.Fatalf("containerd does not answer on %s: %v", socket, err)
		}
		c.Close()
		if len(socket) >= 108 {
			t.Errorf("socket path %q too long for a unix socket", socket)
		}
	})
	if socket == "" {
		t.Skip("containerd not started")
	}
	// Cleanup stopped it and removed its directory.
	if _, err := net.Dial("unix", socket); err == nil {
		t.Error("containerd still answers after cleanup")
	}
	if _, err := os.Stat(filepath.Dir(socket)); !os.IsNotExist(err) {
		t.Errorf("containerd dir left behind: %v", err)
	}
}

func TestStartRegistry(t *testing.T) {
	var hostport string
	t.Run("running", func(t *testing.T) {
		hostport = StartRegistry(t)
		resp, err := http.Get("http://" + hostport + "/v2/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v2/ = %s", resp.Status)
		}
	})
	if hostport == "" {
		t.Skip("registry not started")
	}
	if c, err := net.DialTimeout("tcp", hostport, time.Second); err == nil {
		c.Close()
		t.Error("registry still listening after cleanup")
	}
}

func TestUnescapeMount(t *testing.T) {
	tests := map[string]string{
		`/tmp/plain`:         "/tmp/plain",
		`/tmp/with\040space`: "/tmp/with space",
		`/tmp/tab\011x`:      "/tmp/tab\tx",
		`/tmp/bad\09`:        `/tmp/bad\09`,
		`/tmp/end\`:          `/tmp/end\`,
	}
	for in, want := range tests {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeTB records Skip and Fatal and ends the goroutine like testing does.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	goruntime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	goruntime.Goexit()
}

func TestSkipOrFailHonoursCI(t *testing.T) {
	tests := []struct {
		ci                  string
		wantSkip, wantFatal bool
	}{
		{"", true, false},
		{"false", true, false},
		{"true", false, true},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			f := &fakeTB{TB: t}
			done := make(chan struct{})
			go func() { defer close(done); skipOrFail(f, "containerd missing") }()
			<-done
			if f.skipped != tt.wantSkip || f.failed != tt.wantFatal {
				t.Fatalf("skipped=%v failed=%v (%q), want skip=%v fatal=%v", f.skipped, f.failed, f.msg, tt.wantSkip, tt.wantFatal)
			}
			if f.msg == "" || !strings.Contains(f.msg, "containerd missing") {
				t.Errorf("message %q does not carry the reason", f.msg)
			}
		})
	}
}
