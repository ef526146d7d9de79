package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fake is an in-memory Driver for tests: containers are records, images
// are names. The zero value is not usable; use NewFake.
type Fake struct {
	mu         sync.Mutex // guards all following fields
	err        error
	images     map[string]Image
	containers map[string]*Replica
	logs       map[string]*bytes.Buffer
	nextPort   int
	// StartErr, when set, makes Start fail for specs it returns an error for.
	startErr func(ReplicaSpec) error
	starts   int
}

var _ Driver = (*Fake)(nil)

// NewFake returns a ready fake runtime that holds every image.
func NewFake() *Fake {
	return &Fake{images: map[string]Image{}, containers: map[string]*Replica{}, logs: map[string]*bytes.Buffer{}, nextPort: 30000}
}

// SetReady makes Ready return err (nil: ready).
func (f *Fake) SetReady(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// SetStartError makes Start fail with fn's answer (nil fn: never).
func (f *Fake) SetStartError(fn func(ReplicaSpec) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startErr = fn
}

// Crash marks a running container exited with code, as if it died.
func (f *Fake) Crash(id string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.State, c.ExitCode = StateExited, code
	}
}

// Starts counts successful Start calls.
func (f *Fake) Starts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

// Ready implements Driver.
func (f *Fake) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// ImportImage implements Driver: the archive's content is taken as one
// image name per line.
func (f *Fake) ImportImage(ctx context.Context, r io.Reader) ([]Image, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Image
	for _, name := range strings.Fields(string(b)) {
		img := Image{Name: name, Digest: fmt.Sprintf("sha256:%064x", len(f.images)+1), Platforms: []string{"linux/amd64"}}
		f.images[name] = img
		out = append(out, img)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no image in archive", ErrBadImage)
	}
	return out, nil
}

// Images implements Driver.
func (f *Fake) Images(ctx context.Context) ([]Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.SortedFunc(maps.Values(f.images), func(a, b Image) int { return strings.Compare(a.Name, b.Name) }), nil
}

// EnsureImage implements Driver: every reference "pulls".
func (f *Fake) EnsureImage(ctx context.Context, ref string) (Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if img, ok := f.images[ref]; ok {
		return img, nil
	}
	img := Image{Name: ref, Digest: fmt.Sprintf("sha256:%064x", len(f.images)+1), Platforms: []string{"linux/amd64"}}
	f.images[ref] = img
	return img, nil
}

// Start implements Driver.
func (f *Fake) Start(ctx context.Context, s ReplicaSpec) (Replica, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return Replica{}, fmt.Errorf("%w: %v", ErrNotReady, f.err)
	}
	if f.startErr != nil {
		if err := f.startErr(s); err != nil {
			return Replica{}, err
		}
	}
	if c, ok := f.containers[s.ID]; ok && c.State == StateRunning {
		return Replica{}, fmt.Errorf("runtime: container %s already exists", s.ID)
	}
	r := &Replica{ID: s.ID, Service: s.Service, Slot: s.Slot, Version: s.Version, Image: s.Image,
		State: StateRunning, StartedAt: time.Now(), HostPorts: map[int]int{}}
	for _, p := range s.Ports {
		if s.Network == "host" {
			r.HostPorts[p] = p
		} else {
			r.HostPorts[p] = f.nextPort
			f.nextPort++
		}
	}
	f.containers[s.ID] = r
	f.logs[s.ID] = bytes.NewBufferString(fmt.Sprintf("started %s/%d\n", s.Service, s.Slot))
	f.starts++
	return *r, nil
}

// Stop implements Driver.
func (f *Fake) Stop(ctx context.Context, id string, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
	delete(f.logs, id)
	return nil
}

// List implements Driver.
func (f *Fake) List(ctx context.Context) ([]Replica, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Replica, 0, len(f.containers))
	for _, c := range f.containers {
		r := *c
		r.HostPorts = maps.Clone(c.HostPorts)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Replica) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Exec implements Driver: exit 0 while the container runs.
func (f *Fake) Exec(ctx context.Context, id string, cmd []string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return -1, fmt.Errorf("%w: container %s", ErrNotFound, id)
	}
	if c.State != StateRunning {
		return 1, nil
	}
	return 0, nil
}

// Logs implements Driver (no follow: the fake's logs do not grow).
func (f *Fake) Logs(ctx context.Context, id string, tail int, follow bool) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.logs[id]
	if !ok {
		return nil, fmt.Errorf("%w: container %s", ErrNotFound, id)
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(b.Bytes()))), nil
}
