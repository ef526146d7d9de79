package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Generous bounds: the machine is shared and tests run with -race. A
// member whose join broadcast was lost is learnt at the next push-pull,
// every 15 s with memberlist's local config, so convergence may take that
// long (it did under the full suite in CI: one member missing after 10 s).
const (
	convergeTimeout = 30 * time.Second
	failTimeout     = 20 * time.Second
)

func TestFiveNodesJoinViaOneSeed(t *testing.T) {
	t.Parallel()
	ip := testIP()
	var nodes []*testNode
	for i := range 5 {
		nodes = append(nodes, start(t, localConfig(fmt.Sprintf("n%d", i), ip)))
	}
	seed := nodes[0].addr()
	for _, n := range nodes[1:] {
		got, err := n.Join(context.Background(), []string{seed})
		if err != nil || got != 1 {
			t.Fatalf("Join = %d, %v; want 1, nil", got, err)
		}
	}
	eventually(t, convergeTimeout, "5 alive members everywhere", allAlive(nodes, 5))
	for _, n := range nodes {
		ms := n.Members()
		for i, m := range ms {
			if want := fmt.Sprintf("n%d", i); m.Name != want || m.Status != StatusAlive || !m.Alive() {
				t.Fatalf("%s: member %d = %s %s, want %s alive (sorted)", n.LocalMember().Name, i, m.Name, m.Status, want)
			}
			if m.Addr.String() != ip || m.Port == 0 {
				t.Fatalf("member %s at %v:%d, want %s and a port", m.Name, m.Addr, m.Port, ip)
			}
		}
	}
	// Every node saw the others join.
	for _, n := range nodes {
		for _, other := range nodes {
			n.waitEvent(convergeTimeout, "join of "+other.LocalMember().Name, memberEvent(EventJoin, other.LocalMember().Name))
		}
	}
}

func TestLocalMemberReportsBoundPort(t *testing.T) {
	t.Parallel()
	n := start(t, localConfig("solo", testIP()))
	m := n.LocalMember()
	if m.Port == 0 || m.Status != StatusAlive || m.Name != "solo" {
		t.Fatalf("LocalMember = %+v", m)
	}
	// The port is really ours: binding it again fails.
	ln, err := net.Listen("tcp", n.addr())
	if err == nil {
		ln.Close()
		t.Fatalf("nothing listens on %s", n.addr())
	}
	if n.NumAlive() != 1 {
		t.Fatalf("NumAlive = %d, want 1", n.NumAlive())
	}
	n.waitEvent(convergeTimeout, "own join", memberEvent(EventJoin, "solo"))
}

func TestJoinErrors(t *testing.T) {
	t.Parallel()
	n := start(t, localConfig("lonely", testIP()))
	if _, err := n.Join(context.Background(), nil); !errors.Is(err, ErrNoSeeds) {
		t.Fatalf("Join(nil) error = %v, want ErrNoSeeds", err)
	}

	// Nothing listens at the seed: Join retries until ctx ends.
	ln, err := net.Listen("tcp", testIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	got, err := n.Join(ctx, []string{dead})
	if got != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Join(dead seed) = %d, %v; want 0, DeadlineExceeded", got, err)
	}

	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := n.Join(cancelled, []string{dead}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Join(cancelled ctx) error = %v, want Canceled", err)
	}

	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Join(context.Background(), []string{dead}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Join after Shutdown error = %v, want ErrShutdown", err)
	}
	if err := n.Notify([]byte("x")); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Notify after Shutdown error = %v, want ErrShutdown", err)
	}
	if err := n.SetTags(Tags{}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("SetTags after Shutdown error = %v, want ErrShutdown", err)
	}
	if err := n.Leave(); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Leave after Shutdown error = %v, want ErrShutdown", err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestJoinRetriesUntilSeedStarts(t *testing.T) {
	t.Parallel()
	ip := testIP()
	// Reserve a port for the seed, then free it: nothing listens there yet.
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	seedPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	logs := newCaptureHandler(slog.LevelWarn)
	cfg := localConfig("joiner", ip)
	cfg.Logger = slog.New(logs)
	cfg.RetryJoinInterval = 50 * time.Millisecond
	cfg.RetryJoinMax = 200 * time.Millisecond
	joiner := start(t, cfg)

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := joiner.Join(context.Background(), []string{net.JoinHostPort(ip, strconv.Itoa(seedPort))})
		done <- result{n, err}
	}()

	// Wait until a failed attempt was logged at WARN, then start the seed.
	deadline := time.After(convergeTimeout)
	for logged := false; !logged; {
		recs, wake := logs.records()
		for _, r := range recs {
			if r.Level == slog.LevelWarn && r.Message == "join attempt failed" && attr(r, "attempt") == "1" {
				logged = true
			}
		}
		if !logged {
			select {
			case <-wake:
			case <-deadline:
				t.Fatal("no WARN for the failed join attempt")
			}
		}
	}
	seedCfg := localConfig("seed", ip)
	seedCfg.Serf.MemberlistConfig.BindPort = seedPort
	seed := start(t, seedCfg)

	select {
	case r := <-done:
		if r.err != nil || r.n != 1 {
			t.Fatalf("Join = %d, %v; want 1, nil", r.n, r.err)
		}
	case <-time.After(convergeTimeout):
		t.Fatal("Join did not succeed after the seed started")
	}
	eventually(t, convergeTimeout, "both alive", allAlive([]*testNode{seed, joiner}, 2))
}

