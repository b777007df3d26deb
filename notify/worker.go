package notify

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/backoff"
	"github.com/heraldhq/herald/internal/observehook"
	"github.com/sony/gobreaker/v2"
)

// errShutdown marks a send interrupted by Close.
var errShutdown = errors.New("notify: notifier closing")

// errUnavailable: every provider of the channel has an open breaker.
var errUnavailable = errors.New("notify: every provider of the channel is unavailable (circuit open)")

// claimSizes is how many claim statements there are: they claim 1, 2, 4 …
// 1<<(claimSizes-1) rows.
const claimSizes = 9

// maxRecord bounds the outcomes one transaction records.
const maxRecord = 256

// dispatch runs the workers and feeds them in rounds: each round is one
// transaction that records the outcomes the workers finished since the
// previous round (a group commit: one fsync for many deliveries) and
// claims due rows for the free workers. A busy notifier thus writes one
// transaction per many deliveries, whatever its number of workers.
//
// A worker's next row is claimed while it still sends: such a row waits at
// most one send before its own starts, its lease renewed meanwhile like
// those of the rows in a send (see leases).
func (n *Notifier) dispatch(ctx context.Context) {
	workers := n.cfg.workers
	capacity := 2 * workers // rows claimed and not yet done
	jobs := make(chan *row, capacity)
	done := make(chan recordJob, capacity)
	var ws sync.WaitGroup
	for range workers {
		ws.Go(func() {
			for w := range jobs {
				done <- n.process(ctx, w)
			}
		})
	}

	inflight := 0 // rows claimed, not yet back from a worker
	due := true   // rows may be due: claim for free workers
	var pending []recordJob
	poll := time.NewTimer(n.cfg.poll)
	defer poll.Stop()
	var recheck <-chan time.Time
	var reported time.Time // the last reportDecided
	for ctx.Err() == nil {
		if len(pending) == 0 && (!due || inflight == capacity) {
			select {
			case <-ctx.Done():
				continue
			case j := <-done:
				pending = append(pending, j)
			case <-n.wake:
				// The decision that woke us may not have committed yet (it
				// signals from inside its transaction): look once more shortly.
				due, recheck = true, time.After(20*time.Millisecond)
			case <-recheck:
				due, recheck = true, nil
			case <-poll.C:
				due = true
				poll.Reset(n.cfg.poll)
			}
		}
	more:
		for len(pending) < maxRecord {
			select {
			case j := <-done:
				pending = append(pending, j)
			default:
				break more
			}
		}
		inflight -= len(pending)
		want := 0
		if due {
			want = claimSize(capacity - inflight)
		}
		rows, err := n.round(ctx, pending, want)
		pending = pending[:0]
		switch {
		case err != nil:
			if ctx.Err() == nil {
				n.log.Warn("claim deliveries", "err", err)
			}
			due = false // try again at the next poll
		case want > 0:
			due = len(rows) == want // there may be more
		}
		inflight += len(rows)
		for _, w := range rows {
			jobs <- w // never blocks: at most capacity rows are in flight
		}
		if time.Since(reported) >= reportEvery {
			n.reportDecided(ctx)
			reported = time.Now()
		}
		n.maybePrune(ctx)
	}
	// Closing: the workers release what they have not sent; record every
	// outcome, even now (the provider may have taken the messages).
	close(jobs)
	var wait sync.WaitGroup
	wait.Go(func() {
		ws.Wait()
		close(done)
	})
	for j := range done {
		pending = append(pending, j)
		if len(pending) == maxRecord {
			n.recordBatch(pending)
			pending = pending[:0]
		}
	}
	if len(pending) > 0 {
		n.recordBatch(pending)
	}
	wait.Wait()
	// Report the decisions committed since the last round.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	n.reportDecided(rctx)
	cancel()
}

// claimSize is the largest claim statement's size that fits free workers.
func claimSize(free int) int {
	if free <= 0 {
		return 0
	}
	k := 1
	for k*2 <= free && k*2 < 1<<claimSizes {
		k *= 2
	}
	return k
}

// round records batch and claims up to want due rows (a claimSize), in one
// transaction. If that fails, the outcomes are recorded without a claim
// (recordBatch) and the error is returned.
func (n *Notifier) round(ctx context.Context, batch []recordJob, want int) ([]*row, error) {
	if want == 0 {
		if len(batch) > 0 {
			n.recordBatch(batch)
		}
		return nil, nil
	}
	// Outcomes are recorded even while closing.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	rows, err := n.recordTx(rctx, batch, want)
	if err != nil && len(batch) > 0 {
		n.recordBatch(batch)
	}
	return rows, err
}

