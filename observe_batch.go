package herald

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// BatchObservation is one transaction of a subscription that handled several
// events at once: what an OpenTelemetry observer turns into one span with a
// link to each event's trace.
type BatchObservation struct {
	Service      string
	Subscription string
	// Events are the attributes (no data) of the events whose handlers ran
	// and committed in the transaction, in stream order. Duplicates the inbox
	// absorbed and dead letters are not among them.
	Events   []envelope.Envelope
	Start    time.Time
	Duration time.Duration
}

// BatchObserver is implemented by observers that also want one report per
// consumer transaction. An Observer passed to WithObserver that implements it
// gets ObserveBatch after each committed transaction that ran at least one
// handler, before the transaction's per-event HopHandle observations. It is
// called as Observe is: inline for an InlineObserver, otherwise through the
// observer's queue, and a panic is contained.
type BatchObserver interface {
	ObserveBatch(ctx context.Context, b BatchObservation)
}

// TraceContextFunc returns the W3C trace context (traceparent, tracestate) an
// event carries from the moment it is recorded. ctx is the context of the
// Do or handler that records e; e holds the attributes herald filled in, its
// TraceParent and TraceState inherited from the event that caused it or from
// WithTraceParent. It must not block.
type TraceContextFunc func(ctx context.Context, e envelope.Envelope) (traceparent, tracestate string)

// WithTraceContext sets how recorded events capture their trace context —
// typically from the OpenTelemetry span in the context (see the tracing
// package), so that the trace is fixed when the event is recorded, not when
// the relay publishes it, and consumers continue it from the headers.
func WithTraceContext(f TraceContextFunc) Option {
	return serviceOption(func(c *config) error {
		if f == nil {
			return fmt.Errorf("%w: nil trace context function", ErrInvalidOption)
		}
		c.traceContext = f
		return nil
	})
}
