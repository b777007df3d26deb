package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// Producer-side dead letters: the outbox relay parks an outbox row the
// broker refused for good (ReasonRefused), and every later row of its
// partition key (ReasonHeld), in herald_dead_letters with an empty
// subscription, so that the rows behind them go on and no event of the key
// overtakes the parked one. OutboxReplayParked puts them back into the
// outbox; purging them (DeadLetterDeleteMany) discards them. A key is held as long as it
// has producer-side dead letters: the table is the relay's memory across
// restarts.
//
// OutboxPark and OutboxReplayParked of one service exclude each other (SQLite's
// immediate transactions; an advisory lock on PostgreSQL), which is what
// keeps a held key in order while an operator replays it.

// Park is an outbox row for OutboxPark.
type Park struct {
	Row       OutboxRow
	Reason    string // ReasonRefused or ReasonHeld
	LastError string
	Attempts  int
}

// ParkResult is what OutboxPark did with one row. Neither field set: the row
// was a ReasonHeld one whose key has no producer-side dead letter any more
// (an operator replayed or purged them) and it is still in the outbox, so it
// stays there and the relay publishes it.
type ParkResult struct {
	// DeadLetter is the id of the dead letter the row became (0: not parked).
	DeadLetter int64
	// Gone says the row was no longer in the outbox: OutboxReplayParked moved it
	// behind the events it replayed. The relay drops it from its batch.
	Gone bool
}

// lockParked serialises OutboxPark and OutboxReplayParked of service. SQLite needs
// nothing: a write transaction holds the database's only write lock.
func (s *Engine) lockParked(ctx context.Context, tx *sql.Tx, service string) error {
	if s.d.Name() != "postgres" {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "herald_parked/"+service)
	return err
}

// hasParked reports whether service has producer-side dead letters of key.
func (s *Engine) hasParked(ctx context.Context, tx *sql.Tx, service, key string) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM (SELECT 1 FROM herald_dead_letters WHERE service = ? AND subscription = '' AND partition_key = ? LIMIT 1) AS parked"),
		service, key).Scan(&n)
	return n > 0, err
}

