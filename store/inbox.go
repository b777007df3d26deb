package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

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
