// Package tracing makes OpenTelemetry spans of herald's hops and carries the
// W3C trace context of every event from the moment it is recorded.
//
// A Tracer does two things, installed together with Options:
//
//   - herald.WithTraceContext: when an event is recorded, a "record <type>"
//     span starts as a child of the span in the context of Do (or, for an
//     event a handler records, of its cause's record span) and its context
//     becomes the event's traceparent. The trace is fixed then — not when the
//     relay publishes the event later from another goroutine — and travels
//     in the CloudEvents headers.
//   - herald.WithObserver: publish, receive, process (handle), dead-letter
//     and deliver spans, children of the event's recorded context, with the
//     hop's real start and end times; one "process" span per consumer
//     transaction with a link to each event it handled.
//
// The record span ends as soon as the event is recorded: a transaction that
// rolls back leaves a record span with no publish or process spans after it.
//
//	tp, shutdown, _ := tracing.Setup(ctx, tracing.ConfigFromEnv("orders"))
//	defer shutdown(context.Background())
//	tr := tracing.New(tp)
//	svc, _ := herald.New("orders", append(opts, tr.Options()...)...)
package tracing

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
)

// ScopeName is the instrumentation scope of herald's spans.
const ScopeName = "github.com/heraldhq/herald"

// Attribute keys herald sets on its spans.
const (
	AttrEventID       = attribute.Key("herald.event.id")
	AttrEventType     = attribute.Key("herald.event.type")
	AttrEventKind     = attribute.Key("herald.event.kind")
	AttrService       = attribute.Key("herald.service")
	AttrSubscription  = attribute.Key("herald.subscription")
	AttrCorrelationID = attribute.Key("herald.correlation_id")
	AttrCausationID   = attribute.Key("herald.causation_id")
	AttrOutcome       = attribute.Key("herald.outcome")
	AttrAttempt       = attribute.Key("herald.attempt")
	AttrReason        = attribute.Key("herald.reason")
	AttrBatchSize     = attribute.Key("messaging.batch.message_count")
	AttrMessageID     = attribute.Key("messaging.message.id")
	AttrDestination   = attribute.Key("messaging.destination.name")
)

// Tracer turns herald's hops into spans. It is safe for concurrent use.
type Tracer struct {
	tracer trace.Tracer
	prop   propagation.TraceContext

	// notes remembers the trace context of notification events this process
	// received, so that the notifier's deliver spans (whose rows do not keep
	// the trace context) join their event's trace.
	mu    sync.Mutex
	notes map[string]trace.SpanContext
	ring  []string
	next  int
}

// noteCapacity bounds the notification contexts a Tracer remembers.
const noteCapacity = 8192

// New returns a Tracer whose spans go to tp.
func New(tp trace.TracerProvider) *Tracer {
	return &Tracer{tracer: tp.Tracer(ScopeName), notes: map[string]trace.SpanContext{}, ring: make([]string, noteCapacity)}
}

// Options returns the herald options that install t on a service.
func (t *Tracer) Options() []herald.Option {
	return []herald.Option{herald.WithTraceContext(t.TraceContext), herald.WithObserver(t)}
}

// TraceContext is a herald.TraceContextFunc: it starts and ends the event's
// "record" span and returns its context as the event's traceparent. The
// parent is the cause's recorded context for an event a handler records, and
// the span in ctx otherwise (or the context given with herald.WithTraceParent).
func (t *Tracer) TraceContext(ctx context.Context, e envelope.Envelope) (string, string) {
	parent := ctx
	if inherited := t.extract(e.TraceParent, e.TraceState); inherited.IsValid() &&
		(e.CausationID != "" || !trace.SpanContextFromContext(ctx).IsValid()) {
		parent = trace.ContextWithRemoteSpanContext(ctx, inherited)
	}
	kind := trace.SpanKindProducer
	if e.Kind == envelope.KindDomain {
		kind = trace.SpanKindInternal
	}
	sctx, span := t.tracer.Start(parent, "record "+e.Type, trace.WithSpanKind(kind), trace.WithTimestamp(e.Time),
		trace.WithAttributes(eventAttrs(e, e.Source)...))
	span.End()
	if !span.SpanContext().IsValid() {
		return e.TraceParent, e.TraceState // no tracing configured: keep what was inherited
	}
	c := propagation.MapCarrier{}
	t.prop.Inject(sctx, c)
	return c["traceparent"], c["tracestate"]
}

