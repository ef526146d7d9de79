package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/spec"
	"github.com/shoalmesh/shoal/runtime"
)

func addrOf(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestProbeOnceRealSockets(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/moved":
			http.Redirect(w, r, "/nowhere", http.StatusFound) // 3xx is healthy, not followed
		case "/nowhere":
			t.Error("probe followed a redirect")
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	httpAddr := addrOf(t, srv.Listener.Addr().String())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcpAddr := addrOf(t, ln.Addr().String())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := addrOf(t, closed.Addr().String())
	_ = closed.Close()
	defer ln.Close()

	fake := runtime.NewFake()
	if _, err := fake.Start(context.Background(), runtime.ReplicaSpec{ID: "c1", Service: "web"}); err != nil {
		t.Fatal(err)
	}
	fake.SetExecResult(func(id string, cmd []string) int {
		if cmd[0] == "true" {
			return 0
		}
		return 3
	})

	tests := []struct {
		name    string
		target  probeTarget
		healthy bool
	}{
		{"http 204", probeTarget{Health: spec.Health{HTTP: "/ok"}, Addr: httpAddr}, true},
		{"http 302", probeTarget{Health: spec.Health{HTTP: "/moved"}, Addr: httpAddr}, true},
		{"http path without slash", probeTarget{Health: spec.Health{HTTP: "ok"}, Addr: httpAddr}, true},
		{"http 500", probeTarget{Health: spec.Health{HTTP: "/fail"}, Addr: httpAddr}, false},
		{"http refused", probeTarget{Health: spec.Health{HTTP: "/ok"}, Addr: closedAddr}, false},
		{"http without address", probeTarget{Health: spec.Health{HTTP: "/ok"}}, false},
		{"tcp accepted", probeTarget{Health: spec.Health{TCP: 80}, Addr: tcpAddr}, true},
		{"tcp refused", probeTarget{Health: spec.Health{TCP: 80}, Addr: closedAddr}, false},
		{"exec 0", probeTarget{ID: "c1", Health: spec.Health{Exec: []string{"true"}}}, true},
		{"exec 3", probeTarget{ID: "c1", Health: spec.Health{Exec: []string{"false"}}}, false},
		{"exec missing container", probeTarget{ID: "nope", Health: spec.Health{Exec: []string{"true"}}}, false},
		{"no probe", probeTarget{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := probeOnce(ctx, fake, tt.target)
			if (err == nil) != tt.healthy {
				t.Fatalf("probe error %v, want healthy=%v", err, tt.healthy)
			}
		})
	}
}

func TestProbeAddr(t *testing.T) {
	adv := netip.MustParseAddr("10.0.0.5")
	ip := netip.MustParseAddr("10.88.0.7")
	tests := []struct {
		name    string
		r       runtime.Replica
		network string
		port    int
		adv     netip.Addr
		want    string
	}{
		{"bridge uses the container IP", runtime.Replica{IP: ip, HostPorts: map[int]int{80: 30001}}, "bridge", 80, adv, "10.88.0.7:80"},
		{"bridge without IP uses the host port", runtime.Replica{HostPorts: map[int]int{80: 30001}}, "bridge", 80, adv, "10.0.0.5:30001"},
		{"bridge without IP or mapping", runtime.Replica{}, "bridge", 80, adv, ""},
		{"host uses $PORT on the advertise IP", runtime.Replica{HostPorts: map[int]int{41234: 41234}}, "host", 80, adv, "10.0.0.5:41234"},
		{"host without advertise IP", runtime.Replica{HostPorts: map[int]int{41234: 41234}}, "host", 80, netip.Addr{}, "127.0.0.1:41234"},
		{"host without port", runtime.Replica{}, "host", 80, adv, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := probeAddr(tt.r, tt.network, tt.port, tt.adv)
			if tt.want == "" {
				if !errors.Is(err, errNoProbeAddr) {
					t.Fatalf("got %v, %v; want errNoProbeAddr", got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
	s := spec.Spec{Ports: []spec.Port{{Published: 8080, Target: 80}}}
	if e := endpointOf(s, runtime.Replica{HostPorts: map[int]int{80: 30001}}, adv); e != "10.0.0.5:30001" {
		t.Fatalf("endpoint %q", e)
	}
	if e := endpointOf(spec.Spec{}, runtime.Replica{HostPorts: map[int]int{80: 30001}}, adv); e != "" {
		t.Fatalf("endpoint without ports %q", e)
	}
}

// The prober's verdicts: starting until the first success, unhealthy
// after failureThreshold failures, healthy again on a success.
func TestProberLifecycle(t *testing.T) {
	var ok atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ok.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	var changes atomic.Int32
	p := newProber(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { changes.Add(1) })
	defer p.stop()
	target := probeTarget{ID: "c1", Addr: addrOf(t, srv.Listener.Addr().String()),
		Health: spec.Health{HTTP: "/", Interval: spec.Duration(5 * time.Millisecond), Timeout: spec.Duration(time.Second)}}
	p.sync(context.Background(), []probeTarget{target})

	waitFor := func(what string, cond func(probeResult) bool) {
		t.Helper()
		var last probeResult
		if !pollUntil(5*time.Second, func() bool { last, _ = p.result("c1"); return cond(last) }) {
			t.Fatalf("not %s after 5s; last %+v", what, last)
		}
	}
	waitFor("a failure recorded", func(r probeResult) bool { return r.LastErr != "" })
	if r, _ := p.result("c1"); r.Passed || r.Healthy {
		t.Fatalf("starting replica reported %+v", r)
	}
	ok.Store(true)
	waitFor("healthy", func(r probeResult) bool { return r.Passed && r.Healthy && r.LastErr == "" })
	ok.Store(false)
	waitFor("unhealthy", func(r probeResult) bool { return r.Passed && !r.Healthy })
	ok.Store(true)
	waitFor("healthy again", func(r probeResult) bool { return r.Healthy })
	// The result is stored before onChange runs: wait for the call.
	if !pollUntil(5*time.Second, func() bool { return changes.Load() >= 3 }) {
		t.Fatalf("onChange called %d times, want at least 3", changes.Load())
	}

	// A changed target restarts the probe; a removed one stops it.
	target.Health.Interval = spec.Duration(time.Hour)
	p.sync(context.Background(), []probeTarget{target})
	p.sync(context.Background(), nil)
	if _, found := p.result("c1"); found {
		t.Fatal("removed probe still has a result")
	}
}

// pollUntil checks cond every few milliseconds until it holds (true) or
// timeout passes (false).
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}
