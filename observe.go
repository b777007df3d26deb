package herald

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/observehook"
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
	// HopDecide is the notifier's decision of one delivery of a
	// notification event (a recipient on a channel), reported once the
	// decision's transaction committed and before the subscription's handle
	// hop of the event. Event is the delivery, as for HopDeliver (its id the
	// delivery id, caused by the notification event); Reason is the
	// channel; Recipient the recipient; Outcome the state it was decided
	// in: "queued" (a deliver hop follows when it is sent, failed or
	// retried), "deferred" (quiet hours, a fallback waiting on its primary),
	// "digested" (folded into a digest sent later), or one that ends the
	// delivery there: "suppressed", "throttled", "failed" (the notifier
	// also reports those as deliver hops, later, once it sees them
	// committed).
	HopDecide Hop = "decide"
	// HopReplay is a dead letter replayed (Service.ReplayDeadLetters):
	// its event re-delivered to the one subscription named, whose handle
	// (or dead-letter) hop follows. It is reported before the broker is
	// asked; a replay the broker refused is reported again, its outcome
	// error. A replay of a producer-side dead letter is not reported: its
	// event goes back through the outbox and reports its publish.
	HopReplay Hop = "replay"
)

// Outcome is how one hop of an event ended.
type Outcome string

// The outcomes of an observation.
const (
	OutcomeOK        Outcome = "ok"
	OutcomeDuplicate Outcome = "duplicate" // a redelivery the inbox absorbed
	OutcomeRetry     Outcome = "retry"     // a handler failed and will run again
	OutcomeError     Outcome = "error"
)

// String returns the outcome's name, e.g. "ok": what metrics label it with.
func (o Outcome) String() string { return string(o) }

// Observation is what happened at one hop to one event. Event carries the
// attributes only (no data).
type Observation struct {
	Hop          Hop
	Service      string
	Subscription string // consume, handle, dead-letter
	Event        envelope.Envelope
	Start        time.Time
	Duration     time.Duration
	Outcome      Outcome
	Reason       string // dead-letter reason, delivery channel, …
	// Recipient is the recipient id of a notification delivery (decide,
	// deliver); empty for every other hop.
	Recipient string
	Attempt   int
	Err       error
	// Known reports whether Event.Type is a contract the service registered.
	// Types that came off the wire unchecked (garbage, a type no contract
	// here names) are not known: observers that make labels of types use
	// one label for all of them, so made-up types cannot explode their
	// cardinality.
	Known bool
}

// Observer receives observations, possibly from several goroutines. An
// observer can never stop the flow: a panic in Observe is recovered, counted
// (ObserverStats) and logged once per observer and hop; and unless the
// observer is an InlineObserver it is not called on the hot path at all but
// from a goroutine of its own, through a bounded queue, so a slow one loses
// observations (counted) instead of slowing a consumer, the relay or the
// notifier; Close delivers what the queue still holds, for up to a second. Each observer sees a goroutine's observations in the order they
// happened. ctx carries the values of the context the hop ran in, never its
// cancellation. Metrics, OpenTelemetry spans and the causal trace are
// observers.
type Observer interface {
	Observe(ctx context.Context, o Observation)
}

// InlineObserver is an Observer whose Observe (and ObserveBatch, if it is a
// BatchObserver) returns at once and never blocks — a counter, a buffer that
// drops when full. herald calls it inline, on the hot path, sparing it the
// queue. Inline is a marker; herald never calls it.
type InlineObserver interface {
	Observer
	Inline()
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ctx context.Context, o Observation)

// Observe calls f.
func (f ObserverFunc) Observe(ctx context.Context, o Observation) { f(ctx, o) }

// WithObserver adds an observer to the service; several may be added.
func WithObserver(o Observer) Option {
	return serviceOption(func(c *config) error {
		if o == nil {
			return fmt.Errorf("%w: nil observer", ErrInvalidOption)
		}
		c.observers = append(c.observers, o)
		return nil
	})
}

