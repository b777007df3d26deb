package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Reasons a subscription dead-letters an event.
const (
	ReasonMalformed   = "malformed"    // headers or data could not be decoded
	ReasonUnknownType = "unknown-type" // no handler for the event type
	ReasonVersion     = "version"      // a version the subscription does not accept
	ReasonExhausted   = "exhausted"    // the handler failed on every attempt
	ReasonPermanent   = "permanent"    // the handler returned a permanent error
)

// Reasons the outbox relay parks an event as a producer-side dead letter
// (one with an empty Subscription).
const (
	ReasonRefused = "refused" // the broker refused the event for good
	ReasonHeld    = "held"    // a later event of a key whose earlier event is parked
)

// DeadLetter is an event a subscription gave up on. Header and Data are the
// message exactly as it arrived, so a dead letter can be replayed even when
// it could not be decoded.
//
// A dead letter with an empty Subscription is a producer-side one: an
// outbox row of Service that its relay parked (ReasonRefused, ReasonHeld),
// with the event's CloudEvents binary headers and data, and its partition
// key in Key. While a key has producer-side dead letters, the relay parks
// every later event of that key behind them.
type DeadLetter struct {
	ID           int64
	Service      string
	Subscription string // "" for a producer-side dead letter
	EventID      string // empty when the message had none
	Type         string
	Version      int
	Reason       string
	LastError    string
	Attempts     int
	Header       map[string]string
	Data         []byte
	Time         time.Time
	Key          string // the event's partition key (producer side; "" when it has none)
}

// ProducerSide reports whether the outbox relay parked d (its Subscription
// is empty), rather than a subscription giving up on it.
func (d DeadLetter) ProducerSide() bool { return d.Subscription == "" }

// DeadLetterFilter selects dead letters; empty fields match everything.
type DeadLetterFilter struct {
	Service      string
	Subscription string
	Type         string
	Reason       string
	IDs          []int64 // nil: any id; empty but non-nil: none
	Limit        int     // 0 means no limit
	// ProducerSide selects only the producer-side dead letters (those the
	// outbox relay parked, with an empty Subscription).
	ProducerSide bool
}