func TestTagsTravelAndUpdate(t *testing.T) {
	t.Parallel()
	ip := testIP()
	cfgA := localConfig("a", ip)
	cfgA.Tags = fullTags()
	a := start(t, cfgA)
	b := start(t, localConfig("b", ip))
	if _, err := b.Join(context.Background(), []string{a.addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, convergeTimeout, "b sees a", func() bool { _, ok := b.member("a"); return ok })
	m, _ := b.member("a")
	if m.TagsErr != nil || !reflect.DeepEqual(m.Tags, fullTags()) {
		t.Fatalf("b sees a's tags %+v (%v), want %+v", m.Tags, m.TagsErr, fullTags())
	}
	if lm := a.LocalMember(); !reflect.DeepEqual(lm.Tags, fullTags()) {
		t.Fatalf("a's own tags %+v", lm.Tags)
	}

	updated := fullTags()
	updated.RuntimeReady = false
	updated.RuntimeReason = "containerd down"
	updated.Labels = map[string]string{"zone": "b"}
	if err := a.SetTags(updated); err != nil {
		t.Fatalf("SetTags: %v", err)
	}
	ev := b.waitEvent(convergeTimeout, "update of a", func(ev Event) bool {
		return memberEvent(EventUpdate, "a")(ev) && reflect.DeepEqual(ev.Members[0].Tags, updated)
	})
	if ev.Members[0].Status != StatusAlive {
		t.Fatalf("updated member status %s", ev.Members[0].Status)
	}
	if m, _ := b.member("a"); !reflect.DeepEqual(m.Tags, updated) {
		t.Fatalf("b's Members shows a's tags %+v, want %+v", m.Tags, updated)
	}
	if err := a.SetTags(Tags{Labels: map[string]string{"x": string(make([]byte, 600))}}); !errors.Is(err, ErrTagsTooLarge) {
		t.Fatalf("SetTags(too large) error = %v, want ErrTagsTooLarge", err)
	}
	if s := b.Stats(); s.BadTags != 0 || s.Encrypted {
		t.Fatalf("Stats = %+v", s)
	}
}

func TestNotice(t *testing.T) {
	t.Parallel()
	ip := testIP()
	a := start(t, localConfig("a", ip))
	b := start(t, localConfig("b", ip))
	if _, err := b.Join(context.Background(), []string{a.addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, convergeTimeout, "both alive", allAlive([]*testNode{a, b}, 2))

	small := []byte("svc/web@42")
	big := make([]byte, MaxNoticeSize)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{small, big} {
		if err := a.Notify(p); err != nil {
			t.Fatalf("Notify(%d bytes): %v", len(p), err)
		}
		isIt := func(ev Event) bool { return ev.Type == EventNotice && bytes.Equal(ev.Notice, p) }
		// Well within the 15s push/pull interval: the notice was gossiped.
		b.waitEvent(5*time.Second, fmt.Sprintf("notice of %d bytes", len(p)), isIt)
		a.waitEvent(5*time.Second, "own notice", isIt)
	}
	if err := a.Notify(make([]byte, MaxNoticeSize+1)); !errors.Is(err, ErrNoticeTooLarge) {
		t.Fatalf("Notify(too large) error = %v, want ErrNoticeTooLarge", err)
	}
	if s := a.Stats(); s.NoticesSent != 2 || s.NoticesReceived != 2 {
		t.Fatalf("a stats %+v, want 2 sent, 2 received", s)
	}
	if s := b.Stats(); s.NoticesReceived != 2 || s.EventsDropped != 0 {
		t.Fatalf("b stats %+v, want 2 received, none dropped", s)
	}
}

func TestFailAndLeave(t *testing.T) {
	t.Parallel()
	ip := testIP()
	a := start(t, localConfig("a", ip))
	b := start(t, localConfig("b", ip))
	c := start(t, localConfig("c", ip))
	for _, n := range []*testNode{b, c} {
		if _, err := n.Join(context.Background(), []string{a.addr()}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, convergeTimeout, "3 alive", allAlive([]*testNode{a, b, c}, 3))

	// c crashes: a sees it suspect, then failed.
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	sawSuspect := false
	eventually(t, failTimeout, "a sees c failed", func() bool {
		m, _ := a.member("c")
		sawSuspect = sawSuspect || m.Status == StatusSuspect
		return m.Status == StatusFailed
	})
	if !sawSuspect {
		t.Error("a never reported c as suspect before failed")
	}
	ev := a.waitEvent(convergeTimeout, "fail of c", memberEvent(EventFail, "c"))
	if ev.Members[0].Status != StatusFailed {
		t.Fatalf("fail event status %s", ev.Members[0].Status)
	}
	if m, _ := a.member("c"); m.Alive() {
		t.Fatal("failed member reports Alive")
	}
	if a.NumAlive() != 2 {
		t.Fatalf("NumAlive = %d, want 2", a.NumAlive())
	}

	// b leaves gracefully: a sees it left, not failed.
	if err := b.Leave(); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	eventually(t, convergeTimeout, "a sees b left", func() bool {
		m, _ := a.member("b")
		return m.Status == StatusLeft
	})
	a.waitEvent(convergeTimeout, "leave of b", memberEvent(EventLeave, "b"))
	if ev := a.waitEvent(convergeTimeout, "any event about b", func(ev Event) bool {
		return memberEvent(EventFail, "b")(ev) || memberEvent(EventLeave, "b")(ev)
	}); ev.Type != EventLeave {
		t.Fatalf("b's departure seen as %s, want leave", ev.Type)
	}
	if a.NumAlive() != 1 {
		t.Fatalf("NumAlive = %d, want 1", a.NumAlive())
	}
	// The Events channel of a node that left is closed.
	eventually(t, convergeTimeout, "b's Events closed", func() bool {
		select {
		case _, open := <-b.Events():
			return !open
		default:
			return false
		}
	})
}

func TestEncryption(t *testing.T) {
	t.Parallel()
	ip := testIP()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	withKey := func(name string, k []byte) *Config {
		c := localConfig(name, ip)
		c.EncryptKey = k
		return c
	}
	a := start(t, withKey("a", key))
	b := start(t, withKey("b", key))
	if _, err := b.Join(context.Background(), []string{a.addr()}); err != nil {
		t.Fatalf("same key: Join: %v", err)
	}
	eventually(t, convergeTimeout, "a and b alive", allAlive([]*testNode{a, b}, 2))
	if !a.Stats().Encrypted {
		t.Fatal("Stats.Encrypted is false")
	}

	// A notice of the largest size still travels encrypted.
	big := bytes.Repeat([]byte{7}, MaxNoticeSize)
	if err := a.Notify(big); err != nil {
		t.Fatal(err)
	}
	b.waitEvent(5*time.Second, "encrypted notice", func(ev Event) bool {
		return ev.Type == EventNotice && bytes.Equal(ev.Notice, big)
	})

	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"other-key", otherKey},
		{"no-key", nil},
	} {
		intruder := start(t, withKey(tc.name, tc.key))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n, err := intruder.Join(ctx, []string{a.addr()})
		cancel()
		if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Join = %d, %v; want failure", tc.name, n, err)
		}
		if _, ok := a.member(tc.name); ok {
			t.Fatalf("%s appears in a's members", tc.name)
		}
		if intruder.NumAlive() != 1 {
			t.Fatalf("%s sees %d alive members", tc.name, intruder.NumAlive())
		}
	}
	if a.NumAlive() != 2 || b.NumAlive() != 2 {
		t.Fatalf("cluster disturbed: a sees %d, b sees %d alive", a.NumAlive(), b.NumAlive())
	}
}

