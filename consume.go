package herald

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/backoff"
	"github.com/heraldhq/herald/store"
)

// item is one delivery held by a consumer until it is settled.
type item struct {
	seq      uint64 // stream sequence: publish order
	held     bool   // a first delivery held back while a crashed instance's events return
	d        broker.Delivery
	env      *envelope.Envelope // nil when undecodable
	val      any
	key      string // ordering key
	reason   string // set when the event must be dead-lettered at once
	lastErr  string
	attempts int
	due      time.Time // not before (retries)
	touched  time.Time // last time the broker heard of it
}

// handledItem is the outcome of one handler run, reported after commit.
type handledItem struct {
	it      *item
	outcome string
	start   time.Time
	d       time.Duration
	err     error
}

// consumer runs one subscription: it keeps per-key FIFO queues so that a
// retrying event holds back only later events of its own key, handles ready
// events in batched transactions (a savepoint per event only after a handler
// failed), and acknowledges only after commit.
type consumer struct {
	svc    *Service
	sub    *subscription
	queues map[string][]*item // per key, in stream order
	bySeq  map[uint64]*item   // every queued item, by stream sequence
	held   int
	seq    uint64 // arrival counter, for transports without sequences

	// After a crash the broker redelivers the dead instance's unacked events
	// only when their ack wait ends, while new events flow at once; after a
	// reconnect, so it does the events that were on the wire. Until those
	// redeliveries are back (the broker counts none out), first deliveries
	// are held so that no event overtakes an older one of its key.
	hold  hold
	bsub  broker.Subscription
	epoch uint64 // the transport's reconnects seen (broker.Resumer)
}

