package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoalmesh/shoal/gossip"
)

// A member that does not answer holds up only its own pushes: the others
// get every change at once, and the stuck one gets the newest document
// when it answers again, not the ones in between. A member dropped from
// the peers has its push cancelled; close leaves no goroutine behind.
func TestStatusPusherPerMember(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var (
		mu      sync.Mutex
		got     = map[string][]uint64{}
		release = make(chan struct{})
		stuck   = make(chan struct{}, 1)
	)
	// The slow member hangs on version 1 until released, and on version
	// 100 until its push is cancelled.
	send := func(ctx context.Context, m gossip.Member, doc statusDoc) bool {
		if m.Name == "slow" && (doc.Version == 1 || doc.Version == 100) {
			stuck <- struct{}{}
			hang := release
			if doc.Version == 100 {
				hang = nil
			}
			select {
			case <-hang:
			case <-ctx.Done():
				return false
			}
		}
		mu.Lock()
		got[m.Name] = append(got[m.Name], doc.Version)
		mu.Unlock()
		return true
	}
	sent := func(name string) []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got[name])
	}
	waitFor := func(what string, cond func() error) {
		t.Helper()
		var err error
		if !pollUntil(5*time.Second, func() bool { err = cond(); return err == nil }) {
			t.Fatalf("%s: %v", what, err)
		}
	}
	ctx := context.Background()
	p := newStatusPusher(send)
	peers := []gossip.Member{{Name: "fast"}, {Name: "slow"}}
	doc := func(v uint64) statusDoc { return statusDoc{Node: "self", Version: v} }

	defer p.close() // on a failure too: cancels the hung push
	p.push(ctx, doc(1), peers)
	<-stuck // the slow member's push of version 1 is under way, and hangs
	// (A sender sends the newest document it holds: waiting for each
	// version makes the fast member's sequence exact.)
	waitFor("fast member gets version 1", func() error {
		if s := sent("fast"); !slices.Equal(s, []uint64{1}) {
			return fmt.Errorf("fast got %v", s)
		}
		return nil
	})
	for v := uint64(2); v <= 4; v++ {
		p.push(ctx, doc(v), peers)
		waitFor(fmt.Sprintf("fast member gets version %d", v), func() error {
			if s := sent("fast"); len(s) == 0 || s[len(s)-1] != v {
				return fmt.Errorf("fast got %v", s)
			}
			return nil
		})
	}
	if s := sent("slow"); len(s) != 0 {
		t.Fatalf("slow member got %v while its first push hung", s)
	}
	close(release)
	waitFor("slow member gets the newest version", func() error {
		if s := sent("slow"); !slices.Equal(s, []uint64{1, 4}) {
			return fmt.Errorf("slow got %v, want [1 4]", s)
		}
		return nil
	})
	if s := sent("fast"); !slices.Equal(s, []uint64{1, 2, 3, 4}) {
		t.Fatalf("fast got %v, want [1 2 3 4]", s)
	}

	// Dropping a member cancels a push that hangs; close waits for all.
	p.push(ctx, doc(100), peers)
	<-stuck
	p.push(ctx, doc(5), []gossip.Member{{Name: "fast"}})
	waitFor("fast member gets version 5", func() error {
		if s := sent("fast"); s[len(s)-1] != 5 {
			return fmt.Errorf("fast got %v", s)
		}
		return nil
	})
	closed := make(chan struct{})
	go func() { p.close(); close(closed) }()
	select { // close returns only once the slow member's hung push has ended
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close hangs: the dropped member's push was not cancelled")
	}
	if s := sent("slow"); !slices.Equal(s, []uint64{1, 4}) {
		t.Fatalf("slow got %v, want [1 4]: its push of 100 was cancelled", s)
	}
}

// delivered waits for every member of the last push to take a version
// (or a newer one): not for a member that failed to take it, until it
// does or is skipped or dropped; it names those still behind when its
// context ends.
func TestStatusPusherDelivered(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var (
		mu     sync.Mutex
		refuse = map[string]bool{}
	)
	send := func(ctx context.Context, m gossip.Member, doc statusDoc) bool {
		mu.Lock()
		defer mu.Unlock()
		return !refuse[m.Name]
	}
	setRefuse := func(name string, v bool) {
		mu.Lock()
		refuse[name] = v
		mu.Unlock()
	}
	ctx := context.Background()
	p := newStatusPusher(send)
	defer p.close()
	none := func(string) bool { return false }
	within := func(d time.Duration) context.Context {
		c, cancel := context.WithTimeout(ctx, d)
		t.Cleanup(cancel)
		return c
	}
	doc := func(v uint64) statusDoc { return statusDoc{Node: "self", Version: v} }
	peers := []gossip.Member{{Name: "a"}, {Name: "b"}, {Name: "c"}}

	if behind := p.delivered(within(time.Second), 1, none); behind != nil {
		t.Fatalf("no member yet: %v behind", behind)
	}
	p.push(ctx, doc(1), peers)
	if behind := p.delivered(within(5*time.Second), 1, none); behind != nil {
		t.Fatalf("version 1: %v behind", behind)
	}

	// b and c refuse version 2: delivered names them when it gives up.
	setRefuse("b", true)
	setRefuse("c", true)
	p.push(ctx, doc(2), peers)
	if behind := p.delivered(within(200*time.Millisecond), 2, none); !slices.Equal(behind, []string{"b", "c"}) {
		t.Fatalf("version 2 refused by b and c: behind %v", behind)
	}
	// A member skipped (it failed) or dropped from the peers is not
	// waited for; one that takes a newer version has the older one.
	p.push(ctx, doc(3), []gossip.Member{{Name: "a"}, {Name: "b"}})
	skipB := func(name string) bool { return name == "b" }
	if behind := p.delivered(within(5*time.Second), 2, skipB); behind != nil {
		t.Fatalf("b skipped, c dropped: %v behind", behind)
	}
	done := make(chan []string, 1)
	go func() { done <- p.delivered(within(5*time.Second), 2, none) }()
	setRefuse("b", false)
	p.push(ctx, doc(4), []gossip.Member{{Name: "a"}, {Name: "b"}})
	if behind := <-done; behind != nil {
		t.Fatalf("b took version 4: %v behind for version 2", behind)
	}
}
