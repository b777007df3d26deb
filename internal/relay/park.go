package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// A row the broker refuses for good (broker.ErrRejected, or an error no
// broker sentinel classifies, unclassifiedAttempts rounds in a row) is
// parked instead of retried: it becomes a producer-side dead letter
// (Store.OutboxPark) and the rows behind it go on. The later rows of its
// partition key are parked too, as "held", for as long as the key has
// producer-side dead letters, so that none overtakes it; replaying the dead
// letters puts them back in order, purging them frees the key. Keyless
// events hold nothing (they have no order to keep).

// unclassifiedAttempts is how many rounds in a row a row's publish may fail
// with an error that no broker sentinel classifies before the relay parks
// it as refused.
const unclassifiedAttempts = 3

// Classes of publish failures.
const (
	publishRetry        = iota // transient, broker closed or unprovisioned, the relay stopping
	publishRejected            // broker.ErrRejected: refused for good
	publishUnclassified        // none of those: refused for good if it repeats
)

// classifyPublish sorts a publish failure into a class.
func classifyPublish(err error) int {
	switch {
	case errors.Is(err, broker.ErrRejected):
		return publishRejected
	case errors.Is(err, broker.ErrTransient), errors.Is(err, broker.ErrClosed), errors.Is(err, broker.ErrNotProvisioned),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return publishRetry
	}
	return publishUnclassified
}

// parked reports a row the relay parked as a producer-side dead letter.
func (r *Relay) parked(ctx context.Context, e *envelope.Envelope, reason string, id int64, attempts int, cause string) {
	msg := "outbox relay parked an event the broker refused; later events of its key are held behind it"
	if reason == store.ReasonHeld {
		msg = "outbox relay held an event behind a parked one of its key"
	}
	r.cfg.Logger.Warn(msg, "event", e.ID, "type", e.Type, "key", e.Key, "dead_letter", id, "reason", reason, "err", cause)
	if r.cfg.Observer.Observing() {
		r.cfg.Observer.Parked(ctx, e, time.Now(), reason, attempts, cause)
	}
}

// parkHeld parks the rows of held keys (see state.held) and returns the
// others, in order, to publish.
func (r *Relay) parkHeld(ctx context.Context, rs *state, rows []store.OutboxRow) ([]store.OutboxRow, error) {
	if len(rs.held) == 0 {
		return rows, nil
	}
	var parks []store.Park
	for _, row := range rows {
		if first, ok := rs.held[row.Event.Key]; ok && row.Event.Key != "" {
			parks = append(parks, store.Park{Row: row, Reason: store.ReasonHeld,
				LastError: fmt.Sprintf("held behind event %s of key %q, which the broker refused", first, row.Event.Key)})
		}
	}
	if len(parks) == 0 {
		return rows, nil
	}
	res, err := r.cfg.Store.OutboxPark(ctx, r.cfg.Service, parks)
	if err != nil {
		return nil, err
	}
	skip := make(map[int64]bool, len(parks))
	for i, p := range parks {
		switch {
		case res[i].DeadLetter != 0:
			skip[p.Row.Seq] = true
			r.parked(ctx, p.Row.Event, p.Reason, res[i].DeadLetter, 0, p.LastError)
		case res[i].Gone:
			skip[p.Row.Seq] = true // a replay moved it behind the events it replayed
		}
		// Otherwise the key's dead letters were replayed or purged: it
		// goes out now (the next read forgets the key).
	}
	pub := make([]store.OutboxRow, 0, len(rows)-len(skip))
	for _, row := range rows {
		if !skip[row.Seq] {
			pub = append(pub, row)
		}
	}
	return pub, nil
}

// refused handles the first failed publish of a round, of row with error
// perr (firstErr in context): a failure worth retrying is returned, so the
// relay retries the rest of the batch after a backoff; a refusal for good
// parks the row, holds its key, and lets the rows behind it go on at once
// (it returns n, the rows the round read, and no error).
func (r *Relay) refused(ctx context.Context, rs *state, row store.OutboxRow, perr, firstErr error, n int) (int, error) {
	r.cfg.PublishFailed()
	if ctx.Err() != nil {
		return 0, firstErr
	}
	parked, err := r.judge(ctx, rs, row, perr, &rs.fail)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%w; parking it: %w", firstErr, err)
	case !parked:
		return 0, firstErr
	}
	r.Wake() // the rows behind it go on now, not at the next poll
	return n, nil
}

// judge judges the failed publish of row, with error perr, fc counting the
// unclassified failures in a row: a failure worth retrying, or an
// unclassified one not repeated unclassifiedAttempts times yet, is to be
// retried (false); a refusal for good parks the row and holds its key
// (true). It returns an error if parking failed.
func (r *Relay) judge(ctx context.Context, rs *state, row store.OutboxRow, perr error, fc *failCount) (bool, error) {
	attempts := 1
	switch classifyPublish(perr) {
	case publishRetry:
		fc.n = 0
		return false, nil
	case publishUnclassified:
		if fc.n > 0 && fc.seq == row.Seq {
			fc.n++
		} else {
			fc.seq, fc.n = row.Seq, 1
		}
		if fc.n < unclassifiedAttempts {
			return false, nil
		}
		attempts = fc.n
	}
	fc.n = 0
	res, err := r.cfg.Store.OutboxPark(ctx, r.cfg.Service, []store.Park{{Row: row, Reason: store.ReasonRefused, LastError: perr.Error(), Attempts: attempts}})
	if err != nil {
		return false, err
	}
	if id := res[0].DeadLetter; id != 0 {
		if k := row.Event.Key; k != "" {
			if rs.held == nil {
				rs.held = map[string]string{}
			}
			rs.held[k] = row.Event.ID
		}
		r.parked(ctx, row.Event, store.ReasonRefused, id, attempts, perr.Error())
	}
	return true, nil
}
