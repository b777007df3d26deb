package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// pendingRead is the result of one outbox read.
type pendingRead struct {
	rows []store.OutboxRow
	held map[string]string // the held keys read just before rows; nil: not read
	err  error
}

// heldStale reports whether the next outbox read must read the held keys
// first.
func (rs *state) heldStale() bool { return !rs.heldKnown || len(rs.held) > 0 }

// read reads up to a batch of rows after seq after and, with reload, the
// held keys before them: a row of a key an operator replays is then either
// read before the replay (and judged held, OutboxPark finding it gone) or
// after it (and free).
func (r *Relay) read(ctx context.Context, after int64, reload bool) pendingRead {
	return r.readN(ctx, after, reload, r.cfg.BatchSize)
}

// readN is read of up to limit rows.
func (r *Relay) readN(ctx context.Context, after int64, reload bool, limit int) pendingRead {
	var p pendingRead
	if reload {
		if p.held, p.err = r.cfg.Store.OutboxParkedKeys(ctx, r.cfg.Service); p.err != nil {
			return p
		}
	}
	p.rows, p.err = r.cfg.Store.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: r.cfg.Service, After: after, Limit: limit})
	return p
}

// next reads the next batch, of up to limit rows after the cursor: the
// read ahead if it read after the cursor, else a read now (after reading
// the range mark it builds on, if unknown).
func (r *Relay) next(ctx context.Context, rs *state, limit int) ([]store.OutboxRow, error) {
	var p pendingRead
	if rs.ahead != nil && rs.after == rs.cursor {
		p = <-rs.ahead
		rs.ahead = nil
	} else {
		rs.drop()
		if !rs.serial && !rs.baseKnown {
			var err error
			if rs.base, err = r.cfg.Store.OutboxCursor(ctx, r.cfg.Service); err != nil {
				return nil, err
			}
			rs.baseKnown = true
		}
		p = r.readN(ctx, rs.cursor, rs.heldStale(), limit)
	}
	if p.err != nil {
		return nil, p.err
	}
	if p.held != nil {
		rs.held, rs.heldKnown = p.held, true
	}
	return p.rows, nil
}

// readAhead starts reading the batch after seq after while the broker
// stores the one up to it.
func (r *Relay) readAhead(ctx context.Context, rs *state, after int64) {
	ahead := make(chan pendingRead, 1)
	rs.ahead, rs.after = ahead, after
	reload := rs.heldStale()
	go func() { ahead <- r.read(ctx, after, reload) }()
}

// round publishes one batch and returns how many rows it read. While the
// broker stores a full batch, it reads the next one; it starts marking the
// acknowledged rows published and returns without waiting for that; the
// next round waits for the mark before it starts its own.
func (r *Relay) round(ctx context.Context, rs *state) (int, error) {
	rows, err := r.next(ctx, rs, r.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	if len(rows) == 0 {
		if rs.markDue() {
			return 0, r.flushMarks(ctx, rs)
		}
		return 0, rs.settleDone()
	}
	if len(rows) == r.cfg.BatchSize && !rs.serial {
		r.readAhead(ctx, rs, rows[len(rows)-1].Seq) // more is likely waiting
	}
	// Rows of held keys wait behind their key's parked event.
	pub, err := r.parkHeld(ctx, rs, rows)
	if err != nil {
		return 0, err
	}
	if len(pub) == 0 {
		if !rs.serial {
			rs.cursor = rows[len(rows)-1].Seq // all parked: nothing to mark
		}
		return len(rows), nil
	}
	events := make([]*envelope.Envelope, len(pub))
	for i, row := range pub {
		events[i] = row.Event
	}
	start := time.Now()
	errs := r.cfg.Broker.Publish(ctx, events)
	if r.cfg.Observer.Observing() {
		r.cfg.Observer.Published(ctx, events, start, time.Since(start), errs)
	}
	// Only the acknowledged prefix counts as published: what follows the
	// first failure is sent again, in order (the broker drops the copies it
	// already stored).
	acked := make([]int64, 0, len(pub))
	var firstErr error
	failed := -1
	for i, row := range pub {
		if errs[i] != nil {
			firstErr = fmt.Errorf("publish %s %s: %w", row.Event.Type, row.Event.ID, errs[i])
			failed = i
			break
		}
		acked = append(acked, row.Seq)
	}
	if len(acked) > 0 {
		if rs.serial {
			if err := r.cfg.Store.OutboxMarkPublished(ctx, acked, time.Now()); err != nil {
				return 0, err
			}
		} else {
			rs.cursor = acked[len(acked)-1]
			if firstErr == nil {
				rs.cursor = rows[len(rows)-1].Seq // the rows after the last published one were parked
			}
			if err := r.acked(ctx, rs, len(acked)); err != nil {
				return 0, err
			}
		}
	}
	if firstErr != nil {
		rs.drop() // it read after rows that must go again
		return r.refused(ctx, rs, pub[failed], errs[failed], firstErr, len(rows))
	}
	rs.fail.n = 0
	return len(rows), nil
}
