package testenv

import "github.com/sasha-s/go-deadlock"

// go-cni swaps its mutexes for github.com/sasha-s/go-deadlock in -race
// builds. That detector reads goroutine IDs as 0 on this Go version, so any
// two locks held at once by different goroutines look like one goroutine
// taking them in inconsistent order, and it exits the test binary with
// "POTENTIAL DEADLOCK". Its reports are false here; the race detector and
// the tests' own deadlines still catch real problems. Every test binary
// that runs the containerd driver imports testenv.
func init() {
	deadlock.Opts.Disable = true
}
