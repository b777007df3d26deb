package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ReleaseInbox forgets that subscription processed eventID, so that a replay
// of the event runs the handler again.
func (s *Store) ReleaseInbox(ctx context.Context, subscription, eventID string) error {
	if err := s.live(); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.d.Rebind(`DELETE FROM herald_inbox WHERE subscription = ? AND event_id = ?`), subscription, eventID)
	if err != nil {
		return fmt.Errorf("herald/store: release inbox %s/%s: %w", subscription, eventID, err)
	}
	return nil
}

// LastPublished returns when the relay of service last marked a row
// published (zero if never, or if those rows were pruned).
func (s *Store) LastPublished(ctx context.Context, service string) (time.Time, error) {
	if err := s.live(); err != nil {
		return time.Time{}, err
	}
	var at sql.NullInt64
	err := s.db.QueryRowContext(ctx, s.d.Rebind(`SELECT MAX(published_at) FROM herald_outbox WHERE service = ? AND published_at IS NOT NULL`), service).Scan(&at)
	if err != nil {
		return time.Time{}, fmt.Errorf("herald/store: last published of %s: %w", service, err)
	}
	if !at.Valid {
		return time.Time{}, nil
	}
	return time.Unix(0, at.Int64).UTC(), nil
}
