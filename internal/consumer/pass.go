package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/backoff"
	"github.com/heraldhq/herald/store"
)

// round handles every ready event in one transaction and returns when the
// next held event becomes due (zero if none).
func (r *run) round(ctx context.Context) time.Time {
	cfg := r.cfg
	for ctx.Err() == nil {
		now := time.Now()
		batch, next := r.q.ready(now, cfg.BatchSize)
		if len(batch) == 0 {
			return next
		}
		settled, err := r.handleBatch(ctx, batch)
		if err != nil {
			// The transaction itself failed (database down, commit error):
			// nothing is settled, every event of the batch waits and retries.
			if ctx.Err() != nil {
				return time.Time{}
			}
			cfg.Logger.Warn("subscription transaction", "subscription", cfg.Subscription.Name, "err", err)
			d := backoff.Delay(2, cfg.Retry.BaseDelay, cfg.Retry.MaxDelay)
			for _, it := range batch {
				it.due = now.Add(d)
			}
			continue
		}
		for _, it := range settled {
			// The effect is committed: a lost ack costs one redelivery,
			// which finds the inbox row and is acked without the handler.
			if err := it.d.AckNoWait(); err != nil && ctx.Err() == nil {
				cfg.Logger.Debug("ack", "subscription", cfg.Subscription.Name, "err", err)
			}
			r.q.remove(it)
			r.hold.settle(it.seq)
		}
		// Loop: settled events left their queues and failed ones wait for
		// their due time, so the next ready() sees only what can run now.
	}
	return time.Time{}
}

// handled is the outcome of one handler run, reported after commit.
type handled struct {
	it      *item
	outcome Outcome
	start   time.Time
	d       time.Duration
	err     error
}

// pass is one transaction over a batch: what the fast and the isolated
// pass share — the heartbeat of a long batch, dead letters, running one
// handler, and what is reported once it committed.
type pass struct {
	r            *run
	tx           Tx
	start        time.Time
	lastBeat     time.Time
	observing    bool
	settled      []*item
	deadLettered []*item
	handled      []handled
}

func (r *run) newPass(tx Tx, n int) *pass {
	now := time.Now()
	return &pass{r: r, tx: tx, start: now, lastBeat: now, observing: r.cfg.Observer.Observing(),
		settled: make([]*item, 0, n)}
}

// beat heartbeats what waits when the batch has run long: the broker must
// not redeliver it.
func (p *pass) beat() {
	if time.Since(p.lastBeat) > p.r.cfg.Subscription.AckWait/3 {
		p.r.heartbeat()
		p.lastBeat = time.Now()
	}
}

// run runs its handler once, counting the attempt, and returns its error.
func (p *pass) run(ctx context.Context, it *item) error {
	it.attempts++
	return p.r.cfg.Handle(ctx, p.tx, it.env, it.val)
}

// ok settles it as handled (fresh) or as a duplicate, its handler having
// started at start.
func (p *pass) ok(it *item, fresh bool, start time.Time) {
	p.settled = append(p.settled, it)
	if p.observing {
		outcome := OutcomeOK
		if !fresh {
			outcome = OutcomeDuplicate
		}
		p.handled = append(p.handled, handled{it, outcome, start, time.Since(start), nil})
	}
}

// retry reports it as failed with herr, to run again at its due time.
func (p *pass) retry(it *item, start time.Time, took time.Duration, herr error) {
	p.retried(it, start, took, herr)
	p.r.logRetry(it, herr)
}

// retried notes, for the observers, that it failed with herr.
func (p *pass) retried(it *item, start time.Time, took time.Duration, herr error) {
	if p.observing {
		p.handled = append(p.handled, handled{it, OutcomeRetry, start, took, herr})
	}
}

func (r *run) logRetry(it *item, herr error) {
	r.cfg.Logger.Debug("handler failed, will retry", "subscription", r.cfg.Subscription.Name, "event", it.env.ID,
		"attempt", it.attempts, "retry_at", it.due, "err", herr)
}

// deadLetter settles it as a dead letter (see run.deadLetter).
func (p *pass) deadLetter(ctx context.Context, it *item) error {
	added, err := p.r.deadLetter(ctx, p.tx, it)
	if err != nil {
		return err
	}
	p.settled = append(p.settled, it)
	if added {
		p.deadLettered = append(p.deadLettered, it)
	}
	return nil
}

