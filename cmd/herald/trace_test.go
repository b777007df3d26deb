package main

import (
	"context"
	"errors"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/trace"
)

// TestTraceAndTail records a small flow on a real embedded JetStream with a
// client port, prints its tree with herald trace, and follows new records
// with herald tail and its filters.
func TestTraceAndTail(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rec, err := trace.NewRecorder(b, trace.Config{Source: "test", FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rec.Close()

	now := time.Now()
	ev := func(typ string, kind envelope.Kind, cause string) envelope.Envelope {
		return envelope.Envelope{ID: envelope.NewID(now), Type: typ, Kind: kind, CorrelationID: "flow-1", CausationID: cause}
	}
	placed := ev("orders.placed", envelope.KindDomain, "")
	confirmed := ev("shop.order.confirmed", envelope.KindIntegration, placed.ID)
	obs := []herald.Observation{
		{Hop: herald.HopRecord, Service: "orders", Event: placed, Start: now, Duration: time.Millisecond, Outcome: "ok"},
		{Hop: herald.HopTranslate, Service: "orders", Event: confirmed, Start: now, Duration: time.Millisecond, Outcome: "ok"},
		{Hop: herald.HopPublish, Service: "orders", Event: confirmed, Start: now.Add(2 * time.Millisecond), Duration: time.Millisecond, Outcome: "ok"},
		{Hop: herald.HopHandle, Service: "shipping", Subscription: "schedule", Event: confirmed, Start: now.Add(5 * time.Millisecond),
			Duration: time.Millisecond, Outcome: "retry", Attempt: 1, Err: errors.New("database is locked")},
	}
	for _, o := range obs {
		rec.Observe(ctx, o)
	}
	url := "--nats=" + b.URL()
	var out string
	deadline := time.Now().Add(10 * time.Second) // for both waits
	// On a timeout the checks below show the last output.
	_ = testwait.For(time.Until(deadline), "herald trace to show the handle", func() bool {
		out, err = runCLI(t, "trace", confirmed.ID, url) // an event id finds its flow
		return err == nil && strings.Contains(out, "handle")
	})
	if err != nil {
		t.Fatalf("herald trace: %v\n%s", err, out)
	}
	t.Logf("herald trace:\n%s", out)
	iPlaced, iConfirmed := strings.Index(out, "orders.placed domain"), strings.Index(out, "  shop.order.confirmed integration")
	if !strings.HasPrefix(out, "flow flow-1: 4 records, 2 services") || iPlaced < 0 || iConfirmed < iPlaced ||
		!strings.Contains(out, "shipping/schedule") || !strings.Contains(out, "database is locked") {
		t.Errorf("tree not as expected:\n%s", out)
	}
	if _, err := runCLI(t, "trace", "no-such-flow", url); !errors.Is(err, trace.ErrNotFound) {
		t.Errorf("unknown id: err %v, want ErrNotFound", err)
	}
	if _, err := runCLI(t, "trace", "x", "--server", ""); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Errorf("empty --server: err %v", err)
	}
	if _, err := runCLI(t, "tail", "--kind", "bogus", url); err == nil || !strings.Contains(err.Error(), "--kind") {
		t.Errorf("bad --kind: err %v", err)
	}

	// tail: only shipping's integration hops.
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var buf testlog.Buffer
	cmd := newRoot()
	cmd.SetOut(&buf)
	cmd.SetArgs([]string{"tail", url, "--service", "shipping", "--kind", "integration"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(tctx) }()
	// Records stored before tail's consumer exists are not shown: keep
	// recording until one arrives.
	_ = testwait.For(time.Until(deadline), "tail to show a record", func() bool {
		if strings.Contains(buf.String(), "shipping/schedule") {
			return true
		}
		for _, o := range obs {
			rec.Observe(ctx, o)
		}
		return false
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("herald tail: %v", err)
	}
	got := buf.String()
	if !strings.Contains(got, "shipping/schedule") {
		t.Errorf("tail output:\n%s", got)
	}
	for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
		if !strings.Contains(line, " shipping/schedule ") || !strings.Contains(line, " integration ") {
			t.Errorf("tail printed a record its filters exclude: %s", line)
		}
	}
}