// ObserverStats counts what the service's observers lost.
type ObserverStats struct {
	// Panics counts observations whose observer panicked.
	Panics uint64
	// Dropped counts observations a queued observer's full queue dropped.
	Dropped uint64
}

// ObserverStats reports what the service's observers lost so far.
func (s *Service) ObserverStats() ObserverStats {
	return ObserverStats{Panics: s.obs.panics.Load(), Dropped: s.obs.dropped.Load()}
}

// observe reports o to every observer, filling in the service.
func (s *Service) observe(ctx context.Context, o Observation) {
	if s.obs.none() {
		return
	}
	o.Service = s.name
	o.Event.Data = nil
	o.Known = s.reg.knows(o.Event.Type)
	s.obs.observe(ctx, o)
}

// observeBatch reports a handled batch to the batch observers.
func (s *Service) observeBatch(ctx context.Context, b BatchObservation) {
	b.Service = s.name
	s.obs.observeBatch(ctx, b)
}

// The notifier reports its hops through the service's observers by the
// internal hook, not by an exported method.
func init() {
	observehook.Observe = func(ctx context.Context, svc, o any) {
		svc.(*Service).observe(ctx, o.(Observation))
	}
	observehook.Observing = func(svc any) bool { return svc.(*Service).observing() }
	observehook.OnCommit = func(tx, o any) {
		t := tx.(Tx).scope().t
		if !t.svc.observing() {
			return
		}
		t.onCommit = append(t.onCommit, o.(Observation))
	}
}

// observing reports whether anyone listens, so hot paths skip building
// observations nobody reads.
func (s *Service) observing() bool { return !s.obs.none() }

// observerQueueSize is how many observations a queued observer may lag
// behind before it loses them.
const observerQueueSize = 4096

// observerHub hands observations to the service's observers: inline ones
// directly, the others through their queues; either way contained.
type observerHub struct {
	log     *slog.Logger
	inline  []*observerEntry
	inlineB []*observerEntry // the inline observers that are BatchObservers
	queues  []*observerQueue
	started sync.Once // the queues' goroutines run
	stop    context.CancelFunc
	wg      sync.WaitGroup
	panics  atomic.Uint64
	dropped atomic.Uint64
	logged  sync.Map // what was logged once: "panic <observer> <hop>", "drop <observer>"
}

// observerQueue is one queued observer and its backlog.
type observerQueue struct {
	*observerEntry
	ch chan queuedObservation
}

// observerEntry is one observer of the service.
type observerEntry struct {
	n  int // its place among the service's observers, for what is logged once
	o  Observer
	bo BatchObserver // o, if it is one
}

// queuedObservation is one entry of a queue: an observation or a batch.
type queuedObservation struct {
	ctx   context.Context
	o     Observation
	batch *BatchObservation
}

func newObserverHub(log *slog.Logger, obs []Observer) *observerHub {
	h := &observerHub{log: log}
	for i, o := range obs {
		e := &observerEntry{n: i + 1, o: o}
		e.bo, _ = o.(BatchObserver)
		if _, ok := o.(InlineObserver); ok {
			h.inline = append(h.inline, e)
			if e.bo != nil {
				h.inlineB = append(h.inlineB, e)
			}
			continue
		}
		h.queues = append(h.queues, &observerQueue{observerEntry: e, ch: make(chan queuedObservation, observerQueueSize)})
	}
	return h
}

func (h *observerHub) none() bool { return len(h.inline) == 0 && len(h.queues) == 0 }

// batching reports whether any observer is a BatchObserver.
func (h *observerHub) batching() bool {
	if len(h.inlineB) > 0 {
		return true
	}
	for _, q := range h.queues {
		if q.bo != nil {
			return true
		}
	}
	return false
}

func (h *observerHub) observe(ctx context.Context, o Observation) {
	for _, ob := range h.inline {
		h.call(ob, ctx, o)
	}
	if len(h.queues) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	for _, q := range h.queues {
		h.enqueue(q, queuedObservation{ctx: ctx, o: o})
	}
}

