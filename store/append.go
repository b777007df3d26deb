package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/heraldhq/herald/envelope"
)

// stmtCache holds the hot statements, prepared once on the pool when the
// store opens. database/sql then prepares each on a connection the first
// time a transaction there uses it and reuses it after, so the hot path never
// parses SQL again. (Preparing lazily from inside a transaction could
// deadlock: the pool may have no free connection while that transaction
// holds SQLite's write lock.)
type stmtCache map[string]*sql.Stmt

func (s *Store) prepareHot(ctx context.Context) error {
	s.stmts = stmtCache{}
	qs := []string{
		s.d.Rebind(s.queries.eventLogInsert + s.values(1, nEventCols)),
		s.d.Rebind(s.queries.outboxInsert + s.values(1, nEventCols)),
	}
	if s.d.Name() == "postgres" {
		qs = append(qs, s.appendBoth(1, 1))
	}
	for _, q := range qs {
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("herald/store: prepare %q: %w", q, err)
		}
		s.stmts[q] = st
	}
	return nil
}

// appendBoth is PostgreSQL's one-statement insert of n log and m outbox rows.
func (s *Store) appendBoth(n, m int) string {
	return s.d.Rebind("WITH herald_log AS (" + s.queries.eventLogInsert + s.values(n, nEventCols) + ") " +
		s.queries.outboxInsert + s.values(m, nEventCols))
}

// Append writes a transaction's domain events to the event log and its
// integration and notification events to the outbox, in as few statements
// as the dialect allows: one on PostgreSQL (a data-modifying CTE), one
// prepared statement per table on SQLite.
func (s *Store) Append(ctx context.Context, tx *sql.Tx, log, outbox []*envelope.Envelope) error {
	if err := s.live(); err != nil {
		return err
	}
	if s.d.Name() == "postgres" && len(log) > 0 && len(outbox) > 0 && len(log)+len(outbox) <= maxRowsPerInsert {
		q := s.appendBoth(len(log), len(outbox))
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
	if err := s.appendTo(ctx, tx, s.queries.eventLogInsert, log); err != nil {
		return fmt.Errorf("herald/store: append event log: %w", err)
	}
	if err := s.appendTo(ctx, tx, s.queries.outboxInsert, outbox); err != nil {
		return fmt.Errorf("herald/store: append outbox: %w", err)
	}
	return nil
}

func (s *Store) appendTo(ctx context.Context, tx *sql.Tx, prefix string, events []*envelope.Envelope) error {
	switch len(events) {
	case 0:
		return nil
	case 1:
		_, err := s.exec(ctx, tx, s.d.Rebind(prefix+s.values(1, nEventCols)), eventArgs(make([]any, 0, nEventCols), events[0]))
		return err
	}
	return s.insertEvents(ctx, tx, prefix, events)
}

// exec runs q in tx, through its prepared statement when it is a hot one.
func (s *Store) exec(ctx context.Context, tx *sql.Tx, q string, args []any) (sql.Result, error) {
	if st, ok := s.stmts[q]; ok {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}
