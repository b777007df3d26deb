package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/trace"
)

// startDev runs herald dev with args until it prints its export line and
// returns its URL, and a stop function that stops it and returns what it
// wrote on stderr.
func startDev(t *testing.T, args ...string) (url string, stop func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb testlog.Buffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(append([]string{"dev", "--listen", "127.0.0.1:0"}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	stopped := false
	stop = func() string {
		t.Helper()
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("herald dev %v: %v", args, err)
			}
		}
		return errb.String()
	}
	t.Cleanup(func() { stop() })
	testwait.UntilReport(t, 30*time.Second, func() bool {
		for _, line := range strings.Split(out.String(), "\n") {
			if u, ok := strings.CutPrefix(line, "export NATS_URL="); ok {
				url = u
				return true
			}
		}
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("herald dev %v ended: %v\n%s%s", args, err, out.String(), errb.String())
		default:
		}
		return false
	}, func() string { return fmt.Sprintf("herald dev %v: no export line:\n%s", args, out.String()) })
	return url, stop
}

// TestDevLogsTheServerOnlyWhenVerbose: herald dev's stdout line is what a
// user needs; the embedded server's two dozen notices come only with
// --verbose.
func TestDevLogsTheServerOnlyWhenVerbose(t *testing.T) {
	_, stop := startDev(t, "--data-dir", t.TempDir())
	if n := strings.Count(stop(), "component=nats-server"); n != 0 {
		t.Errorf("herald dev: %d lines of the NATS server on stderr, want none", n)
	}
	_, stop = startDev(t, "--data-dir", t.TempDir(), "--verbose")
	verbose := stop()
	if n := strings.Count(verbose, "component=nats-server"); n < 10 || !strings.Contains(verbose, "Server is ready") {
		t.Errorf("herald dev --verbose: %d lines of the NATS server, want its notices:\n%s", n, verbose)
	}
}

// TestDevKeepsTheTraceAcrossARestart: a service records a flow on herald
// dev; dev restarts on the same data directory; herald trace still prints
// the flow. (The trace stream was in memory: after the restart herald trace
// said no service had recorded a trace.)
func TestDevKeepsTheTraceAcrossARestart(t *testing.T) {
	clearNATSEnv(t)
	dir := t.TempDir()
	url, stop := startDev(t, "--data-dir", dir)
	ctx := context.Background()
	b, err := natsjs.Connect(ctx, []string{url}, natsjs.WithLogger(slog.New(slog.DiscardHandler)), natsjs.WithConnectRetry(false))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rec, err := trace.NewRecorder(b, trace.Config{Source: "orders", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	ev := envelope.Envelope{ID: envelope.NewID(time.Now()), Type: "orders.placed", Kind: envelope.KindDomain, CorrelationID: "flow-kept"}
	rec.Observe(ctx, herald.Observation{Hop: herald.HopRecord, Service: "orders", Event: ev, Start: time.Now(), Outcome: herald.OutcomeOK})
	if err := rec.Sync(ctx); err != nil || rec.Lost() > 0 {
		t.Fatalf("recording: %v, %d lost", err, rec.Lost())
	}
	stop()

	url, _ = startDev(t, "--data-dir", dir)
	out, err := runCLI(t, "trace", "flow-kept", "--server", url)
	if err != nil || !strings.Contains(out, "orders.placed") {
		t.Fatalf("herald trace after dev restarted: %v\n%s", err, out)
	}
}

// TestTraceTellsNoStreamFromNoRecords: herald trace says there is no trace
// stream only when there is none, and that it has no records of the flow
// when the stream exists without them.
func TestTraceTellsNoStreamFromNoRecords(t *testing.T) {
	clearNATSEnv(t)
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = runCLI(t, "trace", "flow-1", "--server", b.URL())
	if !errors.Is(err, broker.ErrNotProvisioned) || !strings.Contains(err.Error(), "no trace stream") {
		t.Errorf("without a trace stream: %v", err)
	}
	if err := b.ProvisionTrace(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, "trace", "flow-1", "--server", b.URL())
	if !errors.Is(err, trace.ErrNotFound) || strings.Contains(err.Error(), "no trace stream") || !strings.Contains(err.Error(), "no records at all") {
		t.Errorf("with an empty trace stream: %v", err)
	}
	batch := trace.AppendRecord(trace.NewBatch(0), trace.Record{Hop: herald.HopRecord, Service: "orders", EventID: "e1", CorrelationID: "flow-2", Time: time.Now()})
	if err := b.AppendTrace(ctx, "orders", batch); err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, "trace", "flow-1", "--server", b.URL())
	if !errors.Is(err, trace.ErrNotFound) || !strings.Contains(err.Error(), "1 records, of other flows") {
		t.Errorf("with another flow's records: %v", err)
	}
}
