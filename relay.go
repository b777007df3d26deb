package herald

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// RelayConfig tunes the outbox relay.
type RelayConfig struct {
	// BatchSize is how many outbox rows one round publishes (default 512).
	BatchSize int
	// PollInterval is the fallback poll when no commit signal arrives
	// (default 500ms). Commits in this process, and on PostgreSQL in any
	// process, wake the relay at once.
	PollInterval time.Duration
	// LeaseTTL is how long the relay lease lasts without renewal (default
	// 10s); it bounds the failover time when a relay's process dies.
	LeaseTTL time.Duration
	// MaxBackoff caps the wait between failed publish rounds (default 5s).
	MaxBackoff time.Duration
}

func defaultRelayConfig() RelayConfig {
	return RelayConfig{BatchSize: 512, PollInterval: 500 * time.Millisecond, LeaseTTL: 10 * time.Second, MaxBackoff: 5 * time.Second}
}

// WithRelay tunes the outbox relay; zero fields keep their defaults.
func WithRelay(rc RelayConfig) Option {
	return func(c *config) error {
		if rc.BatchSize < 0 || rc.PollInterval < 0 || rc.LeaseTTL < 0 || rc.MaxBackoff < 0 {
			return fmt.Errorf("%w: relay config %+v has a negative field", ErrInvalidOption, rc)
		}
		d := defaultRelayConfig()
		if rc.BatchSize == 0 {
			rc.BatchSize = d.BatchSize
		}
		if rc.PollInterval == 0 {
			rc.PollInterval = d.PollInterval
		}
		if rc.LeaseTTL == 0 {
			rc.LeaseTTL = d.LeaseTTL
		}
		if rc.MaxBackoff == 0 {
			rc.MaxBackoff = d.MaxBackoff
		}
		c.relay = rc
		return nil
	}
}

// WithOutboxRetention keeps published outbox rows for d (default 1h) so that
// Republish can refill a broker that lost its latest writes.
func WithOutboxRetention(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: outbox retention %v < 0", ErrInvalidOption, d)
		}
		c.outboxRetention = d
		return nil
	}
}

// backoff returns an exponential delay with full jitter for attempt (1-based).
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base << min(attempt-1, 30)
	if d <= 0 || d > max {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

// relay publishes the service's outbox in commit order while it holds the
// service's relay lease. It marks rows only after the broker acknowledged
// them; a row whose publish failed is retried (the broker deduplicates by
// event id, so a publish whose ack was lost costs nothing).
func (s *Service) relay(ctx context.Context, holder string) {
	rc := s.cfg.relay
	lease := "relay/" + s.name
	var leased time.Time // when the lease was last renewed; zero if not held
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	wait := func(d time.Duration, wakeable bool) bool {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
		var wake <-chan struct{}
		if wakeable {
			wake = s.wake
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		case <-wake:
		}
		return true
	}
	defer func() {
		if !leased.IsZero() {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.store.ReleaseLease(rctx, lease, holder)
			cancel()
		}
	}()
	for ctx.Err() == nil {
		if time.Since(leased) > rc.LeaseTTL/3 {
			ok, err := s.store.AcquireLease(ctx, lease, holder, rc.LeaseTTL)
			if err != nil || !ok {
				if err != nil && ctx.Err() == nil {
					s.log.Warn("relay lease", "err", err)
				}
				leased = time.Time{}
				if !wait(rc.LeaseTTL/3, false) {
					return
				}
				continue
			}
			leased = time.Now()
		}
		n, err := s.relayOnce(ctx, rc.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			d := backoff(failures, 50*time.Millisecond, rc.MaxBackoff)
			s.log.Warn("outbox relay", "err", err, "retry_in", d)
			if !wait(d, false) {
				return
			}
			continue
		}
		failures = 0
		if n < rc.BatchSize && !wait(rc.PollInterval, true) {
			return
		}
	}
}

// relayOnce publishes one batch and returns how many rows it read.
func (s *Service) relayOnce(ctx context.Context, batch int) (int, error) {
	rows, err := s.store.PendingOutbox(ctx, s.name, batch)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	events := make([]*envelope.Envelope, len(rows))
	for i, r := range rows {
		events[i] = r.Event
	}
	start := time.Now()
	errs := s.broker.Publish(ctx, events)
	if s.observing() {
		d := time.Since(start)
		for i, e := range events {
			o := Observation{Hop: HopPublish, Event: *e, Start: start, Duration: d, Outcome: OutcomeOK}
			if errs[i] != nil {
				o.Outcome, o.Err = OutcomeError, errs[i]
			}
			s.observe(ctx, o)
		}
	}
	acked := make([]int64, 0, len(rows))
	var firstErr error
	for i, r := range rows {
		if errs[i] == nil {
			acked = append(acked, r.Seq)
		} else if firstErr == nil {
			firstErr = fmt.Errorf("publish %s %s: %w", r.Event.Type, r.Event.ID, errs[i])
		}
	}
	if err := s.store.MarkPublished(ctx, acked, time.Now()); err != nil {
		return 0, err
	}
	if firstErr != nil {
		return 0, firstErr
	}
	return len(rows), nil
}

// Republish sends again every outbox row published in the last d (within the
// outbox retention). After a broker lost acknowledged writes — a server
// without SyncAlways that crashed — this refills it; the broker drops the
// events it still has by their ids.
func (s *Service) Republish(ctx context.Context, d time.Duration) (int64, error) {
	n, err := s.store.RepublishSince(ctx, s.name, time.Now().Add(-d))
	if err == nil && n > 0 {
		s.signal()
	}
	return n, err
}

// OutboxStats reports the outbox backlog and the age of its oldest row.
func (s *Service) OutboxStats(ctx context.Context) (backlog int64, oldest time.Duration, err error) {
	n, t, err := s.store.OutboxStats(ctx, s.name)
	if err != nil || t.IsZero() {
		return n, 0, err
	}
	return n, time.Since(t), nil
}
