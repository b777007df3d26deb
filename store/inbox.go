package store

import (
	"context"
	"fmt"
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