func (h *observerHub) observeBatch(ctx context.Context, b BatchObservation) {
	for _, bo := range h.inlineB {
		h.callBatch(bo, ctx, b)
	}
	var shared *BatchObservation
	for _, q := range h.queues {
		if q.bo == nil {
			continue
		}
		if shared == nil {
			shared = &b
			ctx = context.WithoutCancel(ctx)
		}
		h.enqueue(q, queuedObservation{ctx: ctx, batch: shared})
	}
}

// enqueue hands e to q's goroutine, or drops it when q is full.
func (h *observerHub) enqueue(q *observerQueue, e queuedObservation) {
	h.started.Do(h.start)
	select {
	case q.ch <- e:
	default:
		h.dropped.Add(1)
		h.once(fmt.Sprintf("drop %d", q.n), func() {
			h.log.Warn("observer too slow: dropping observations (counted in ObserverStats); logged once",
				"observer", q.name(), "queue", observerQueueSize)
		})
	}
}

// name names the observer in logs: its place among the service's observers
// and its type.
func (e *observerEntry) name() string { return fmt.Sprintf("#%d (%T)", e.n, e.o) }

// call runs e's Observe, containing a panic.
func (h *observerHub) call(e *observerEntry, ctx context.Context, o Observation) {
	defer h.contain(e, o.Hop)
	e.o.Observe(ctx, o)
}

// callBatch runs e's ObserveBatch, containing a panic.
func (h *observerHub) callBatch(e *observerEntry, ctx context.Context, b BatchObservation) {
	defer h.contain(e, "batch")
	e.bo.ObserveBatch(ctx, b)
}

// contain, deferred, recovers an observer's panic, counts it and logs it
// once per observer and hop.
func (h *observerHub) contain(e *observerEntry, hop Hop) {
	r := recover()
	if r == nil {
		return
	}
	h.panics.Add(1)
	h.once(fmt.Sprintf("panic %d %s", e.n, hop), func() {
		h.log.Error("observer panicked; the flow goes on without it (counted in ObserverStats; logged once per observer and hop)",
			"observer", e.name(), "hop", string(hop), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	})
}

func (h *observerHub) once(key string, f func()) {
	if _, seen := h.logged.LoadOrStore(key, struct{}{}); !seen {
		f()
	}
}

// start runs a goroutine per queue; the first observation to queue calls
// it, so that a service observed before (or without) Start is observed too.
func (h *observerHub) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	for _, q := range h.queues {
		h.wg.Go(func() { h.drain(ctx, q, observerGrace) })
	}
}

// close stops the queues' goroutines once they delivered what they hold,
// waiting at most about twice observerGrace: an observer stuck in a call is
// abandoned, and logged. Nothing is queued for delivery afterwards.
func (h *observerHub) close() {
	h.started.Do(func() {}) // after close, nothing starts the queues again
	if h.stop == nil {
		return
	}
	h.stop()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * observerGrace):
		h.log.Warn("an observer did not return in time; abandoning it", "waited", 2*observerGrace)
	}
}

// observerGrace is how long a closing service keeps delivering what its
// observers' queues hold.
const observerGrace = time.Second

func (h *observerHub) drain(ctx context.Context, q *observerQueue, grace time.Duration) {
	deliver := func(e queuedObservation) {
		if e.batch != nil {
			h.callBatch(q.observerEntry, e.ctx, *e.batch)
		} else {
			h.call(q.observerEntry, e.ctx, e.o)
		}
	}
	for ctx.Err() == nil {
		select {
		case e := <-q.ch:
			deliver(e)
		case <-ctx.Done():
		}
	}
	stop := time.Now().Add(grace)
	for time.Now().Before(stop) {
		select {
		case e := <-q.ch:
			deliver(e)
		default:
			return
		}
	}
}
