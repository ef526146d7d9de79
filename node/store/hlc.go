package store

import (
	"math"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock reading: a physical wall time in unix
// nanoseconds plus a logical counter that orders events sharing a wall time.
type Timestamp struct {
	// Wall is the physical component, in unix nanoseconds.
	Wall int64 `json:"wall"`
	// Logical orders events with the same Wall.
	Logical uint32 `json:"logical"`
}

// Compare returns -1, 0 or +1 as t is before, equal to or after o. Timestamps
// are ordered by Wall, then by Logical.
func (t Timestamp) Compare(o Timestamp) int {
	switch {
	case t.Wall < o.Wall:
		return -1
	case t.Wall > o.Wall:
		return 1
	case t.Logical < o.Logical:
		return -1
	case t.Logical > o.Logical:
		return 1
	}
	return 0
}

// IsZero reports whether t is the zero Timestamp.
func (t Timestamp) IsZero() bool { return t.Wall == 0 && t.Logical == 0 }

// Time returns the physical component of t as a time.Time.
func (t Timestamp) Time() time.Time { return time.Unix(0, t.Wall) }

// next returns the smallest timestamp strictly greater than t, or t itself if
// t is the largest representable timestamp.
func (t Timestamp) next() Timestamp {
	switch {
	case t.Logical < math.MaxUint32:
		return Timestamp{Wall: t.Wall, Logical: t.Logical + 1}
	case t.Wall < math.MaxInt64:
		return Timestamp{Wall: t.Wall + 1}
	}
	return t
}

// Clock is the source of physical time. Implementations must be safe for
// concurrent use. Tests inject a fake.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
}

// SystemClock is the real clock, backed by time.Now.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// HLC is a hybrid logical clock (Kulkarni et al., "Logical Physical Clocks",
// 2014). Its readings stay close to physical time but are strictly increasing
// even when the physical clock stalls or steps backwards, and Update keeps
// them ahead of every timestamp received from other nodes, so causally later
// writes always get higher timestamps.
//
// An HLC is safe for concurrent use.
type HLC struct {
	clock Clock

	mu   sync.Mutex // guards last
	last Timestamp  // the highest timestamp issued or received
}

// NewHLC returns a clock reading physical time from c (SystemClock if nil).
func NewHLC(c Clock) *HLC {
	if c == nil {
		c = SystemClock
	}
	return &HLC{clock: c}
}

// Now returns a timestamp for a local event. Every call returns a timestamp
// strictly greater than any previously returned by Now or passed to Update,
// with one theoretical exception: once the clock reaches the largest
// representable timestamp (wall time in year 2262 plus 2^32 ticks) it stays
// there.
func (h *HLC) Now() Timestamp {
	pt := h.clock.Now().UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	if pt > h.last.Wall {
		h.last = Timestamp{Wall: pt}
	} else {
		h.last = h.last.next()
	}
	return h.last
}

// Update applies the receive rule for a timestamp seen in a remote event:
// afterwards, Now returns timestamps strictly greater than remote.
func (h *HLC) Update(remote Timestamp) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if remote.Compare(h.last) > 0 {
		h.last = remote
	}
}

// Last returns the highest timestamp issued by Now or received by Update.
func (h *HLC) Last() Timestamp {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}
