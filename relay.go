package herald

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/relay"
)

// RelayConfig tunes the outbox relay.
type RelayConfig struct {
	// BatchSize is how many outbox rows one round publishes (default 1000, the
	// largest atomic batch a NATS server takes by default).
	BatchSize int
	// PollInterval is the fallback poll when no commit signal arrives
	// (default 500ms). Commits in this process, and on PostgreSQL in any
	// process, wake the relay at once.
	PollInterval time.Duration
	// LeaseTTL is how long the relay lease lasts without renewal (default
	// 10s); it bounds the failover time when a relay's process dies.
	LeaseTTL time.Duration
	// MaxBackoff caps the wait between failed publish rounds (default 5s).
	// On a broker with several partitions (natsjs.WithPartitions) a failed
	// publish holds back only its partition's later events: that partition
	// backs off and is retried in order while the others go on.
	MaxBackoff time.Duration
	// MarkInterval is how long acknowledged rows may wait to be marked
	// published (default 100ms): the relay marks everything the broker
	// acknowledged meanwhile in one statement, rather than writing to the
	// database after every batch. It never reads those rows again meanwhile;
	// after a crash the unmarked ones are published again, and the broker
	// and the inboxes drop the copies. On PostgreSQL, where rows can become
	// readable out of seq order, every batch is marked before the next read.
	MarkInterval time.Duration
	// DrainTimeout bounds how long Close keeps publishing what was committed
	// before it (default 5s), once the subscriptions have stopped: the
	// relay publishes the outbox until it is empty, retrying failures, and
	// gives up at the timeout — at once if the broker or the store is
	// closed. What it leaves stays in the outbox for the next start (or
	// another instance's relay) and is logged at Warn with its count. An
	// instance that does not hold the relay lease has nothing to publish:
	// the instance that holds it does (logged at Info if the outbox is not
	// empty).
	DrainTimeout time.Duration
}

// WithRelay tunes the outbox relay; zero fields keep their defaults.
func WithRelay(rc RelayConfig) Option {
	return serviceOption(func(c *config) error {
		if rc.BatchSize < 0 || rc.PollInterval < 0 || rc.LeaseTTL < 0 || rc.MaxBackoff < 0 || rc.MarkInterval < 0 || rc.DrainTimeout < 0 {
			return fmt.Errorf("%w: relay config %+v has a negative field", ErrInvalidOption, rc)
		}
		c.relay = rc
		return nil
	})
}

// WithOutboxRetention keeps published outbox rows for d (default 1h) so that
// Republish can refill a broker that lost its latest writes.
func WithOutboxRetention(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: outbox retention %v < 0", ErrInvalidOption, d)
		}
		c.outboxRetention = d
		return nil
	})
}

// newRelay builds the service's outbox relay (internal/relay), holding the
// relay lease as holder; the store and the broker are the service's.
func (s *Service) newRelay(holder string) (*relay.Relay, error) {
	rc := s.cfg.relay
	return relay.New(relay.Config{
		Service:       s.name,
		Holder:        holder,
		BatchSize:     rc.BatchSize,
		PollInterval:  rc.PollInterval,
		LeaseTTL:      rc.LeaseTTL,
		MaxBackoff:    rc.MaxBackoff,
		MarkInterval:  rc.MarkInterval,
		DrainTimeout:  rc.DrainTimeout,
		Store:         s.engine,
		Broker:        s.cfg.broker,
		Observer:      relayObserver{s},
		PublishFailed: s.learnLimit, // the server may have moved, or changed its limit
		Logger:        s.log,
	})
}

// relayObserver reports the relay's publishes and parked rows to the
// service's observers.
type relayObserver struct{ s *Service }

func (o relayObserver) Observing() bool { return o.s.observing() }

func (o relayObserver) Published(ctx context.Context, events []*envelope.Envelope, start time.Time, d time.Duration, errs []error) {
	for i, e := range events {
		ob := Observation{Hop: HopPublish, Event: *e, Start: start, Duration: d, Outcome: OutcomeOK}
		if errs[i] != nil {
			ob.Outcome, ob.Err = OutcomeError, errs[i]
		}
		o.s.observe(ctx, ob)
	}
}

func (o relayObserver) Parked(ctx context.Context, e *envelope.Envelope, now time.Time, reason string, attempts int, cause string) {
	o.s.observe(ctx, Observation{Hop: HopDeadLetter, Event: *e, Start: now, Outcome: OutcomeError,
		Reason: reason, Attempt: attempts, Err: errors.New(cause)})
}

// signal wakes the relay, if it runs, without blocking.
func (s *Service) signal() {
	if r := s.outbox.Load(); r != nil {
		r.Wake()
	}
}

// rewindRelay makes the relay, if it runs, read the outbox from its start.
func (s *Service) rewindRelay() {
	if r := s.outbox.Load(); r != nil {
		r.Rewind()
	}
}

// Republish sends again every outbox row published in the last d (within the
// outbox retention). After a broker lost acknowledged writes — a server
// without SyncAlways that crashed — this refills it; the broker drops the
// events it still has by their ids. It returns how many rows it reset in the
// outbox table; on SQLite the rows published since the relay's last mark
// (RelayConfig.MarkInterval) are not counted but go out again too.
func (s *Service) Republish(ctx context.Context, d time.Duration) (int64, error) {
	n, err := s.engine.OutboxRepublishSince(ctx, s.name, time.Now().Add(-d))
	if err == nil {
		// Even with nothing reset in the table: rows the relay published
		// since its last mark are unmarked, and go out again too.
		s.rewindRelay()
	}
	return n, err
}

// OutboxStats reports the outbox backlog and the age of its oldest row. On
// SQLite rows the broker acknowledged count in the backlog until the relay's
// next mark (RelayConfig.MarkInterval).
func (s *Service) OutboxStats(ctx context.Context) (backlog int64, oldest time.Duration, err error) {
	n, t, err := s.cfg.store.OutboxStats(ctx, s.name)
	if err != nil || t.IsZero() {
		return n, 0, err
	}
	return n, time.Since(t), nil
}
