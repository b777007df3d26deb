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

// oneRow holds the texts of the one-row inserts, built once so the hot path
// does no string work: each is also the key of its prepared statement.
type oneRow struct {
	log, outbox, both string
	// multi holds, on SQLite, the prepared multi-row inserts by prefix
	// (event log, outbox), largest first.
	multi map[string][]multiRow
}

// multiRow is a prepared insert of n rows.
type multiRow struct {
	n int
	q string
}

// multiRowSizes are the row counts of SQLite's prepared multi-row inserts: a
// transaction's events go in as few statements of these sizes as fit, the
// rest one row at a time. Each statement costs a call through database/sql
// and the driver; the rows cost the same either way.
var multiRowSizes = []int{32, 8}

func (s *Engine) prepareHot(ctx context.Context) error {
	s.stmts = stmtCache{}
	s.one = oneRow{
		log:    s.d.Rebind(s.queries.eventLogInsert + s.values(1, nEventCols)),
		outbox: s.d.Rebind(s.queries.outboxInsert + s.values(1, nEventCols)),
	}
	var multi []string
	if s.d.Name() != "postgres" {
		s.one.multi = map[string][]multiRow{}
		for _, prefix := range []string{s.queries.eventLogInsert, s.queries.outboxInsert} {
			for _, n := range multiRowSizes {
				q := s.d.Rebind(prefix + s.values(n, nEventCols))
				s.one.multi[prefix] = append(s.one.multi[prefix], multiRow{n: n, q: q})
				multi = append(multi, q)
			}
		}
	}
	qs := []string{s.one.log, s.one.outbox, s.queries.inboxClaim, s.queries.inboxClaimBatch, s.queries.outboxPending, s.queries.outboxMark, s.queries.outboxMarkUpTo, sqlSavepoint, sqlRelease, sqlRollbackTo}
	if s.d.Name() == "postgres" {
		s.one.both = s.appendBoth(1, 1)
		qs = append(qs, s.one.both)
	}
	qs = append(qs, multi...)
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
func (s *Engine) appendBoth(n, m int) string {
	return s.d.Rebind("WITH herald_log AS (" + s.queries.eventLogInsert + s.values(n, nEventCols) + ") " +
		s.queries.outboxInsert + s.values(m, nEventCols))
}

// EventAppendParams are the events of one transaction for EventAppend.
type EventAppendParams struct {
	// Log are the domain events, for the event log.
	Log []*envelope.Envelope
	// Outbox are the integration and notification events, for the outbox.
	Outbox []*envelope.Envelope
}

// EventAppend writes a transaction's domain events to the event log and its
// integration and notification events to the outbox, in as few statements
// as the dialect allows: one on PostgreSQL (a data-modifying CTE), one
// prepared statement per table on SQLite.
func (s *Engine) EventAppend(ctx context.Context, tx *sql.Tx, p EventAppendParams) error {
	if err := s.live(); err != nil {
		return err
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

// exec runs q in tx, through its prepared statement when it is a hot one.
func (s *Engine) exec(ctx context.Context, tx *sql.Tx, q string, args []any) (sql.Result, error) {
	if st, ok := s.stmts[q]; ok {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}

// The savepoint that isolates one event of a batch.
const (
	sqlSavepoint  = "SAVEPOINT herald_event"
	sqlRelease    = "RELEASE SAVEPOINT herald_event"
	sqlRollbackTo = "ROLLBACK TO SAVEPOINT herald_event"
)

// TxSavepoint starts the savepoint that isolates one event of a batched
// transaction; TxSavepointRelease keeps its work, TxSavepointRollback undoes
// it.
func (s *Engine) TxSavepoint(ctx context.Context, tx *sql.Tx) error {
	_, err := s.exec(ctx, tx, sqlSavepoint, nil)
	return err
}

// TxSavepointRelease ends the savepoint, keeping its work.
func (s *Engine) TxSavepointRelease(ctx context.Context, tx *sql.Tx) error {
	_, err := s.exec(ctx, tx, sqlRelease, nil)
	return err
}

// TxSavepointRollback undoes the work since TxSavepoint and ends the savepoint.
func (s *Engine) TxSavepointRollback(ctx context.Context, tx *sql.Tx) error {
	if _, err := s.exec(ctx, tx, sqlRollbackTo, nil); err != nil {
		return err
	}
	return s.TxSavepointRelease(ctx, tx)
}

// TxHealthy reports whether tx still runs statements: nil, or the error of a
// trivial query. On PostgreSQL a statement's error fails the whole
// transaction until it is rolled back (or rolled back to a savepoint); this
// tells such a transaction apart.
func (s *Engine) TxHealthy(ctx context.Context, tx *sql.Tx) error {
	var one int
	return tx.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}