// consume runs sub until ctx ends. A panic inside the consumer engine (a
// bug: handlers and observers are contained on their own) is logged with its
// stack, the events the consumer held go back to the broker, and the
// consumer starts again after a growing pause — never a silent stop.
func (s *Service) consume(ctx context.Context, sub *subscription) {
	pause := time.Second
	for {
		err := s.consumeOnce(ctx, sub)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Error("subscription consumer panicked; its held events went back to the broker, it restarts",
			"subscription", sub.name, "err", err, "restart_in", pause)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// consumeOnce is one run of the consumer; it returns a *PanicError if the
// engine panicked.
func (s *Service) consumeOnce(ctx context.Context, sub *subscription) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	c := &consumer{svc: s, sub: sub, queues: map[string][]*item{}, bySeq: map[uint64]*item{}}
	c.hold = hold{ackWait: sub.cfg.ackWait, tick: consumeTick(sub.cfg.ackWait)}
	in := make(chan []broker.Delivery, 8)
	bsub := s.brokerSubscription(sub)
	c.bsub = bsub
	if r, ok := s.broker.(broker.Resumer); ok {
		c.epoch = r.Epoch()
	}
	c.recover(ctx, false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			err := s.broker.Consume(ctx, bsub, sub.cfg.batch, func(ctx context.Context, batch []broker.Delivery) {
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
			s.log.Warn("consume", "subscription", sub.name, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	defer func() {
		// Stop the transport's goroutine first: it may be blocked handing
		// this loop a batch, which a panic left without a reader.
		cancel()
		<-done
		c.releaseAll()
		err = recovered(recover())
	}()

	tick := time.NewTicker(consumeTick(sub.cfg.ackWait))
	defer tick.Stop()
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-in:
			c.resumed(ctx) // before taking what came on a new connection
			c.accept(batch)
			// take what else is already waiting, to fill the transaction
		more:
			for c.held < sub.cfg.batch {
				select {
				case b := <-in:
					c.resumed(ctx)
					c.accept(b)
				default:
					break more
				}
			}
			c.checkHold(ctx)
		case <-tick.C:
			c.heartbeat()
			c.resumed(ctx)
			c.checkHold(ctx)
		case <-timer:
			c.checkHold(ctx)
		}
		next := c.round(ctx)
		if w := c.hold.wake(); !w.IsZero() && (next.IsZero() || w.Before(next)) {
			next = w
		}
		timer = nil
		if !next.IsZero() {
			timer = time.After(time.Until(next))
		}
	}
}

// consumeTick is how often a consumer heartbeats the events it holds and
// looks for a reconnect.
func consumeTick(ackWait time.Duration) time.Duration {
	return min(ackWait/4, time.Second)
}

// accept decodes deliveries and queues them by key, in stream order.
func (c *consumer) accept(batch []broker.Delivery) {
	now := time.Now()
	back := false // the hold's last awaited event arrived
	for _, d := range batch {
		c.seq++
		if old, ok := c.bySeq[d.Sequence()]; ok && d.Sequence() != 0 {
			// A redelivery of an event this consumer still holds (its ack
			// wait ran out, say while the connection was down): keep one
			// item, with the live delivery.
			old.d, old.touched = d, now
			continue
		}
		it := &item{seq: d.Sequence(), d: d, touched: now}
		if it.seq == 0 {
			it.seq = c.seq
		}
		if c.hold.active {
			// Hold everything, redeliveries too: the broker redelivers in
			// ack-deadline order, not stream order; the queues sort them.
			it.held = true
			if c.hold.arrived(now, it.seq, d.NumDelivered() > 1) {
				back = true
			}
		}
		c.bySeq[it.seq] = it
		c.classify(it)
		if c.svc.observing() && it.env != nil {
			c.svc.observe(context.Background(), Observation{Hop: HopConsume, Subscription: c.sub.name, Event: *it.env, Start: now, Outcome: OutcomeOK})
		}
		if it.key == "" {
			it.key = fmt.Sprintf("\x00%d", it.seq) // keyless events are not ordered
		}
		q := append(c.queues[it.key], it)
		for i := len(q) - 1; i > 0 && q[i-1].seq > q[i].seq; i-- {
			q[i-1], q[i] = q[i], q[i-1] // a redelivery goes back before newer events
		}
		c.queues[it.key] = q
		c.held++
	}
	if back {
		c.release(true, "the events that were out are back")
	}
}

// resumed starts a recovery when the transport's connection came back since
// the last look.
func (c *consumer) resumed(ctx context.Context) {
	r, ok := c.svc.broker.(broker.Resumer)
	if !ok {
		return
	}
	if e := r.Epoch(); e != c.epoch {
		c.epoch = e
		c.recover(ctx, true)
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
func (c *consumer) recover(ctx context.Context, reconnected bool) {
	_, stater := c.svc.broker.(broker.PendingStater)
	if _, ok := c.svc.broker.(broker.PendingCounter); !ok && !stater {
		return
	}
	c.hold.begin(time.Now(), stater || !reconnected, !reconnected)
	c.ask(ctx, true)
}

// checkHold ends the hold at its cap, or asks the broker when the hold says
// it is time.
func (c *consumer) checkHold(ctx context.Context) {
	if !c.hold.active {
		return
	}
	if c.hold.expire(time.Now()) {
		c.release(true, "its longest hold is over")
		return
	}
	if c.hold.due(time.Now()) {
		c.ask(ctx, false)
	}
}

// ask asks the broker what of the subscription is unacknowledged and hands
// the answer to the hold. The first answer of a hold (first) is logged.
func (c *consumer) ask(ctx context.Context, first bool) {
	actx, cancel := context.WithTimeout(ctx, consumeTick(c.sub.cfg.ackWait))
	var a holdAnswer
	if ps, ok := c.svc.broker.(broker.PendingStater); ok {
		st, err := ps.PendingState(actx, c.bsub)
		a = holdAnswer{err: err, pending: st.Pending, seqs: true, delivered: st.Delivered, floor: st.AckFloor}
	} else if pc, ok := c.svc.broker.(broker.PendingCounter); ok {
		n, err := pc.Pending(actx, c.bsub)
		a = holdAnswer{err: err, pending: n}
	}
	cancel()
	if ctx.Err() != nil {
		return
	}
	before := c.hold.out()
	if c.hold.answer(time.Now(), a, maps.Keys(c.bySeq)) {
		// At the first answer: nothing was out, there was no hold to speak of.
		c.release(!first, "the broker counts no event out beyond the held ones")
		return
	}
	switch out := c.hold.out(); {
	case a.err != nil && first:
		// A broker that has just restarted may not answer yet: hold, and
		// ask again shortly.
		c.svc.log.Info("subscription recovering: cannot count unacknowledged events; holding new ones",
			"subscription", c.sub.name, "err", a.err)
	case out >= 0 && before < 0:
		c.svc.log.Info("subscription recovering: holding new events until earlier ones are redelivered",
			"subscription", c.sub.name, "pending", out, "at_most", time.Until(c.hold.cap).Round(time.Millisecond))
	case first && out < 0:
		c.svc.log.Info("subscription recovering: holding new events until the ack wait is over",
			"subscription", c.sub.name, "pending", "unknown", "at_most", time.Until(c.hold.cap).Round(time.Millisecond))
	}
}

// release lets the held deliveries go, the hold being over (why; logged at
// info level when report is set, else at debug level).
func (c *consumer) release(report bool, why string) {
	c.hold.end()
	n := 0
	for _, q := range c.queues {
		for _, it := range q {
			if it.held {
				it.held = false
				n++
			}
		}
	}
	level := slog.LevelDebug
	if report {
		level = slog.LevelInfo
	}
	c.svc.log.Log(context.Background(), level, "subscription recovered: releasing held events", "subscription", c.sub.name, "held", n, "why", why)
}

// headerSeq is implemented by deliveries that can yield their headers
// without building the map Header returns (natsjs): a map per event is a
// good part of what decoding it costs. The keys may be in any case;
// envelope.FromBinaryHeaders matches them as FromBinary does.
type headerSeq interface {
	Headers() iter.Seq2[string, string]
}

// classify decodes it, or marks why it must be dead-lettered.
func (c *consumer) classify(it *item) {
	var e *envelope.Envelope
	var err error
	if hs, ok := it.d.(headerSeq); ok {
		e, err = envelope.FromBinaryHeaders(hs.Headers(), it.d.Data())
	} else {
		e, err = envelope.FromBinary(it.d.Header(), it.d.Data())
	}
	if err != nil {
		it.reason, it.lastErr = store.ReasonMalformed, err.Error()
		return
	}
	it.env = e
	it.key = e.Key
	switch {
	case e.Kind != c.sub.contract.Kind():
		it.reason, it.lastErr = store.ReasonMalformed, fmt.Sprintf("kind %q on a %s subscription", e.Kind, c.sub.contract.Kind())
		return
	case e.Type != c.sub.contract.Name():
		it.reason, it.lastErr = store.ReasonUnknownType, fmt.Sprintf("type %q: subscription %s takes %q", e.Type, c.sub.name, c.sub.contract.Name())
		return
	}
	v, err := c.sub.decode(e)
	var ve versionError
	switch {
	case errors.As(err, &ve):
		it.reason, it.lastErr = store.ReasonVersion, err.Error()
	case err != nil:
		it.reason, it.lastErr = store.ReasonMalformed, fmt.Sprintf("decode %s v%d data: %v", e.Type, e.Version, err)
	default:
		it.val = v
	}
}

// ready returns, in arrival order, the due prefix of every key's queue.
func (c *consumer) ready(now time.Time, limit int) ([]*item, time.Time) {
	var out []*item
	var next time.Time
	for _, q := range c.queues {
		for _, it := range q {
			if it.held {
				break
			}
			if it.due.After(now) {
				if next.IsZero() || it.due.Before(next) {
					next = it.due
				}
				break
			}
			out = append(out, it)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	if len(out) > limit {
		out = out[:limit]
		next = now
	}
	return out, next
}

// round handles every ready event in one transaction and returns when the
// next held event becomes due (zero if none).
func (c *consumer) round(ctx context.Context) time.Time {
	for ctx.Err() == nil {
		now := time.Now()
		batch, next := c.ready(now, c.sub.cfg.batch)
		if len(batch) == 0 {
			return next
		}
		settled, err := c.handleBatch(ctx, batch)
		if err != nil {
			// The transaction itself failed (database down, commit error):
			// nothing is settled, every event of the batch waits and retries.
			if ctx.Err() != nil {
				return time.Time{}
			}
			c.svc.log.Warn("subscription transaction", "subscription", c.sub.name, "err", err)
			d := backoff.Delay(2, c.sub.cfg.retry.BaseDelay, c.sub.cfg.retry.MaxDelay)
			for _, it := range batch {
				it.due = now.Add(d)
			}
			continue
		}
		for _, it := range settled {
			// The effect is committed: a lost ack costs one redelivery,
			// which finds the inbox row and is acked without the handler.
			if err := it.d.AckNoWait(); err != nil && ctx.Err() == nil {
				c.svc.log.Debug("ack", "subscription", c.sub.name, "err", err)
			}
			c.remove(it)
		}
		// Loop: settled events left their queues and failed ones wait for
		// their due time, so the next ready() sees only what can run now.
	}
	return time.Time{}
}

// remove drops a settled item from the head of its key's queue.
func (c *consumer) remove(it *item) {
	q := c.queues[it.key]
	for i, x := range q {
		if x == it {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(c.queues, it.key)
	} else {
		c.queues[it.key] = q
	}
	delete(c.bySeq, it.seq)
	c.held--
	c.hold.settle(it.seq)
}

// handleBatch runs the batch in one transaction. It returns the items that
// are settled (handled, duplicate, or dead-lettered) once it committed;
// items whose handler failed get their next due time.
//
// The fast pass claims the inbox rows of the whole batch in one statement
// and runs the handlers without savepoints. Most batches succeed and commit
// there. When a handler fails, the fast pass rolls everything back: the
// failing event gets its retry time (or its dead-letter reason) and the
// batch runs again in handleIsolated, an event per savepoint, without it and
// the later events of its key — so the outcome is what handleIsolated alone
// would give, and only the failing handler's run counts as an attempt.
func (c *consumer) handleBatch(ctx context.Context, batch []*item) ([]*item, error) {
	settled, fallback, err := c.handleFast(ctx, batch)
	if !fallback.use {
		return settled, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var handled []handledItem
	blocked := map[string]bool{}
	if it := fallback.blamed; it != nil && it.reason == "" {
		if c.svc.observing() {
			handled = append(handled, handledItem{it, OutcomeRetry, time.Now().Add(-fallback.took), fallback.took, fallback.err})
		}
		c.svc.log.Debug("handler failed, will retry", "subscription", c.sub.name, "event", it.env.ID,
			"attempt", it.attempts, "retry_at", it.due, "err", fallback.err)
	}
	return c.handleIsolated(ctx, batch, handled, blocked, fallback.blamed)
}

// fastFallback says why a fast pass gave up and what it learnt.
type fastFallback struct {
	use    bool
	blamed *item         // the event whose handler failed, with its outcome set
	err    error         // its error
	took   time.Duration // its handler's run time
}

// handleFast is handleBatch's fast pass: one inbox statement, no savepoints.
// When it returns fallback.use, it committed nothing.
func (c *consumer) handleFast(ctx context.Context, batch []*item) (settled []*item, fallback fastFallback, err error) {
	s := c.svc
	st := s.engine
	sqlTx, err := st.Begin(ctx)
	if err != nil {
		return nil, fastFallback{}, err
	}
	t := &txn{svc: s, sql: sqlTx}
	batchStart := time.Now()
	ids := make([]string, 0, len(batch))
	for _, it := range batch {
		if it.reason == "" {
			ids = append(ids, it.env.ID)
		}
	}
	fresh, err := st.InboxClaimMany(ctx, sqlTx, c.sub.inbox, ids)
	if err != nil {
		_ = c.abort(t, err)
		return nil, fastFallback{use: true}, nil
	}
	settled = make([]*item, 0, len(batch))
	var deadLettered, ran []*item
	var handled []handledItem
	// giveUp rolls the pass back; the attempts it counted did not happen.
	giveUp := func() {
		_ = c.abort(t, nil)
		for _, it := range ran {
			it.attempts--
		}
	}
	lastBeat := time.Now()
	n := 0
	for _, it := range batch {
		if time.Since(lastBeat) > c.sub.cfg.ackWait/3 {
			c.heartbeat() // a long batch must not let the broker redeliver what waits
			lastBeat = time.Now()
		}
		if it.reason != "" {
			added, err := c.deadLetter(ctx, t, it)
			if err != nil {
				giveUp()
				return nil, fastFallback{use: true}, nil
			}
			settled = append(settled, it)
			if added {
				deadLettered = append(deadLettered, it)
			}
			continue
		}
		isFresh := fresh[n]
		n++
		hstart := time.Now()
		if isFresh {
			it.attempts++
			ran = append(ran, it)
			scope := &txScope{t: t, cause: it.env, depth: 1}
			scope.ctx = context.WithValue(withEvent(ctx, it.env), txKey, Tx(scope))
			herr := runGuarded(func() error { return c.sub.handle(scope.ctx, scope, it.val) })
			if herr == nil && t.failed != nil {
				herr = t.failed
			}
			if herr != nil {
				took := time.Since(hstart)
				// Blame this handler only if the transaction still works:
				// on PostgreSQL an earlier handler that swallowed a
				// statement's error leaves it failed, and then any later
				// statement fails. If it does not work, the isolated pass
				// finds the culprit.
				healthy := st.TxHealthy(ctx, sqlTx) == nil
				giveUp()
				if !healthy || ctx.Err() != nil {
					return nil, fastFallback{use: true}, nil
				}
				it.attempts++ // this run happened and failed
				c.failed(it, herr)
				return nil, fastFallback{use: true, blamed: it, err: herr, took: took}, nil
			}
		}
		settled = append(settled, it)
		if s.observing() {
			outcome := OutcomeOK
			if !isFresh {
				outcome = OutcomeDuplicate
			}
			handled = append(handled, handledItem{it, outcome, hstart, time.Since(hstart), nil})
		}
	}
	if err := s.flush(ctx, t); err != nil {
		giveUp()
		return nil, fastFallback{use: true}, nil
	}
	if err := sqlTx.Commit(); err != nil {
		// Unknown: a handler may have left the transaction failed, or the
		// database is down. The isolated pass tells which.
		t.done = true
		for _, it := range ran {
			it.attempts--
		}
		return nil, fastFallback{use: true}, nil
	}
	t.done = true
	c.committed(ctx, t, handled, deadLettered, batchStart)
	return settled, fastFallback{}, nil
}

// failed sets what happens next to it after its handler failed with herr:
// a dead-letter reason, or its next due time.
func (c *consumer) failed(it *item, herr error) {
	it.lastErr = herr.Error()
	switch {
	case IsPermanent(herr), errors.Is(herr, ErrEventTooLarge):
		// An event too large for the broker that the handler records is
		// as large on every attempt.
		it.reason = store.ReasonPermanent
	case it.attempts >= c.sub.cfg.retry.MaxAttempts:
		it.reason = store.ReasonExhausted
	default:
		it.due = time.Now().Add(backoff.Delay(it.attempts, c.sub.cfg.retry.BaseDelay, c.sub.cfg.retry.MaxDelay))
	}
}

// committed does what follows a consumer transaction's commit: wake the
// relay, publish the dead letters, report to observers (what the handlers
// recorded, the batch, each handled and dead-lettered event).
func (c *consumer) committed(ctx context.Context, t *txn, handled []handledItem, deadLettered []*item, batchStart time.Time) {
	s := c.svc
	if len(t.outbox) > 0 {
		s.signal()
	}
	for _, it := range deadLettered {
		c.publishDeadLetter(ctx, it)
	}
	if !s.observing() {
		return
	}
	s.observeCommit(ctx, t) // what the handlers recorded
	now := time.Now()
	if s.obs.batching() {
		b := BatchObservation{Subscription: c.sub.name, Start: batchStart, Duration: now.Sub(batchStart)}
		for _, h := range handled {
			if h.outcome == OutcomeOK {
				b.Events = append(b.Events, *h.it.env)
				b.Events[len(b.Events)-1].Data = nil
			}
		}
		if len(b.Events) > 0 {
			s.observeBatch(ctx, b)
		}
	}
	for _, h := range handled {
		s.observe(ctx, Observation{Hop: HopHandle, Subscription: c.sub.name, Event: *h.it.env, Start: h.start,
			Duration: h.d, Outcome: h.outcome, Attempt: h.it.attempts, Err: h.err})
	}
	for _, it := range deadLettered {
		o := Observation{Hop: HopDeadLetter, Subscription: c.sub.name, Start: now, Outcome: OutcomeError,
			Reason: it.reason, Attempt: it.attempts, Err: fmt.Errorf("%s", it.lastErr)}
		if it.env != nil {
			o.Event = *it.env
		}
		s.observe(ctx, o)
	}
}

// handleIsolated runs the batch in one transaction with a savepoint per
// event, so that a failing handler undoes only its own event. It returns the
// items that are settled (handled, duplicate, or dead-lettered) once it
// committed; items whose handler failed get their next due time. handled
// holds what the fast pass already reported of the batch (the failure that
// sent it here). blamed, the event whose handler failed in the fast pass,
// is not run again if it waits for a retry; from it on, its key's events
// are skipped (blocked), as are those of keys blocked in this pass.
func (c *consumer) handleIsolated(ctx context.Context, batch []*item, handled []handledItem, blocked map[string]bool, blamed *item) ([]*item, error) {
	s := c.svc
	st := s.engine
	sqlTx, err := st.Begin(ctx)
	if err != nil {
		return nil, err
	}
	t := &txn{svc: s, sql: sqlTx}
	batchStart := time.Now()
	settled := make([]*item, 0, len(batch))
	var deadLettered []*item
	lastBeat := time.Now()
	for _, it := range batch {
		if time.Since(lastBeat) > c.sub.cfg.ackWait/3 {
			c.heartbeat() // a long batch must not let the broker redeliver what waits
			lastBeat = time.Now()
		}
		if it == blamed && it.reason == "" {
			blocked[it.key] = true // it waits for its retry; so do later events of its key
			continue
		}
		if blocked[it.key] {
			continue
		}
		if it.reason != "" {
			added, err := c.deadLetter(ctx, t, it)
			if err != nil {
				return nil, c.abort(t, err)
			}
			settled = append(settled, it)
			if added {
				deadLettered = append(deadLettered, it)
			}
			continue
		}
		if err := st.TxSavepoint(ctx, sqlTx); err != nil {
			return nil, c.abort(t, err)
		}
		fresh, err := st.InboxClaim(ctx, sqlTx, c.sub.inbox, it.env.ID)
		if err != nil {
			return nil, c.abort(t, err)
		}
		var herr error
		hstart := time.Now()
		nlog, nout := len(t.log), len(t.outbox)
		if fresh {
			it.attempts++
			scope := &txScope{t: t, cause: it.env, depth: 1}
			scope.ctx = context.WithValue(withEvent(ctx, it.env), txKey, Tx(scope))
			herr = runGuarded(func() error { return c.sub.handle(scope.ctx, scope, it.val) })
			if herr == nil && t.failed != nil {
				herr = t.failed
			}
		}
		if herr == nil {
			if err := st.TxSavepointRelease(ctx, sqlTx); err != nil {
				// The handler left the transaction failed (PostgreSQL: it
				// swallowed a statement's error). Undo this event only and
				// count it as this event's failure, so it retries and, if it
				// keeps failing, is dead-lettered instead of stalling the batch.
				herr = fmt.Errorf("handler left its transaction failed: %w", err)
			}
		}
		if herr == nil {
			settled = append(settled, it)
			if c.svc.observing() {
				outcome := OutcomeOK
				if !fresh {
					outcome = OutcomeDuplicate
				}
				handled = append(handled, handledItem{it, outcome, hstart, time.Since(hstart), nil})
			}
			continue
		}
		// Undo this event only: its rows, its inbox claim and the events
		// its handler recorded.
		if err := st.TxSavepointRollback(ctx, sqlTx); err != nil {
			return nil, c.abort(t, err)
		}
		t.log, t.outbox, t.failed = t.log[:nlog], t.outbox[:nout], nil
		c.failed(it, herr)
		if it.reason != "" {
			added, err := c.deadLetter(ctx, t, it)
			if err != nil {
				return nil, c.abort(t, err)
			}
			settled = append(settled, it)
			if added {
				deadLettered = append(deadLettered, it)
			}
			continue
		}
		blocked[it.key] = true
		if c.svc.observing() {
			handled = append(handled, handledItem{it, OutcomeRetry, hstart, time.Since(hstart), herr})
		}
		s.log.Debug("handler failed, will retry", "subscription", c.sub.name, "event", it.env.ID,
			"attempt", it.attempts, "retry_at", it.due, "err", herr)
	}
	if err := s.flush(ctx, t); err != nil {
		return nil, c.abort(t, err)
	}
	if err := sqlTx.Commit(); err != nil {
		t.done = true
		return nil, err
	}
	t.done = true
	c.committed(ctx, t, handled, deadLettered, batchStart)
	return settled, nil
}

func (c *consumer) abort(t *txn, err error) error {
	t.done = true
	_ = t.sql.Rollback()
	return err
}

// deadLetter stores it as a dead letter inside t, with the inbox row that
// keeps a redelivery from dead-lettering it twice: the event's id, or for a
// message that could not be decoded its stream sequence and a digest of its
// bytes. It reports false, storing nothing, for such a redelivery (its ack
// was lost, or its ack wait ran out while it waited on a loaded machine).
func (c *consumer) deadLetter(ctx context.Context, t *txn, it *item) (bool, error) {
	dl := store.DeadLetter{
		Service:      c.svc.name,
		Subscription: c.sub.name,
		Reason:       it.reason,
		LastError:    it.lastErr,
		Attempts:     it.attempts,
		Header:       it.d.Header(),
		Data:         it.d.Data(),
		Time:         time.Now(),
	}
	var key string
	if it.env != nil {
		dl.EventID, dl.Type, dl.Version = it.env.ID, it.env.Type, it.env.Version
		key = it.env.ID
	} else {
		key = undecodableKey(it.seq, dl.Header, dl.Data)
	}
	fresh, err := c.svc.engine.InboxClaim(ctx, t.sql, c.sub.inbox, key)
	if err != nil {
		return false, err
	}
	if !fresh {
		c.svc.log.Debug("dead letter already recorded; acknowledging the redelivery", "subscription", c.sub.name,
			"event", dl.EventID, "seq", it.seq)
		return false, nil
	}
	if dl.Data == nil {
		dl.Data = []byte{}
	}
	if _, err := c.svc.engine.DeadLetterInsert(ctx, t.sql, dl); err != nil {
		return false, err
	}
	c.svc.log.Warn("dead-lettered", "subscription", c.sub.name, "event", dl.EventID, "type", dl.Type,
		"reason", dl.Reason, "err", dl.LastError, "attempts", dl.Attempts)
	return true, nil
}

// undecodableKey is the inbox key of a message without a usable event id:
// its stream sequence and a digest of its headers and body, so that only a
// redelivery of the same message matches it.
func undecodableKey(seq uint64, header map[string]string, data []byte) string {
	h := sha256.New()
	keys := slices.Sorted(maps.Keys(header))
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(header[k]), header[k])
	}
	h.Write(data)
	return fmt.Sprintf("undecodable:%d:%x", seq, h.Sum(nil)[:16])
}

// publishDeadLetter tells the broker's dead-letter subject, best effort: the
// store row is the record.
func (c *consumer) publishDeadLetter(ctx context.Context, it *item) {
	err := c.svc.broker.PublishDeadLetter(ctx, broker.DeadLetter{
		Event: it.env, RawHeader: it.d.Header(), RawData: it.d.Data(),
		Service: c.svc.name, Subscription: c.sub.name, Reason: it.reason,
		LastError: it.lastErr, Attempts: it.attempts, Time: time.Now(),
	})
	if err != nil && ctx.Err() == nil {
		c.svc.log.Debug("publish dead letter", "err", err)
	}
}

// heartbeat keeps the broker from redelivering events held back for
// ordering or retry.
func (c *consumer) heartbeat() {
	limit := time.Now().Add(-c.sub.cfg.ackWait / 3)
	for _, q := range c.queues {
		for _, it := range q {
			if it.touched.Before(limit) {
				if err := it.d.InProgress(); err == nil {
					it.touched = time.Now()
				}
			}
		}
	}
}

// releaseAll hands every held event back to the broker at shutdown, so
// another instance takes it at once.
func (c *consumer) releaseAll() {
	for _, q := range c.queues {
		for _, it := range q {
			_ = it.d.Nak(0)
		}
	}
	c.queues = map[string][]*item{}
	c.bySeq = map[uint64]*item{}
	c.held = 0
}

func (s *Service) brokerSubscription(sub *subscription) broker.Subscription {
	return broker.Subscription{
		Service:       s.name,
		Name:          sub.name,
		Types:         []string{sub.contract.Name()},
		Kind:          sub.contract.Kind(),
		AckWait:       sub.cfg.ackWait,
		MaxAckPending: sub.cfg.maxAckPending,
	}
}
