package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

const (
	testProto protocol.ID = "/shoal/test/1"
	warmProto protocol.ID = "/shoal/warm/1"
)

func TestNewValidation(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := func() Config {
		return Config{
			Identity: key,
			ListenIP: netip.MustParseAddr("127.0.0.1"),
			Allow:    func(peer.ID) bool { return true },
			Logger:   discard,
		}
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no identity", func(c *Config) { c.Identity = nil }, "Identity is required"},
		{"no allow", func(c *Config) { c.Allow = nil }, "Allow is required"},
		{"no listen IP", func(c *Config) { c.ListenIP = netip.Addr{} }, "ListenIP is required"},
		{"negative port", func(c *Config) { c.Port = -1 }, "out of range"},
		{"port too big", func(c *Config) { c.Port = 70000 }, "out of range"},
		{"negative size", func(c *Config) { c.MaxMessageSize = -1 }, "must not be negative"},
		{"negative timeout", func(c *Config) { c.CallTimeout = -time.Second }, "must not be negative"},
		{"unassigned IP", func(c *Config) { c.ListenIP = netip.MustParseAddr("192.0.2.1") }, "start libp2p host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.mod(&cfg)
			h, err := New(cfg)
			if err == nil {
				h.Close()
				t.Fatal("New succeeded, want error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestPortAndAddrs(t *testing.T) {
	a := newTestHost(t, "", nil)
	if a.Port() <= 0 {
		t.Fatalf("Port() = %d", a.Port())
	}
	want := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", a.Port())
	var got []string
	for _, m := range a.Addrs() {
		got = append(got, m.String())
	}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("Addrs() = %v, want [%s]", got, want)
	}
	if a.Libp2p().ID() != a.ID() {
		t.Fatal("Libp2p().ID() differs from ID()")
	}

	// Without SO_REUSEPORT a second host cannot take the same port.
	_, err := New(Config{
		Identity: mustKey(t),
		ListenIP: netip.MustParseAddr("127.0.0.1"),
		Port:     a.Port(),
		Allow:    func(peer.ID) bool { return true },
		Logger:   discard,
	})
	if err == nil {
		t.Fatal("second host on the same port started")
	}
}

func mustKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCallRoundTrip(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", nil)
	befriend(a, b)
	var from peer.ID
	var mu sync.Mutex
	b.Handle(testProto, func(ctx context.Context, f peer.ID, req []byte) ([]byte, error) {
		mu.Lock()
		from = f
		mu.Unlock()
		return echo(ctx, f, req)
	})

	tests := []struct {
		name string
		req  []byte
	}{
		{"empty", nil},
		{"small", []byte("hello")},
		{"one MiB", bytes.Repeat([]byte{0xab}, 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, tt.req)
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if want := append([]byte("echo:"), tt.req...); !bytes.Equal(resp, want) {
				t.Fatalf("response of %d bytes, want %d", len(resp), len(want))
			}
		})
	}
	mu.Lock()
	if from != a.ID() {
		t.Errorf("handler saw caller %s, want %s", from, a.ID())
	}
	mu.Unlock()
	if s := a.Stats(); s.Calls != 3 || s.CallErrors != 0 {
		t.Fatalf("caller stats %+v, want 3 calls, 0 errors", s)
	}
	if s := b.Stats(); s.Served != 3 || s.BadFrames != 0 || s.Refused != 0 {
		t.Fatalf("server stats %+v", s)
	}
	// Once connected, the address is optional.
	if _, err := a.Call(testCtx(t), b.ID(), netip.AddrPort{}, testProto, []byte("x")); err != nil {
		t.Fatalf("Call without address on a live connection: %v", err)
	}
}

func TestCallErrors(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", func(c *Config) { c.MaxMessageSize = 1024 })
	befriend(a, b)
	b.Handle(testProto, func(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
		switch string(req) {
		case "fail":
			return nil, errors.New("no such service: web")
		case "panic":
			panic("handler bug")
		case "big":
			return make([]byte, 2048), nil
		}
		return req, nil
	})

	tests := []struct {
		name       string
		proto      protocol.ID
		req        []byte
		wantRemote string // non-empty: want a *RemoteError with this message
		wantIs     error
	}{
		{name: "handler error", proto: testProto, req: []byte("fail"), wantRemote: "no such service: web"},
		{name: "handler panic", proto: testProto, req: []byte("panic"), wantRemote: internalError},
		{name: "response over server limit", proto: testProto, req: []byte("big"), wantRemote: "response too large: 2048 bytes, limit 1024"},
		{name: "unknown protocol", proto: "/shoal/nope/1", req: []byte("x"), wantIs: ErrUnsupported},
		{name: "request over server limit", proto: testProto, req: make([]byte, 4096), wantIs: network.ErrReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Call(testCtx(t), b.ID(), b.addrPort(), tt.proto, tt.req)
			if err == nil {
				t.Fatal("Call succeeded, want error")
			}
			if !strings.Contains(err.Error(), b.ID().String()) {
				t.Errorf("error %q does not name the peer", err)
			}
			if tt.wantRemote != "" {
				var re *RemoteError
				if !errors.As(err, &re) {
					t.Fatalf("error %v (%T), want *RemoteError", err, err)
				}
				if re.Message != tt.wantRemote || re.Peer != b.ID() {
					t.Fatalf("RemoteError %+v, want message %q from %s", re, tt.wantRemote, b.ID())
				}
				return
			}
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("error %v, want %v", err, tt.wantIs)
			}
		})
	}
	if s := b.Stats(); s.BadFrames != 1 {
		t.Errorf("server BadFrames = %d, want 1 (the oversized request)", s.BadFrames)
	}
	if s := a.Stats(); s.CallErrors != uint64(len(tests)) {
		t.Errorf("caller CallErrors = %d, want %d", s.CallErrors, len(tests))
	}

	// A request over the caller's own limit never leaves.
	small := newTestHost(t, "", func(c *Config) { c.MaxMessageSize = 10 })
	befriend(small, b)
	if _, err := small.Call(testCtx(t), b.ID(), b.addrPort(), testProto, make([]byte, 11)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized request: %v, want ErrTooLarge", err)
	}
	// A response over the caller's limit is rejected as it arrives.
	if _, err := small.Call(testCtx(t), b.ID(), b.addrPort(), testProto, []byte("0123456789")); err != nil {
		t.Fatalf("response at the caller's limit: %v", err)
	}
	b.Handle(testProto, func(context.Context, peer.ID, []byte) ([]byte, error) { return make([]byte, 11), nil })
	if _, err := small.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized response: %v, want ErrTooLarge", err)
	}
	if s := small.Stats(); s.BadFrames != 1 {
		t.Errorf("caller BadFrames = %d, want 1", s.BadFrames)
	}
}

