// Package consumer is the engine of one subscription: it takes the broker's
// deliveries, keeps them in per-key FIFO queues so that a retrying event
// holds back only later events of its own key (queue.go), holds new events
// back after a crash or a reconnect until the events that were out are
// back (hold.go) unless the broker restarts delivery in order itself
// (broker.Claimer), handles ready events in batched transactions — a fast
// pass without savepoints, an isolated pass with a savepoint per event
// after a handler failed, over one shared path that runs one event
// (pass.go) — and acknowledges only after commit.
//
// What it needs from the broker, the store and herald's transaction scope
// comes through the narrow interfaces of seams.go; the root package wires
// them (consume.go).
package consumer

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"runtime/debug"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/startstop"
	"github.com/heraldhq/herald/store"
)

// Retry says how a failing handler is retried.
type Retry struct {
	MaxAttempts int           // every run of the handler, the first included
	BaseDelay   time.Duration // the first retry's delay; each next doubles
	MaxDelay    time.Duration // the cap
}

// Config is one subscription's consumer.
type Config struct {
	// Subscription is the broker's durable consumer: service, name, the one
	// event type and kind it takes, ack wait, events in flight.
	Subscription broker.Subscription
	// Inbox is the key of the subscription's inbox rows.
	Inbox string
	// BatchSize is the most events one transaction handles (default 128).
	BatchSize int
	// Retry is the handler's retry policy (default 5 attempts, 100ms, 30s).
	Retry Retry
	// Decode turns an envelope of the subscription's type into what the
	// handler takes.
	Decode func(e *envelope.Envelope) (any, error)
	// CheckForeign, if set, checks the data of an event from a producer
	// that is not a herald service (envelope.Read.Foreign) before Decode:
	// its error dead-letters the event as store.ReasonMalformed (or
	// store.ReasonVersion when IsVersion says so). herald's own events
	// skip it.
	CheckForeign func(e *envelope.Envelope) error
	// IsVersion reports whether a Decode error says the event's version
	// cannot be taken (dead-lettered as store.ReasonVersion).
	IsVersion func(err error) bool
	// IsPermanent reports whether a handler's error will not go away on a
	// retry (dead-lettered at once as store.ReasonPermanent).
	IsPermanent func(err error) bool
	// Handle runs the subscription's handler inside a transaction.
	Handle Handler

	Broker   Broker
	Store    Store
	Observer Observer     // default: none
	Logger   *slog.Logger // default: discard
}

// Defaults of Config.
const (
	DefaultBatchSize = 128
	DefaultAckWait   = 10 * time.Second
)

// Restart pauses after an engine panic: the first, doubling up to the cap.
const (
	restartPause    = time.Second
	restartPauseMax = 30 * time.Second
)

// withDefaults fills in what is unset.
func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Subscription.AckWait == 0 {
		c.Subscription.AckWait = DefaultAckWait
	}
	if c.Retry == (Retry{}) {
		c.Retry = Retry{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: 30 * time.Second}
	}
	if c.IsVersion == nil {
		c.IsVersion = func(error) bool { return false }
	}
	if c.IsPermanent == nil {
		c.IsPermanent = func(error) bool { return false }
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrInvalidConfig marks a Config that New refuses.
var ErrInvalidConfig = errors.New("consumer: invalid config")

func (c *Config) validate() error {
	s := c.Subscription
	switch {
	case s.Name == "" || c.Inbox == "":
		return fmt.Errorf("%w: subscription %q needs a name and an inbox key", ErrInvalidConfig, s.Name)
	case len(s.Types) != 1:
		return fmt.Errorf("%w: subscription %s takes %d event types, want 1", ErrInvalidConfig, s.Name, len(s.Types))
	case c.BatchSize < 1 || s.AckWait <= 0:
		return fmt.Errorf("%w: subscription %s: batch size %d, ack wait %v", ErrInvalidConfig, s.Name, c.BatchSize, s.AckWait)
	case c.Retry.MaxAttempts < 1 || c.Retry.BaseDelay <= 0 || c.Retry.MaxDelay < c.Retry.BaseDelay:
		return fmt.Errorf("%w: subscription %s: retry %+v", ErrInvalidConfig, s.Name, c.Retry)
	case c.Decode == nil || c.Handle == nil || c.Broker == nil || c.Store == nil:
		return fmt.Errorf("%w: subscription %s needs Decode, Handle, Broker and Store", ErrInvalidConfig, s.Name)
	}
	return nil
}

// Consumer runs one subscription between Start and Stop. A panic inside the
// engine (a bug: handlers are contained on their own) is logged with its
// stack, the events it held go back to the broker, and it starts again
// after a pause growing from 1s to 30s — never a silent stop.
type Consumer struct {
	startstop.Base
	cfg Config

	// testSignals, when set, hears of the engine's steps (tests).
	testSignals *testSignals
}

// testSignals lets tests wait for the engine's steps.
type testSignals struct {
	restarted chan error // a run ended in a panic
}

// New validates cfg and returns its consumer, not started.
func New(cfg Config) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Consumer{cfg: cfg}, nil
}

