package node

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/gossip"
)

// statusPushTimeout bounds one status push to one member.
const statusPushTimeout = 5 * time.Second

// statusPusher sends this node's status document to each member it is
// given, with one sender per member: a member that does not answer (it
// crashed and is only suspect yet) holds up its own pushes, never the
// others'. Each sender keeps only the newest document while a push is
// under way, so a slow member gets the latest state next, not a backlog.
//
// It also knows which version each member has taken (delivered): a node
// that is about to stop a replica waits until every member has the
// document that no longer routes to it (see drainBeforeStop).
type statusPusher struct {
	// send pushes doc to m and reports whether m took it; it logs its
	// own failures.
	send func(ctx context.Context, m gossip.Member, doc statusDoc) bool

	mu      sync.Mutex // guards senders, each sender's acked, and progress
	senders map[string]*statusSender
	// progress is closed when a member takes a document or a sender
	// goes, then replaced.
	progress chan struct{}
	wg       sync.WaitGroup
}

// statusSender is the sender to one member.
type statusSender struct {
	wake   chan struct{} // buffered 1: a newer document is waiting
	cancel context.CancelFunc

	acked uint64 // the newest version the member took (statusPusher.mu)

	mu     sync.Mutex
	member gossip.Member
	doc    *statusDoc // newest document not sent yet
}

func newStatusPusher(send func(ctx context.Context, m gossip.Member, doc statusDoc) bool) *statusPusher {
	return &statusPusher{send: send, senders: make(map[string]*statusSender), progress: make(chan struct{})}
}

// progressLocked wakes the delivered waiters.
func (p *statusPusher) progressLocked() {
	close(p.progress)
	p.progress = make(chan struct{})
}

// push hands doc to the sender of every member in peers, starting senders
// for new members and stopping those of members no longer listed.
func (p *statusPusher) push(ctx context.Context, doc statusDoc, peers []gossip.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := make(map[string]bool, len(peers))
	for _, m := range peers {
		keep[m.Name] = true
		s, ok := p.senders[m.Name]
		if !ok {
			sctx, cancel := context.WithCancel(ctx)
			s = &statusSender{wake: make(chan struct{}, 1), cancel: cancel}
			p.senders[m.Name] = s
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.run(sctx, s)
			}()
		}
		s.mu.Lock()
		s.member, s.doc = m, &doc
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	for name, s := range p.senders {
		if !keep[name] {
			s.cancel()
			delete(p.senders, name)
			p.progressLocked()
		}
	}
}

// delivered waits until every member that pushes go to has taken a
// document of at least version, or ignore says to skip it (it failed
// meanwhile), or ctx ends; then it returns the members that have not
// (none: nil). The members are those of the last push; one a push has
// not named yet is not waited for.
func (p *statusPusher) delivered(ctx context.Context, version uint64, ignore func(name string) bool) []string {
	for {
		p.mu.Lock()
		var behind []string
		for name, s := range p.senders {
			if s.acked < version && !ignore(name) {
				behind = append(behind, name)
			}
		}
		wake := p.progress
		p.mu.Unlock()
		if len(behind) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			slices.Sort(behind)
			return behind
		case <-wake:
		}
	}
}

// run sends s's newest document each time there is one, until ctx ends.
func (p *statusPusher) run(ctx context.Context, s *statusSender) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		m, doc := s.member, s.doc
		s.doc = nil
		s.mu.Unlock()
		if doc == nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, statusPushTimeout)
		ok := p.send(cctx, m, *doc) // a failed push: anti-entropy repairs it
		cancel()
		if ok {
			p.mu.Lock()
			if doc.Version > s.acked {
				s.acked = doc.Version
				p.progressLocked()
			}
			p.mu.Unlock()
		}
	}
}

// close stops every sender and waits for them.
func (p *statusPusher) close() {
	p.mu.Lock()
	for name, s := range p.senders {
		s.cancel()
		delete(p.senders, name)
	}
	p.progressLocked()
	p.mu.Unlock()
	p.wg.Wait()
}
