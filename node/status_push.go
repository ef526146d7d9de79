package node

import (
	"context"
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
type statusPusher struct {
	send func(ctx context.Context, m gossip.Member, doc statusDoc) // logs its own failures

	mu      sync.Mutex
	senders map[string]*statusSender
	wg      sync.WaitGroup
}

// statusSender is the sender to one member.
type statusSender struct {
	wake   chan struct{} // buffered 1: a newer document is waiting
	cancel context.CancelFunc

	mu     sync.Mutex
	member gossip.Member
	doc    *statusDoc // newest document not sent yet
}

func newStatusPusher(send func(ctx context.Context, m gossip.Member, doc statusDoc)) *statusPusher {
	return &statusPusher{send: send, senders: make(map[string]*statusSender)}
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
		p.send(cctx, m, *doc) // a failed push: anti-entropy repairs it
		cancel()
	}
}

// close stops every sender and waits for them.
func (p *statusPusher) close() {
	p.mu.Lock()
	for name, s := range p.senders {
		s.cancel()
		delete(p.senders, name)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
