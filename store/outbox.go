package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// OutboxRow is one outbox entry: its position in commit order and the event.
type OutboxRow struct {
	Seq   int64
	Event *envelope.Envelope
}

// OutboxAppend writes events to the outbox inside tx; the relay of each
// event's Source service publishes them after commit, in commit order. On
// PostgreSQL a trigger sends NOTIFY herald_outbox with the service name, so
// relays in other processes wake at once.
func (s *Engine) OutboxAppend(ctx context.Context, tx *sql.Tx, events []*envelope.Envelope) error {
	return s.appendOne(ctx, tx, s.queries.outboxInsert, "outbox", events)
}

// OutboxPendingListParams selects the rows OutboxPendingList returns.
type OutboxPendingListParams struct {
	// Service is the service whose outbox rows are read.
	Service string
	// After skips the rows up to this seq: a relay that published up to
	// After, and is still marking those rows published, reads what follows
	// them. 0 reads from the start.
	After int64
	// Limit is the most rows returned.
	Limit int
}

// OutboxPendingList returns up to p.Limit unpublished rows of p.Service
// after seq p.After, in commit order.
func (s *Engine) OutboxPendingList(ctx context.Context, p OutboxPendingListParams) ([]OutboxRow, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	rows, err := s.stmts[s.queries.outboxPending].QueryContext(ctx, p.Service, p.After, p.Service, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("herald/store: pending outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxRow
	for rows.Next() {
		var r OutboxRow
		e, err := scanEvent(rows, &r.Seq)
		if err != nil {
			return nil, fmt.Errorf("herald/store: scan outbox: %w", err)
		}
		r.Event = e
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("herald/store: pending outbox: %w", err)
	}
	return out, nil
}

// DelaysVisibility reports whether the dialect shows a committed outbox row
// to OutboxPendingList only once every transaction older than its own ended
// (PostgreSQL's commit-order rule), so a relay woken by a commit may find
// nothing yet.
func (s *Engine) DelaysVisibility() bool { return s.d.PendingCondition() != "" }

// OutboxMarkPublished records that the broker acknowledged the rows seqs.
// Rows are kept until OutboxPrune removes them, so that a broker which lost
// its last writes can be refilled with OutboxRepublishSince.
func (s *Engine) OutboxMarkPublished(ctx context.Context, seqs []int64, at time.Time) error {
	if err := s.live(); err != nil {
		return err
	}
	if len(seqs) == 0 {
		return nil
	}
	if _, err := s.stmts[s.queries.outboxMark].ExecContext(ctx, at.UTC().UnixNano(), int64JSON(seqs)); err != nil {
		return fmt.Errorf("herald/store: mark published: %w", err)
	}
	return nil
}

// ErrMarkMoved is returned by OutboxMarkUpTo when the service's newest
// range mark went back below the one the relay's reads started from: an
// OutboxRepublishSince dropped it, and the rows it reopened must be read again.
var ErrMarkMoved = errors.New("herald/store: the outbox cursor moved back")

// outboxCursor is the newest range mark of the service bound first after it:
// every row of the service up to it was published.
const outboxCursor = "COALESCE((SELECT MAX(upto_seq) FROM herald_outbox_marks WHERE service = ?), 0)"

// OutboxCursor returns the service's newest range mark: every row up to it
// was published (0: none).
func (s *Engine) OutboxCursor(ctx context.Context, service string) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	return s.outboxCursor(ctx, s.db, service)
}

// outboxCursor is OutboxCursor through q (the store's pool or a transaction).
func (s *Engine) outboxCursor(ctx context.Context, q rowQuerier, service string) (int64, error) {
	var c int64
	if err := q.QueryRowContext(ctx, s.d.Rebind("SELECT "+outboxCursor), service).Scan(&c); err != nil {
		return 0, fmt.Errorf("herald/store: outbox cursor of %s: %w", service, err)
	}
	return c, nil
}

// OutboxMarkUpToParams says which range of a service's outbox rows
// OutboxMarkUpTo marks published.
type OutboxMarkUpToParams struct {
	// Service is the service whose rows are marked.
	Service string
	// From is the range mark the relay's reads started from (OutboxCursor,
	// or its own last mark).
	From int64
	// UpTo is the seq of the last row marked.
	UpTo int64
	// At is when the broker acknowledged the rows.
	At time.Time
}

// OutboxMarkUpTo records that the broker acknowledged every unpublished row
// of p.Service after p.From up to p.UpTo: one small row, whatever the
// number of rows it covers. When the newest mark is now below p.From, it
// records nothing and returns ErrMarkMoved. A relay may use it only where
// rows become readable in seq order (!DelaysVisibility, SQLite): there no
// row below p.UpTo can still appear.
func (s *Engine) OutboxMarkUpTo(ctx context.Context, p OutboxMarkUpToParams) error {
	if err := s.live(); err != nil {
		return err
	}
	service, from, seq := p.Service, p.From, p.UpTo
	res, err := s.stmts[s.queries.outboxMarkUpTo].ExecContext(ctx, service, seq, p.At.UTC().UnixNano(), service, from)
	if err != nil {
		return fmt.Errorf("herald/store: mark %s published up to %d: %w", service, seq, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	// Nothing inserted: the same mark exists already, or the cursor moved.
	c, err := s.OutboxCursor(ctx, service)
	if err != nil {
		return err
	}
	if c < seq {
		return fmt.Errorf("herald/store: mark %s published up to %d after %d: %w (now %d)", service, seq, from, ErrMarkMoved, c)
	}
	return nil
}

// outboxMark marks the rows whose seqs a JSON array lists published, in one
// prepared statement whatever the number of rows.
func outboxMark(d Dialect) string {
	if d.Name() == "postgres" {
		return "UPDATE herald_outbox SET published_at = $1 WHERE seq IN (SELECT s::bigint FROM json_array_elements_text($2::json) AS ids(s))"
	}
	return "UPDATE herald_outbox SET published_at = ?1 WHERE seq IN (SELECT value FROM json_each(?2))"
}

// OutboxRepublishSince marks the rows of service published at or after since as
// unpublished again, so the relay sends them once more (the broker drops
// the duplicates by event id). It returns how many rows it reset.
func (s *Engine) OutboxRepublishSince(ctx context.Context, service string, since time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) { return 0, fmt.Errorf("herald/store: republish %s: %w", service, err) }
	tx, err := s.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	at := since.UTC().UnixNano()
	res, err := tx.ExecContext(ctx, s.queries.outboxUnpublish, service, at)
	if err != nil {
		return fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(err)
	}
	// Dropping the range marks made since moves the cursor back to the
	// last mark before it; the rows between are unpublished again.
	was, err := s.outboxCursor(ctx, tx, service)
	if err != nil {
		return fail(err)
	}
	if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM herald_outbox_marks WHERE service = ? AND published_at >= ?"), service, at); err != nil {
		return fail(err)
	}
	now, err := s.outboxCursor(ctx, tx, service)
	if err != nil {
		return fail(err)
	}
	if now < was {
		var m int64
		if err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM herald_outbox WHERE service = ? AND published_at IS NULL AND seq > ? AND seq <= ?"),
			service, now, was).Scan(&m); err != nil {
			return fail(err)
		}
		n += m
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return n, nil
}

// OutboxLastPublished returns when the relay of service last marked a row
// published (zero if never, or if those rows were pruned).
func (s *Engine) OutboxLastPublished(ctx context.Context, service string) (time.Time, error) {
	if err := s.live(); err != nil {
		return time.Time{}, err
	}
	var at sql.NullInt64
	err := s.db.QueryRowContext(ctx, s.d.Rebind(`SELECT MAX(t) FROM (
		SELECT MAX(published_at) AS t FROM herald_outbox WHERE service = ? AND published_at IS NOT NULL
		UNION ALL SELECT MAX(published_at) FROM herald_outbox_marks WHERE service = ?) AS p`), service, service).Scan(&at)
	if err != nil {
		return time.Time{}, fmt.Errorf("herald/store: last published of %s: %w", service, err)
	}
	if !at.Valid {
		return time.Time{}, nil
	}
	return time.Unix(0, at.Int64).UTC(), nil
}

// OutboxPrune deletes rows published before before, and the range marks
// older than before except each service's newest (its relay's cursor).
func (s *Engine) OutboxPrune(ctx context.Context, before time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) { return 0, fmt.Errorf("herald/store: prune outbox: %w", err) }
	at := before.UTC().UnixNano()
	res, err := s.db.ExecContext(ctx, s.queries.outboxPrune, at)
	if err != nil {
		return fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(err)
	}
	type mark struct {
		service string
		upto    int64
	}
	var marks []mark
	rows, err := s.db.QueryContext(ctx, s.d.Rebind("SELECT service, MAX(upto_seq) FROM herald_outbox_marks WHERE published_at < ? GROUP BY service"), at)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var m mark
		if err := rows.Scan(&m.service, &m.upto); err != nil {
			rows.Close()
			return fail(err)
		}
		marks = append(marks, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	for _, m := range marks {
		// The range-marked rows are still in the pending index (their own
		// published_at is NULL), which this delete walks.
		res, err := s.db.ExecContext(ctx, s.d.Rebind("DELETE FROM herald_outbox WHERE service = ? AND published_at IS NULL AND seq <= ?"), m.service, m.upto)
		if err != nil {
			return fail(err)
		}
		d, err := res.RowsAffected()
		if err != nil {
			return fail(err)
		}
		n += d
		if _, err := s.db.ExecContext(ctx, s.d.Rebind("DELETE FROM herald_outbox_marks WHERE service = ? AND upto_seq < ?"), m.service, m.upto); err != nil {
			return fail(err)
		}
	}
	return n, nil
}

// OutboxStats reports the unpublished backlog of service and the creation
// time of its oldest row (zero when empty).
func (s *Store) OutboxStats(ctx context.Context, service string) (backlog int64, oldest time.Time, err error) {
	if err := s.live(); err != nil {
		return 0, time.Time{}, err
	}
	var minCreated sql.NullInt64
	if err := s.db.QueryRowContext(ctx, s.queries.outboxStats, service, service).Scan(&backlog, &minCreated); err != nil {
		return 0, time.Time{}, fmt.Errorf("herald/store: outbox stats: %w", err)
	}
	if minCreated.Valid {
		oldest = time.Unix(0, minCreated.Int64).UTC()
	}
	return backlog, oldest, nil
}

// OutboxStats is Store.OutboxStats, for the engines.
func (s *Engine) OutboxStats(ctx context.Context, service string) (backlog int64, oldest time.Time, err error) {
	return (*Store)(s).OutboxStats(ctx, service)
}

// ErrNoListen is returned by Listen on a dialect without notifications;
// relays then rely on the in-process signal and polling.
var ErrNoListen = errors.New("herald/store: dialect has no commit notifications")

// OutboxListen calls fn with the service of every commit that wrote outbox
// rows, in any process, until ctx ends. Dialects without notifications
// return ErrNoListen at once.
func (s *Engine) OutboxListen(ctx context.Context, fn func(service string)) error {
	if err := s.live(); err != nil {
		return err
	}
	l, ok := s.d.(Listener)
	if !ok {
		return ErrNoListen
	}
	return l.Listen(ctx, fn)
}
