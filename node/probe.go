package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
)

// Health probes run on the node that owns a replica, one goroutine per
// running container whose service has a health check:
//
//   - http: GET the path on the first target port; 2xx or 3xx is healthy
//     (redirects are not followed).
//   - tcp: a connection to the port is accepted.
//   - exec: the command exits 0 inside the container (Driver.Exec).
//
// The address is the container's IP and the target port in bridge mode
// (or, when the runtime reports no IP, the node's address and the mapped
// host port), and the node's advertise IP (127.0.0.1 if it has none) and
// the replica's $PORT in host mode.
//
// A replica is "starting" until its first success, probed meanwhile at
// delays growing from 10 ms to min(interval, 1s), then every interval. It turns unhealthy
// after failureThreshold failures in a row and healthy again on the next
// success. A service without a health check is healthy once running.

// failureThreshold is how many failed probes in a row make a replica that
// passed before unhealthy.
const failureThreshold = 3

// startingProbeInterval caps the probe interval until the first success,
// so that a replacement does not wait a whole interval to go ahead.
const startingProbeInterval = time.Second

// firstProbeDelay is the wait before the second probe of a new replica.
const firstProbeDelay = 10 * time.Millisecond

// probeTarget is what to probe for one container.
type probeTarget struct {
	ID     string
	Health spec.Health
	// Addr is where http and tcp probes connect (invalid: none known).
	Addr netip.AddrPort
}

// key identifies the probe's configuration: a change restarts it.
func (t probeTarget) key() string {
	return fmt.Sprintf("%s|%s|%d|%q|%s|%s|%s", t.ID, t.Health.HTTP, t.Health.TCP, t.Health.Exec,
		time.Duration(t.Health.Interval), time.Duration(t.Health.Timeout), t.Addr)
}

// probeResult is a container's health as its probes found it.
type probeResult struct {
	// Passed is set once a probe succeeded.
	Passed bool
	// Healthy is the current verdict.
	Healthy bool
	// LastErr is the last failure's message ("" after a success).
	LastErr string
}

// prober runs the health probes of this node's replicas.
//
// # Concurrency
//
// Safe for concurrent use. Each probe runs in its own goroutine; sync
// starts and cancels them, stop cancels all and waits. onChange is called
// from probe goroutines whenever a verdict changes; it must not block.
type prober struct {
	drv      runtime.Driver
	log      *slog.Logger
	onChange func()
	wg       sync.WaitGroup

	mu      sync.Mutex // guards all following fields
	probes  map[string]*probeRun
	stopped bool
}

// probeRun is one running probe goroutine and its latest result.
type probeRun struct {
	key    string
	cancel context.CancelFunc
	res    probeResult // guarded by prober.mu
	fails  int         // guarded by prober.mu
}

func newProber(drv runtime.Driver, log *slog.Logger, onChange func()) *prober {
	return &prober{drv: drv, log: log, onChange: onChange, probes: make(map[string]*probeRun)}
}

// sync makes the running probes exactly targets: new ones start, changed
// ones restart (their result is reset), the others stop.
func (p *prober) sync(ctx context.Context, targets []probeTarget) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	want := make(map[string]probeTarget, len(targets))
	for _, t := range targets {
		want[t.ID] = t
	}
	for id, run := range p.probes {
		if t, ok := want[id]; !ok || t.key() != run.key {
			run.cancel()
			delete(p.probes, id)
		}
	}
	for id, t := range want {
		if _, ok := p.probes[id]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		run := &probeRun{key: t.key(), cancel: cancel}
		p.probes[id] = run
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.loop(pctx, run, t)
		}()
	}
}

// result returns the latest result for container id (false: not probed).
func (p *prober) result(id string) (probeResult, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	run, ok := p.probes[id]
	if !ok {
		return probeResult{}, false
	}
	return run.res, true
}

