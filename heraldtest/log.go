package heraldtest

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
)

// testLog is where the system's services and broker log: the test's log
// (t.Log, shown when the test fails or runs with -v), line by line. Lines
// written after the test's last cleanup are dropped: testing forbids
// logging once a test has completed, and a goroutine of the broker may
// still log while it winds down.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// stop drops every later line.
func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
}

// newTestLogger returns a logger writing to t's log, and registers its
// stop as t's first cleanup, so that it runs after every other.
func newTestLogger(t testing.TB) *slog.Logger {
	l := &testLog{t: t}
	t.Cleanup(l.stop)
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
