package runtime

import (
	"context"
	"errors"
	"testing"
)

func TestFakeReadiness(t *testing.T) {
	f := NewFake()
	if err := f.Ready(context.Background()); err != nil {
		t.Fatalf("new fake not ready: %v", err)
	}
	down := errors.New("daemon down")
	f.SetReady(down)
	if err := f.Ready(context.Background()); !errors.Is(err, down) {
		t.Fatalf("Ready = %v, want %v", err, down)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.SetReady(nil)
	if err := f.Ready(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ready on a done context = %v", err)
	}
}