// Continue returns ctx carrying, as its remote parent span, the recorded
// trace context of the event a handler runs for (herald.EventFrom), so that
// spans the handler starts join the event's trace. Outside a handler, or for
// an event without trace context, it returns ctx unchanged.
func Continue(ctx context.Context) context.Context {
	e, ok := herald.EventFrom(ctx)
	if !ok || e.TraceParent == "" {
		return ctx
	}
	c := propagation.MapCarrier{"traceparent": e.TraceParent}
	if e.TraceState != "" {
		c["tracestate"] = e.TraceState
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

func (t *Tracer) extract(tp, ts string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	c := propagation.MapCarrier{"traceparent": tp}
	if ts != "" {
		c["tracestate"] = ts
	}
	return trace.SpanContextFromContext(t.prop.Extract(context.Background(), c))
}

func eventAttrs(e envelope.Envelope, service string) []attribute.KeyValue {
	a := []attribute.KeyValue{
		AttrEventID.String(e.ID), AttrMessageID.String(e.ID), AttrEventType.String(e.Type), AttrEventKind.String(string(e.Kind)),
		AttrService.String(service), AttrCorrelationID.String(e.CorrelationID),
	}
	if e.CausationID != "" {
		a = append(a, AttrCausationID.String(e.CausationID))
	}
	if e.Kind != envelope.KindDomain {
		a = append(a, AttrDestination.String(e.Type))
	}
	return a
}

// Observe implements herald.Observer: a span for each publish, consume,
// handle, dead-letter and deliver hop, with the hop's own times. record,
// translate and notify hops have their span from TraceContext.
func (t *Tracer) Observe(_ context.Context, o herald.Observation) {
	var name string
	kind := trace.SpanKindInternal
	parent := t.extract(o.Event.TraceParent, o.Event.TraceState)
	switch o.Hop {
	case herald.HopPublish:
		name, kind = "publish "+o.Event.Type, trace.SpanKindProducer
	case herald.HopConsume:
		name, kind = "receive "+o.Event.Type, trace.SpanKindConsumer
		if o.Event.Kind == envelope.KindNotification && parent.IsValid() {
			t.remember(o.Event.ID, parent)
		}
	case herald.HopHandle:
		name, kind = "process "+o.Event.Type, trace.SpanKindConsumer
	case herald.HopDeadLetter:
		name = "dead-letter " + o.Event.Type
	case herald.HopDeliver:
		name, kind = "deliver "+o.Event.Type, trace.SpanKindClient
		parent = t.recall(o.Event.CausationID)
	default:
		return
	}
	ctx := context.Background()
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	attrs := append(eventAttrs(o.Event, o.Service), AttrOutcome.String(o.Outcome.String()))
	if o.Subscription != "" {
		attrs = append(attrs, AttrSubscription.String(o.Subscription))
	}
	if o.Attempt > 0 {
		attrs = append(attrs, AttrAttempt.Int(o.Attempt))
	}
	if o.Reason != "" {
		attrs = append(attrs, AttrReason.String(o.Reason))
	}
	_, span := t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(o.Start), trace.WithAttributes(attrs...))
	switch {
	case o.Err != nil:
		span.RecordError(o.Err)
		span.SetStatus(codes.Error, o.Err.Error())
	case o.Outcome == herald.OutcomeError:
		span.SetStatus(codes.Error, o.Reason)
	}
	span.End(trace.WithTimestamp(o.Start.Add(o.Duration)))
}

// ObserveBatch implements herald.BatchObserver: one "process" span per
// consumer transaction, linked to the recorded context of each event in it.
func (t *Tracer) ObserveBatch(_ context.Context, b herald.BatchObservation) {
	links := make([]trace.Link, 0, len(b.Events))
	for _, e := range b.Events {
		if sc := t.extract(e.TraceParent, e.TraceState); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{AttrEventID.String(e.ID)}})
		}
	}
	_, span := t.tracer.Start(context.Background(), "process batch "+b.Subscription, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(b.Start), trace.WithLinks(links...), trace.WithNewRoot(),
		trace.WithAttributes(AttrService.String(b.Service), AttrSubscription.String(b.Subscription), AttrBatchSize.Int(len(b.Events))))
	span.End(trace.WithTimestamp(b.Start.Add(b.Duration)))
}

func (t *Tracer) remember(id string, sc trace.SpanContext) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.notes[id]; ok {
		return
	}
	if old := t.ring[t.next]; old != "" {
		delete(t.notes, old)
	}
	t.ring[t.next] = id
	t.next = (t.next + 1) % len(t.ring)
	t.notes[id] = sc
}

func (t *Tracer) recall(id string) trace.SpanContext {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.notes[id]
}

var (
	_ herald.Observer      = (*Tracer)(nil)
	_ herald.BatchObserver = (*Tracer)(nil)
)
