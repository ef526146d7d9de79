package gossip

import (
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestBackoffProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		initial := time.Duration(rapid.Int64Range(1, int64(time.Hour)).Draw(t, "initial"))
		maxD := time.Duration(rapid.Int64Range(1, math.MaxInt64).Draw(t, "max"))
		// randN draws from rapid so shrinking explores extreme jitter.
		randN := func(n int64) int64 { return rapid.Int64Range(0, n-1).Draw(t, "jitter") }
		b := newBackoff(initial, maxD, randN)
		base := min(initial, maxD)
		for i := range 80 {
			d := b.next()
			if d < base/2 || d > base {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, d, base/2, base)
			}
			if d > maxD {
				t.Fatalf("attempt %d: delay %v over max %v", i, d, maxD)
			}
			next := base * 2
			if base > maxD/2 {
				next = maxD
			}
			if b.base != next {
				t.Fatalf("attempt %d: base %v after %v, want %v", i, b.base, base, next)
			}
			base = next
		}
	})
}

func TestBackoffSequence(t *testing.T) {
	top := func(n int64) int64 { return n - 1 } // no jitter: always the full base
	b := newBackoff(time.Second, 5*time.Second, top)
	want := []time.Duration{1, 2, 4, 5, 5}
	for i, w := range want {
		if d := b.next(); d != w*time.Second {
			t.Fatalf("delay %d = %v, want %v", i, d, w*time.Second)
		}
	}
	low := func(int64) int64 { return 0 } // most jitter: half the base
	b = newBackoff(time.Second, 5*time.Second, low)
	if d := b.next(); d != 500*time.Millisecond {
		t.Fatalf("first delay with full jitter = %v, want 500ms", d)
	}
}
