package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	base, limit := 100*time.Millisecond, 5*time.Second
	for _, tc := range []struct {
		attempt int
		step    time.Duration // the undithered delay
	}{
		{0, base}, {1, base}, {2, 2 * base}, {3, 4 * base}, {6, 32 * base}, {7, limit}, {100, limit},
	} {
		for range 200 {
			d := Delay(tc.attempt, base, limit)
			if d < tc.step/2 || d > tc.step {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", tc.attempt, d, tc.step/2, tc.step)
			}
		}
	}
}
