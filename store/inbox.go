package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// InboxClaim records inside tx that subscription processed eventID. It
// returns false when the event was already processed (a redelivery): the
// caller must then skip the handler and just acknowledge.
func (s *Engine) InboxClaim(ctx context.Context, tx *sql.Tx, subscription, eventID string) (bool, error) {
	if err := s.live(); err != nil {
		return false, err
	}
	res, err := s.exec(ctx, tx, s.queries.inboxClaim, []any{subscription, eventID, time.Now().UTC().UnixNano()})
	if err != nil {
		return false, fmt.Errorf("herald/store: claim inbox %s/%s: %w", subscription, eventID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("herald/store: claim inbox %s/%s: %w", subscription, eventID, err)
	}
	return n == 1, nil
}

// InboxClaimMany records inside tx, in one statement, that subscription
// processed each of eventIDs, and reports which claims are new: fresh[i] is
// false when eventIDs[i] was processed before (a redelivery, whose handler
// must be skipped) or appears earlier in eventIDs. It is InboxClaim for a
// whole batch: the same rows, one round trip.
func (s *Engine) InboxClaimMany(ctx context.Context, tx *sql.Tx, subscription string, eventIDs []string) (fresh []bool, err error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	fresh = make([]bool, len(eventIDs))
	if len(eventIDs) == 0 {
		return fresh, nil
	}
	ids, err := json.Marshal(eventIDs)
	if err != nil {
		return nil, fmt.Errorf("herald/store: claim inbox batch of %s: %w", subscription, err)
	}
	st := tx.StmtContext(ctx, s.stmts[s.queries.inboxClaimBatch])
	rows, err := st.QueryContext(ctx, subscription, string(ids), time.Now().UTC().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("herald/store: claim inbox batch of %s: %w", subscription, err)
	}
	defer rows.Close()
	claimed := make(map[string]struct{}, len(eventIDs))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("herald/store: claim inbox batch of %s: %w", subscription, err)
		}
		claimed[id] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("herald/store: claim inbox batch of %s: %w", subscription, err)
	}
	for i, id := range eventIDs {
		if _, ok := claimed[id]; ok {
			fresh[i] = true
			delete(claimed, id) // a second copy of the id in the batch is a duplicate
		}
	}
	return fresh, nil
}

// inboxClaimBatch inserts the inbox rows of a JSON array of event ids in
// one statement and returns the ids it inserted: the new claims. (The WHERE
// true keeps SQLite from reading ON CONFLICT as a join constraint.)
func inboxClaimBatch(d Dialect) string {
	if d.Name() == "postgres" {
		return "INSERT INTO herald_inbox (subscription, event_id, processed_at)" +
			" SELECT $1, ids.id, $3 FROM json_array_elements_text($2::json) WITH ORDINALITY AS ids(id, n) ORDER BY ids.n" +
			" ON CONFLICT DO NOTHING RETURNING event_id"
	}
	return "INSERT INTO herald_inbox (subscription, event_id, processed_at)" +
		" SELECT ?1, value, ?3 FROM json_each(?2) WHERE true ORDER BY key" +
		" ON CONFLICT DO NOTHING RETURNING event_id"
}

// InboxRelease forgets that subscription processed eventID, so that a replay
// of the event runs the handler again.
func (s *Engine) InboxRelease(ctx context.Context, subscription, eventID string) error {
	if err := s.live(); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.d.Rebind(`DELETE FROM herald_inbox WHERE subscription = ? AND event_id = ?`), subscription, eventID)
	if err != nil {
		return fmt.Errorf("herald/store: release inbox %s/%s: %w", subscription, eventID, err)
	}
	return nil
}

// InboxPrune deletes inbox rows processed before before. Keep them longer
// than the broker can redeliver an event.
func (s *Engine) InboxPrune(ctx context.Context, before time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, s.queries.inboxPrune, before.UTC().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("herald/store: prune inbox: %w", err)
	}
	return res.RowsAffected()
}
