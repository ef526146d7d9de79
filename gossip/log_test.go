package gossip

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
)

// captureHandler is a slog.Handler that records records for tests and lets
// a test wait for one that matches.
type captureHandler struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
	wake  chan struct{} // closed and replaced on every record
}

func newCaptureHandler(level slog.Level) *captureHandler {
	return &captureHandler{level: level, wake: make(chan struct{})}
}

func (h *captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *captureHandler) WithGroup(string) slog.Handler                { return h }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	close(h.wake)
	h.wake = make(chan struct{})
	return nil
}

// records returns a copy of what was logged, and a channel closed on the
// next record.
func (h *captureHandler) records() ([]slog.Record, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.recs), h.wake
}

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

func TestStdLogger(t *testing.T) {
	tests := []struct {
		line      string
		level     slog.Level
		msg       string
		component string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1234", slog.LevelDebug, "Stream connection from=127.0.0.1:1234", "memberlist"},
		{"[INFO] serf: EventMemberJoin: a 127.0.0.1", slog.LevelInfo, "EventMemberJoin: a 127.0.0.1", "serf"},
		{"[WARN] serf: Shutdown without a Leave", slog.LevelWarn, "Shutdown without a Leave", "serf"},
		{"[WARNING] memberlist: x", slog.LevelWarn, "x", "memberlist"},
		{"[ERR] memberlist: Failed to decrypt", slog.LevelError, "Failed to decrypt", "memberlist"},
		{"[ERROR] other: y", slog.LevelError, "other: y", "gossip"},
		{"[TRACE] z", slog.LevelDebug, "z", "gossip"},
		{"no prefix at all", slog.LevelInfo, "no prefix at all", "gossip"},
	}
	h := newCaptureHandler(slog.LevelDebug)
	std := StdLogger(slog.New(h))
	for _, tt := range tests {
		std.Print(tt.line)
	}
	recs, _ := h.records()
	if len(recs) != len(tests) {
		t.Fatalf("%d records, want %d", len(recs), len(tests))
	}
	for i, tt := range tests {
		r := recs[i]
		if r.Level != tt.level || r.Message != tt.msg || attr(r, "component") != tt.component {
			t.Errorf("%q logged as level %v msg %q component %q; want %v %q %q",
				tt.line, r.Level, r.Message, attr(r, "component"), tt.level, tt.msg, tt.component)
		}
	}
}

func TestStdLoggerFiltersLevel(t *testing.T) {
	h := newCaptureHandler(slog.LevelWarn)
	std := StdLogger(slog.New(h))
	std.Print("[DEBUG] memberlist: chatter")
	std.Print("[INFO] serf: info")
	std.Print("[ERR] serf: bad")
	recs, _ := h.records()
	if len(recs) != 1 || recs[0].Message != "bad" {
		t.Fatalf("records %v, want only the error", recs)
	}
}
