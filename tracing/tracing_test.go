package tracing_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/tracing"
)

type placed struct{ ID string }

var (
	orderPlaced    = herald.Domain[placed]("orders.placed")
	orderConfirmed = herald.Integration[placed]("shop.order.confirmed", herald.KeyBy(func(p placed) string { return p.ID }))
	scheduled      = herald.Domain[placed]("shipping.scheduled")
)

var quiet = slog.New(slog.DiscardHandler)

// TestTraceContextIsFixedAtRecordAndContinuedByConsumers records events
// inside request spans while nothing relays them, starts the relay and the
// consumer afterwards (their goroutines have no span), and checks with the
// SDK's span recorder that publish, receive and process spans, and the
// events a handler records, continue each request's trace from the context
// captured at Record; and that the consumer's batch span links every event.
func TestTraceContextIsFixedAtRecordAndContinuedByConsumers(t *testing.T) {
	ctx := context.Background()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer tp.Shutdown(ctx)
	tr := tracing.New(tp)

	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	prod, err := herald.New("orders", append([]herald.Option{herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(quiet)}, tr.Options()...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := herald.Translate(prod, orderPlaced, orderConfirmed, func(ctx context.Context, p placed) (placed, error) { return p, nil }); err != nil {
		t.Fatal(err)
	}
	cons, err := herald.New("shipping", append([]herald.Option{herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(quiet)}, tr.Options()...)...)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	headers := map[string]string{} // order id → traceparent the handler saw
	if err := cons.Register(scheduled); err != nil {
		t.Fatal(err)
	}
	if err := herald.Subscribe(cons, orderConfirmed, "schedule", func(ctx context.Context, tx herald.Tx, p placed) error {
		e, _ := herald.EventFrom(ctx)
		mu.Lock()
		headers[p.ID] = e.TraceParent
		mu.Unlock()
		_, span := tp.Tracer("test").Start(tracing.Continue(ctx), "user work")
		span.End()
		return herald.Record(tx, scheduled, p)
	}); err != nil {
		t.Fatal(err)
	}

	// Record five orders, each in its own request span, before anything runs.
	const n = 5
	requests := map[string]trace.SpanContext{}
	for i := range n {
		id := string(rune('a' + i))
		rctx, span := tp.Tracer("test").Start(ctx, "POST /orders")
		if err := prod.Do(rctx, func(tx herald.Tx) error { return herald.Record(tx, orderPlaced, placed{ID: id}) }); err != nil {
			t.Fatal(err)
		}
		span.End()
		requests[id] = span.SpanContext()
	}
	if err := prod.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	// Let the relay publish everything first, so the consumer's first
	// fetch holds several events: one transaction handles them.
	testwait.Until(t, 20*time.Second, "the relay to publish every event", func() bool { return count(sr, "publish shop.order.confirmed") == n })
	if err := cons.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	testwait.Until(t, 20*time.Second, "every event processed and its reply recorded", func() bool {
		return count(sr, "process shop.order.confirmed") == n && count(sr, "record shipping.scheduled") == n
	})

	spans := sr.Ended()
	byEvent := map[string]map[string]sdktrace.ReadOnlySpan{} // order id → span name → span
	for id, req := range requests {
		byEvent[id] = map[string]sdktrace.ReadOnlySpan{}
		for _, s := range spans {
			if s.SpanContext().TraceID() == req.TraceID() {
				byEvent[id][s.Name()] = s
			}
		}
	}
	for id, req := range requests {
		got := byEvent[id]
		recPlaced, recConfirmed := got["record orders.placed"], got["record shop.order.confirmed"]
		if recPlaced == nil || recConfirmed == nil {
			t.Fatalf("order %s: record spans missing from the request's trace: %v", id, names(got))
		}
		if recPlaced.Parent().SpanID() != req.SpanID() {
			t.Errorf("order %s: record orders.placed is not a child of the request span", id)
		}
		if recConfirmed.Parent().SpanID() != recPlaced.SpanContext().SpanID() {
			t.Errorf("order %s: record shop.order.confirmed is not a child of record orders.placed", id)
		}
		// The header the consumer received is the record span's context,
		// fixed when the event was recorded.
		want := "00-" + req.TraceID().String() + "-" + recConfirmed.SpanContext().SpanID().String() + "-01"
		mu.Lock()
		h := headers[id]
		mu.Unlock()
		if h != want {
			t.Errorf("order %s: consumer saw traceparent %q, want the record span's %q", id, h, want)
		}
		for _, name := range []string{"publish shop.order.confirmed", "receive shop.order.confirmed", "process shop.order.confirmed",
			"record shipping.scheduled", "user work"} {
			s := got[name]
			if s == nil {
				t.Errorf("order %s: no %q span in the request's trace (has %v)", id, name, names(got))
				continue
			}
			if s.Parent().SpanID() != recConfirmed.SpanContext().SpanID() {
				t.Errorf("order %s: %q's parent is %s, want record shop.order.confirmed %s", id, name, s.Parent().SpanID(), recConfirmed.SpanContext().SpanID())
			}
		}
		if s := got["process shop.order.confirmed"]; s != nil && s.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("process span kind %v", s.SpanKind())
		}
	}

	// Batches: one span per consumer transaction, linked to each event's
	// recorded context; together they link all five, and at least one
	// transaction handled several.
	linked := map[trace.TraceID]bool{}
	most := 0
	for _, s := range spans {
		if s.Name() != "process batch schedule" {
			continue
		}
		most = max(most, len(s.Links()))
		for _, l := range s.Links() {
			linked[l.SpanContext.TraceID()] = true
		}
	}
	for id, req := range requests {
		if !linked[req.TraceID()] {
			t.Errorf("order %s: no batch span links its trace", id)
		}
	}
	if most < 2 {
		t.Errorf("no batch span links more than one event (most: %d)", most)
	}
}

// TestNoTracerProviderKeepsInheritedContext: with tracing off (no-op
// provider), the trace context given with herald.WithTraceParent still
// travels.
func TestNoTracerProviderKeepsInheritedContext(t *testing.T) {
	ctx := context.Background()
	tp, shutdown, err := tracing.Setup(ctx, tracing.Config{Exporter: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)
	svc, err := herald.New("orders", append([]herald.Option{herald.WithStore(testdb.SQLite(t)), herald.WithLogger(quiet)}, tracing.New(tp).Options()...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Register(orderPlaced); err != nil {
		t.Fatal(err)
	}
	const tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := svc.Do(herald.WithTraceParent(ctx, tp1, ""), func(tx herald.Tx) error {
		return herald.Record(tx, orderPlaced, placed{ID: "x"})
	}); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := svc.Store().DB().QueryRow(`SELECT traceparent FROM herald_event_log`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != tp1 {
		t.Errorf("traceparent %q, want %q", got, tp1)
	}
}

func TestSetupExporters(t *testing.T) {
	ctx := context.Background()
	if _, _, err := tracing.Setup(ctx, tracing.Config{Exporter: "zipkin"}); !errors.Is(err, tracing.ErrUnknownExporter) {
		t.Errorf("unknown exporter: %v", err)
	}

	if _, _, err := tracing.Setup(ctx, tracing.Config{Exporter: "otlp", Endpoint: "localhost"}); err == nil || !strings.Contains(err.Error(), "localhost") {
		t.Errorf("endpoint without a scheme: %v", err)
	}

	var out bytes.Buffer
	tp, shutdown, err := tracing.Setup(ctx, tracing.Config{Exporter: "stdout", Writer: &out, ServiceName: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(ctx, "hello-stdout")
	span.End()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "hello-stdout") || !strings.Contains(out.String(), "orders") {
		t.Errorf("stdout exporter wrote %q", out.String())
	}

	// OTLP over HTTP to a real HTTP server.
	var mu sync.Mutex
	var paths []string
	var bodies int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path+" "+r.Header.Get("Content-Type"))
		if bytes.Contains(b, []byte("hello-otlp")) {
			bodies++
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tp, shutdown, err = tracing.Setup(ctx, tracing.Config{Exporter: "otlp", Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, span = tp.Tracer("test").Start(ctx, "hello-otlp")
	span.End()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if bodies != 1 || len(paths) == 0 || paths[0] != "/v1/traces application/x-protobuf" {
		t.Errorf("OTLP server got %v (%d bodies with the span)", paths, bodies)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
	t.Setenv("OTEL_SERVICE_NAME", "")
	if c := tracing.ConfigFromEnv("orders"); c.Exporter != "otlp" || c.ServiceName != "orders" {
		t.Errorf("endpoint set: %+v", c)
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	if c := tracing.ConfigFromEnv("orders"); c.Exporter != "none" {
		t.Errorf("OTEL_TRACES_EXPORTER=none: %+v", c)
	}
}

func count(sr *tracetest.SpanRecorder, name string) int {
	n := 0
	for _, s := range sr.Ended() {
		if s.Name() == name {
			n++
		}
	}
	return n
}

func names(m map[string]sdktrace.ReadOnlySpan) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
