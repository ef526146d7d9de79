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
	"sync/atomic"
	"time"
)

// Fake is an in-memory Driver for tests: containers are records, images
// are names, logs are buffers. It records the Start and Stop calls it
// served (Ops), lets tests crash containers (Crash), steer exec probes
// (SetExecResult) and write log lines (AppendLog). The zero value is not
// usable; use NewFake.
//
// # Concurrency
//
// Safe for concurrent use. The hooks (SetStartError, SetExecResult,
// SetStopHook, SetListHook) are called without the fake's lock held, so they may block
// to simulate a slow runtime.
type Fake struct {
	mu         sync.Mutex // guards all following fields
	err        error
	images     map[string]Image
	containers map[string]*Replica
	logs       map[string]*fakeLog
	nextPort   int
	startErr   func(ReplicaSpec) error
	execResult func(id string, cmd []string) int
	stopHook   func(id string)
	queued     func(id string, ports []int) int
	listHook   func()
	starts     int
	ops        []FakeOp
	changed    chan struct{} // buffered 1: a container changed state
}

// FakeOp is one Start, Prepare or Stop the fake served.
type FakeOp struct {
	// Op is "start", "prepare" or "stop".
	Op string
	// ID is the container's ID; Version its spec version (start only).
	ID      string
	Version string
	// At is when the call was served.
	At time.Time
	// Prepared is set on a start that started a prepared container.
	Prepared bool
}

// fakeLog is one container's log: its content and a channel closed (and
// replaced) when it grows or the container goes away.
type fakeLog struct {
	buf    bytes.Buffer
	grown  chan struct{}
	closed bool
}

var (
	_ Driver   = (*Fake)(nil)
	_ Preparer = (*Fake)(nil)
)

// NewFake returns a ready fake runtime that holds every image.
func NewFake() *Fake {
	return &Fake{
		images:     map[string]Image{},
		containers: map[string]*Replica{},
		logs:       map[string]*fakeLog{},
		nextPort:   30000,
		changed:    make(chan struct{}, 1),
	}
}

// SetReady makes Ready return err (nil: ready).
func (f *Fake) SetReady(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// SetStartError makes Start fail with fn's answer (nil fn: never). fn is
// called without the fake's lock, so it may also block.
func (f *Fake) SetStartError(fn func(ReplicaSpec) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startErr = fn
}

// SetStopHook makes Stop call fn first, without the fake's lock, so fn
// may block to hold a stop under way (nil fn: none).
func (f *Fake) SetStopHook(fn func(id string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopHook = fn
}

// SetQueued makes Queued answer fn's count (nil fn: 0).
func (f *Fake) SetQueued(fn func(id string, ports []int) int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queued = fn
}

// Queued implements AcceptQueuer: what SetQueued's function says, for a
// container the fake holds.
func (f *Fake) Queued(ctx context.Context, id string, ports []int) (int, error) {
	f.mu.Lock()
	fn := f.queued
	_, ok := f.containers[id]
	f.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("%w: container %s", ErrNotFound, id)
	}
	if fn == nil {
		return 0, nil
	}
	return fn(id, ports), nil
}

// SetListHook makes List call fn after it has taken its copy of the
// containers, without the fake's lock, so fn may block to make the list
// that List returns an old one (nil fn: none).
func (f *Fake) SetListHook(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listHook = fn
}

// SetExecResult makes Exec on a running container return fn's exit code
// (nil fn: 0).
func (f *Fake) SetExecResult(fn func(id string, cmd []string) int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.execResult = fn
}

// Crash marks a running container exited with code, as if it died, and
// signals Changed.
func (f *Fake) Crash(id string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.State, c.ExitCode = StateExited, code
		f.notifyLocked()
	}
}

// Changed returns a channel that receives a value (coalesced) whenever a
// container changes state on its own (Crash), as a real runtime's task
// exit events would. The agent's reconcile loop listens to it when a
// driver offers it.
func (f *Fake) Changed() <-chan struct{} { return f.changed }

func (f *Fake) notifyLocked() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Starts counts successful Start calls.
func (f *Fake) Starts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

// Ops returns the successful Start and Stop calls in the order served.
func (f *Fake) Ops() []FakeOp {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

// Container returns the container id (false if there is none).
func (f *Fake) Container(id string) (Replica, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return Replica{}, false
	}
	r := *c
	r.HostPorts = maps.Clone(c.HostPorts)
	return r, true
}