// stop cancels every probe and waits for them.
func (p *prober) stop() {
	p.mu.Lock()
	p.stopped = true
	for id, run := range p.probes {
		run.cancel()
		delete(p.probes, id)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// loop probes t until ctx ends.
func (p *prober) loop(ctx context.Context, run *probeRun, t probeTarget) {
	interval := time.Duration(t.Health.Interval)
	if interval <= 0 {
		interval = time.Duration(spec.DefaultInterval)
	}
	timeout := time.Duration(t.Health.Timeout)
	if timeout <= 0 || timeout > interval {
		timeout = min(time.Duration(spec.DefaultTimeout), interval)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	// Until the first success the probe backs off from firstProbeDelay
	// to startingProbeInterval, so a replica that is up in 100 ms is
	// seen healthy within a few ms of it, not a second later.
	startDelay := firstProbeDelay
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := probeOnce(pctx, p.drv, t)
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		before := run.res
		if err == nil {
			run.fails = 0
			run.res = probeResult{Passed: true, Healthy: true}
		} else {
			run.fails++
			run.res.LastErr = err.Error()
			if run.fails >= failureThreshold {
				run.res.Healthy = false
			}
		}
		after := run.res
		p.mu.Unlock()
		if before.Healthy != after.Healthy {
			p.log.Info("replica health changed", "container", t.ID, "healthy", after.Healthy, "err", after.LastErr)
			p.onChange()
		}
		next := interval
		if !after.Passed {
			next = min(interval, startDelay)
			startDelay = min(2*startDelay, startingProbeInterval)
		}
		timer.Reset(next)
	}
}

// errNoProbeAddr is returned by http and tcp probes without an address.
var errNoProbeAddr = errors.New("node: no address to probe")

// probeOnce runs one probe; nil means healthy. ctx bounds it.
func probeOnce(ctx context.Context, drv runtime.Driver, t probeTarget) error {
	h := t.Health
	switch {
	case len(h.Exec) > 0:
		if drv == nil {
			return errors.New("node: exec probe without a runtime")
		}
		code, err := drv.Exec(ctx, t.ID, h.Exec)
		if err != nil {
			return fmt.Errorf("exec probe: %w", err)
		}
		if code != 0 {
			return fmt.Errorf("exec probe: exit code %d", code)
		}
		return nil
	case h.HTTP != "":
		if !t.Addr.IsValid() {
			return errNoProbeAddr
		}
		path := h.HTTP
		if len(path) == 0 || path[0] != '/' {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.Addr.String()+path, nil)
		if err != nil {
			return fmt.Errorf("http probe: %w", err)
		}
		req.Header.Set("User-Agent", "shoal-probe")
		resp, err := probeClient.Do(req)
		if err != nil {
			return fmt.Errorf("http probe: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 399 {
			return fmt.Errorf("http probe: GET %s: %s", path, resp.Status)
		}
		return nil
	case h.TCP != 0:
		if !t.Addr.IsValid() {
			return errNoProbeAddr
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", t.Addr.String())
		if err != nil {
			return fmt.Errorf("tcp probe: %w", err)
		}
		_ = c.Close()
		return nil
	}
	return errors.New("node: health check has no probe")
}

// probeClient is the HTTP client of http probes: no redirects (a 3xx is
// an answer), no keep-alive (each probe is a fresh connection, as a
// client's would be), no proxy.
var probeClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
	},
}

// probeAddr is where http and tcp probes of replica r connect: port is the
// container port (the first target for http, the tcp probe's port).
func probeAddr(r runtime.Replica, network string, port int, advertise netip.Addr) (netip.AddrPort, error) {
	if network == spec.NetworkHost {
		// The replica listens on $PORT in the node's namespace.
		hp, ok := hostPort(r, port)
		if !ok {
			return netip.AddrPort{}, fmt.Errorf("%w: host-mode replica %s has no port", errNoProbeAddr, r.ID)
		}
		ip := advertise
		if !ip.IsValid() || ip.IsUnspecified() {
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		return netip.AddrPortFrom(ip, uint16(hp)), nil
	}
	if port <= 0 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%w: port %d", errNoProbeAddr, port)
	}
	if r.IP.IsValid() {
		return netip.AddrPortFrom(r.IP, uint16(port)), nil
	}
	if hp, ok := r.HostPorts[port]; ok && advertise.IsValid() && !advertise.IsUnspecified() {
		return netip.AddrPortFrom(advertise, uint16(hp)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("%w: replica %s has no IP and port %d is not mapped", errNoProbeAddr, r.ID, port)
}

// hostPort is the host port of container port port, or the replica's only
// host port (host mode, where the runtime chose it).
func hostPort(r runtime.Replica, port int) (int, bool) {
	if hp, ok := r.HostPorts[port]; ok && hp > 0 && hp <= 65535 {
		return hp, true
	}
	if len(r.HostPorts) == 1 {
		for _, hp := range r.HostPorts {
			if hp > 0 && hp <= 65535 {
				return hp, true
			}
		}
	}
	return 0, false
}

// probePort is the container port a health check connects to (0: none).
func probePort(s spec.Spec) int {
	switch {
	case s.Health == nil:
		return 0
	case s.Health.TCP != 0:
		return s.Health.TCP
	case s.Health.HTTP != "" && len(s.Ports) > 0:
		return s.Ports[0].Target
	}
	return 0
}

// endpointOf is advertise:host-port of the first published port of s on
// replica r ("" without ports or mapping).
func endpointOf(s spec.Spec, r runtime.Replica, advertise netip.Addr) string {
	if len(s.Ports) == 0 || !advertise.IsValid() {
		return ""
	}
	hp, ok := hostPort(r, s.Ports[0].Target)
	if !ok {
		return ""
	}
	return net.JoinHostPort(advertise.String(), strconv.Itoa(hp))
}

// endpointsOf maps the target port of each of s's published ports to the
// address that reaches it on r.
func endpointsOf(s spec.Spec, r runtime.Replica, advertise netip.Addr) map[int]string {
	if len(s.Ports) == 0 || !advertise.IsValid() {
		return nil
	}
	out := make(map[int]string, len(s.Ports))
	for _, p := range s.Ports {
		if hp, ok := hostPort(r, p.Target); ok {
			out[p.Target] = net.JoinHostPort(advertise.String(), strconv.Itoa(hp))
		}
	}
	return out
}

// probeTargets lists the containers to probe: running containers of
// services with a health check.
func probeTargets(actual []runtime.Replica, specs map[string]spec.Spec, advertise netip.Addr) []probeTarget {
	var out []probeTarget
	for _, r := range actual {
		s, ok := specs[r.Service]
		if !ok || s.Health == nil || r.State != runtime.StateRunning {
			continue
		}
		t := probeTarget{ID: r.ID, Health: *s.Health}
		t.Health.Exec = slices.Clone(s.Health.Exec)
		if len(t.Health.Exec) == 0 {
			if a, err := probeAddr(r, s.Network, probePort(s), advertise); err == nil {
				t.Addr = a
			}
		}
		out = append(out, t)
	}
	return out
}
