package testwait

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestForReturnsOnceConditionHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		err := For(time.Second, "three calls", func() bool { calls++; return calls == 3 })
		if err != nil {
			t.Fatalf("For: %v", err)
		}
		if calls != 3 {
			t.Fatalf("cond called %d times, want 3", calls)
		}
		// 1 ms, then 2 ms: the interval grows from a short start.
		if got := time.Since(start); got != 3*time.Millisecond {
			t.Fatalf("waited %v, want 3ms", got)
		}
	})
}

func TestForTimesOutNamingWhat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		err := For(time.Second, "the moon", func() bool { return false })
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if !strings.Contains(err.Error(), "the moon") || !strings.Contains(err.Error(), "1s") {
			t.Fatalf("err = %q, want it to name what and the timeout", err)
		}
		if got := time.Since(start); got != time.Second {
			t.Fatalf("gave up after %v, want exactly the timeout", got)
		}
	})
}

func TestForChecksAgainAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		err := For(time.Second, "late", func() bool { return time.Since(start) >= time.Second })
		if err != nil {
			t.Fatalf("a condition met at the deadline must count: %v", err)
		}
	})
}

func TestIntervalIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var at []time.Time
		_ = For(time.Second, "never", func() bool { at = append(at, time.Now()); return false })
		for i := 1; i < len(at); i++ {
			if d := at[i].Sub(at[i-1]); d > maxInterval {
				t.Fatalf("interval %d was %v, more than %v", i, d, maxInterval)
			}
		}
	})
}