func TestConcurrentCalls(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", nil)
	befriend(a, b)
	a.Handle(testProto, echo)
	b.Handle(testProto, echo)

	const workers, calls = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for w := range workers {
		for _, pair := range [][2]*testHost{{a, b}, {b, a}} {
			from, to := pair[0], pair[1]
			wg.Go(func() {
				for i := range calls {
					req := fmt.Appendf(nil, "%d-%d", w, i)
					resp, err := from.Call(context.Background(), to.ID(), to.addrPort(), testProto, req)
					if err != nil {
						errs <- err
						return
					}
					if string(resp) != "echo:"+string(req) {
						errs <- fmt.Errorf("response %q to %q", resp, req)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, h := range []*testHost{a, b} {
		if s := h.Stats(); s.Calls != workers*calls || s.Served != workers*calls || s.CallErrors != 0 {
			t.Errorf("stats %+v, want %d calls and served", s, workers*calls)
		}
	}
}

func TestCallRefusedByGater(t *testing.T) {
	tests := []struct {
		name string
		// setup decides who allows whom; the caller is a, the target b.
		setup func(a, b *testHost)
		// refuser is the host whose gater must count the refusal.
		refuser func(a, b *testHost) *testHost
		wantIs  error
	}{
		{
			name:    "listener refuses the caller",
			setup:   func(a, b *testHost) { a.members.add(b.ID()) },
			refuser: func(_, b *testHost) *testHost { return b },
		},
		{
			name:    "caller refuses the target",
			setup:   func(a, b *testHost) { b.members.add(a.ID()) },
			refuser: func(a, _ *testHost) *testHost { return a },
			wantIs:  ErrRefused,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestHost(t, "", nil)
			b := newTestHost(t, "", nil)
			tt.setup(a, b)
			b.Handle(testProto, echo)
			_, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, []byte("x"))
			if err == nil {
				t.Fatal("Call succeeded through the gater")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("error %v, want %v", err, tt.wantIs)
			}
			r := tt.refuser(a, b)
			eventually(t, "refusal to be counted", func() bool { return r.Stats().Refused > 0 })
			if b.Stats().Served != 0 {
				t.Fatal("handler ran for a refused caller")
			}
			if a.Libp2p().Network().Connectedness(b.ID()) == network.Connected {
				t.Fatal("refused connection is still up")
			}

			// Admitting the peer makes the next call work at once: no
			// dial backoff.
			befriend(a, b)
			if _, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, []byte("x")); err != nil {
				t.Fatalf("Call after admission: %v", err)
			}
		})
	}
}

// TestPartitionByAddress uses one loopback IP per host, so the hosts can
// tell each other apart by address: a partitions itself from b, c still
// reaches both.
func TestPartitionByAddress(t *testing.T) {
	a := newTestHost(t, "127.0.0.2", nil)
	b := newTestHost(t, "127.0.0.3", nil)
	c := newTestHost(t, "127.0.0.4", nil)
	befriend(a, b, c)
	for _, h := range []*testHost{a, b, c} {
		h.Handle(testProto, echo)
	}
	call := func(from, to *testHost) error {
		_, err := from.Call(testCtx(t), to.ID(), to.addrPort(), testProto, []byte("ping"))
		return err
	}
	connected := func(x, y *testHost) bool {
		return x.Libp2p().Network().Connectedness(y.ID()) == network.Connected
	}
	mustCall := func(from, to *testHost) {
		t.Helper()
		if err := call(from, to); err != nil {
			t.Fatalf("call %s->%s: %v", from.ip, to.ip, err)
		}
	}
	mustCall(a, b)

	// The filter guards new connections only: the live one keeps working.
	a.members.block(b.ip, true)
	mustCall(a, b)
	mustCall(b, a)

	// After ClosePeer it is gone and no new one can be made, either way.
	if err := a.ClosePeer(b.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "connection to close on both sides", func() bool { return !connected(a, b) && !connected(b, a) })
	refusedBefore := a.Stats().Refused
	if err := call(a, b); !errors.Is(err, ErrRefused) {
		t.Fatalf("a->b across the partition: %v, want ErrRefused", err)
	}
	if err := call(b, a); err == nil {
		t.Fatal("b->a across the partition succeeded")
	}
	if a.Stats().Refused <= refusedBefore {
		t.Fatal("refusals were not counted")
	}
	// c is on neither side of the cut; b sees c's source IP, and a accepts
	// c because of it.
	mustCall(c, a)
	mustCall(c, b)
	mustCall(a, c)

	// Healing the partition allows calls again, at once.
	a.members.block(b.ip, false)
	mustCall(a, b)
	mustCall(b, a)
}

func TestAllowAddrBlocksInbound(t *testing.T) {
	a := newTestHost(t, "127.0.0.2", nil)
	b := newTestHost(t, "127.0.0.3", nil)
	befriend(a, b)
	b.Handle(testProto, echo)
	b.members.block(a.ip, true) // b refuses a before the handshake
	if _, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil); err == nil {
		t.Fatal("call accepted by a host that blocks the caller's address")
	}
	eventually(t, "inbound refusal", func() bool { return b.Stats().Refused > 0 })
	if b.Stats().Served != 0 {
		t.Fatal("handler ran")
	}
	b.members.block(a.ip, false)
	if _, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil); err != nil {
		t.Fatalf("call after unblocking: %v", err)
	}
}

func TestClosePeerOnMemberLeave(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", nil)
	befriend(a, b)
	b.Handle(testProto, echo)
	if _, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil); err != nil {
		t.Fatal(err)
	}
	// b leaves a's view of the cluster: a closes it out.
	a.members.remove(b.ID())
	if err := a.ClosePeer(b.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("call to a departed member: %v, want ErrRefused", err)
	}
}

