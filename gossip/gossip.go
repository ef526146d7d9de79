package gossip

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Status is a member's state as this node sees it.
type Status string

// Member states.
const (
	// StatusAlive: the member answers probes.
	StatusAlive Status = "alive"
	// StatusSuspect: probes of the member failed; unless it refutes the
	// suspicion in time, it will be declared failed.
	StatusSuspect Status = "suspect"
	// StatusFailed: the member was declared dead without having left.
	StatusFailed Status = "failed"
	// StatusLeaving: the member announced that it is leaving.
	StatusLeaving Status = "leaving"
	// StatusLeft: the member left gracefully.
	StatusLeft Status = "left"
)

// Member is one node of the cluster.
type Member struct {
	// Name is the member's unique node name.
	Name string
	// Addr is the member's advertised address.
	Addr netip.Addr
	// Port is the member's gossip port.
	Port int
	// Status is the member's state. StatusSuspect comes from memberlist's
	// failure detector (serf itself only says alive).
	Status Status
	// Tags are the member's decoded tags; zero if decoding failed.
	Tags Tags
	// TagsErr is the error decoding the member's tags, if any.
	TagsErr error
}

// Alive reports whether the member is alive or suspect: not (yet) declared
// failed and not leaving. Suspicion is often refuted, so this is the set of
// members to place work on.
func (m Member) Alive() bool {
	return m.Status == StatusAlive || m.Status == StatusSuspect
}

// EventType is the kind of an Event.
type EventType int

// Event types.
const (
	// EventJoin: members joined (or came back after failing or leaving).
	EventJoin EventType = iota + 1
	// EventLeave: members left gracefully.
	EventLeave
	// EventFail: members were declared failed.
	EventFail
	// EventUpdate: members changed their tags.
	EventUpdate
	// EventReap: failed or left members were forgotten.
	EventReap
	// EventNotice: a notice (Cluster.Notify) arrived.
	EventNotice
)

// String returns the event type's name ("join", "leave", "fail", "update",
// "reap", "notice").
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	case EventUpdate:
		return "update"
	case EventReap:
		return "reap"
	case EventNotice:
		return "notice"
	default:
		return "EventType(" + strconv.Itoa(int(t)) + ")"
	}
}

// Event is a membership change or a notice.
type Event struct {
	// Type is the kind of event.
	Type EventType
	// Members are the members concerned, as of the event (member events).
	Members []Member
	// Notice is the payload of an EventNotice; the receiver owns it.
	Notice []byte
}

// MaxNoticeSize is the largest notice payload Notify accepts. It is far
// below serf's limit (serf.UserEventSizeLimit, 9 KiB) on purpose: serf
// spreads user events in memberlist's gossip packets, which are at most
// UDPBufferSize (1400) bytes; an event that does not fit in one is never
// gossiped and only reaches others in the periodic push/pull state sync
// (every 15 to 60 s). 1 KiB plus serf's and memberlist's framing and the
// encryption overhead fits in one packet.
const MaxNoticeSize = 1024

// noticeEventName is the serf user event name of notices; it counts towards
// serf's size limit, so it is short.
const noticeEventName = "n"

// serfEventBuffer is the capacity of the channel between serf and the pump.
const serfEventBuffer = 1024

// Cluster is this node's membership in a gossip cluster. It is safe for
// concurrent use; Events must have a single consumer.
type Cluster struct {
	cfg      *Config
	log      *slog.Logger
	serf     *serf.Serf
	events   chan Event
	pumpDone chan struct{}

	tagsMu sync.Mutex // serializes SetTags: serf.SetTags is not safe for concurrent use
	lifeMu sync.Mutex // serializes Leave and Shutdown: memberlist panics on a leave after shutdown

	eventsDelivered atomic.Uint64
	eventsDropped   atomic.Uint64
	badTags         atomic.Uint64
	noticesSent     atomic.Uint64
	noticesReceived atomic.Uint64
}

