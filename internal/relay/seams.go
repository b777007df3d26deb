package relay

import (
	"context"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// Store is what the relay needs from the store: the engine-facing outbox
// and lease methods, by the names *store.Engine has.
type Store interface {
	// LeaseAcquire takes or renews the relay lease.
	LeaseAcquire(ctx context.Context, p store.LeaseAcquireParams) (bool, error)
	// LeaseRelease gives the lease up, if holder holds it.
	LeaseRelease(ctx context.Context, name, holder string) error
	// OutboxCursor is the newest range mark of service's outbox.
	OutboxCursor(ctx context.Context, service string) (int64, error)
	// OutboxPendingList reads unpublished rows in commit order.
	OutboxPendingList(ctx context.Context, p store.OutboxPendingListParams) ([]store.OutboxRow, error)
	// OutboxParkedKeys maps each key with producer-side dead letters to the
	// event id of its oldest.
	OutboxParkedKeys(ctx context.Context, service string) (map[string]string, error)
	// OutboxPark turns outbox rows into producer-side dead letters.
	OutboxPark(ctx context.Context, service string, ps []store.Park) ([]store.ParkResult, error)
	// OutboxMarkPublished marks the rows seqs published (serial mode).
	OutboxMarkPublished(ctx context.Context, seqs []int64, at time.Time) error
	// OutboxMarkUpTo marks every row of a seq range published.
	OutboxMarkUpTo(ctx context.Context, p store.OutboxMarkUpToParams) error
	// OutboxStats counts the unpublished rows and dates the oldest.
	OutboxStats(ctx context.Context, service string) (backlog int64, oldest time.Time, err error)
	// DelaysVisibility reports whether rows may become readable out of seq
	// order (PostgreSQL): then the relay runs in serial mode.
	DelaysVisibility() bool
}

// Broker is what the relay needs from the broker: errs[i] is events[i]'s
// outcome, nil once the broker acknowledged it.
type Broker interface {
	Publish(ctx context.Context, events []*envelope.Envelope) (errs []error)
}

// Observer hears what the relay does, for herald's observers. The relay
// calls nothing but Observing when it returns false.
type Observer interface {
	// Observing reports whether anyone listens.
	Observing() bool
	// Published: one Publish call of events, started at start, took d;
	// errs[i] is events[i]'s outcome.
	Published(ctx context.Context, events []*envelope.Envelope, start time.Time, d time.Duration, errs []error)
	// Parked: e became a producer-side dead letter at now (reason
	// store.ReasonRefused or store.ReasonHeld), after attempts rounds.
	Parked(ctx context.Context, e *envelope.Envelope, now time.Time, reason string, attempts int, cause string)
}

// noObserver listens to nothing.
type noObserver struct{}

func (noObserver) Observing() bool { return false }
func (noObserver) Published(context.Context, []*envelope.Envelope, time.Time, time.Duration, []error) {
}
func (noObserver) Parked(context.Context, *envelope.Envelope, time.Time, string, int, string) {}