func TestKeyringPersisted(t *testing.T) {
	t.Parallel()
	ip := testIP()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfgA := localConfig("a", ip)
	cfgA.EncryptKey = key
	a := start(t, cfgA)

	path := filepath.Join(t.TempDir(), "keyring.json")
	first := localConfig("b", ip)
	first.EncryptKey = key
	first.KeyringPath = path
	b := start(t, first)
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("keyring not written: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("keyring mode %o, want 600", perm)
	}

	// Restart without the key: the keyring file keeps it encrypted.
	again := localConfig("b", ip)
	again.KeyringPath = path
	b2 := start(t, again)
	if !b2.Stats().Encrypted {
		t.Fatal("restarted node is not encrypted")
	}
	if _, err := b2.Join(context.Background(), []string{a.addr()}); err != nil {
		t.Fatalf("restarted node cannot join: %v", err)
	}
	eventually(t, convergeTimeout, "a and b alive", allAlive([]*testNode{a, b2}, 2))

	// A missing keyring file and no key: not encrypted.
	plain := localConfig("c", ip)
	plain.KeyringPath = filepath.Join(t.TempDir(), "none")
	if c := start(t, plain); c.Stats().Encrypted {
		t.Fatal("node without key or keyring is encrypted")
	}
}

func TestRestartRejoinsFromSnapshot(t *testing.T) {
	t.Parallel()
	ip := testIP()
	a := start(t, localConfig("a", ip))
	snap := filepath.Join(t.TempDir(), "serf.snapshot")
	cfgB := localConfig("b", ip)
	cfgB.SnapshotPath = snap
	b := start(t, cfgB)
	if _, err := b.Join(context.Background(), []string{a.addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, convergeTimeout, "both alive", allAlive([]*testNode{a, b}, 2))
	// serf records peers in the snapshot asynchronously, on the path that
	// also feeds Events: once b delivered a's join, a is in the snapshot.
	b.waitEvent(convergeTimeout, "join of a", memberEvent(EventJoin, "a"))
	port := b.LocalMember().Port

	// b crashes; a declares it failed.
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, failTimeout, "a sees b failed", func() bool {
		m, _ := a.member("b")
		return m.Status == StatusFailed
	})

	// b restarts at the same address with the snapshot and no seeds.
	again := localConfig("b", ip)
	again.SnapshotPath = snap
	again.Serf.MemberlistConfig.BindPort = port
	dbg := newCaptureHandler(slog.LevelDebug)
	again.Logger = slog.New(dbg)
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(snap)
			t.Logf("snapshot:\n%s", data)
			recs, _ := dbg.records()
			for _, r := range recs {
				t.Logf("%v %s %s", r.Level, attr(r, "component"), r.Message)
			}
		}
	})
	b2 := start(t, again)
	eventually(t, convergeTimeout, "a sees b alive again", func() bool {
		m, _ := a.member("b")
		return m.Status == StatusAlive
	})
	eventually(t, convergeTimeout, "b sees a", func() bool {
		m, ok := b2.member("a")
		return ok && m.Status == StatusAlive
	})
}

