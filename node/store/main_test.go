package store

import (
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable Clock for tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// epoch is the fake clocks' starting time.
var epoch = time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)

var discard = slog.New(slog.DiscardHandler)

// fastTempDir returns a fresh directory removed at cleanup, on tmpfs
// (/dev/shm) where available: bbolt fsyncs a new file even with NoSync, and
// the property and fuzz tests create hundreds of stores.
func fastTempDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "shoal-store-test-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// openTest opens a store in a fresh file of t's temp dir, closed at cleanup.
func openTest(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(fastTempDir(t), "store.db")
	return reopenTest(t, path, opts), path
}

// reopenTest opens the store at path with test defaults, closed at cleanup.
// Test stores skip fsync (the shared disk makes it slow and erratic), except
// where a test opens one with Open itself.
func reopenTest(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	opts.NoSync = true
	if opts.Node == "" {
		opts.Node = "node-1"
	}
	if opts.Clock == nil {
		opts.Clock = newFakeClock(epoch)
	}
	if opts.Logger == nil {
		opts.Logger = discard
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ver builds a version.
func ver(wall int64, logical uint32, node string) Version {
	return Version{Time: Timestamp{Wall: wall, Logical: logical}, Node: node}
}