// Start runs the consumer until Stop; ctx's values reach the broker and
// the store, its end does not stop the consumer. Starting a running
// consumer does nothing.
func (c *Consumer) Start(ctx context.Context) error {
	ctx, ok := c.StartInit(ctx)
	if !ok {
		return nil
	}
	c.Go(func() { c.supervise(ctx) })
	return nil
}

var _ startstop.Service = (*Consumer)(nil)

// supervise runs the consumer until ctx ends, again after a panic.
func (c *Consumer) supervise(ctx context.Context) {
	pause := restartPause
	for {
		err := c.runOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		c.cfg.Logger.Error("subscription consumer panicked; its held events went back to the broker, it restarts",
			"subscription", c.cfg.Subscription.Name, "err", err, "restart_in", pause)
		if c.testSignals != nil {
			c.testSignals.restarted <- err
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, restartPauseMax)
	}
}

// run is the state of one run of the consumer.
type run struct {
	cfg *Config
	q   queue
	seq uint64 // arrival counter, for transports without sequences

	// After a crash the broker redelivers the dead instance's unacked events
	// only when their ack wait ends, while new events flow at once; after a
	// reconnect, so it does the events that were on the wire. Until those
	// redeliveries are back (the broker counts none out), first deliveries
	// are held so that no event overtakes an older one of its key.
	hold  hold
	epoch uint64 // the transport's reconnects seen (broker.Resumer)
	// claims: the broker hands the subscription's partition to one
	// consumer at a time and restarts its delivery at the ack floor, in
	// stream order, on every takeover and reconnect (broker.Claimer): no
	// hold is needed. See claimsInOrder.
	claims bool
}

// claimsInOrder reports whether b hands sub's partition to one consumer at
// a time and restarts its delivery at the first unacknowledged event, in
// stream order, whenever a consumer gains it or its connection comes back
// (broker.Claimer). Then the consumer never holds: what a crashed holder,
// or a lost connection, left unacknowledged comes again before any newer
// event, at once rather than after its ack wait.
//
// Deliveries from before such a restart that still sit in the queue are
// harmless. The restart delivers them again with their stream sequence, and
// the queue swaps the live delivery in (queue.redeliver: the item keeps its
// place, its attempts and its retry time); one the restart does not bring
// back was acknowledged meanwhile — by this consumer, whose ack had not
// landed, or by another holder — and runs into its inbox row and is acked
// again, a no-op.
//
// Order per key holds across holders, a zombie included (an old holder
// that lost the partition but still finishes what it had queued): every
// holder handles a key's events in stream order, a new holder starts at
// the ack floor, and an event is acknowledged only after its effect
// committed, so the new holder handles every event the old one has not
// committed — before any newer event of the key. The inbox's unique row
// lets only one of the two commit each event: if the zombie commits event
// e first, the new holder finds e's row (its claim waits for the zombie's
// transaction, or fails it) before it handles anything newer of the key;
// if the new holder commits e first, the zombie's claim finds the row and
// it only acknowledges. Either way e's effect precedes every newer one of
// its key, and happens once.
func claimsInOrder(b Broker, sub broker.Subscription) bool {
	c, ok := b.(broker.Claimer)
	return ok && c.ClaimsInOrder(sub)
}