func TestCustomTransport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		advertiseAddr string // "" lets the transport choose
	}{
		{"transport advertises", ""},
		{"advertise addr without port", "self"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip := testIP()
			nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
				BindAddrs: []string{ip},
				BindPort:  0,
				Logger:    StdLogger(discard),
			})
			if err != nil {
				t.Fatal(err)
			}
			cfg := localConfig("custom", ip)
			ml := cfg.Serf.MemberlistConfig
			ml.Transport = nt
			ml.BindPort = 7946 // ignored: the transport is already bound
			if tt.advertiseAddr != "" {
				ml.AdvertiseAddr, ml.AdvertisePort = ip, 0
			}
			x := start(t, cfg)
			if got, want := x.LocalMember().Port, nt.GetAutoBindPort(); got != want {
				t.Fatalf("LocalMember().Port = %d, want the transport's %d", got, want)
			}
			if got := x.LocalMember().Addr.String(); got != ip {
				t.Fatalf("LocalMember().Addr = %s, want %s", got, ip)
			}
			y := start(t, localConfig("plain", ip))
			if _, err := y.Join(context.Background(), []string{x.addr()}); err != nil {
				t.Fatalf("Join via custom transport: %v", err)
			}
			eventually(t, convergeTimeout, "both alive", allAlive([]*testNode{x, y}, 2))
		})
	}
}

