package store

import (
	"context"
	"fmt"
	"time"
)

// AcquireLease takes or renews the lease name for holder until now+ttl. It
// returns true when holder has the lease: it was free, expired, or already
// holder's. One lease per service makes exactly one outbox relay active
// across all the service's instances; a crashed holder's lease expires.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if err := s.live(); err != nil {
		return false, err
	}
	now := time.Now().UnixNano()
	q := s.d.Rebind(`INSERT INTO herald_leases (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE herald_leases.holder = excluded.holder OR herald_leases.expires_at < ?`)
	res, err := s.db.ExecContext(ctx, q, name, holder, now+int64(ttl), now)
	if err != nil {
		return false, fmt.Errorf("herald/store: lease %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("herald/store: lease %s: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease gives the lease up if holder has it, so another instance can
// take over at once instead of waiting for it to expire.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if err := s.live(); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.d.Rebind(`DELETE FROM herald_leases WHERE name = ? AND holder = ?`), name, holder)
	if err != nil {
		return fmt.Errorf("herald/store: release lease %s: %w", name, err)
	}
	return nil
}
