//go:build !detectbench

package gossip

import (
	"errors"
	"testing"
)

// Release builds do not accept the benchmark's tune: profiles.
func TestTuneProfileOnlyInBenchBuilds(t *testing.T) {
	if _, err := ProfileConfig("tune:lan,probe=200ms"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("error = %v, want ErrInvalidConfig", err)
	}
}