// New validates cfg, sets up the keyring and snapshot, creates serf (which
// binds the gossip sockets) and starts delivering events. It does not
// contact any other node: call Join for that (a node restarted with a
// snapshot rejoins its previous peers by itself).
func New(cfg *Config) (*Cluster, error) {
	c, err := cfg.prepare()
	if err != nil {
		return nil, err
	}
	tags, err := c.Tags.Encode()
	if err != nil {
		return nil, fmt.Errorf("gossip: tags: %w", err)
	}
	sc, mc := c.Serf, c.Serf.MemberlistConfig

	std := StdLogger(c.Logger)
	sc.NodeName = c.NodeName
	sc.Tags = tags
	sc.Logger, sc.LogOutput = std, nil
	mc.Logger, mc.LogOutput = std, nil
	sc.UserEventSizeLimit = min(max(sc.UserEventSizeLimit, MaxNoticeSize+noticeOverhead), serf.UserEventSizeLimit)
	sc.SnapshotPath = c.SnapshotPath
	sc.RejoinAfterLeave = c.SnapshotPath != ""
	sc.KeyringFile = ""

	switch {
	case c.EncryptKey != nil:
		kr, err := memberlist.NewKeyring(nil, c.EncryptKey)
		if err != nil {
			return nil, fmt.Errorf("%w: EncryptKey: %v", ErrInvalidConfig, err)
		}
		if c.KeyringPath != "" {
			if err := saveKeyring(c.KeyringPath, kr.GetKeys()); err != nil {
				return nil, err
			}
		}
		mc.Keyring, mc.SecretKey = kr, nil
	case c.KeyringPath != "":
		kr, err := loadKeyring(c.KeyringPath)
		if err != nil {
			return nil, err
		}
		if kr != nil {
			mc.Keyring, mc.SecretKey = kr, nil
		}
	}
	if c.KeyringPath != "" && mc.Keyring != nil {
		sc.KeyringFile = c.KeyringPath // serf's key manager persists changes there
	}

	if mc.AdvertiseAddr != "" && mc.AdvertisePort == 0 {
		switch {
		case mc.Transport != nil:
			port, err := transportPort(mc.Transport)
			if err != nil {
				return nil, fmt.Errorf("gossip: advertise port from transport: %w", err)
			}
			mc.AdvertisePort = port
		case mc.BindPort != 0:
			mc.AdvertisePort = mc.BindPort
		}
		// BindPort 0 without a transport: memberlist sets AdvertisePort to
		// the port it binds.
	}

	serfCh := make(chan serf.Event, serfEventBuffer)
	sc.EventCh = serfCh
	s, err := serf.Create(sc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start serf: %w", err)
	}
	cl := &Cluster{
		cfg:      c,
		log:      c.Logger.With("component", "gossip"),
		serf:     s,
		events:   make(chan Event, c.EventBuffer),
		pumpDone: make(chan struct{}),
	}
	go cl.pump(serfCh)

	local := cl.LocalMember()
	cl.log.Info("gossip started", "node", local.Name, "addr", local.Addr, "port", local.Port,
		"encrypted", s.EncryptionEnabled(), "snapshot", c.SnapshotPath != "")
	return cl, nil
}

// transportPort returns the port a custom transport listens on.
func transportPort(t memberlist.Transport) (int, error) {
	if p, ok := t.(interface{ GetAutoBindPort() int }); ok {
		return p.GetAutoBindPort(), nil
	}
	_, port, err := t.FinalAdvertiseAddr("", 0)
	return port, err
}

// Events returns the channel of membership changes and notices, in the
// order serf produced them, including the local node's own (its join at
// start, its tag updates, its own notices). It is closed once the remaining
// events are delivered after Shutdown or Leave, or after serf shut itself
// down because this node lost a node-name conflict (another live node holds
// the same name).
//
// There must be exactly one consumer, and it must keep reading: serf is
// never blocked; when the channel's buffer (Config.EventBuffer) is full,
// events are dropped and counted in Stats.EventsDropped. A consumer that
// may have missed events recovers by reading Members.
func (c *Cluster) Events() <-chan Event {
	return c.events
}

// Join contacts the seeds ("host:port") until at least one answers,
// retrying with exponential backoff and jitter (from
// Config.RetryJoinInterval up to Config.RetryJoinMax), or until ctx is
// done, in which case the error wraps ctx.Err() and the last attempt's
// error. It returns the number of seeds contacted. Each failed attempt is
// logged at WARN. An attempt in progress is not interrupted by ctx; it is
// bounded by memberlist's TCPTimeout per seed.
//
// Notices sent before the join are not replayed.
func (c *Cluster) Join(ctx context.Context, seeds []string) (int, error) {
	if len(seeds) == 0 {
		return 0, ErrNoSeeds
	}
	b := newBackoff(c.cfg.RetryJoinInterval, c.cfg.RetryJoinMax, rand.Int64N)
	var lastErr error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return 0, c.joinFailed(attempt-1, err, lastErr)
		}
		if c.closed() {
			return 0, ErrShutdown
		}
		n, err := c.serf.Join(seeds, true)
		if n > 0 {
			if err != nil { // contacted, but the join intent was not queued
				c.log.Warn("join: broadcasting join intent failed", "err", err)
			}
			c.log.Info("joined", "seeds", seeds, "contacted", n, "attempts", attempt)
			return n, nil
		}
		if err == nil {
			err = errors.New("no seed answered")
		}
		lastErr = err
		delay := b.next()
		c.log.Warn("join attempt failed", "attempt", attempt, "seeds", seeds,
			"err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, c.joinFailed(attempt, ctx.Err(), lastErr)
		case <-c.serf.ShutdownCh():
			t.Stop()
			return 0, ErrShutdown
		case <-t.C:
		}
	}
}

