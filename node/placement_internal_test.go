package node

import (
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
)

// The oldest adopted copy of a slot is the one that started first; a
// copy without a start time (its start was cut short) is never it.
func TestOlderCopy(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	rep := func(node string, started time.Time) api.Replica {
		return api.Replica{Node: node, StartedAt: started}
	}
	for _, tt := range []struct {
		name string
		a, b api.Replica
		want bool
	}{
		{"earlier start", rep("b", t0), rep("a", t0.Add(time.Second)), true},
		{"later start", rep("a", t0.Add(time.Second)), rep("b", t0), false},
		{"no start time is newest", rep("a", time.Time{}), rep("b", t0), false},
		{"a start time beats none", rep("b", t0), rep("a", time.Time{}), true},
		{"same start: node name", rep("a", t0), rep("b", t0), true},
		{"same start: node name, reversed", rep("b", t0), rep("a", t0), false},
	} {
		if got := olderCopy(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: olderCopy = %v, want %v", tt.name, got, tt.want)
		}
	}
}
