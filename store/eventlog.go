package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// EventAppendParams are the events of one transaction for EventAppend.
type EventAppendParams struct {
	// Log are the domain events, for the event log.
	Log []*envelope.Envelope
	// Outbox are the integration and notification events, for the outbox.
	Outbox []*envelope.Envelope
	// Streams are domain events of event-sourced aggregates, for the event
	// log at their place in their streams. A place another transaction took
	// fails the append with ErrStreamConflict.
	Streams []StreamEvent
	// Snapshots replace their streams' older snapshots.
	Snapshots []Snapshot
}

// EventAppend writes a transaction's domain events to the event log and its
// integration and notification events to the outbox, in as few statements
// as the dialect allows: one on PostgreSQL (a data-modifying CTE), one
// prepared statement per table on SQLite.
func (s *Engine) EventAppend(ctx context.Context, tx *sql.Tx, p EventAppendParams) error {
	if err := s.live(); err != nil {
		return err
	}
	if len(p.Streams) > 0 {
		// First: a conflict fails the transaction before anything else.
		if err := s.streamAppend(ctx, tx, p.Streams); err != nil {
			return fmt.Errorf("herald/store: append to streams: %w", err)
		}
	}
	if len(p.Snapshots) > 0 {
		if err := s.snapshotPut(ctx, tx, p.Snapshots); err != nil {
			return fmt.Errorf("herald/store: %w", err)
		}
	}
	log, outbox := p.Log, p.Outbox
	if s.d.Name() == "postgres" && len(log) > 0 && len(outbox) > 0 && len(log)+len(outbox) <= maxRowsPerInsert {
		q := s.one.both
		if len(log) != 1 || len(outbox) != 1 {
			q = s.appendBoth(len(log), len(outbox))
		}
		args := make([]any, 0, (len(log)+len(outbox))*nEventCols)
		for _, e := range log {
			args = eventArgs(args, e)
		}
		for _, e := range outbox {
			args = eventArgs(args, e)
		}
		if _, err := s.exec(ctx, tx, q, args); err != nil {
			return fmt.Errorf("herald/store: append events: %w", err)
		}
		return nil
	}
	if err := s.appendTo(ctx, tx, s.queries.eventLogInsert, s.one.log, log); err != nil {
		return fmt.Errorf("herald/store: append event log: %w", err)
	}
	if err := s.appendTo(ctx, tx, s.queries.outboxInsert, s.one.outbox, outbox); err != nil {
		return fmt.Errorf("herald/store: append outbox: %w", err)
	}
	return nil
}

// appendBoth is PostgreSQL's one-statement insert of n log and m outbox rows.
func (s *Engine) appendBoth(n, m int) string {
	return s.d.Rebind("WITH herald_log AS (" + s.queries.eventLogInsert + s.values(n, nEventCols) + ") " +
		s.queries.outboxInsert + s.values(m, nEventCols))
}

// appendTo inserts events with the statement that starts with prefix; one is
// its prepared one-row form.
func (s *Engine) appendTo(ctx context.Context, tx *sql.Tx, prefix, one string, events []*envelope.Envelope) error {
	if len(events) > 1 && s.d.Name() == "postgres" {
		return s.insertEvents(ctx, tx, prefix, events) // one round trip
	}
	// SQLite runs in process: prepared inserts of a few fixed sizes beat
	// parsing a new multi-row statement for each count.
	var args []any
	for _, m := range s.one.multi[prefix] {
		for len(events) >= m.n {
			args = args[:0]
			for _, e := range events[:m.n] {
				args = eventArgs(args, e)
			}
			if _, err := s.exec(ctx, tx, m.q, args); err != nil {
				return err
			}
			events = events[m.n:]
		}
	}
	args = make([]any, 0, nEventCols)
	for _, e := range events {
		if _, err := s.exec(ctx, tx, one, eventArgs(args[:0], e)); err != nil {
			return err
		}
	}
	return nil
}

// EventLogAppend appends domain events to the event log inside tx.
func (s *Engine) EventLogAppend(ctx context.Context, tx *sql.Tx, events []*envelope.Envelope) error {
	return s.appendOne(ctx, tx, s.queries.eventLogInsert, "event log", events)
}

// appendOne inserts events into the one table whose insert starts with
// prefix (EventLogAppend, OutboxAppend); what names it in the error.
func (s *Engine) appendOne(ctx context.Context, tx *sql.Tx, prefix, what string, events []*envelope.Envelope) error {
	if err := s.live(); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if err := s.insertEvents(ctx, tx, prefix, events); err != nil {
		return fmt.Errorf("herald/store: append %s: %w", what, err)
	}
	return nil
}

// EventLogGet returns the event-log entry with id.
func (s *Store) EventLogGet(ctx context.Context, id string) (*envelope.Envelope, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	e, err := scanEvent(s.db.QueryRowContext(ctx, s.queries.eventLogByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("herald/store: event %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("herald/store: event %s: %w", id, err)
	}
	return e, nil
}

// EventLogListByCorrelation returns the event-log entries of one business flow in
// the order they were recorded. It scans the log (which has no index but its
// key, to keep business transactions cheap): use it for audits and tools, not
// on a hot path.
func (s *Store) EventLogListByCorrelation(ctx context.Context, correlationID string) ([]*envelope.Envelope, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.queries.eventLogByCorr, correlationID)
	if err != nil {
		return nil, fmt.Errorf("herald/store: events of %s: %w", correlationID, err)
	}
	defer rows.Close()
	var out []*envelope.Envelope
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("herald/store: scan event: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventLogPrune deletes event-log rows recorded before before (retention),
// to the millisecond. It keeps the events of aggregates' streams, whatever
// their age: they are those aggregates' state.
func (s *Engine) EventLogPrune(ctx context.Context, before time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	// Event ids are ULIDs: every id below the smallest id of before's
	// millisecond was recorded earlier.
	res, err := s.db.ExecContext(ctx, s.queries.eventLogPrune, envelope.MinID(before))
	if err != nil {
		return 0, fmt.Errorf("herald/store: prune event log: %w", err)
	}
	return res.RowsAffected()
}

// Event returns the event-log entry with id.
//
// Deprecated: use EventLogGet.
func (s *Store) Event(ctx context.Context, id string) (*envelope.Envelope, error) {
	return s.EventLogGet(ctx, id)
}

// EventsByCorrelation returns the event-log entries of one business flow in
// the order they were recorded.
//
// Deprecated: use EventLogListByCorrelation.
func (s *Store) EventsByCorrelation(ctx context.Context, correlationID string) ([]*envelope.Envelope, error) {
	return s.EventLogListByCorrelation(ctx, correlationID)
}