// joinFailed builds Join's error when ctx ended.
func (c *Cluster) joinFailed(attempts int, ctxErr, lastErr error) error {
	if lastErr == nil {
		return fmt.Errorf("gossip: join: %w", ctxErr)
	}
	return fmt.Errorf("gossip: join: gave up after %d attempts: %w", attempts, errors.Join(ctxErr, lastErr))
}

// Members returns every member this node knows, including itself and
// failed or left members until they are reaped, sorted by name.
func (c *Cluster) Members() []Member {
	sms := c.serf.Members()
	states := memberlistStates(c.serf.Memberlist())
	out := make([]Member, 0, len(sms))
	for _, sm := range sms {
		m := toMember(sm)
		if m.Status == StatusAlive && states[sm.Name] == memberlist.StateSuspect {
			m.Status = StatusSuspect
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// LocalMember returns this node as a member; its Port is the actual gossip
// port (also when BindPort was 0 or a custom transport is used).
func (c *Cluster) LocalMember() Member {
	return toMember(c.serf.LocalMember())
}

// NumAlive returns the number of members, this node included, for which
// Member.Alive is true (alive or suspect).
func (c *Cluster) NumAlive() int {
	n := 0
	for _, m := range c.serf.Members() {
		if m.Status == serf.StatusAlive {
			n++
		}
	}
	return n
}

// SetTags replaces this node's tags and re-advertises them. It blocks until
// the update has been gossiped or Serf.BroadcastTimeout passed (an error).
func (c *Cluster) SetTags(t Tags) error {
	m, err := t.Encode()
	if err != nil {
		return fmt.Errorf("gossip: set tags: %w", err)
	}
	c.tagsMu.Lock()
	defer c.tagsMu.Unlock()
	if c.closed() {
		return ErrShutdown
	}
	if err := c.serf.SetTags(m); err != nil {
		return fmt.Errorf("gossip: set tags: %w", err)
	}
	return nil
}

// Notify broadcasts payload (at most MaxNoticeSize bytes) to every member as
// a serf user event, without coalescing. Delivery is best effort (gossip,
// then push/pull state sync for members that missed it), at most once per
// member, and unordered with respect to other notices. The notice is also
// delivered to this node's own Events. Notify does not wait for delivery.
func (c *Cluster) Notify(payload []byte) error {
	if len(payload) > MaxNoticeSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrNoticeTooLarge, len(payload), MaxNoticeSize)
	}
	if c.closed() {
		return ErrShutdown
	}
	if err := c.serf.UserEvent(noticeEventName, payload, false); err != nil {
		return fmt.Errorf("gossip: notify: %w", err)
	}
	c.noticesSent.Add(1)
	return nil
}

// Leave announces a graceful leave (the others see this node as left, not
// failed), waits for the announcement to spread (at most
// Serf.BroadcastTimeout twice plus Serf.LeavePropagateDelay), then shuts
// down like Shutdown. With a snapshot the node still rejoins on restart.
func (c *Cluster) Leave() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.serf.State() == serf.SerfShutdown {
		return ErrShutdown
	}
	c.log.Info("leaving")
	var lerr error
	if err := c.serf.Leave(); err != nil {
		lerr = fmt.Errorf("gossip: leave: %w", err)
	}
	return errors.Join(lerr, c.shutdown())
}

// Shutdown stops gossip without leaving: to the others this looks like a
// crash, and they declare this node failed. It closes the Events channel
// once the pending events are delivered. It is idempotent.
func (c *Cluster) Shutdown() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	return c.shutdown()
}

// shutdown is Shutdown with lifeMu held.
func (c *Cluster) shutdown() error {
	if err := c.serf.Shutdown(); err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	<-c.pumpDone
	return nil
}

