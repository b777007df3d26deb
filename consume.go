package herald

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/consumer"
	"github.com/heraldhq/herald/internal/faulthook"
	"github.com/heraldhq/herald/store"
)

// The subscription consumer engine is internal/consumer; this file wires a
// subscription to it: its config, herald's transaction scope for the
// handler, and herald's observers.

// newConsumer builds the engine that runs partition p of sub (see
// partitionsOf). With more than one partition its logs carry the partition.
func (s *Service) newConsumer(sub *subscription, p, partitions int) (*consumer.Consumer, error) {
	bs := s.brokerSubscription(sub)
	bs.Partition = p
	log := s.log
	if partitions > 1 {
		log = log.With("partition", p)
	}
	return consumer.New(consumer.Config{
		Subscription: bs,
		Inbox:        sub.inbox,
		BatchSize:    sub.cfg.batch,
		Retry:        consumer.Retry(sub.cfg.retry),
		Decode:       sub.decode,
		CheckForeign: s.checkForeign,
		IsVersion: func(err error) bool {
			var ve versionError
			return errors.As(err, &ve)
		},
		// An event too large for the broker that the handler records is as
		// large on every attempt.
		IsPermanent: func(err error) bool { return IsPermanent(err) || errors.Is(err, ErrEventTooLarge) },
		Handle:      s.handlerOf(sub),
		Broker:      s.cfg.broker,
		Store:       consumerStore{s, sub.name},
		Observer:    consumerObserver{s, sub.name},
		Logger:      log,
	})
}

// partitionsOf is how many partitions sub is consumed in, one engine each:
// the broker's partitions (broker.Partitioner) for a subscription of
// integration events, else 1. Notifications stay on one stream, whatever
// the integration tier's partitions: a notification subscription runs one
// engine, on partition 0.
func (s *Service) partitionsOf(sub *subscription) int {
	p, ok := s.cfg.broker.(broker.Partitioner)
	if !ok || sub.contract.Kind() != KindIntegration {
		return 1
	}
	return max(p.Partitions(), 1)
}

// brokerSubscription is sub at the broker, for partition 0; set Partition
// for another.
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

// runHandler runs sub's handler for e inside the consumer transaction tx,
// in herald's transaction scope.
func (sub *subscription) runHandler(ctx context.Context, tx consumer.Tx, e *envelope.Envelope, v any) error {
	t := tx.(*consumerTx).t
	scope := &txScope{t: t, cause: e, depth: 1}
	scope.ctx = context.WithValue(withEvent(ctx, e), txKey, Tx(scope))
	err := runGuarded(func() error { return sub.handle(scope.ctx, scope, v) })
	if err == nil && t.failed != nil {
		err = t.failed
	}
	return err
}

// heraldtest's checker gives a service its faults by the internal hook, not
// by an exported option.
func init() {
	faulthook.With = func(f faulthook.Faults) any {
		return serviceOption(func(c *config) error {
			c.faults = f
			return nil
		})
	}
}

// handlerOf is what sub's consumer runs for each event: its handler, in
// the faults of heraldtest's checker when it has some.
func (s *Service) handlerOf(sub *subscription) consumer.Handler {
	f := s.cfg.faults
	if f == nil {
		return sub.runHandler
	}
	return func(ctx context.Context, tx consumer.Tx, e *envelope.Envelope, v any) error {
		return f.Handle(ctx, sub.name, sub.cfg.retry.MaxAttempts, e, func() error { return sub.runHandler(ctx, tx, e, v) })
	}
}

// consumerStore begins the transactions of subscription sub's consumer.
type consumerStore struct {
	s   *Service
	sub string
}

func (cs consumerStore) Begin(ctx context.Context) (consumer.Tx, error) {
	sqlTx, err := cs.s.engine.Begin(ctx)
	if err != nil {
		return nil, err
	}
	c := &consumerTx{st: cs.s.engine, sub: cs.sub, txn: txn{svc: cs.s, sql: sqlTx}}
	c.t = &c.txn
	return c, nil
}

// consumerTx is a consumer transaction: the *sql.Tx and herald's txn that
// collects what the handlers record.
type consumerTx struct {
	st         consumer.SQLStore
	sub        string // the subscription's name
	t          *txn   // &txn
	txn        txn    // in the same allocation
	nlog, nout int    // what was recorded at the last savepoint
	nobs       int    // the observations to report at commit, at the last savepoint
	napp       int    // the aggregates' appends at the last savepoint
}

