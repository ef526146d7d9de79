package peer

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	logging "github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// libp2p logs through its own slog shim, to stderr by default; tests
	// that provoke failures (a taken port) would litter the output.
	logging.SetDefaultHandler(discard.Handler())
	// No goroutine is exempt: a closed Host leaves nothing behind.
	goleak.VerifyTestMain(m)
}

// members is a test's view of cluster membership: a set of allowed peer IDs
// and a switch for the address filter.
type members struct {
	mu      sync.RWMutex
	ids     map[peer.ID]bool
	blocked map[netip.Addr]bool
}

func newMembers() *members {
	return &members{ids: map[peer.ID]bool{}, blocked: map[netip.Addr]bool{}}
}

func (m *members) add(ids ...peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		m.ids[id] = true
	}
}

func (m *members) remove(id peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.ids, id)
}

func (m *members) block(ip netip.Addr, blocked bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blocked[ip] = blocked
}

func (m *members) allow(id peer.ID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ids[id]
}

func (m *members) allowAddr(ip netip.Addr) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return !m.blocked[ip]
}

// testHost is a Host with its membership view.
type testHost struct {
	*Host
	members *members
	ip      netip.Addr
}

// addrPort is where other hosts dial this one.
func (th *testHost) addrPort() netip.AddrPort {
	return netip.AddrPortFrom(th.ip, uint16(th.Port()))
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// newTestHost starts a host on ip (default 127.0.0.1), port 0, closed at
// the end of the test. mod may adjust the config.
func newTestHost(t testing.TB, ip string, mod func(*Config)) *testHost {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := newMembers()
	cfg := Config{
		Identity:    key,
		ListenIP:    netip.MustParseAddr(ip),
		Allow:       m.allow,
		AllowAddr:   m.allowAddr,
		CallTimeout: 5 * time.Second,
		Logger:      discard,
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testHost{Host: h, members: m, ip: cfg.ListenIP}
}

// befriend makes every pair of the hosts allow each other.
func befriend(hosts ...*testHost) {
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				a.members.add(b.ID())
			}
		}
	}
}

// echo answers with the request, prefixed.
func echo(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
	return append([]byte("echo:"), req...), nil
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// testCtx is a context for one test step.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
