package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/shoalmesh/shoal/runtime/demo"
)

var demoOnce struct {
	sync.Once
	dir, path string
	err       error
}

// DemoArchive returns the path of an OCI archive of the demo image
// (shoal-demo:latest), built once per test process from a static build of
// cmd/shoal (CGO_ENABLED=0), as `shoal image build-demo` would. Call
// CleanupDemo from TestMain to remove it.
func DemoArchive(tb testing.TB) string {
	tb.Helper()
	demoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shoal-demo-")
		if err != nil {
			demoOnce.err = err
			return
		}
		demoOnce.dir = dir
		bin := filepath.Join(dir, "shoal")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/shoalmesh/shoal/cmd/shoal")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			demoOnce.err = fmt.Errorf("testenv: building shoal: %v\n%s", err, out)
			return
		}
		path := filepath.Join(dir, "shoal-demo.tar")
		f, err := os.Create(path)
		if err != nil {
			demoOnce.err = err
			return
		}
		if err := demo.WriteArchive(f, demo.Options{Binary: bin}); err != nil {
			f.Close()
			demoOnce.err = err
			return
		}
		demoOnce.err = f.Close()
		demoOnce.path = path
	})
	if demoOnce.err != nil {
		tb.Fatal(demoOnce.err)
	}
	return demoOnce.path
}

// CleanupDemo removes what DemoArchive built.
func CleanupDemo() {
	if demoOnce.dir != "" {
		_ = os.RemoveAll(demoOnce.dir)
	}
}