// commit commits the pass and reports what follows.
func (p *pass) commit(ctx context.Context) error {
	if err := p.tx.Commit(ctx); err != nil {
		return err
	}
	p.r.committed(ctx, p)
	return nil
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
func (r *run) handleBatch(ctx context.Context, batch []*item) ([]*item, error) {
	settled, fallback, err := r.handleFast(ctx, batch)
	if !fallback.use {
		return settled, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return r.handleIsolated(ctx, batch, fallback)
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
func (r *run) handleFast(ctx context.Context, batch []*item) (settled []*item, fallback fastFallback, err error) {
	tx, err := r.cfg.Store.Begin(ctx)
	if err != nil {
		return nil, fastFallback{}, err
	}
	p := r.newPass(tx, len(batch))
	ids := make([]string, 0, len(batch))
	for _, it := range batch {
		if it.reason == "" {
			ids = append(ids, it.env.ID)
		}
	}
	fresh, err := tx.InboxClaimMany(ctx, r.cfg.Inbox, ids)
	if err != nil {
		_ = tx.Rollback()
		return nil, fastFallback{use: true}, nil
	}
	var ran []*item
	// undo forgets the attempts the pass counted: they did not happen.
	undo := func() {
		for _, it := range ran {
			it.attempts--
		}
	}
	n := 0
	for _, it := range batch {
		p.beat()
		if it.reason != "" {
			if err := p.deadLetter(ctx, it); err != nil {
				_ = tx.Rollback()
				undo()
				return nil, fastFallback{use: true}, nil
			}
			continue
		}
		isFresh := fresh[n]
		n++
		hstart := time.Now()
		if isFresh {
			ran = append(ran, it)
			if herr := p.run(ctx, it); herr != nil {
				took := time.Since(hstart)
				// Blame this handler only if the transaction still works:
				// on PostgreSQL an earlier handler that swallowed a
				// statement's error leaves it failed, and then any later
				// statement fails. If it does not work, the isolated pass
				// finds the culprit.
				healthy := tx.TxHealthy(ctx) == nil
				_ = tx.Rollback()
				undo()
				if !healthy || ctx.Err() != nil {
					return nil, fastFallback{use: true}, nil
				}
				it.attempts++ // this run happened and failed
				r.failed(it, herr)
				return nil, fastFallback{use: true, blamed: it, err: herr, took: took}, nil
			}
		}
		p.ok(it, isFresh, hstart)
	}
	if err := p.commit(ctx); err != nil {
		// Unknown: a handler may have left the transaction failed, or the
		// database is down. The isolated pass tells which.
		undo()
		return nil, fastFallback{use: true}, nil
	}
	return p.settled, fastFallback{}, nil
}

// handleIsolated runs the batch in one transaction with a savepoint per
// event, so that a failing handler undoes only its own event. It returns the
// items that are settled (handled, duplicate, or dead-lettered) once it
// committed; items whose handler failed get their next due time. fallback
// is what the fast pass learnt: its blamed event, whose handler failed
// there, is not run again if it waits for a retry; from it on, its key's
// events are skipped (blocked), as are those of keys blocked in this pass.
func (r *run) handleIsolated(ctx context.Context, batch []*item, fallback fastFallback) ([]*item, error) {
	blamed := fallback.blamed
	retrying := blamed != nil && blamed.reason == ""
	blamedStart := time.Now().Add(-fallback.took)
	if retrying {
		r.logRetry(blamed, fallback.err)
	}
	tx, err := r.cfg.Store.Begin(ctx)
	if err != nil {
		return nil, err
	}
	p := r.newPass(tx, len(batch))
	if retrying {
		// The fast pass's failure is reported with this pass's commit.
		p.retried(blamed, blamedStart, fallback.took, fallback.err)
	}
	abort := func(err error) ([]*item, error) {
		_ = tx.Rollback()
		return nil, err
	}
	blocked := map[string]bool{}
	for _, it := range batch {
		p.beat()
		if it == blamed && retrying {
			blocked[it.key] = true // it waits for its retry; so do later events of its key
			continue
		}
		if blocked[it.key] {
			continue
		}
		if it.reason != "" {
			if err := p.deadLetter(ctx, it); err != nil {
				return abort(err)
			}
			continue
		}
		if err := tx.TxSavepoint(ctx); err != nil {
			return abort(err)
		}
		fresh, err := tx.InboxClaim(ctx, r.cfg.Inbox, it.env.ID)
		if err != nil {
			return abort(err)
		}
		var herr error
		hstart := time.Now()
		if fresh {
			herr = p.run(ctx, it)
		}
		if herr == nil {
			if err := tx.TxSavepointRelease(ctx); err != nil {
				// The handler left the transaction failed (PostgreSQL: it
				// swallowed a statement's error). Undo this event only and
				// count it as this event's failure, so it retries and, if it
				// keeps failing, is dead-lettered instead of stalling the batch.
				herr = fmt.Errorf("handler left its transaction failed: %w", err)
			}
		}
		if herr == nil {
			p.ok(it, fresh, hstart)
			continue
		}
		// Undo this event only: its rows, its inbox claim and the events
		// its handler recorded.
		if err := tx.TxSavepointRollback(ctx); err != nil {
			return abort(err)
		}
		r.failed(it, herr)
		if it.reason != "" {
			if err := p.deadLetter(ctx, it); err != nil {
				return abort(err)
			}
			continue
		}
		blocked[it.key] = true
		p.retry(it, hstart, time.Since(hstart), herr)
	}
	if err := p.commit(ctx); err != nil {
		return nil, err
	}
	return p.settled, nil
}

// failed sets what happens next to it after its handler failed with herr:
// a dead-letter reason, or its next due time.
func (r *run) failed(it *item, herr error) {
	it.lastErr = herr.Error()
	retry := r.cfg.Retry
	switch {
	case r.cfg.IsPermanent(herr):
		it.reason = store.ReasonPermanent
	case it.attempts >= retry.MaxAttempts:
		it.reason = store.ReasonExhausted
	default:
		it.due = time.Now().Add(backoff.Delay(it.attempts, retry.BaseDelay, retry.MaxDelay))
	}
}

// committed does what follows a consumer transaction's commit: publish the
// dead letters, report to observers (what the handlers recorded, the
// batch, each handled and dead-lettered event).
func (r *run) committed(ctx context.Context, p *pass) {
	for _, it := range p.deadLettered {
		r.publishDeadLetter(ctx, it)
	}
	obs := r.cfg.Observer
	if !p.observing {
		return
	}
	obs.Committed(ctx, p.tx) // what the handlers recorded
	now := time.Now()
	if obs.Batching() {
		var events []envelope.Envelope
		for _, h := range p.handled {
			if h.outcome == OutcomeOK {
				events = append(events, *h.it.env)
				events[len(events)-1].Data = nil
			}
		}
		if len(events) > 0 {
			obs.Batch(ctx, p.start, now.Sub(p.start), events)
		}
	}
	for _, h := range p.handled {
		obs.Handled(ctx, h.it.env, h.start, h.d, h.outcome, h.it.attempts, h.err)
	}
	for _, it := range p.deadLettered {
		obs.DeadLettered(ctx, it.env, now, it.reason, it.attempts, it.lastErr)
	}
}

// deadLetter stores it as a dead letter inside tx, with the inbox row that
// keeps a redelivery from dead-lettering it twice: the event's id, or for a
// message that could not be decoded its stream sequence and a digest of its
// bytes. It reports false, storing nothing, for such a redelivery (its ack
// was lost, or its ack wait ran out while it waited on a loaded machine).
func (r *run) deadLetter(ctx context.Context, tx Tx, it *item) (bool, error) {
	cfg := r.cfg
	dl := store.DeadLetter{
		Service:      cfg.Subscription.Service,
		Subscription: cfg.Subscription.Name,
		Reason:       it.reason,
		LastError:    it.lastErr,
		Attempts:     it.attempts,
		Header:       it.d.Header(),
		Data:         it.d.Data(),
		Time:         time.Now(),
	}
	var key string
	switch {
	case it.env != nil && it.foreign:
		// A foreign producer may correct what it sent and send it again
		// under the same ce-id: only a redelivery of the same data is this
		// dead letter's, and the corrected event reaches the handler.
		dl.EventID, dl.Type, dl.Version = it.env.ID, it.env.Type, it.env.Version
		key = it.env.ID + "/" + dataDigest(dl.Data)
	case it.env != nil:
		dl.EventID, dl.Type, dl.Version = it.env.ID, it.env.Type, it.env.Version
		key = it.env.ID
	default:
		if n := it.named; n != nil {
			dl.EventID, dl.Type, dl.Version = n.ID, n.Type, n.Version
		}
		key = undecodableKey(it.seq, dl.Header, dl.Data)
	}
	fresh, err := tx.InboxClaim(ctx, cfg.Inbox, key)
	if err != nil {
		return false, err
	}
	if !fresh {
		cfg.Logger.Info("dead letter already recorded; acknowledging the redelivery", "subscription", cfg.Subscription.Name,
			"event", dl.EventID, "seq", it.seq, "reason", dl.Reason)
		return false, nil
	}
	if dl.Data == nil {
		dl.Data = []byte{}
	}
	if _, err := tx.DeadLetterInsert(ctx, dl); err != nil {
		return false, err
	}
	cfg.Logger.Warn("dead-lettered", "subscription", cfg.Subscription.Name, "event", dl.EventID, "type", dl.Type,
		"reason", dl.Reason, "err", dl.LastError, "attempts", dl.Attempts)
	return true, nil
}

// dataDigest is a short digest of a foreign event's data, for the inbox
// key of its dead letter.
func dataDigest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:12])
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
func (r *run) publishDeadLetter(ctx context.Context, it *item) {
	cfg := r.cfg
	err := cfg.Broker.PublishDeadLetter(ctx, broker.DeadLetter{
		Event: it.env, RawHeader: it.d.Header(), RawData: it.d.Data(),
		Service: cfg.Subscription.Service, Subscription: cfg.Subscription.Name, Reason: it.reason,
		LastError: it.lastErr, Attempts: it.attempts, Time: time.Now(),
	})
	if err != nil && ctx.Err() == nil {
		cfg.Logger.Debug("publish dead letter", "err", err)
	}
}
