// Package relay is the outbox relay engine: while it holds the service's
// relay lease (lease.go) it publishes the service's outbox in commit order,
// a batch per round with the next batch read while the broker stores a
// full one (round.go); it marks only what the broker acknowledged, in one
// range mark every MarkInterval, or every batch in serial mode on
// PostgreSQL (marks.go); it parks rows the broker refuses for good, and
// holds their keys' later rows behind them (park.go); commits wake it and
// Republish rewinds it (Wake, Rewind); Drain publishes what is left when the
// service closes. On a broker with partitions (broker.Partitioner) it keeps
// order per partition only, so a partition that fails holds back only its
// own rows (parts.go).
//
// What it needs from the store and the broker comes through the narrow
// interfaces of seams.go; the root package wires them (lifecycle.go).
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/internal/startstop"
)

// Config is one service's relay. Zero durations and sizes take the
// defaults below.
type Config struct {
	// Service is the service whose outbox the relay publishes.
	Service string
	// Holder identifies this instance as the holder of the relay lease.
	Holder string
	// BatchSize is how many outbox rows one round publishes.
	BatchSize int
	// PollInterval is the fallback poll when no commit wakes the relay.
	PollInterval time.Duration
	// LeaseTTL is how long the lease lasts without renewal; the relay
	// renews it every third of it.
	LeaseTTL time.Duration
	// MaxBackoff caps the wait between failed rounds.
	MaxBackoff time.Duration
	// MarkInterval is how long acknowledged rows may wait for their mark.
	MarkInterval time.Duration
	// DrainTimeout bounds Drain.
	DrainTimeout time.Duration

	Store  Store
	Broker Broker
	// Observer hears of publishes and parked rows (default: none).
	Observer Observer
	// PublishFailed, if set, is called after a round's publish failed,
	// before the relay judges the failure (the root relearns the broker's
	// event size limit there: the connection may have moved).
	PublishFailed func()
	Logger        *slog.Logger // default: discard
}

// Defaults of Config.
const (
	DefaultBatchSize    = 1000 // the largest atomic batch a NATS server takes by default
	DefaultPollInterval = 500 * time.Millisecond
	DefaultLeaseTTL     = 10 * time.Second
	DefaultMaxBackoff   = 5 * time.Second
	DefaultMarkInterval = 100 * time.Millisecond
	DefaultDrainTimeout = 5 * time.Second
)

// withDefaults fills in what is unset.
func (c Config) withDefaults() Config {
	fill := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	fill(&c.PollInterval, DefaultPollInterval)
	fill(&c.LeaseTTL, DefaultLeaseTTL)
	fill(&c.MaxBackoff, DefaultMaxBackoff)
	fill(&c.MarkInterval, DefaultMarkInterval)
	fill(&c.DrainTimeout, DefaultDrainTimeout)
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	if c.PublishFailed == nil {
		c.PublishFailed = func() {}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrInvalidConfig marks a Config that New refuses.
var ErrInvalidConfig = errors.New("relay: invalid config")

func (c *Config) validate() error {
	switch {
	case c.Service == "" || c.Holder == "":
		return fmt.Errorf("%w: service %q, holder %q: both needed", ErrInvalidConfig, c.Service, c.Holder)
	case c.BatchSize < 1 || c.PollInterval < 0 || c.LeaseTTL < 0 || c.MaxBackoff < 0 || c.MarkInterval < 0 || c.DrainTimeout < 0:
		return fmt.Errorf("%w: service %s: batch size %d, poll %v, lease TTL %v, max backoff %v, mark interval %v, drain timeout %v",
			ErrInvalidConfig, c.Service, c.BatchSize, c.PollInterval, c.LeaseTTL, c.MaxBackoff, c.MarkInterval, c.DrainTimeout)
	case c.Store == nil || c.Broker == nil:
		return fmt.Errorf("%w: service %s needs a Store and a Broker", ErrInvalidConfig, c.Service)
	}
	return nil
}

// Relay publishes one service's outbox between Start and Stop (or Drain).
type Relay struct {
	startstop.Base
	cfg    Config
	lease  string // the lease's name
	serial bool   // Store.DelaysVisibility

	wake   chan struct{} // Wake → run, capacity 1
	rewind atomic.Uint64 // Rewind calls

	mu    sync.Mutex
	drain chan struct{} // closed by Drain; nil when not started
	done  chan struct{} // closed when the run returned
}

// New validates cfg and returns its relay, not started.
func New(cfg Config) (*Relay, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Relay{cfg: cfg, lease: "relay/" + cfg.Service, serial: cfg.Store.DelaysVisibility(),
		wake: make(chan struct{}, 1)}, nil
}

var _ startstop.Service = (*Relay)(nil)

// Start runs the relay until Stop or Drain; ctx's values reach the store
// and the broker, its end does not stop the relay. Starting a running relay
// does nothing.
func (r *Relay) Start(ctx context.Context) error {
	ctx, ok := r.StartInit(ctx)
	if !ok {
		return nil
	}
	drain, done := make(chan struct{}), make(chan struct{})
	r.mu.Lock()
	r.drain, r.done = drain, done
	r.mu.Unlock()
	r.Go(func() {
		defer close(done)
		r.run(ctx, drain)
	})
	return nil
}

// Drain stops the relay the way a closing service needs: from now on it
// publishes until the outbox is empty, without waiting for commits or polls,
// retrying failures, and stops; after DrainTimeout it is stopped wherever it
// is (at once if the broker or the store is closed). What it leaves is
// logged at Warn with its count; a relay without the lease logs at Info what
// the outbox holds for the instance that holds it. Drain returns once the
// relay stopped; draining a relay that is not running does nothing. Stop,
// by contrast, cancels at once.
func (r *Relay) Drain() {
	r.mu.Lock()
	drain, done := r.drain, r.done
	r.drain = nil
	r.mu.Unlock()
	if drain == nil || !r.Running() {
		return
	}
	close(drain)
	t := time.NewTimer(r.cfg.DrainTimeout)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	r.Stop()
}

// Wake makes a waiting relay read the outbox now (a commit added rows); it
// never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Rewind makes the relay forget its cursor and what it has not marked yet,
// and read the outbox from its start (Republish reset rows below the cursor
// to unpublished), and wakes it.
func (r *Relay) Rewind() {
	r.rewind.Add(1)
	r.Wake()
}
