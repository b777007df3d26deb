package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// appendSavepoints isolates events of one transaction with savepoints, as a
// batched consumer does: work undone with TxSavepointRollback disappears, released
// work commits, and a failed statement inside a savepoint does not doom the
// transaction (on PostgreSQL an error aborts the transaction up to the last
// savepoint).
func (h *harness) appendSavepoints(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	ev := func(id string) *envelope.Envelope { return event("orders", id, t0) }
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, ev("existing")) })
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	commit(t, s, func(tx *sql.Tx) {
		must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev("kept-1")}}))

		must("Savepoint", eng.TxSavepoint(ctx, tx))
		must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev("undone")}}))
		claim(t, s, tx, "sub", "undone", true)
		must("RollbackTo", eng.TxSavepointRollback(ctx, tx))

		must("Savepoint", eng.TxSavepoint(ctx, tx))
		if err := eng.EventAppend(ctx, tx, store.EventAppendParams{Log: []*envelope.Envelope{ev("existing")}, Outbox: []*envelope.Envelope{ev("failed")}}); err == nil {
			t.Fatal("Append of an event id already in the log succeeded")
		}
		must("RollbackTo after an error", eng.TxSavepointRollback(ctx, tx))

		must("Savepoint", eng.TxSavepoint(ctx, tx))
		must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev("kept-2")}}))
		claim(t, s, tx, "sub", "kept-2", true)
		must("Release", eng.TxSavepointRelease(ctx, tx))

		// Savepoints can be used again and again in one transaction.
		for i := range 3 {
			must("Savepoint", eng.TxSavepoint(ctx, tx))
			must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev(fmt.Sprintf("loop-%d", i))}}))
			if i == 1 {
				must("RollbackTo", eng.TxSavepointRollback(ctx, tx))
			} else {
				must("Release", eng.TxSavepointRelease(ctx, tx))
			}
		}
	})
	if got, want := ids(pending(t, s, "orders", 100)), []string{"kept-1", "kept-2", "loop-0", "loop-2"}; !slices.Equal(got, want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "sub", "undone", true)
		claim(t, s, tx, "sub", "kept-2", false)
	})
}
