package store

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestTimestampCompare(t *testing.T) {
	tests := []struct {
		a, b Timestamp
		want int
	}{
		{Timestamp{}, Timestamp{}, 0},
		{Timestamp{1, 0}, Timestamp{1, 0}, 0},
		{Timestamp{1, 0}, Timestamp{2, 0}, -1},
		{Timestamp{2, 0}, Timestamp{1, 99}, 1},
		{Timestamp{1, 1}, Timestamp{1, 2}, -1},
		{Timestamp{1, 3}, Timestamp{1, 2}, 1},
		{Timestamp{-1, 0}, Timestamp{0, 0}, -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
	if !(Timestamp{}).IsZero() || (Timestamp{0, 1}).IsZero() || (Timestamp{1, 0}).IsZero() {
		t.Error("IsZero wrong")
	}
	if got := (Timestamp{Wall: epoch.UnixNano()}).Time(); !got.Equal(epoch) {
		t.Errorf("Time() = %v, want %v", got, epoch)
	}
}

func TestHLCMonotonicWithClockGoingBack(t *testing.T) {
	clk := newFakeClock(epoch)
	h := NewHLC(clk)
	steps := []struct {
		name    string
		move    func()
		want    Timestamp
		comment string
	}{
		{"first", func() {}, Timestamp{epoch.UnixNano(), 0}, "takes physical time"},
		{"stalled", func() {}, Timestamp{epoch.UnixNano(), 1}, "logical tick"},
		{"stalled again", func() {}, Timestamp{epoch.UnixNano(), 2}, "logical tick"},
		{"back 1h", func() { clk.Advance(-time.Hour) }, Timestamp{epoch.UnixNano(), 3}, "ignores the step back"},
		{"still behind", func() { clk.Advance(30 * time.Minute) }, Timestamp{epoch.UnixNano(), 4}, "ignores the step back"},
		{"ahead again", func() { clk.Set(epoch.Add(time.Second)) }, Timestamp{epoch.Add(time.Second).UnixNano(), 0}, "resets logical"},
	}
	prev := Timestamp{}
	for _, st := range steps {
		st.move()
		got := h.Now()
		if got != st.want {
			t.Fatalf("%s: Now() = %v, want %v (%s)", st.name, got, st.want, st.comment)
		}
		if got.Compare(prev) <= 0 {
			t.Fatalf("%s: Now() = %v not after %v", st.name, got, prev)
		}
		if h.Last() != got {
			t.Fatalf("%s: Last() = %v, want %v", st.name, h.Last(), got)
		}
		prev = got
	}
}

func TestHLCUpdate(t *testing.T) {
	now := epoch.UnixNano()
	tests := []struct {
		name   string
		local  int // local ticks before Update
		remote Timestamp
		want   Timestamp // next Now()
	}{
		{"remote ahead of physical", 0, Timestamp{now + 5e9, 7}, Timestamp{now + 5e9, 8}},
		{"remote behind physical", 0, Timestamp{now - 5e9, 7}, Timestamp{now, 0}},
		{"remote equal to last", 3, Timestamp{now, 2}, Timestamp{now, 3}},
		{"remote just ahead of last", 3, Timestamp{now, 5}, Timestamp{now, 6}},
		{"remote at max logical", 0, Timestamp{now + 1, math.MaxUint32}, Timestamp{now + 2, 0}},
		{"remote at the end of time", 0, Timestamp{math.MaxInt64, math.MaxUint32 - 1}, Timestamp{math.MaxInt64, math.MaxUint32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHLC(newFakeClock(epoch))
			for range tt.local {
				h.Now()
			}
			h.Update(tt.remote)
			got := h.Now()
			if got != tt.want {
				t.Fatalf("Now() after Update(%v) = %v, want %v", tt.remote, got, tt.want)
			}
			if got.Compare(tt.remote) <= 0 {
				t.Fatalf("Now() = %v not after remote %v", got, tt.remote)
			}
		})
	}
}

func TestHLCConcurrentNowStrictlyIncreasing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clock Clock
	}{
		{"fake stalled clock", newFakeClock(epoch)},
		{"system clock", SystemClock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHLC(tc.clock)
			const goroutines, per = 8, 500
			results := make([][]Timestamp, goroutines)
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					out := make([]Timestamp, per)
					for i := range out {
						out[i] = h.Now()
						if i%100 == 0 {
							h.Update(Timestamp{Wall: out[i].Wall, Logical: out[i].Logical})
						}
					}
					results[g] = out
				})
			}
			wg.Wait()
			seen := make(map[Timestamp]bool, goroutines*per)
			for g, out := range results {
				for i, ts := range out {
					if i > 0 && ts.Compare(out[i-1]) <= 0 {
						t.Fatalf("goroutine %d: %v after %v", g, ts, out[i-1])
					}
					if seen[ts] {
						t.Fatalf("timestamp %v issued twice", ts)
					}
					seen[ts] = true
				}
			}
		})
	}
}