func TestDispatch(t *testing.T) {
	c := &Cluster{log: discard, events: make(chan Event, 2)}
	good := serf.Member{Name: "g", Addr: net.ParseIP("127.0.0.1"), Port: 7946,
		Tags: map[string]string{"pp": "4001"}, Status: serf.StatusAlive}
	bad := serf.Member{Name: "b", Addr: net.ParseIP("::ffff:10.0.0.1"), Port: 7946,
		Tags: map[string]string{"pp": "http"}, Status: serf.StatusFailed}

	c.dispatch(serf.MemberEvent{Type: serf.EventMemberFailed, Members: []serf.Member{good, bad}})
	payload := []byte("p")
	c.dispatch(serf.UserEvent{Name: noticeEventName, Payload: payload})
	c.dispatch(serf.UserEvent{Name: "someone-else", Payload: []byte("ignored")})
	c.dispatch(serf.MemberEvent{Type: serf.EventMemberJoin, Members: []serf.Member{good}}) // buffer full

	ev := <-c.events
	if ev.Type != EventFail || len(ev.Members) != 2 {
		t.Fatalf("first event %+v", ev)
	}
	g, b := ev.Members[0], ev.Members[1]
	if g.Tags.PeerPort != 4001 || g.TagsErr != nil || g.Addr.String() != "127.0.0.1" || g.Status != StatusAlive {
		t.Fatalf("good member %+v", g)
	}
	if !errors.Is(b.TagsErr, ErrInvalidTags) || !reflect.DeepEqual(b.Tags, Tags{}) ||
		b.Addr.String() != "10.0.0.1" || b.Status != StatusFailed {
		t.Fatalf("bad member %+v", b)
	}
	ev = <-c.events
	if ev.Type != EventNotice || string(ev.Notice) != "p" {
		t.Fatalf("second event %+v", ev)
	}
	ev.Notice[0] = 'x'
	if payload[0] != 'p' {
		t.Fatal("notice shares its buffer with serf")
	}
	if got := c.eventsDropped.Load(); got != 1 {
		t.Fatalf("EventsDropped = %d, want 1", got)
	}
	if got := c.badTags.Load(); got != 1 {
		t.Fatalf("BadTags = %d, want 1", got)
	}
	if got := c.noticesReceived.Load(); got != 1 {
		t.Fatalf("NoticesReceived = %d, want 1", got)
	}
}

func TestEventTypeString(t *testing.T) {
	want := map[EventType]string{EventJoin: "join", EventLeave: "leave", EventFail: "fail",
		EventUpdate: "update", EventReap: "reap", EventNotice: "notice", 0: "EventType(0)"}
	for typ, s := range want {
		if typ.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(typ), typ.String(), s)
		}
	}
}

func TestMemberlistLayout(t *testing.T) {
	// If this fails, memberlist changed its internals: members are no
	// longer reported suspect until nodestate.go is updated.
	if !suspectSupported {
		t.Fatal("memberlist layout not recognised; suspect detection disabled")
	}
	n := start(t, localConfig("self", testIP()))
	states := memberlistStates(n.serf.Memberlist())
	if len(states) != 1 || states["self"] != memberlist.StateAlive {
		t.Fatalf("memberlistStates = %v", states)
	}
}