// claim takes up to limit (a claimSize) due rows for this instance, with a
// lease, inside tx.
func (n *Notifier) claim(ctx context.Context, tx *sql.Tx, limit int) ([]*row, error) {
	now := n.now()
	until := now.Add(n.cfg.lease)
	token := n.id + "/" + strconv.FormatUint(n.seq.Add(1), 36)
	rs, err := n.on(tx).QueryContext(ctx, n.q.claim[bits.TrailingZeros(uint(limit))], token, nanos(until), nanos(until), nanos(now), nanos(now))
	if err != nil {
		return nil, fmt.Errorf("notify: claim: %w", err)
	}
	defer rs.Close()
	out := make([]*row, 0, limit)
	for rs.Next() {
		var why sql.NullString
		w, err := scanRow(rs, &why)
		if err != nil {
			return nil, fmt.Errorf("notify: claim: %w", err)
		}
		w.suppressed = why
		out = append(out, w)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("notify: claim: %w", err)
	}
	return out, nil
}

// outcome is how one claimed row ends.
type outcome struct {
	state      State
	reason     string
	provider   string
	providerID string
	lastErr    string
	called     bool          // a provider was called: the attempt counts
	retryAfter time.Duration // a provider's Retry-After
	gone       bool          // suppress the address
	retry      bool          // try again after a backoff
	release    bool          // shutdown: back to queued, no attempt
	attempts   int           // provider calls after this one, once recorded
	skip       bool          // the claim was lost: another instance reports it
}

// recordJob is the outcome of one claimed row, to be recorded.
type recordJob struct {
	w     *row
	o     outcome
	start time.Time     // when the attempt began
	took  time.Duration // how long it took
}

// process renders and sends one claimed row. Its context ends with Close
// or when the row's lease runs out unrenewed (errLeaseLost).
func (n *Notifier) process(ctx context.Context, w *row) recordJob {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if ctx.Err() != nil || !n.leases.begin(w, cancel) {
		// Closing, or the lease ran out before the row's turn (renewals
		// failed, or the clock jumped): back to the queue, not an attempt.
		return recordJob{w, outcome{release: true}, start, 0}
	}
	o := n.attempt(ctx, w)
	if ctx.Err() != nil && o.retry {
		o = outcome{release: true} // interrupted by Close or a lost lease: not an attempt
	}
	return recordJob{w, o, start, time.Since(start)}
}

