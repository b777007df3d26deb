package store

import (
	"context"
	"fmt"
	"time"
)

// LeaseAcquireParams names a lease, its would-be holder and for how long.
type LeaseAcquireParams struct {
	// Name is the lease's name.
	Name string
	// Holder identifies the instance that wants it.
	Holder string
	// TTL is how long it is held from now unless renewed.
	TTL time.Duration
}

// LeaseAcquire takes or renews the lease p.Name for p.Holder until
// now+p.TTL. It returns true when the holder has the lease: it was free,
// expired, or already the holder's. One lease per service makes exactly one
// outbox relay active across all the service's instances; a crashed
// holder's lease expires.
func (s *Engine) LeaseAcquire(ctx context.Context, p LeaseAcquireParams) (bool, error) {
	if err := s.live(); err != nil {
		return false, err
	}
	name, holder, ttl := p.Name, p.Holder, p.TTL
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

// LeaseRelease gives the lease up if holder has it, so another instance can
// take over at once instead of waiting for it to expire.
func (s *Engine) LeaseRelease(ctx context.Context, name, holder string) error {
	if err := s.live(); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.d.Rebind(`DELETE FROM herald_leases WHERE name = ? AND holder = ?`), name, holder)
	if err != nil {
		return fmt.Errorf("herald/store: release lease %s: %w", name, err)
	}
	return nil
}
