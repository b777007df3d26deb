// Package backoff is the one retry delay of herald's engines: exponential,
// capped, with equal jitter.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay returns the delay before retry number attempt (1-based): base
// doubled attempt-1 times, capped at max, then drawn uniformly from
// [d/2, d] ("equal jitter": never less than half the step, so a retry
// storm spreads out without a retry coming at once).
func Delay(attempt int, base, max time.Duration) time.Duration {
	d := base << min(max0(attempt-1), 30)
	if d <= 0 || d > max {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
