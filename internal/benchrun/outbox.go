package benchrun

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/store"
)

// runOutbox compares, per dialect, n bare transactions (one INSERT each)
// with n herald transactions doing the same INSERT and recording one domain
// event translated to one integration event, delivered through the relay
// and JetStream to a consumer. One writer; herald's clock runs until the
// consumer handled the last event, so its rate is end to end.
func runOutbox(ctx context.Context, r *runner) error {
	for _, d := range r.dialects() {
		if r.wants("bare-tx-" + d) {
			res, err := r.bareTx(ctx, d, r.cfg.Transactions)
			if err != nil {
				return fmt.Errorf("bare transactions on %s: %w", d, err)
			}
			r.add(res)
		}
		if r.wants("herald-tx-" + d) {
			res, err := r.heraldTx(ctx, d, r.cfg.Transactions)
			if err != nil {
				return fmt.Errorf("herald transactions on %s: %w", d, err)
			}
			r.add(res)
		}
	}
	return nil
}

const ordersTable = `CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`

// bareTx commits n transactions of one INSERT without herald; latency is
// each transaction's begin to commit.
func (r *runner) bareTx(ctx context.Context, dialect string, n int) (Result, error) {
	res := Result{Scenario: "outbox", System: "bare-tx-" + dialect, Baseline: true}
	st, closeStore, err := r.openStore(ctx, dialect, "outbox-bare")
	if err != nil {
		return res, err
	}
	defer closeStore()
	if _, err := st.DB().ExecContext(ctx, ordersTable); err != nil {
		return res, err
	}
	q := st.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`)
	bar := r.progress(res.System, n)
	defer bar.Done()
	lat := NewLatencies(n)
	m := StartMeter()
	for i := range n {
		t0 := time.Now()
		tx, err := store.EngineOf(st).Begin(ctx)
		if err != nil {
			return res, err
		}
		if _, err := tx.ExecContext(ctx, q, "o-"+strconv.Itoa(i), i); err != nil {
			_ = tx.Rollback()
			return res, err
		}
		if err := tx.Commit(); err != nil {
			return res, err
		}
		lat.Add(time.Since(t0))
		bar.Add(1)
	}
	m.Stop(&res, n)
	lat.Fill(&res, nil)
	res.Note = "one writer; latency is begin → commit"
	return res, nil
}

// heraldTx commits n herald transactions (the INSERT + one domain event
// translated to one integration event) with the relay and a consumer
// running; latency is from the event's record to its handler.
func (r *runner) heraldTx(ctx context.Context, dialect string, n int) (Result, error) {
	res := Result{Scenario: "outbox", System: "herald-tx-" + dialect}
	br, err := natsjs.Embedded(ctx, append(r.cfg.logOpts(), natsjs.WithEphemeral())...)
	if err != nil {
		return res, err
	}
	defer br.Close()
	bar := r.progress(res.System, n)
	defer bar.Done()
	cnt := newCounter(n, bar)
	lat := NewLatencies(n)
	p, err := r.newPipeline(ctx, pipelineSpec{
		name: "outbox-" + dialect, dialect: dialect, broker: br,
		handle: func(ctx context.Context, _ herald.Tx, _ Event) error {
			if ev, ok := herald.EventFrom(ctx); ok {
				lat.Add(time.Since(ev.Time))
			}
			cnt.inc()
			return nil
		},
	})
	if err != nil {
		return res, err
	}
	defer p.close()
	if _, err := p.prodStore.DB().ExecContext(ctx, ordersTable); err != nil {
		return res, err
	}
	for _, s := range []*herald.Service{p.cons, p.prod} {
		if err := s.Start(ctx); err != nil {
			return res, err
		}
	}
	q := p.prodStore.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`)
	blob := Blob()
	m := StartMeter()
	for i := range n {
		id := "o-" + strconv.Itoa(i)
		if err := p.prod.Do(ctx, func(tx herald.Tx) error {
			if _, err := tx.SQL().ExecContext(ctx, q, id, i); err != nil {
				return err
			}
			return herald.Record(tx, p.recorded, Event{Key: "k" + strconv.Itoa(i%keys), Seq: i, Blob: blob})
		}); err != nil {
			return res, err
		}
	}
	if err := waitFor(ctx, cnt.done, 5*time.Minute, func() string { return fmt.Sprintf("%d of %d handled", cnt.count(), n) }); err != nil {
		return res, err
	}
	m.Stop(&res, n)
	lat.Fill(&res, nil)
	res.Note = "one writer; rate until the consumer handled the last; latency is record → handler"
	return res, nil
}