// AppendLog adds a line to a container's log (false if it does not exist).
func (f *Fake) AppendLog(id, line string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.logs[id]
	if !ok {
		return false
	}
	l.buf.WriteString(line + "\n")
	close(l.grown)
	l.grown = make(chan struct{})
	return true
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

// admit runs the start hook (without the lock) and checks ctx: the
// common start of Start and Prepare.
func (f *Fake) admit(ctx context.Context, s ReplicaSpec) error {
	f.mu.Lock()
	hook := f.startErr
	f.mu.Unlock()
	if hook != nil {
		if err := hook(s); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Start implements Driver.
func (f *Fake) Start(ctx context.Context, s ReplicaSpec) (Replica, error) {
	if err := f.admit(ctx, s); err != nil {
		return Replica{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return Replica{}, fmt.Errorf("%w: %v", ErrNotReady, f.err)
	}
	if c, ok := f.containers[s.ID]; ok && c.State == StatePrepared && c.Version == s.Version {
		c.State, c.StartedAt = StateRunning, time.Now()
		f.startLogLocked(s) // its process starts now, as a fresh start's does
		f.starts++
		f.ops = append(f.ops, FakeOp{Op: "start", ID: s.ID, Version: s.Version, At: c.StartedAt, Prepared: true})
		f.notifyLocked()
		out := *c
		out.HostPorts = maps.Clone(c.HostPorts)
		return out, nil
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
	f.startLogLocked(s)
	f.starts++
	f.ops = append(f.ops, FakeOp{Op: "start", ID: s.ID, Version: s.Version, At: r.StartedAt})
	out := *r
	out.HostPorts = maps.Clone(r.HostPorts)
	return out, nil
}

// startLogLocked begins the log of a container whose process starts:
// one line, "started SERVICE/SLOT".
func (f *Fake) startLogLocked(s ReplicaSpec) {
	if old, ok := f.logs[s.ID]; ok {
		old.closed = true
		close(old.grown)
	}
	l := &fakeLog{grown: make(chan struct{})}
	fmt.Fprintf(&l.buf, "started %s/%d\n", s.Service, s.Slot)
	f.logs[s.ID] = l
}

// Prepare implements Preparer: the container is made in StatePrepared
// (the start hook applies), and a Start of the same version starts it.
func (f *Fake) Prepare(ctx context.Context, s ReplicaSpec) (Replica, error) {
	if err := f.admit(ctx, s); err != nil {
		return Replica{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return Replica{}, fmt.Errorf("%w: %v", ErrNotReady, f.err)
	}
	if _, ok := f.containers[s.ID]; ok {
		return Replica{}, fmt.Errorf("runtime: container %s already exists", s.ID)
	}
	r := &Replica{ID: s.ID, Service: s.Service, Slot: s.Slot, Version: s.Version, Image: s.Image,
		State: StatePrepared, HostPorts: map[int]int{}}
	for _, p := range s.Ports {
		r.HostPorts[p] = f.nextPort
		f.nextPort++
	}
	f.containers[s.ID] = r
	f.ops = append(f.ops, FakeOp{Op: "prepare", ID: s.ID, Version: s.Version, At: time.Now()})
	out := *r
	out.HostPorts = maps.Clone(r.HostPorts)
	return out, nil
}

// Stop implements Driver.
func (f *Fake) Stop(ctx context.Context, id string, timeout time.Duration) error {
	f.mu.Lock()
	hook := f.stopHook
	f.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[id]; ok {
		f.ops = append(f.ops, FakeOp{Op: "stop", ID: id, At: time.Now()})
	}
	delete(f.containers, id)
	if l, ok := f.logs[id]; ok {
		l.closed = true
		close(l.grown)
		delete(f.logs, id)
	}
	return nil
}

// List implements Driver.
func (f *Fake) List(ctx context.Context) ([]Replica, error) {
	f.mu.Lock()
	out := make([]Replica, 0, len(f.containers))
	for _, c := range f.containers {
		r := *c
		r.HostPorts = maps.Clone(c.HostPorts)
		out = append(out, r)
	}
	hook := f.listHook
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b Replica) int { return strings.Compare(a.ID, b.ID) })
	if hook != nil {
		hook()
	}
	return out, nil
}

// Exec implements Driver: on a running container it returns the
// SetExecResult hook's answer (default 0), on a stopped one 1.
func (f *Fake) Exec(ctx context.Context, id string, cmd []string) (int, error) {
	f.mu.Lock()
	c, ok := f.containers[id]
	running := ok && c.State == StateRunning
	hook := f.execResult
	f.mu.Unlock()
	switch {
	case !ok:
		return -1, fmt.Errorf("%w: container %s", ErrNotFound, id)
	case !running:
		return 1, nil
	case hook != nil:
		return hook(id, slices.Clone(cmd)), nil
	}
	return 0, nil
}

// Logs implements Driver: the last tail lines (tail < 0: all), then with
// follow every line AppendLog adds, until ctx ends or the container is
// removed.
func (f *Fake) Logs(ctx context.Context, id string, tail int, follow bool) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.logs[id]
	if !ok {
		return nil, fmt.Errorf("%w: container %s", ErrNotFound, id)
	}
	all := l.buf.Bytes()
	start := 0
	if tail >= 0 {
		lines := bytes.SplitAfter(all, []byte("\n"))
		if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
			lines = lines[:n-1]
		}
		for _, line := range lines[:max(0, len(lines)-tail)] {
			start += len(line)
		}
	}
	return &fakeLogReader{f: f, l: l, ctx: ctx, off: start, follow: follow, closed: make(chan struct{})}, nil
}

// fakeLogReader reads a fakeLog from an offset, waiting for growth when
// following.
type fakeLogReader struct {
	f      *Fake
	l      *fakeLog
	ctx    context.Context
	off    int
	follow bool
	done   atomic.Bool   // Close was called
	once   sync.Once     // closes closed
	closed chan struct{} // closed by Close, wakes a waiting Read
}

func (r *fakeLogReader) Read(p []byte) (int, error) {
	for {
		if r.done.Load() {
			return 0, io.EOF
		}
		r.f.mu.Lock()
		data, grown, closed := r.l.buf.Bytes(), r.l.grown, r.l.closed
		if r.off < len(data) {
			n := copy(p, data[r.off:])
			r.off += n
			r.f.mu.Unlock()
			return n, nil
		}
		r.f.mu.Unlock()
		if !r.follow || closed {
			return 0, io.EOF
		}
		select {
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		case <-r.closed:
			return 0, io.EOF
		case <-grown:
		}
	}
}

// Close implements io.Closer; it may be called concurrently with Read
// and more than once.
func (r *fakeLogReader) Close() error {
	r.done.Store(true)
	r.once.Do(func() { close(r.closed) })
	return nil
}

var _ AcceptQueuer = (*Fake)(nil)