// closed reports whether the node is leaving, left or shut down.
func (c *Cluster) closed() bool {
	return c.serf.State() != serf.SerfAlive
}

// Stats are counters for monitoring.
type Stats struct {
	// EventsDelivered counts events put on the Events channel.
	EventsDelivered uint64
	// EventsDropped counts events dropped because the Events channel was
	// full.
	EventsDropped uint64
	// BadTags counts members in member events whose tags did not decode.
	BadTags uint64
	// NoticesSent counts successful Notify calls.
	NoticesSent uint64
	// NoticesReceived counts notices received, this node's own included.
	NoticesReceived uint64
	// Encrypted reports whether gossip is encrypted.
	Encrypted bool
}

// Stats returns the current counters.
func (c *Cluster) Stats() Stats {
	return Stats{
		EventsDelivered: c.eventsDelivered.Load(),
		EventsDropped:   c.eventsDropped.Load(),
		BadTags:         c.badTags.Load(),
		NoticesSent:     c.noticesSent.Load(),
		NoticesReceived: c.noticesReceived.Load(),
		Encrypted:       c.serf.EncryptionEnabled(),
	}
}

// pump moves serf's events to the Events channel until serf shuts down,
// then delivers what is left and closes Events. It never blocks serf.
func (c *Cluster) pump(in <-chan serf.Event) {
	defer close(c.pumpDone)
	defer close(c.events)
	shutdown := c.serf.ShutdownCh()
	for {
		select {
		case e := <-in:
			c.dispatch(e)
		case <-shutdown:
			for {
				select {
				case e := <-in:
					c.dispatch(e)
				default:
					return
				}
			}
		}
	}
}

// dispatch converts one serf event and emits it.
func (c *Cluster) dispatch(e serf.Event) {
	switch e := e.(type) {
	case serf.MemberEvent:
		typ, ok := memberEventTypes[e.Type]
		if !ok {
			c.log.Debug("ignoring member event", "type", e.Type)
			return
		}
		ms := make([]Member, len(e.Members))
		for i, sm := range e.Members {
			ms[i] = toMember(sm)
			if ms[i].TagsErr != nil {
				c.badTags.Add(1)
				c.log.Warn("member has bad tags", "member", sm.Name, "err", ms[i].TagsErr)
			}
		}
		c.emit(Event{Type: typ, Members: ms})
	case serf.UserEvent:
		if e.Name != noticeEventName {
			c.log.Debug("ignoring user event", "name", e.Name)
			return
		}
		c.noticesReceived.Add(1)
		// serf keeps the payload in its de-duplication buffer: copy it.
		c.emit(Event{Type: EventNotice, Notice: bytes.Clone(e.Payload)})
	default:
		// Queries: serf answers its internal ones itself; others are not ours.
		c.log.Debug("ignoring serf event", "event", e.String())
	}
}

// memberEventTypes maps serf member event types to ours.
var memberEventTypes = map[serf.EventType]EventType{
	serf.EventMemberJoin:   EventJoin,
	serf.EventMemberLeave:  EventLeave,
	serf.EventMemberFailed: EventFail,
	serf.EventMemberUpdate: EventUpdate,
	serf.EventMemberReap:   EventReap,
}

// emit puts ev on the Events channel without blocking, or drops it.
func (c *Cluster) emit(ev Event) {
	select {
	case c.events <- ev:
		c.eventsDelivered.Add(1)
	default:
		n := c.eventsDropped.Add(1)
		if bits.OnesCount64(n) == 1 { // log the 1st, 2nd, 4th, 8th... drop
			c.log.Warn("events channel full, dropping events; the consumer is too slow",
				"dropped_total", n, "type", ev.Type.String())
		}
	}
}

// toMember converts a serf member, decoding its tags.
func toMember(sm serf.Member) Member {
	m := Member{
		Name:   sm.Name,
		Port:   int(sm.Port),
		Status: toStatus(sm.Status),
	}
	if a, ok := netip.AddrFromSlice(sm.Addr); ok {
		m.Addr = a.Unmap()
	}
	m.Tags, m.TagsErr = DecodeTags(sm.Tags)
	return m
}

// toStatus converts serf's member status.
func toStatus(s serf.MemberStatus) Status {
	switch s {
	case serf.StatusAlive:
		return StatusAlive
	case serf.StatusLeaving:
		return StatusLeaving
	case serf.StatusLeft:
		return StatusLeft
	case serf.StatusFailed:
		return StatusFailed
	default:
		return Status("unknown(" + strconv.Itoa(int(s)) + ")")
	}
}
