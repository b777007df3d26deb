// Package janitor is the retention engine of a service: every Interval it
// prunes the event log, the published outbox rows and the inbox rows older
// than their retentions. It follows River's maintenance services (a Config
// with its defaults, Start/Stop on internal/startstop): a pass that fails
// is logged and the next one tries again.
package janitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/heraldhq/herald/internal/startstop"
)

// Store is what the janitor needs from the store, by the names
// *store.Engine has; each deletes the rows older than before.
type Store interface {
	EventLogPrune(ctx context.Context, before time.Time) (int64, error)
	OutboxPrune(ctx context.Context, before time.Time) (int64, error)
	InboxPrune(ctx context.Context, before time.Time) (int64, error)
}

// Config is one service's janitor.
type Config struct {
	// Interval is the time between the end of one pass and the start of
	// the next; the first runs one Interval after Start (default 1 minute).
	Interval time.Duration
	// EventLogRetention is how long event-log entries are kept; 0 keeps
	// them forever. The store keeps the events of aggregates' streams
	// whatever their age.
	EventLogRetention time.Duration
	// OutboxRetention is how long published outbox rows are kept (0: they
	// are pruned at the next pass).
	OutboxRetention time.Duration
	// InboxRetention is how long inbox rows are kept (0: pruned at the
	// next pass).
	InboxRetention time.Duration

	Store  Store
	Logger *slog.Logger // default: discard
}

// DefaultInterval is Config.Interval's default.
const DefaultInterval = time.Minute

// ErrInvalidConfig marks a Config that New refuses.
var ErrInvalidConfig = errors.New("janitor: invalid config")

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *Config) validate() error {
	switch {
	case c.Interval < 0 || c.EventLogRetention < 0 || c.OutboxRetention < 0 || c.InboxRetention < 0:
		return fmt.Errorf("%w: interval %v, retentions %v (event log), %v (outbox), %v (inbox)",
			ErrInvalidConfig, c.Interval, c.EventLogRetention, c.OutboxRetention, c.InboxRetention)
	case c.Store == nil:
		return fmt.Errorf("%w: no Store", ErrInvalidConfig)
	}
	return nil
}

// Janitor prunes between Start and Stop.
type Janitor struct {
	startstop.Base
	cfg Config
}

var _ startstop.Service = (*Janitor)(nil)

// New validates cfg and returns its janitor, not started.
func New(cfg Config) (*Janitor, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Janitor{cfg: cfg}, nil
}

// Start runs the janitor until Stop; ctx's values reach the store, its end
// does not stop the janitor. Starting a running janitor does nothing.
func (j *Janitor) Start(ctx context.Context) error {
	ctx, ok := j.StartInit(ctx)
	if !ok {
		return nil
	}
	j.Go(func() { j.run(ctx) })
	return nil
}

// run makes a pass every Interval until ctx ends.
func (j *Janitor) run(ctx context.Context) {
	t := time.NewTimer(j.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		j.pass(ctx, time.Now())
		t.Reset(j.cfg.Interval)
	}
}

// pass prunes each table once, as of now; a failure is logged (unless the
// janitor is stopping) and the other tables are still pruned.
func (j *Janitor) pass(ctx context.Context, now time.Time) {
	warn := func(what string, err error) {
		if err != nil && ctx.Err() == nil {
			j.cfg.Logger.Warn(what, "err", err)
		}
	}
	_, err := PruneEventLog(ctx, j.cfg.Store, j.cfg.EventLogRetention, now)
	warn("prune event log", err)
	_, err = j.cfg.Store.OutboxPrune(ctx, now.Add(-j.cfg.OutboxRetention))
	warn("prune outbox", err)
	_, err = j.cfg.Store.InboxPrune(ctx, now.Add(-j.cfg.InboxRetention))
	warn("prune inbox", err)
}

// PruneEventLog deletes the event-log entries older than retention as of
// now and returns how many it removed; retention 0 keeps them all.
func PruneEventLog(ctx context.Context, st interface {
	EventLogPrune(ctx context.Context, before time.Time) (int64, error)
}, retention time.Duration, now time.Time) (int64, error) {
	if retention == 0 {
		return 0, nil
	}
	return st.EventLogPrune(ctx, now.Add(-retention))
}
