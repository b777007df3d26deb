package herald

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// Hop names one step of an event's journey through the three tiers.
type Hop string

// The hops herald reports to observers.
const (
	HopRecord     Hop = "record"      // a domain event recorded in a transaction
	HopTranslate  Hop = "translate"   // an integration event written to the outbox
	HopNotify     Hop = "notify"      // a notification event written to the outbox
	HopPublish    Hop = "publish"     // the relay published an event to the broker
	HopConsume    Hop = "consume"     // a subscription received an event
	HopHandle     Hop = "handle"      // a subscription's handler committed its effect
	HopDeadLetter Hop = "dead-letter" // a subscription gave up on an event
	HopDeliver    Hop = "deliver"     // the notifier delivered (or failed) a notification
)

// Outcomes of an observation.
const (
	OutcomeOK        = "ok"
	OutcomeDuplicate = "duplicate" // a redelivery the inbox absorbed
	OutcomeRetry     = "retry"     // a handler failed and will run again
	OutcomeError     = "error"
)

// Observation is what happened at one hop to one event. Event carries the
// attributes only (no data).
type Observation struct {
	Hop          Hop
	Service      string
	Subscription string // consume, handle, dead-letter
	Event        envelope.Envelope
	Start        time.Time
	Duration     time.Duration
	Outcome      string
	Reason       string // dead-letter reason, delivery channel, …
	Attempt      int
	Err          error
}

// Observer receives observations. Observe is called synchronously on the hot
// path, possibly from several goroutines: it must be fast and must not block
// (buffer and drop rather than wait). Metrics, OpenTelemetry spans and the
// causal trace are observers.
type Observer interface {
	Observe(ctx context.Context, o Observation)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ctx context.Context, o Observation)

// Observe calls f.
func (f ObserverFunc) Observe(ctx context.Context, o Observation) { f(ctx, o) }

// WithObserver adds an observer to the service; several may be added.
func WithObserver(o Observer) Option {
	return func(c *config) error {
		if o == nil {
			return fmt.Errorf("%w: nil observer", ErrInvalidOption)
		}
		c.observers = append(c.observers, o)
		if bo, ok := o.(BatchObserver); ok {
			c.batchObservers = append(c.batchObservers, bo)
		}
		return nil
	}
}

// observe reports o to every observer, filling in the service.
func (s *Service) observe(ctx context.Context, o Observation) {
	if len(s.cfg.observers) == 0 {
		return
	}
	o.Service = s.name
	if o.Event.Data != nil {
		o.Event.Data = nil
	}
	for _, ob := range s.cfg.observers {
		ob.Observe(ctx, o)
	}
}

// Observe lets packages built on herald (the notifier) report their hops
// through the service's observers.
func (s *Service) Observe(ctx context.Context, o Observation) { s.observe(ctx, o) }

// observing reports whether anyone listens, so hot paths skip building
// observations nobody reads.
func (s *Service) observing() bool { return len(s.cfg.observers) > 0 }