// OutboxPark moves outbox rows of service to its producer-side dead letters,
// in the order given, in one transaction: each row is deleted from the
// outbox and becomes a dead letter with the event's binary headers and data,
// its key, the reason, the error and the attempts. A ReasonHeld row is parked
// only while its key still has producer-side dead letters (see ParkResult).
func (s *Engine) OutboxPark(ctx context.Context, service string, ps []Park) ([]ParkResult, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	fail := func(err error) ([]ParkResult, error) {
		return nil, fmt.Errorf("herald/store: park outbox rows of %s: %w", service, err)
	}
	tx, err := s.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	if err := s.lockParked(ctx, tx, service); err != nil {
		return fail(err)
	}
	held := map[string]bool{} // keys known to have producer-side dead letters
	out := make([]ParkResult, len(ps))
	now := time.Now()
	for i, p := range ps {
		e := p.Row.Event
		if p.Reason == ReasonHeld && !held[e.Key] {
			ok, err := s.hasParked(ctx, tx, service, e.Key)
			if err != nil {
				return fail(err)
			}
			if !ok {
				// The key is free again. A replay may have moved this row
				// behind the events it put back (the relay read it before):
				// then it is gone, and the relay must not publish this copy
				// ahead of them.
				var n int
				if err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM herald_outbox WHERE seq = ? AND service = ?"),
					p.Row.Seq, service).Scan(&n); err != nil {
					return fail(err)
				}
				out[i].Gone = n == 0
				continue
			}
		}
		res, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM herald_outbox WHERE seq = ? AND service = ?"), p.Row.Seq, service)
		if err != nil {
			return fail(err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fail(err)
		} else if n == 0 {
			out[i].Gone = true
			continue
		}
		h, data := envelope.ToBinary(e)
		id, err := s.DeadLetterInsert(ctx, tx, DeadLetter{Service: service, EventID: e.ID, Type: e.Type, Version: e.Version,
			Reason: p.Reason, LastError: p.LastError, Attempts: p.Attempts, Header: h, Data: data, Time: now, Key: e.Key})
		if err != nil {
			return fail(err)
		}
		out[i].DeadLetter = id
		if e.Key != "" {
			held[e.Key] = true
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return out, nil
}

// OutboxParkedKeys returns the partition keys of service that have producer-side
// dead letters, each with the event id of its oldest one: the event the
// key's later events wait for. Keyless events hold nothing.
func (s *Engine) OutboxParkedKeys(ctx context.Context, service string) (map[string]string, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind("SELECT partition_key, event_id FROM herald_dead_letters WHERE id IN"+
		" (SELECT MIN(id) FROM herald_dead_letters WHERE service = ? AND subscription = '' AND partition_key <> '' GROUP BY partition_key)"), service)
	if err != nil {
		return nil, fmt.Errorf("herald/store: parked keys of %s: %w", service, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, id string
		if err := rows.Scan(&k, &id); err != nil {
			return nil, fmt.Errorf("herald/store: parked keys of %s: %w", service, err)
		}
		out[k] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("herald/store: parked keys of %s: %w", service, err)
	}
	return out, nil
}

// OutboxReplayParked puts the producer-side dead letters of service that f selects
// back into the outbox, oldest first, and deletes them, in one transaction;
// it returns them. A key's parked events go back together: selecting one
// (say the refused one, by --reason or --id) replays every producer-side dead
// letter of its key, since putting back part of a key's chain would let the
// rest, parked again behind it, come out of order. The rows still waiting in
// the outbox for their keys (not yet parked by the relay) move behind them,
// so that no event overtakes an earlier one of its key. One the broker
// refuses again is parked again. f.Service and f.ProducerSide are set for
// you.
func (s *Engine) OutboxReplayParked(ctx context.Context, service string, f DeadLetterFilter) ([]DeadLetter, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	fail := func(err error) ([]DeadLetter, error) {
		return nil, fmt.Errorf("herald/store: replay parked events of %s: %w", service, err)
	}
	f.Service, f.ProducerSide = service, true
	tx, err := s.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	if err := s.lockParked(ctx, tx, service); err != nil {
		return fail(err)
	}
	dls, err := s.deadLetters(ctx, tx, f)
	if err != nil {
		return fail(err)
	}
	if len(dls) == 0 {
		return nil, nil
	}
	if dls, err = s.wholeChains(ctx, tx, service, dls); err != nil {
		return fail(err)
	}
	events := make([]*envelope.Envelope, 0, len(dls))
	ids := make([]int64, 0, len(dls))
	var keys []string
	seen := map[string]bool{}
	for _, d := range dls {
		e, err := envelope.FromBinary(d.Header, d.Data)
		if err != nil {
			return fail(fmt.Errorf("dead letter %d: %w", d.ID, err))
		}
		events = append(events, e)
		ids = append(ids, d.ID)
		if e.Key != "" && !seen[e.Key] {
			seen[e.Key] = true
			keys = append(keys, e.Key)
		}
	}
	// The rows of those keys still in the outbox go behind them.
	behind, err := s.takePending(ctx, tx, service, keys)
	if err != nil {
		return fail(err)
	}
	if err := s.insertEvents(ctx, tx, s.queries.outboxInsert, append(events, behind...)); err != nil {
		return fail(err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM herald_dead_letters WHERE id IN "+int64List(ids)); err != nil {
		return fail(err)
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return dls, nil
}

// wholeChains returns dls together with every other producer-side dead
// letter of service with one of their keys, in id (parking) order.
func (s *Engine) wholeChains(ctx context.Context, tx *sql.Tx, service string, dls []DeadLetter) ([]DeadLetter, error) {
	have := map[int64]bool{}
	var keys []any
	seen := map[string]bool{}
	for _, d := range dls {
		have[d.ID] = true
		if d.Key != "" && !seen[d.Key] {
			seen[d.Key] = true
			keys = append(keys, d.Key)
		}
	}
	if len(keys) == 0 {
		return dls, nil
	}
	in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ") + ")"
	rows, err := tx.QueryContext(ctx, s.d.Rebind("SELECT id FROM herald_dead_letters WHERE service = ? AND subscription = '' AND partition_key IN "+in),
		append([]any{service}, keys...)...)
	if err != nil {
		return nil, err
	}
	var more []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		if !have[id] {
			more = append(more, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(more) == 0 {
		return dls, nil
	}
	extra, err := s.deadLetters(ctx, tx, DeadLetterFilter{Service: service, ProducerSide: true, IDs: more})
	if err != nil {
		return nil, err
	}
	all := append(dls, extra...)
	slices.SortFunc(all, func(a, b DeadLetter) int { return cmp.Compare(a.ID, b.ID) })
	return all, nil
}

// takePending deletes the unpublished outbox rows of service with one of
// keys and returns their events in seq order.
func (s *Engine) takePending(ctx context.Context, tx *sql.Tx, service string, keys []string) ([]*envelope.Envelope, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	args := []any{service, service}
	for _, k := range keys {
		args = append(args, k)
	}
	in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ") + ")"
	rows, err := tx.QueryContext(ctx, s.d.Rebind("SELECT seq, "+eventCols+" FROM herald_outbox WHERE service = ? AND published_at IS NULL"+
		" AND seq > "+outboxCursor+" AND partition_key IN "+in+" ORDER BY seq"), args...)
	if err != nil {
		return nil, err
	}
	var seqs []int64
	var out []*envelope.Envelope
	for rows.Next() {
		var seq int64
		e, err := scanEvent(rows, &seq)
		if err != nil {
			rows.Close()
			return nil, err
		}
		seqs = append(seqs, seq)
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(seqs) > 0 {
		if _, err := tx.ExecContext(ctx, "DELETE FROM herald_outbox WHERE seq IN "+int64List(seqs)); err != nil {
			return nil, err
		}
	}
	return out, nil
}
