package runtime

import (
	"context"
	"sync"
)

// Fake is an in-memory Driver for tests. The zero value is ready.
type Fake struct {
	mu  sync.Mutex // guards err
	err error
}

var _ Driver = (*Fake)(nil)

// NewFake returns a ready fake runtime.
func NewFake() *Fake { return &Fake{} }

// SetReady makes Ready return err (nil: ready).
func (f *Fake) SetReady(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Ready implements Driver.
func (f *Fake) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
