package herald

import (
	"context"
	"database/sql"

	"github.com/heraldhq/herald/internal/consumer"
	"github.com/heraldhq/herald/store"
)

// consumerStoreAdapter gives today's *store.Store the engine-facing names
// internal/consumer declares. Delete it once *store.Engine (branch
// store-surface) lands: engineStore becomes store.EngineOf.
type consumerStoreAdapter struct{ *store.Store }

func engineStore(s *store.Store) consumer.SQLStore { return consumerStoreAdapter{s} }

func (a consumerStoreAdapter) InboxClaim(ctx context.Context, tx *sql.Tx, sub, id string) (bool, error) {
	return a.ClaimInbox(ctx, tx, sub, id)
}

func (a consumerStoreAdapter) InboxClaimMany(ctx context.Context, tx *sql.Tx, sub string, ids []string) ([]bool, error) {
	return a.ClaimInboxBatch(ctx, tx, sub, ids)
}

func (a consumerStoreAdapter) TxSavepoint(ctx context.Context, tx *sql.Tx) error {
	return a.Savepoint(ctx, tx)
}

func (a consumerStoreAdapter) TxSavepointRelease(ctx context.Context, tx *sql.Tx) error {
	return a.Release(ctx, tx)
}

func (a consumerStoreAdapter) TxSavepointRollback(ctx context.Context, tx *sql.Tx) error {
	return a.RollbackTo(ctx, tx)
}

func (a consumerStoreAdapter) TxHealthy(ctx context.Context, tx *sql.Tx) error {
	return a.Healthy(ctx, tx)
}

func (a consumerStoreAdapter) DeadLetterInsert(ctx context.Context, tx *sql.Tx, dl store.DeadLetter) (int64, error) {
	return a.AddDeadLetter(ctx, tx, dl)
}
