//go:build !linux

package main

import (
	"errors"
	"net/url"
	"time"
)

// run needs epoll; the benchmark it serves (scripts/bench-lb.sh) runs on
// Linux only.
func run(*url.URL, float64, time.Duration, time.Duration, int, time.Duration) (result, error) {
	return result{}, errors.New("shoal-loadgen runs on Linux only (epoll)")
}