func (f DeadLetterFilter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(col, v string) {
		if v != "" {
			conds = append(conds, col+" = ?")
			args = append(args, v)
		}
	}
	add("service", f.Service)
	add("subscription", f.Subscription)
	add("type", f.Type)
	add("reason", f.Reason)
	if f.ProducerSide {
		conds = append(conds, "subscription = ''")
	}
	switch {
	case f.IDs != nil && len(f.IDs) == 0:
		conds = append(conds, "1 = 0") // an empty id list selects nothing, never everything
	case len(f.IDs) > 0:
		conds = append(conds, "id IN "+int64List(f.IDs))
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// DeadLetterInsert stores d and returns its id. With a non-nil tx it is written
// inside that transaction (together with the inbox row that settles the
// event), otherwise on its own.
func (s *Engine) DeadLetterInsert(ctx context.Context, tx *sql.Tx, d DeadLetter) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	hdr, err := json.Marshal(d.Header)
	if err != nil {
		return 0, fmt.Errorf("herald/store: dead letter header: %w", err)
	}
	if d.Time.IsZero() {
		d.Time = time.Now()
	}
	var ex execer = s.db
	if tx != nil {
		ex = tx
	}
	args := []any{d.Service, d.Subscription, d.EventID, d.Type, d.Version, d.Reason, d.LastError, d.Attempts,
		string(hdr), blob(d.Data), d.Time.UTC().UnixNano(), d.Key}
	if s.d.Name() == "postgres" {
		// PostgreSQL's driver has no LastInsertId.
		q := s.queries.dlInsert + " RETURNING id"
		var id int64
		var row *sql.Row
		if tx != nil {
			row = tx.QueryRowContext(ctx, q, args...)
		} else {
			row = s.db.QueryRowContext(ctx, q, args...)
		}
		if err := row.Scan(&id); err != nil {
			return 0, fmt.Errorf("herald/store: add dead letter: %w", err)
		}
		return id, nil
	}
	res, err := ex.ExecContext(ctx, s.queries.dlInsert, args...)
	if err != nil {
		return 0, fmt.Errorf("herald/store: add dead letter: %w", err)
	}
	return res.LastInsertId()
}

// dlCols are the columns scanDeadLetter reads, in its order.
const dlCols = "id, service, subscription, event_id, type, version, reason, last_error, attempts, header, data, created_at, partition_key"

func scanDeadLetter(sc scanner) (DeadLetter, error) {
	var d DeadLetter
	var hdr string
	var t int64
	if err := sc.Scan(&d.ID, &d.Service, &d.Subscription, &d.EventID, &d.Type, &d.Version, &d.Reason, &d.LastError,
		&d.Attempts, &hdr, &d.Data, &t, &d.Key); err != nil {
		return d, err
	}
	d.Time = time.Unix(0, t).UTC()
	if len(d.Data) == 0 {
		d.Data = nil
	}
	if err := json.Unmarshal([]byte(hdr), &d.Header); err != nil {
		return d, fmt.Errorf("dead letter %d header: %w", d.ID, err)
	}
	return d, nil
}

// DeadLetterGet returns the dead letter with id.
func (s *Store) DeadLetterGet(ctx context.Context, id int64) (DeadLetter, error) {
	if err := s.live(); err != nil {
		return DeadLetter{}, err
	}
	d, err := scanDeadLetter(s.db.QueryRowContext(ctx, s.queries.dlGet, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("herald/store: dead letter %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("herald/store: dead letter %d: %w", id, err)
	}
	return d, nil
}

// DeadLetterList lists the dead letters matching f, oldest first.
func (s *Store) DeadLetterList(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	return EngineOf(s).deadLetters(ctx, s.db, f)
}

// deadLetters is DeadLetterList through q (the store's pool or a transaction).
func (s *Engine) deadLetters(ctx context.Context, q querier, f DeadLetterFilter) ([]DeadLetter, error) {
	where, args := f.where()
	query := "SELECT " + dlCols + " FROM herald_dead_letters" + where + " ORDER BY id"
	if f.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := q.QueryContext(ctx, s.d.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("herald/store: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, fmt.Errorf("herald/store: scan dead letter: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeadLetterDeleteMany purges the dead letters matching f and returns how many
// it removed. An empty filter purges them all. With a Limit it purges the
// same dead letters DeadLetterList(f) lists: the oldest Limit matching ones.
func (s *Store) DeadLetterDeleteMany(ctx context.Context, f DeadLetterFilter) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	where, args := f.where()
	q := "DELETE FROM herald_dead_letters" + where
	if f.Limit > 0 {
		// DELETE … LIMIT is not portable (PostgreSQL has none).
		q = fmt.Sprintf("DELETE FROM herald_dead_letters WHERE id IN (SELECT id FROM herald_dead_letters%s ORDER BY id LIMIT %d)", where, f.Limit)
	}
	fail := func(err error) (int64, error) { return 0, fmt.Errorf("herald/store: purge dead letters: %w", err) }
	e := EngineOf(s)
	tx, err := e.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	if f.Service != "" && f.Subscription == "" {
		// Producer-side ones may be among them: exclude OutboxPark, which
		// parks a held row only while its key has some (see lockParked).
		if err := e.lockParked(ctx, tx, f.Service); err != nil {
			return fail(err)
		}
	}
	res, err := tx.ExecContext(ctx, s.d.Rebind(q), args...)
	if err != nil {
		return fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(err)
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return n, nil
}

// DeadLetter returns the dead letter with id.
//
// Deprecated: use DeadLetterGet.
func (s *Store) DeadLetter(ctx context.Context, id int64) (DeadLetter, error) {
	return s.DeadLetterGet(ctx, id)
}

// DeadLetters lists the dead letters matching f, oldest first.
//
// Deprecated: use DeadLetterList.
func (s *Store) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	return s.DeadLetterList(ctx, f)
}

// DeleteDeadLetters purges the dead letters matching f and returns how many
// it removed.
//
// Deprecated: use DeadLetterDeleteMany.
func (s *Store) DeleteDeadLetters(ctx context.Context, f DeadLetterFilter) (int64, error) {
	return s.DeadLetterDeleteMany(ctx, f)
}