func (c *consumerTx) InboxClaim(ctx context.Context, inbox, eventID string) (bool, error) {
	return c.st.InboxClaim(ctx, c.t.sql, inbox, eventID)
}

func (c *consumerTx) InboxClaimMany(ctx context.Context, inbox string, eventIDs []string) ([]bool, error) {
	return c.st.InboxClaimMany(ctx, c.t.sql, inbox, eventIDs)
}

func (c *consumerTx) TxSavepoint(ctx context.Context) error {
	c.nlog, c.nout, c.nobs, c.napp = len(c.t.log), len(c.t.outbox), len(c.t.onCommit), len(c.t.appends)
	return c.st.TxSavepoint(ctx, c.t.sql)
}

func (c *consumerTx) TxSavepointRelease(ctx context.Context) error {
	return c.st.TxSavepointRelease(ctx, c.t.sql)
}

// TxSavepointRollback undoes the rows since the savepoint, and the events
// the handler recorded and its failure.
func (c *consumerTx) TxSavepointRollback(ctx context.Context) error {
	if err := c.st.TxSavepointRollback(ctx, c.t.sql); err != nil {
		return err
	}
	t := c.t
	t.log, t.outbox, t.onCommit, t.failed = t.log[:c.nlog], t.outbox[:c.nout], t.onCommit[:c.nobs], nil
	if t.logPos != nil {
		t.logPos, t.appends = t.logPos[:c.nlog], t.appends[:c.napp]
	}
	return nil
}

func (c *consumerTx) TxHealthy(ctx context.Context) error { return c.st.TxHealthy(ctx, c.t.sql) }

func (c *consumerTx) DeadLetterInsert(ctx context.Context, dl store.DeadLetter) (int64, error) {
	return c.st.DeadLetterInsert(ctx, c.t.sql, dl)
}

// Commit writes what the handlers recorded, commits, and wakes the relay
// when the outbox got rows.
func (c *consumerTx) Commit(ctx context.Context) error {
	t := c.t
	if f := t.svc.cfg.faults; f != nil {
		if err := f.Commit(ctx, c.sub); err != nil {
			_ = c.Rollback()
			return err
		}
	}
	if err := t.svc.flush(ctx, t); err != nil {
		_ = c.Rollback()
		return err
	}
	t.done = true
	if err := t.sql.Commit(); err != nil {
		return err
	}
	if len(t.outbox) > 0 {
		t.svc.signal()
	}
	return nil
}

func (c *consumerTx) Rollback() error {
	c.t.done = true
	if err := c.t.sql.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}

// consumerObserver reports a subscription's consumer to the service's
// observers.
type consumerObserver struct {
	s   *Service
	sub string
}

func (o consumerObserver) Observing() bool { return o.s.observing() }
func (o consumerObserver) Batching() bool  { return o.s.obs.batching() }

func (o consumerObserver) Consumed(e *envelope.Envelope, now time.Time) {
	o.s.observe(context.Background(), Observation{Hop: HopConsume, Subscription: o.sub, Event: *e, Start: now, Outcome: OutcomeOK})
}

func (o consumerObserver) Committed(ctx context.Context, tx consumer.Tx) {
	o.s.observeCommit(ctx, tx.(*consumerTx).t)
}

func (o consumerObserver) Batch(ctx context.Context, start time.Time, d time.Duration, events []envelope.Envelope) {
	o.s.observeBatch(ctx, BatchObservation{Subscription: o.sub, Start: start, Duration: d, Events: events})
}

var consumerOutcomes = [...]Outcome{
	consumer.OutcomeOK:        OutcomeOK,
	consumer.OutcomeDuplicate: OutcomeDuplicate,
	consumer.OutcomeRetry:     OutcomeRetry,
}

func (o consumerObserver) Handled(ctx context.Context, e *envelope.Envelope, start time.Time, d time.Duration, outcome consumer.Outcome, attempt int, err error) {
	o.s.observe(ctx, Observation{Hop: HopHandle, Subscription: o.sub, Event: *e, Start: start,
		Duration: d, Outcome: consumerOutcomes[outcome], Attempt: attempt, Err: err})
}

func (o consumerObserver) DeadLettered(ctx context.Context, e *envelope.Envelope, now time.Time, reason string, attempt int, lastErr string) {
	ob := Observation{Hop: HopDeadLetter, Subscription: o.sub, Start: now, Outcome: OutcomeError,
		Reason: reason, Attempt: attempt, Err: fmt.Errorf("%s", lastErr)}
	if e != nil {
		ob.Event = *e
	}
	o.s.observe(ctx, ob)
}