func TestCallContext(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", nil)
	c := newTestHost(t, "", func(c *Config) { c.CallTimeout = 300 * time.Millisecond })
	befriend(a, b, c)
	started := make(chan struct{}, 1)
	b.Handle(testProto, func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done() // until the host closes or its CallTimeout passes
		return nil, ctx.Err()
	})
	b.Handle(warmProto, echo)
	// Connect first, so the short timeouts below only cover the call.
	for _, h := range []*testHost{a, c} {
		if _, err := h.Call(testCtx(t), b.ID(), b.addrPort(), warmProto, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitStarted := func(t *testing.T) {
		t.Helper()
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("handler never started")
		}
	}

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := a.Call(ctx, b.ID(), b.addrPort(), testProto, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want DeadlineExceeded", err)
		}
		waitStarted(t)
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := a.Call(ctx, b.ID(), b.addrPort(), testProto, nil)
			done <- err
		}()
		waitStarted(t)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want Canceled", err)
		}
	})
	t.Run("config timeout", func(t *testing.T) {
		_, err := c.Call(context.Background(), b.ID(), b.addrPort(), testProto, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want DeadlineExceeded", err)
		}
		waitStarted(t)
	})
}

func TestServerTimeoutCancelsHandler(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", func(c *Config) { c.CallTimeout = 100 * time.Millisecond })
	befriend(a, b)
	b.Handle(testProto, func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	_, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Message != context.DeadlineExceeded.Error() {
		t.Fatalf("error %v, want the handler's deadline as a RemoteError", err)
	}
}

func TestCloseWaitsForHandlers(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", nil)
	befriend(a, b)
	started := make(chan struct{})
	var returned bool
	var mu sync.Mutex
	b.Handle(testProto, func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		close(started)
		<-ctx.Done()
		mu.Lock()
		returned = true
		mu.Unlock()
		return nil, ctx.Err()
	})
	done := make(chan error, 1)
	go func() {
		_, err := a.Call(context.Background(), b.ID(), b.addrPort(), testProto, nil)
		done <- err
	}()
	<-started
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !returned {
		t.Error("Close returned before the handler")
	}
	mu.Unlock()
	if err := <-done; err == nil {
		t.Fatal("call to a closing host succeeded")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.Call(context.Background(), a.ID(), a.addrPort(), testProto, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: %v, want ErrClosed", err)
	}
}

// TestBadFramesOnRawStream sends malformed requests on raw streams; each is
// counted and dropped, and the host keeps serving.
func TestBadFramesOnRawStream(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", func(c *Config) { c.MaxMessageSize = 1024 })
	befriend(a, b)
	b.Handle(testProto, echo)
	if _, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, []byte("warm up")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		raw  []byte
	}{
		{"nothing", nil},
		{"truncated header", []byte{0, 0, 0}},
		{"truncated payload", []byte{0, 0, 0, 0, 10, 'a', 'b'}},
		{"oversized", []byte{0, 0xff, 0xff, 0xff, 0xff}},
		{"just over the limit", []byte{0, 0, 0, 4, 1}},
		{"error kind as request", []byte{1, 0, 0, 0, 1, 'x'}},
		{"unknown kind", []byte{7, 0, 0, 0, 0}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := a.Libp2p().NewStream(testCtx(t), b.ID(), testProto)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// b may reset the stream as soon as it has seen enough, even
			// before our write returns.
			if _, err := s.Write(tt.raw); err != nil && !errors.Is(err, network.ErrReset) {
				t.Fatal(err)
			}
			if err := s.CloseWrite(); err != nil && !errors.Is(err, network.ErrReset) {
				t.Fatal(err)
			}
			_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(s)
			if err == nil || len(got) != 0 {
				t.Fatalf("got %q, %v; want the stream reset with no answer", got, err)
			}
			eventually(t, "bad frame to be counted", func() bool { return b.Stats().BadFrames == uint64(i+1) })

			resp, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, []byte("next"))
			if err != nil || string(resp) != "echo:next" {
				t.Fatalf("good call after a bad frame: %q, %v", resp, err)
			}
		})
	}
}

// TestBadResponseFrame has a raw handler answer with a frame of an unknown
// kind: the caller counts it and fails cleanly.
func TestBadResponseFrame(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", nil)
	befriend(a, b)
	b.Libp2p().SetStreamHandler(testProto, func(s network.Stream) {
		defer s.Close()
		if _, _, err := ReadFrame(s, 0); err != nil {
			s.Reset()
			return
		}
		_ = WriteFrame(s, 9, []byte("?"))
	})
	_, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil)
	if !errors.Is(err, ErrBadFrame) {
		t.Fatalf("error %v, want ErrBadFrame", err)
	}
	if a.Stats().BadFrames != 1 {
		t.Fatalf("BadFrames = %d, want 1", a.Stats().BadFrames)
	}
}

func TestHandleRemove(t *testing.T) {
	a := newTestHost(t, "", nil)
	b := newTestHost(t, "", nil)
	befriend(a, b)
	b.Handle(testProto, echo)
	if _, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil); err != nil {
		t.Fatal(err)
	}
	b.Handle(testProto, nil)
	eventually(t, "handler removal", func() bool {
		_, err := a.Call(testCtx(t), b.ID(), b.addrPort(), testProto, nil)
		return errors.Is(err, ErrUnsupported)
	})
}
