package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// runDevUntilReady runs herald dev with args until it prints its export
// line, stops it, and returns what it wrote on stderr.
func runDevUntilReady(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(append([]string{"dev", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "export NATS_URL=") {
		select {
		case err := <-done:
			t.Fatalf("herald dev %v ended: %v\n%s%s", args, err, out.String(), errb.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("herald dev %v: no export line:\n%s", args, out.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("herald dev %v: %v", args, err)
	}
	return errb.String()
}

// TestDevLogsTheServerOnlyWhenVerbose: herald dev's stdout line is what a
// user needs; the embedded server's two dozen notices come only with
// --verbose.
func TestDevLogsTheServerOnlyWhenVerbose(t *testing.T) {
	if n := strings.Count(runDevUntilReady(t), "component=nats-server"); n != 0 {
		t.Errorf("herald dev: %d lines of the NATS server on stderr, want none", n)
	}
	verbose := runDevUntilReady(t, "--verbose")
	if n := strings.Count(verbose, "component=nats-server"); n < 10 || !strings.Contains(verbose, "Server is ready") {
		t.Errorf("herald dev --verbose: %d lines of the NATS server, want its notices:\n%s", n, verbose)
	}
}
