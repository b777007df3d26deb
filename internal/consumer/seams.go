package consumer

import (
	"context"
	"database/sql"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// Broker is what a consumer needs from the broker. A broker that also
// implements broker.PendingStater or broker.PendingCounter lets the consumer
// hold new events back after a crash or a reconnect (broker.Resumer) until
// the events that were out are back; see hold. A broker that implements
// broker.Claimer and claims the subscription in order needs no hold; see
// claimsInOrder. The subscription's Partition says which partition of a
// partitioned broker (broker.Partitioner) the consumer runs: one consumer
// per partition, each with its own queues.
type Broker interface {
	Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error
	PublishDeadLetter(ctx context.Context, d broker.DeadLetter) error
}

// Store begins the transactions a consumer handles its batches in.
type Store interface {
	Begin(ctx context.Context) (Tx, error)
}

// Tx is one consumer transaction: the database transaction and the events
// the handlers record in it (which the root keeps, in herald's transaction
// scope). It is dead once Commit or Rollback returned.
type Tx interface {
	// InboxClaim claims the inbox row of one event; false: a duplicate.
	InboxClaim(ctx context.Context, inbox, eventID string) (bool, error)
	// InboxClaimMany claims the inbox rows of several events in one
	// statement; fresh[i] is eventIDs[i]'s outcome.
	InboxClaimMany(ctx context.Context, inbox string, eventIDs []string) (fresh []bool, err error)
	// TxSavepoint sets the savepoint a failing handler is undone to.
	TxSavepoint(ctx context.Context) error
	// TxSavepointRelease keeps what happened since the savepoint; its error
	// says the handler left the transaction failed.
	TxSavepointRelease(ctx context.Context) error
	// TxSavepointRollback undoes what happened since the savepoint: the
	// rows, and the events the handler recorded.
	TxSavepointRollback(ctx context.Context) error
	// TxHealthy reports whether the transaction still runs statements.
	TxHealthy(ctx context.Context) error
	// DeadLetterInsert stores a dead letter.
	DeadLetterInsert(ctx context.Context, dl store.DeadLetter) (int64, error)
	// Commit writes the recorded events (event log, outbox) and commits.
	// The transaction is dead afterwards, whatever the outcome.
	Commit(ctx context.Context) error
	// Rollback rolls the transaction back.
	Rollback() error
}

// SQLStore is what a Tx over a *sql.Tx needs from the store: the
// engine-facing store methods, by their noun-first names.
type SQLStore interface {
	InboxClaim(ctx context.Context, tx *sql.Tx, subscription, eventID string) (bool, error)
	InboxClaimMany(ctx context.Context, tx *sql.Tx, subscription string, eventIDs []string) ([]bool, error)
	TxSavepoint(ctx context.Context, tx *sql.Tx) error
	TxSavepointRelease(ctx context.Context, tx *sql.Tx) error
	TxSavepointRollback(ctx context.Context, tx *sql.Tx) error
	TxHealthy(ctx context.Context, tx *sql.Tx) error
	DeadLetterInsert(ctx context.Context, tx *sql.Tx, dl store.DeadLetter) (int64, error)
}

// Handler runs the subscription's handler for the event e (decoded: v)
// inside tx, and returns its error, or the error that left the transaction
// failed. A panic comes back as an error.
type Handler func(ctx context.Context, tx Tx, e *envelope.Envelope, v any) error

// Outcome is what became of one handled event.
type Outcome uint8

const (
	OutcomeOK        Outcome = iota // handled
	OutcomeDuplicate                // a redelivery the inbox absorbed
	OutcomeRetry                    // its handler failed; it runs again
)

// Observer hears what a consumer does, for herald's observers. Consumed is
// called as an event arrives; the others after the transaction committed.
// A consumer calls nothing but Observing when it returns false.
type Observer interface {
	// Observing reports whether anyone listens.
	Observing() bool
	// Batching reports whether anyone listens to Batch.
	Batching() bool
	// Consumed: e arrived at now.
	Consumed(e *envelope.Envelope, now time.Time)
	// Committed: tx committed; report what the handlers recorded.
	Committed(ctx context.Context, tx Tx)
	// Batch: events (without their data) were handled in one transaction.
	Batch(ctx context.Context, start time.Time, d time.Duration, events []envelope.Envelope)
	// Handled: one handler run (or an absorbed duplicate).
	Handled(ctx context.Context, e *envelope.Envelope, start time.Time, d time.Duration, o Outcome, attempt int, err error)
	// DeadLettered: the event was dead-lettered at now (e nil: undecodable).
	DeadLettered(ctx context.Context, e *envelope.Envelope, now time.Time, reason string, attempt int, lastErr string)
}

// noObserver listens to nothing.
type noObserver struct{}

func (noObserver) Observing() bool                                                      { return false }
func (noObserver) Batching() bool                                                       { return false }
func (noObserver) Consumed(*envelope.Envelope, time.Time)                               {}
func (noObserver) Committed(context.Context, Tx)                                        {}
func (noObserver) Batch(context.Context, time.Time, time.Duration, []envelope.Envelope) {}
func (noObserver) Handled(context.Context, *envelope.Envelope, time.Time, time.Duration, Outcome, int, error) {
}
func (noObserver) DeadLettered(context.Context, *envelope.Envelope, time.Time, string, int, string) {}