// PanicError is an engine panic a run ended in.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("consumer panicked: %v\n%s", e.Value, e.Stack)
}

// runOnce is one run of the consumer; it returns a *PanicError if the
// engine panicked.
func (c *Consumer) runOnce(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	cfg := &c.cfg
	r := &run{cfg: cfg, q: newQueue(), claims: claimsInOrder(cfg.Broker, cfg.Subscription)}
	ackWait := cfg.Subscription.AckWait
	r.hold = hold{ackWait: ackWait, tick: tickOf(ackWait)}
	in := make(chan []broker.Delivery, 8)
	if res, ok := cfg.Broker.(broker.Resumer); ok {
		r.epoch = res.Epoch()
	}
	r.recover(ctx, false)
	done := make(chan struct{})
	c.Go(func() {
		defer close(done)
		r.transport(ctx, in)
	})
	defer func() {
		// Stop the transport's goroutine first: it may be blocked handing
		// this loop a batch, which a panic left without a reader.
		cancel()
		<-done
		r.releaseAll()
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()

	tick := time.NewTicker(tickOf(ackWait))
	defer tick.Stop()
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-in:
			r.resumed(ctx) // before taking what came on a new connection
			r.accept(batch)
			// take what else is already waiting, to fill the transaction
		more:
			for r.q.len() < cfg.BatchSize {
				select {
				case b := <-in:
					r.resumed(ctx)
					r.accept(b)
				default:
					break more
				}
			}
			r.checkHold(ctx)
		case <-tick.C:
			r.heartbeat()
			r.resumed(ctx)
			r.checkHold(ctx)
		case <-timer:
			r.checkHold(ctx)
		}
		next := r.round(ctx)
		if w := r.hold.wake(); !w.IsZero() && (next.IsZero() || w.Before(next)) {
			next = w
		}
		timer = nil
		if !next.IsZero() {
			timer = time.After(time.Until(next))
		}
	}
}

