// Package testwait is the one wait-until helper for tests: it polls a
// condition with a short, growing interval until it holds or a timeout
// passes, and names what it waited for and for how long when it gives up.
//
// Use it where a test waits for another goroutine, process or server to
// reach a state it cannot be told about. Where the test can be told (a
// channel, a signal) or the clock can be faked (testing/synctest), prefer
// those.
package testwait

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// ErrTimeout is wrapped by the error For returns when the condition did not
// hold in time.
var ErrTimeout = errors.New("testwait: timed out")

const (
	firstInterval = time.Millisecond
	maxInterval   = 10 * time.Millisecond
)

// Until polls cond until it returns true. If timeout passes first, it fails
// t with t.Fatalf, naming what and how long it waited. Call it from the test's
// goroutine; from other goroutines use For.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := For(timeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

// UntilReport is Until for a message that describes the state at the time of
// failure: report is called once, when the timeout has passed, and its result
// follows the "timed out" text.
func UntilReport(t testing.TB, timeout time.Duration, cond func() bool, report func() string) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v: %s", timeout, report())
	}
}

// For polls cond until it returns true, or returns an error wrapping
// ErrTimeout that names what and the timeout. It does not touch a
// testing.TB, so goroutines other than the test's may call it.
func For(timeout time.Duration, what string, cond func() bool) error {
	if !poll(timeout, cond) {
		return fmt.Errorf("%w after %v waiting for %s", ErrTimeout, timeout, what)
	}
	return nil
}

// poll reports whether cond held before timeout passed. cond is always
// evaluated at least once, and once more after the deadline so that a
// condition met during the last interval is not missed.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		sleep := min(interval, time.Until(deadline))
		time.Sleep(max(sleep, 0))
		interval = min(interval*2, maxInterval)
	}
}
