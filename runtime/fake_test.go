package runtime

import (
	"context"
	"errors"
	"io"
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

// A container the fake prepared has its log once it is started, as a
// freshly started one has (the agent's logs stream read nothing from
// such a replica, without an error: a node test missed its line).
func TestFakePreparedThenStartedHasLogs(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	s := ReplicaSpec{ID: "web-1-v1", Service: "web", Slot: 1, Version: "v1", Image: "demo:1"}
	if _, err := f.Prepare(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Logs(ctx, s.ID, -1, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("logs of a prepared container: %v, want not found (no process yet)", err)
	}
	if r, err := f.Start(ctx, s); err != nil || r.State != StateRunning {
		t.Fatalf("Start of the prepared container: %+v, %v", r, err)
	}
	rc, err := f.Logs(ctx, s.ID, -1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || string(b) != "started web/1\n" {
		t.Fatalf("logs after the start: %q, %v; want the start line", b, err)
	}
}
