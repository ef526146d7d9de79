package gossip

import "time"

// backoff produces the delays between join attempts: the base delay starts
// at initial and doubles after each attempt up to max; each delay is drawn
// uniformly from [base/2, base] ("equal jitter"), so nodes that start
// together spread out and no delay exceeds max. Not safe for concurrent use.
type backoff struct {
	base, max time.Duration
	// randN returns a uniform value in [0, n); n > 0.
	randN func(n int64) int64
}

// newBackoff returns a backoff from initial to max (initial, max > 0).
func newBackoff(initial, max time.Duration, randN func(int64) int64) *backoff {
	return &backoff{base: min(initial, max), max: max, randN: randN}
}

// next returns the delay before the next attempt and advances the base.
func (b *backoff) next() time.Duration {
	half := b.base / 2
	d := half + time.Duration(b.randN(int64(b.base-half)+1))
	if b.base > b.max/2 {
		b.base = b.max // doubling would pass max (or overflow)
	} else {
		b.base *= 2
	}
	return d
}
