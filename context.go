package herald

import (
	"context"
	"time"

	"github.com/heraldhq/herald/envelope"
)

type ctxKey int

const (
	correlationKey ctxKey = iota
	traceParentKey
	eventKey
	txKey
)

// WithCorrelationID returns a context whose recorded events belong to the
// business flow id. Without one, the first event recorded in a Do starts a
// flow and names it after its own id; handlers of an event inherit its flow.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey, id)
}

// CorrelationID returns the flow carried by ctx, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey).(string)
	return id
}

// WithTraceParent returns a context whose recorded events carry the W3C
// traceparent tp (and tracestate ts, optional), so the trace continues
// across the broker.
func WithTraceParent(ctx context.Context, tp, ts string) context.Context {
	return context.WithValue(ctx, traceParentKey, [2]string{tp, ts})
}

func traceParent(ctx context.Context) (string, string) {
	v, _ := ctx.Value(traceParentKey).([2]string)
	return v[0], v[1]
}

// EventFrom returns the attributes (without data) of the event a handler was
// called for, when ctx is a handler's context.
func EventFrom(ctx context.Context) (envelope.Envelope, bool) {
	e, ok := ctx.Value(eventKey).(*envelope.Envelope)
	if !ok {
		return envelope.Envelope{}, false
	}
	c := *e
	c.Data = nil
	return c, true
}

func withEvent(ctx context.Context, e *envelope.Envelope) context.Context {
	return context.WithValue(ctx, eventKey, e)
}

// NewID returns a new time-sortable unique id (a ULID), handy for the
// ids of the rows a service creates along with its events.
func NewID() string { return envelope.NewID(time.Now()) }

// TxFrom returns the transaction a handler runs in, when ctx is the context
// herald passed to a domain or integration handler (or to code it calls,
// such as a notifier's Directory). Reads through it see the transaction's
// own writes and need no second connection.
func TxFrom(ctx context.Context) (Tx, bool) {
	tx, ok := ctx.Value(txKey).(Tx)
	return tx, ok
}
