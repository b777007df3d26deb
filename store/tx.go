package store

import (
	"context"
	"database/sql"
)

// The savepoint that isolates one event of a batch.
const (
	sqlSavepoint  = "SAVEPOINT herald_event"
	sqlRelease    = "RELEASE SAVEPOINT herald_event"
	sqlRollbackTo = "ROLLBACK TO SAVEPOINT herald_event"
)

// TxSavepoint starts the savepoint that isolates one event of a batched
// transaction; TxSavepointRelease keeps its work, TxSavepointRollback undoes
// it.
func (s *Engine) TxSavepoint(ctx context.Context, tx *sql.Tx) error {
	_, err := s.exec(ctx, tx, sqlSavepoint, nil)
	return err
}

// TxSavepointRelease ends the savepoint, keeping its work.
func (s *Engine) TxSavepointRelease(ctx context.Context, tx *sql.Tx) error {
	_, err := s.exec(ctx, tx, sqlRelease, nil)
	return err
}

// TxSavepointRollback undoes the work since TxSavepoint and ends the savepoint.
func (s *Engine) TxSavepointRollback(ctx context.Context, tx *sql.Tx) error {
	if _, err := s.exec(ctx, tx, sqlRollbackTo, nil); err != nil {
		return err
	}
	return s.TxSavepointRelease(ctx, tx)
}

// TxHealthy reports whether tx still runs statements: nil, or the error of a
// trivial query. On PostgreSQL a statement's error fails the whole
// transaction until it is rolled back (or rolled back to a savepoint); this
// tells such a transaction apart.
func (s *Engine) TxHealthy(ctx context.Context, tx *sql.Tx) error {
	var one int
	return tx.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}