// recordBatch records batch without claiming: in one transaction, or one by
// one with retries, so one bad row cannot sink the others. Either way the
// rows are no longer held (nor renewed) afterwards.
func (n *Notifier) recordBatch(batch []recordJob) {
	defer func() {
		for _, j := range batch {
			n.leases.forget(j.w)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.recordTx(ctx, batch, 0); err == nil {
		return
	}
	// One by one, with retries, so one bad row cannot sink the others.
	for _, j := range batch {
		for i := 0; ; i++ {
			_, err := n.recordTx(ctx, []recordJob{j}, 0)
			if err == nil {
				break
			}
			if i == 4 || ctx.Err() != nil {
				n.log.Error("cannot record a delivery outcome; its lease will expire and it will be attempted again",
					"delivery", j.w.ID, "key", j.w.Key, "state", j.o.state, "err", err)
				break
			}
			time.Sleep(time.Duration(50<<i) * time.Millisecond)
		}
	}
}

// recordTx records the outcomes of batch and claims up to want rows (0: no
// claim) in one transaction. Once it commits, the recorded rows are no
// longer held and the claimed ones are, with their leases renewed until
// recorded.
func (n *Notifier) recordTx(ctx context.Context, batch []recordJob, want int) ([]*row, error) {
	tx, err := n.eng.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	final := make([]outcome, len(batch))
	for i, j := range batch {
		o, err := n.record(ctx, tx, j.w, j.o)
		if err != nil {
			return nil, fmt.Errorf("delivery %s: %w", j.w.ID, err)
		}
		final[i] = o
	}
	var rows []*row
	if want > 0 {
		if rows, err = n.claim(ctx, tx, want); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	for _, w := range rows {
		n.leases.hold(w)
	}
	for i, j := range batch {
		n.leases.forget(j.w)
		n.observeDelivery(ctx, j, final[i])
	}
	return rows, nil
}

// observeDelivery reports the recorded outcome of one attempt as a
// herald.HopDeliver observation of the notifier's service (see
// deliverObservation): Outcome is the delivery's state or "retry", Err a
// *DeliveryError with the reason code unless it was sent or delivered.
// Deliveries a decision ended are reported by reportDecided.
func (n *Notifier) observeDelivery(ctx context.Context, j recordJob, o outcome) {
	if o.release || o.skip {
		return
	}
	ob := n.deliverObservation(&j.w.Delivery)
	ob.Start, ob.Duration, ob.Outcome, ob.Attempt = j.start, j.took, herald.Outcome(o.state), o.attempts
	if o.retry {
		ob.Outcome = herald.OutcomeRetry
	}
	ob.Err = deliveryError(o.state, o.retry, o.reason, o.lastErr)
	observehook.Observe(ctx, n.svc, ob)
}

// attempt decides what to do with a claimed row and, if anything is to be
// sent, sends it.
func (n *Notifier) attempt(ctx context.Context, w *row) outcome {
	r := n.route(w.Route)
	if r == nil {
		// Another instance (a newer deployment) may know the route: leave
		// the row to it, until the row is older than MaxAge.
		o := n.retryable(w, fmt.Errorf("%s: no route %q in this notifier instance", ReasonNoRoute, w.Route), false)
		o.retryAfter = time.Minute
		return o
	}
	if w.Attempts >= n.cfg.retry.MaxAttempts {
		return outcome{state: Failed, reason: fmt.Sprintf("%s: %d attempts", ReasonExhausted, w.Attempts), lastErr: w.LastError}
	}
	if w.Kind == KindFallback {
		var st string
		if err := n.on(n.st.DB()).QueryRowContext(ctx, n.q.stateOf, w.FallbackOf).Scan(&st); err != nil {
			return n.retryable(w, fmt.Errorf("notify: state of %s: %w", w.FallbackOf, err), false)
		}
		if State(st) == Delivered {
			return outcome{state: Suppressed, reason: ReasonFallbackNotNeeded + ": the first channel delivered"}
		}
	}
	if w.suppressed.Valid { // the suppression list had the address at the claim
		return outcome{state: Suppressed, reason: ReasonSuppressedAddress + ": " + w.suppressed.String}
	}
	m, err := n.message(ctx, r, w)
	if err != nil {
		var te templateError
		if errors.As(err, &te) {
			return outcome{state: Failed, reason: ReasonTemplate + ": " + err.Error()}
		}
		return n.retryable(w, err, false)
	}
	if m == nil { // an empty digest
		return outcome{state: Suppressed, reason: ReasonDigest + ": no items"}
	}
	p, rec, err := n.send(ctx, w.Channel, *m)
	switch {
	case err == nil:
		st := Sent
		if rec.Delivered {
			st = Delivered
		}
		return outcome{state: st, provider: p.s.Name(), providerID: rec.ProviderID, called: true}
	case errors.Is(err, errShutdown), errors.Is(err, errLeaseLost):
		return outcome{release: true}
	case errors.Is(err, errUnavailable):
		o := n.retryable(w, err, false)
		o.retryAfter = n.cfg.breaker.OpenFor / 4 // not before a breaker may let probes through
		return o
	}
	o := outcome{provider: p.s.Name(), called: true, lastErr: err.Error()}
	switch {
	case errors.Is(err, ErrGone):
		o.state, o.reason, o.gone = Failed, ReasonGone+": "+err.Error(), true
	case isPermanent(err):
		o.state, o.reason = Failed, ReasonPermanent+": "+err.Error()
	default:
		ro := n.retryable(w, err, true)
		ro.provider = o.provider
		return ro
	}
	return o
}

// retryable is the outcome of a failure worth retrying.
func (n *Notifier) retryable(w *row, err error, called bool) outcome {
	o := outcome{retry: true, called: called, lastErr: err.Error()}
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		o.retryAfter = ra.After
	}
	return o
}

// templateError marks a rendering failure: permanent.
type templateError struct{ err error }

func (e templateError) Error() string { return e.err.Error() }
func (e templateError) Unwrap() error { return e.err }

// message renders w into the Message its sender gets. It returns nil for a
// digest without items.
func (n *Notifier) message(ctx context.Context, r *route, w *row) (*Message, error) {
	td := TemplateData{Channel: w.Channel, Category: w.Category, Locale: w.Locale,
		EventID: w.EventID, EventType: w.EventType, CorrelationID: w.CorrelationID}
	if err := json.Unmarshal(w.profile, &td.Recipient); err != nil {
		return nil, templateError{fmt.Errorf("decode recipient profile: %w", err)}
	}
	var items []Item
	var raw []json.RawMessage
	if w.Kind == KindDigest {
		if _, err := n.on(n.st.DB()).ExecContext(ctx, n.q.digestClose, w.DigestID); err != nil {
			return nil, fmt.Errorf("notify: close digest: %w", err)
		}
		rs, err := n.on(n.st.DB()).QueryContext(ctx, n.q.items, w.DigestID)
		if err != nil {
			return nil, fmt.Errorf("notify: digest items: %w", err)
		}
		defer rs.Close()
		for rs.Next() {
			var it Item
			var typ, corr string
			var data []byte
			var at int64
			if err := rs.Scan(&it.EventID, &typ, &corr, &data, &at); err != nil {
				return nil, fmt.Errorf("notify: digest items: %w", err)
			}
			it.Time = fromNanos(at)
			v, err := r.decode(data)
			if err != nil {
				return nil, templateError{fmt.Errorf("decode digest item %s: %w", it.EventID, err)}
			}
			it.Data = v
			if len(items) == 0 {
				td.EventID, td.EventType, td.CorrelationID = it.EventID, typ, corr
			}
			items = append(items, it)
			raw = append(raw, data)
		}
		if err := rs.Err(); err != nil {
			return nil, fmt.Errorf("notify: digest items: %w", err)
		}
		if len(items) == 0 {
			return nil, nil
		}
		td.Items = items
	} else {
		v, err := r.decode(w.data)
		if err != nil {
			return nil, templateError{fmt.Errorf("decode event data: %w", err)}
		}
		td.Data = v
	}
	m := &Message{Key: w.Key, Channel: w.Channel, To: w.Address, EventID: td.EventID, EventType: td.EventType,
		CorrelationID: td.CorrelationID}
	var out Rendered
	var err error
	if n.cfg.renderer == nil {
		err = fmt.Errorf("%w: the notifier has no renderer", ErrTemplateNotFound)
	} else {
		out, err = n.cfg.renderer.Render(w.Template, w.Channel, w.Locale, td)
	}
	switch {
	case err != nil && w.Channel == Webhook && templateNotFound(err):
		out = Rendered{Subject: td.EventType, Text: td.EventType + " " + td.EventID}
	case err != nil:
		return nil, templateError{fmt.Errorf("%s for %s: %w", w.Template, w.Channel, err)}
	case out.Text == "":
		return nil, templateError{fmt.Errorf("%s for %s rendered an empty text", w.Template, w.Channel)}
	}
	m.Subject, m.Text, m.HTML = out.Subject, out.Text, out.HTML
	if w.Channel == Webhook {
		// Standard Webhooks' payload shape; the webhook id is the Key.
		body := map[string]any{"type": w.EventType, "timestamp": w.CreatedAt.Format(time.RFC3339Nano)}
		if w.Kind == KindDigest {
			body["data"] = map[string]any{"digest": w.DigestID, "items": raw}
		} else {
			body["data"] = json.RawMessage(w.data)
		}
		if m.Payload, err = json.Marshal(body); err != nil {
			return nil, templateError{fmt.Errorf("webhook payload: %w", err)}
		}
		rec, err := n.dir.Lookup(ctx, w.Recipient)
		switch {
		case errors.Is(err, ErrUnknownRecipient):
		case err != nil:
			return nil, fmt.Errorf("notify: directory lookup of %q for its webhook secret: %w", w.Recipient, err)
		default:
			m.Secret = rec.Secrets[Webhook]
		}
	}
	return m, nil
}

// send delivers m through the channel's providers: the first whose breaker
// lets it through.
func (n *Notifier) send(ctx context.Context, channel string, m Message) (*provider, Receipt, error) {
	ps := n.providers(channel)
	if len(ps) == 0 {
		return nil, Receipt{}, fmt.Errorf("%w: no senders for %s", errUnavailable, channel)
	}
	var last error
	for _, p := range ps {
		rec, err := p.cb.Execute(func() (Receipt, error) { return n.call(ctx, p.s, m) })
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			last = fmt.Errorf("%s: %w", p.s.Name(), err)
			continue
		}
		if err == nil && rec.Provider == "" {
			rec.Provider = p.s.Name()
		}
		return p, rec, err
	}
	return nil, Receipt{}, fmt.Errorf("%w: %v", errUnavailable, last)
}

// call runs one provider call with the send timeout, turning a panic into
// an error and abandoning a sender that ignores its context.
func (n *Notifier) call(ctx context.Context, s Sender, m Message) (Receipt, error) {
	sctx, cancel := context.WithTimeout(ctx, n.cfg.sendTimeout)
	defer cancel()
	type result struct {
		r   Receipt
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{err: fmt.Errorf("notify: sender %s panicked: %v", s.Name(), p)}
			}
		}()
		r, err := s.Send(sctx, m)
		done <- result{r, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-sctx.Done():
		select {
		case res = <-done: // it returned just now
		default:
			res.err = fmt.Errorf("notify: sender %s did not return: %w", s.Name(), sctx.Err())
		}
	}
	if res.err != nil && ctx.Err() != nil {
		stop := errShutdown
		if errors.Is(context.Cause(ctx), errLeaseLost) {
			stop = errLeaseLost
		}
		return res.r, fmt.Errorf("%w: %v", stop, res.err)
	}
	return res.r, res.err
}

