package trace_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/trace"
)

// lostSink is a trace stream that can be lost: while gone, appends fail
// with broker.ErrNotProvisioned, and a provision brings it back unless
// refuse is set.
type lostSink struct {
	mu         sync.Mutex
	gone       bool
	refuse     bool
	provisions int
	stored     int // batches stored
}

func (s *lostSink) ProvisionTrace(context.Context, time.Duration, int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.provisions++
	if s.refuse {
		return errors.New("provision refused")
	}
	s.gone = false
	return nil
}

func (s *lostSink) AppendTrace(context.Context, string, []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return fmt.Errorf("no stream: %w", broker.ErrNotProvisioned)
	}
	s.stored++
	return nil
}

func (s *lostSink) counts() (provisions, stored int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.provisions, s.stored
}

func observeOne(r *trace.Recorder, id string) {
	r.Observe(context.Background(), herald.Observation{Hop: herald.HopRecord, Service: "orders", Start: time.Now(),
		Event: envelope.Envelope{ID: id, Type: "orders.placed", Kind: envelope.KindDomain, CorrelationID: "flow-" + id}})
}

// TestRecorderCreatesALostStreamAgain: after the stream is lost, the next
// append provisions it again, stores the batch, and says so at Warn.
func TestRecorderCreatesALostStreamAgain(t *testing.T) {
	sink := &lostSink{}
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	r, err := trace.NewRecorder(sink, trace.Config{Source: "orders", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sink.mu.Lock()
	sink.gone = true
	sink.mu.Unlock()
	observeOne(r, "e1")
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if p, s := sink.counts(); p != 2 || s != 1 || r.Lost() != 0 {
		t.Errorf("after the stream was lost: %d provisions (want 2: Start's and the writer's), %d batches stored (want 1), %d records lost (want 0)",
			p, s, r.Lost())
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "created it again") {
		t.Errorf("the re-creation was not logged at Warn:\n%s", logs.String())
	}
}

// TestRecorderReprovisionsAtMostOnceASecond: while the stream cannot be
// created again, the writer does not ask at every flush: at most once a
// second, backing off.
func TestRecorderReprovisionsAtMostOnceASecond(t *testing.T) {
	sink := &lostSink{}
	r, err := trace.NewRecorder(sink, trace.Config{Source: "orders", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sink.mu.Lock()
	sink.gone, sink.refuse = true, true
	sink.mu.Unlock()
	start := time.Now()
	const flushes = 50
	for i := range flushes {
		observeOne(r, fmt.Sprint("e", i))
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	p, _ := sink.counts()
	p-- // Start's
	if p < 1 || p > 1+int(elapsed/time.Second) {
		t.Errorf("%d flushes in %v: %d attempts to create the stream again, want 1 to %d", flushes, elapsed, p, 1+int(elapsed/time.Second))
	}
	if r.Lost() != flushes {
		t.Errorf("lost %d records, want %d", r.Lost(), flushes)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestRecorderRecreatesADeletedStreamOnJetStream: the trace stream deleted
// under a running recorder (as a server restart loses a stream in memory)
// is back, with the records observed after, at the next flush.
func TestRecorderRecreatesADeletedStreamOnJetStream(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := trace.NewRecorder(b, trace.Config{Source: "orders", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	observeOne(r, "before")
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "HERALD_TRACE"); err != nil {
		t.Fatal(err)
	}
	if _, err := trace.Collect(ctx, b, "flow-before"); !errors.Is(err, broker.ErrNotProvisioned) {
		t.Fatalf("read after the delete: %v, want ErrNotProvisioned", err)
	}
	observeOne(r, "after")
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := trace.Collect(ctx, b, "flow-after")
	if err != nil || len(recs) != 1 || recs[0].EventID != "after" {
		t.Fatalf("records of the flow observed after the delete: %+v, %v", recs, err)
	}
	if r.Lost() != 0 {
		t.Errorf("%d records lost, want 0", r.Lost())
	}
}