// transport hands the broker's batches to the main loop until ctx ends or
// the broker closes; a failed Consume is tried again after a second.
func (r *run) transport(ctx context.Context, in chan<- []broker.Delivery) {
	cfg := r.cfg
	for ctx.Err() == nil {
		err := cfg.Broker.Consume(ctx, cfg.Subscription, cfg.BatchSize, func(ctx context.Context, batch []broker.Delivery) {
			select {
			case in <- batch:
			case <-ctx.Done():
				for _, d := range batch {
					_ = d.Nak(0)
				}
			}
		})
		if ctx.Err() != nil || errors.Is(err, broker.ErrClosed) {
			return
		}
		cfg.Logger.Warn("consume", "subscription", cfg.Subscription.Name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// tickOf is how often a consumer heartbeats the events it holds and looks
// for a reconnect.
func tickOf(ackWait time.Duration) time.Duration {
	return min(ackWait/4, time.Second)
}

// accept decodes deliveries and queues them by key, in stream order.
func (r *run) accept(batch []broker.Delivery) {
	now := time.Now()
	obs := r.cfg.Observer
	observing := obs.Observing()
	back := false // the hold's last awaited event arrived
	for _, d := range batch {
		r.seq++
		if r.q.redeliver(d, now) {
			continue
		}
		it := &item{seq: d.Sequence(), d: d, touched: now}
		if it.seq == 0 {
			it.seq = r.seq
		}
		if r.hold.active {
			// Hold everything, redeliveries too: the broker redelivers in
			// ack-deadline order, not stream order; the queues sort them.
			it.held = true
			if r.hold.arrived(now, it.seq, d.NumDelivered() > 1) {
				back = true
			}
		}
		r.classify(it)
		if observing && it.env != nil {
			obs.Consumed(it.env, now)
		}
		if it.key == "" {
			it.key = fmt.Sprintf("\x00%d", it.seq) // keyless events are not ordered
		}
		r.q.push(it)
	}
	if back {
		r.release(true, "the events that were out are back")
	}
}

// resumed starts a recovery when the transport's connection came back since
// the last look.
func (r *run) resumed(ctx context.Context) {
	res, ok := r.cfg.Broker.(broker.Resumer)
	if !ok {
		return
	}
	if e := res.Epoch(); e != r.epoch {
		r.epoch = e
		r.recover(ctx, true)
	}
}

// recover starts holding deliveries while the broker may have events of
// this subscription out — delivered and unacknowledged beyond the ones this
// consumer holds: a crashed predecessor's, or ones lost on the wire when the
// connection dropped (reconnected). The broker redelivers them when their
// ack wait ends; until they are back new deliveries wait, so no event
// overtakes an older one of its key. It asks the broker at once (most
// reconnects end the hold there) and then every 200ms for a few seconds,
// later on the tick, until the broker counts nothing out; a hold from the
// start also ends once the events counted out have arrived. See hold.
//
// After a reconnect a bare count (broker.PendingCounter) cannot be trusted:
// a broker that restarted may have lost the last of its consumer state and
// count fewer events than are out. Only a broker that also tells its
// delivered sequence (broker.PendingStater) can end such a hold before the
// ack wait is over.
//
// A broker that claims in order (r.claims) needs no hold: it restarts
// delivery at the ack floor itself.
func (r *run) recover(ctx context.Context, reconnected bool) {
	if r.claims {
		return
	}
	_, stater := r.cfg.Broker.(broker.PendingStater)
	if _, ok := r.cfg.Broker.(broker.PendingCounter); !ok && !stater {
		return
	}
	r.hold.begin(time.Now(), stater || !reconnected, !reconnected)
	r.ask(ctx, true)
}

// checkHold ends the hold at its cap, or asks the broker when the hold says
// it is time.
func (r *run) checkHold(ctx context.Context) {
	if !r.hold.active {
		return
	}
	if r.hold.expire(time.Now()) {
		r.release(true, "its longest hold is over")
		return
	}
	if r.hold.due(time.Now()) {
		r.ask(ctx, false)
	}
}

// ask asks the broker what of the subscription is unacknowledged and hands
// the answer to the hold. The first answer of a hold (first) is logged.
func (r *run) ask(ctx context.Context, first bool) {
	cfg := r.cfg
	actx, cancel := context.WithTimeout(ctx, tickOf(cfg.Subscription.AckWait))
	var a holdAnswer
	if ps, ok := cfg.Broker.(broker.PendingStater); ok {
		st, err := ps.PendingState(actx, cfg.Subscription)
		a = holdAnswer{err: err, pending: st.Pending, seqs: true, delivered: st.Delivered, floor: st.AckFloor}
	} else if pc, ok := cfg.Broker.(broker.PendingCounter); ok {
		n, err := pc.Pending(actx, cfg.Subscription)
		a = holdAnswer{err: err, pending: n}
	}
	cancel()
	if ctx.Err() != nil {
		return
	}
	before := r.hold.out()
	if r.hold.answer(time.Now(), a, r.q.seqs()) {
		// At the first answer: nothing was out, there was no hold to speak of.
		r.release(!first, "the broker counts no event out beyond the held ones")
		return
	}
	name := cfg.Subscription.Name
	switch out := r.hold.out(); {
	case a.err != nil && first:
		// A broker that has just restarted may not answer yet: hold, and
		// ask again shortly.
		cfg.Logger.Info("subscription recovering: cannot count unacknowledged events; holding new ones",
			"subscription", name, "err", a.err)
	case out >= 0 && before < 0:
		cfg.Logger.Info("subscription recovering: holding new events until earlier ones are redelivered",
			"subscription", name, "pending", out, "at_most", time.Until(r.hold.cap).Round(time.Millisecond))
	case first && out < 0:
		cfg.Logger.Info("subscription recovering: holding new events until the ack wait is over",
			"subscription", name, "pending", "unknown", "at_most", time.Until(r.hold.cap).Round(time.Millisecond))
	}
}

// release lets the held deliveries go, the hold being over (why; logged at
// info level when report is set, else at debug level).
func (r *run) release(report bool, why string) {
	r.hold.end()
	n := r.q.unhold()
	level := slog.LevelDebug
	if report {
		level = slog.LevelInfo
	}
	r.cfg.Logger.Log(context.Background(), level, "subscription recovered: releasing held events",
		"subscription", r.cfg.Subscription.Name, "held", n, "why", why)
}

// headerSeq is implemented by deliveries that can yield their headers
// without building the map Header returns (natsjs): a map per event is a
// good part of what decoding it costs. The keys may be in any case;
// envelope.FromBinaryHeaders matches them as FromBinary does.
type headerSeq interface {
	Headers() iter.Seq2[string, string]
}

// classify decodes it, or marks why it must be dead-lettered. An event of
// a producer that is not a herald service (envelope.Read.Foreign) is
// checked with CheckForeign first.
func (r *run) classify(it *item) {
	cfg := r.cfg
	sub := &cfg.Subscription
	var headers iter.Seq2[string, string]
	if hs, ok := it.d.(headerSeq); ok {
		headers = hs.Headers()
	} else {
		headers = maps.All(it.d.Header())
	}
	e, read, err := envelope.Decode(headers, it.d.Data(), sub.Kind)
	if err != nil {
		it.reason, it.lastErr = store.ReasonMalformed, err.Error()
		var de *envelope.DecodeError
		if errors.As(err, &de) {
			it.named = de
		}
		return
	}
	it.env = e
	it.key = e.Key
	switch {
	case e.Kind != sub.Kind:
		it.reason, it.lastErr = store.ReasonMalformed, fmt.Sprintf("kind %q on a %s subscription", e.Kind, sub.Kind)
		return
	case e.Type != sub.Types[0]:
		it.reason, it.lastErr = store.ReasonUnknownType, fmt.Sprintf("type %q: subscription %s takes %q", e.Type, sub.Name, sub.Types[0])
		return
	}
	it.foreign = read.Foreign
	if read.Foreign && cfg.CheckForeign != nil {
		if err := cfg.CheckForeign(e); err != nil {
			it.reason, it.lastErr = store.ReasonMalformed, err.Error()
			if cfg.IsVersion(err) {
				it.reason = store.ReasonVersion
			}
			return
		}
	}
	v, err := cfg.Decode(e)
	switch {
	case err != nil && cfg.IsVersion(err):
		it.reason, it.lastErr = store.ReasonVersion, err.Error()
	case err != nil:
		it.reason, it.lastErr = store.ReasonMalformed, fmt.Sprintf("decode %s v%d data: %v", e.Type, e.Version, err)
	default:
		it.val = v
	}
}

// heartbeat keeps the broker from redelivering events held back for
// ordering or retry.
func (r *run) heartbeat() {
	limit := time.Now().Add(-r.cfg.Subscription.AckWait / 3)
	for it := range r.q.items() {
		if it.touched.Before(limit) {
			if err := it.d.InProgress(); err == nil {
				it.touched = time.Now()
			}
		}
	}
}

// releaseAll hands every held event back to the broker at shutdown, so
// another instance takes it at once.
func (r *run) releaseAll() {
	for it := range r.q.items() {
		_ = it.d.Nak(0)
	}
	r.q.reset()
}