// backoff is the delay before retry number attempt (1-based): exponential,
// capped, with jitter over its upper half.
func (r Retry) backoff(attempt int) time.Duration {
	return backoff.Delay(attempt, r.BaseDelay, r.MaxDelay)
}

// record writes the outcome of a claimed row inside tx, if the claim is
// still ours.
func (n *Notifier) record(ctx context.Context, tx *sql.Tx, w *row, o outcome) (outcome, error) {
	now := n.now()
	attempts := w.Attempts
	if o.called {
		attempts++
	}
	if o.release {
		_, err := n.on(tx).ExecContext(ctx, n.q.release, nanos(now), nanos(now), w.ID, w.ClaimedBy)
		return o, err
	}
	if o.retry {
		rp := n.cfg.retry
		delay := max(rp.backoff(max(attempts, 1)), o.retryAfter)
		due := now.Add(delay)
		switch {
		case attempts >= rp.MaxAttempts:
			o = outcome{state: Failed, reason: fmt.Sprintf("%s: %d attempts, last: %s", ReasonExhausted, attempts, o.lastErr),
				lastErr: o.lastErr, provider: o.provider}
		case due.Sub(w.CreatedAt) > rp.MaxAge:
			o = outcome{state: Failed, reason: fmt.Sprintf("%s: older than %v after %d attempts, last: %s", ReasonExpired, rp.MaxAge, attempts, o.lastErr),
				lastErr: o.lastErr, provider: o.provider}
		default:
			reason := fmt.Sprintf("%s: attempt %d failed", ReasonRetrying, attempts)
			if !o.called {
				reason = fmt.Sprintf("%s: not attempted", ReasonRetrying)
			}
			_, err := n.on(tx).ExecContext(ctx, n.q.retry, reason, attempts, o.provider, o.lastErr, nanos(due), nanos(now), w.ID, w.ClaimedBy)
			o.attempts = attempts
			return o, err
		}
	}
	lastErr := o.lastErr
	if lastErr == "" {
		lastErr = w.LastError
	}
	provider := o.provider
	if provider == "" {
		provider = w.Provider
	}
	var sent time.Time
	if o.state == Sent || o.state == Delivered {
		sent = now
		if w.Kind == KindFallback {
			o.reason = w.Reason // why it was sent at all
		}
	}
	res, err := n.on(tx).ExecContext(ctx, n.q.finish, string(o.state), o.reason, attempts, provider, o.providerID, lastErr,
		nullTime(sent), nanos(now), w.ID, w.ClaimedBy)
	o.attempts = attempts
	if err != nil {
		return o, err
	}
	if k, _ := res.RowsAffected(); k == 0 {
		n.log.Warn("delivery claim lost before its outcome was recorded (lease expired?)", "delivery", w.ID, "key", w.Key, "state", o.state)
		o.skip = true
		return o, nil
	}
	if o.gone {
		if err := n.suppress(ctx, tx, w.Channel, w.Address, o.reason, now); err != nil {
			return o, err
		}
	}
	switch o.state {
	case Delivered:
		err = n.cancelFallbacks(ctx, tx, w.ID, now)
	case Failed, Suppressed:
		err = n.hurryFallbacks(ctx, tx, w.ID, now)
	}
	return o, err
}

// maybePrune applies the retention, at most once a minute.
func (n *Notifier) maybePrune(ctx context.Context) {
	if n.cfg.retention == 0 {
		return
	}
	now := n.now()
	last := n.pruned.Load()
	if now.UnixNano()-last < int64(time.Minute) || !n.pruned.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	if last == 0 {
		return // not at start
	}
	before := nanos(now.Add(-n.cfg.retention))
	db := n.st.DB()
	if _, err := db.ExecContext(ctx, n.st.Rebind(`DELETE FROM herald_notify_deliveries WHERE created_at < ? AND state NOT IN `+activeStates), before); err != nil && ctx.Err() == nil {
		n.log.Warn("prune deliveries", "err", err)
	}
	if _, err := db.ExecContext(ctx, n.st.Rebind(`DELETE FROM herald_notify_digests WHERE open = 0 AND created_at < ?`), before); err != nil && ctx.Err() == nil {
		n.log.Warn("prune digests", "err", err)
	}
}
