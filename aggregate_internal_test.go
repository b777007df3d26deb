package herald

import (
	"context"
	"testing"

	"github.com/heraldhq/herald/internal/testdb"
)

type counter struct{ N, Sum int }

// TestAggregateSavepointRollback: a consumer batch that rolls a handler
// back to its savepoint undoes that handler's appends, so the next handler
// loads the aggregate without them, the stream has no gap, and no snapshot
// is taken of a state that includes them.
func TestAggregateSavepointRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.SQLite(t)
	svc, err := New("counters", WithStore(st))
	must(t, err)
	t.Cleanup(func() { svc.Close() })
	added := Domain[int]("counters.added")
	agg := Aggregate[counter]("counters.counter", Snapshot(1))
	must(t, Apply(agg, added, func(s *counter, n int) { s.N++; s.Sum += n }))
	must(t, svc.RegisterAggregate(agg))

	tx, err := consumerStore{s: svc}.Begin(ctx)
	must(t, err)
	c := tx.(*consumerTx)
	htx := &txScope{t: c.t, ctx: ctx} // what the handlers get
	add := func(r *Root[counter], n int) {
		t.Helper()
		must(t, Append(htx, r, added, n))
	}
	// Handler 1 appends version 1; handler 2 appends 2 and 3 and is rolled
	// back; handler 3 appends 2 again, on the state without them.
	must(t, c.TxSavepoint(ctx))
	first, err := Load(htx, agg, "c")
	must(t, err)
	add(first, 5)
	must(t, c.TxSavepointRelease(ctx))
	must(t, c.TxSavepoint(ctx))
	second, err := Load(htx, agg, "c")
	must(t, err)
	if second.Version() != 1 || second.State() != (counter{1, 5}) {
		t.Fatalf("handler 2 loaded %+v at %d, want {1 5} at 1", second.State(), second.Version())
	}
	add(second, 100)
	add(second, 100)
	must(t, c.TxSavepointRollback(ctx))
	must(t, c.TxSavepoint(ctx))
	third, err := Load(htx, agg, "c")
	must(t, err)
	if third.Version() != 1 || third.State() != (counter{1, 5}) {
		t.Fatalf("handler 3 loaded %+v at %d after the rollback, want {1 5} at 1", third.State(), third.Version())
	}
	add(third, 7)
	must(t, c.TxSavepointRelease(ctx))
	must(t, c.Commit(ctx))

	var state string
	var version int64
	must(t, st.DB().QueryRow(`SELECT stream_version, state FROM herald_snapshots`).Scan(&version, &state))
	if version != 2 || state != `{"N":2,"Sum":12}` {
		t.Fatalf("snapshot %s at %d, want {N:2 Sum:12} at 2", state, version)
	}
	must(t, svc.Do(ctx, func(tx Tx) error {
		r, err := Load(tx, agg, "c")
		if err == nil && (r.Version() != 2 || r.State() != (counter{2, 12})) {
			t.Errorf("loaded %+v at %d, want {2 12} at 2", r.State(), r.Version())
		}
		return err
	}))

	// The aggregate that took the last event kept is ahead of it (its
	// later append was rolled back): no snapshot of that state.
	tx, err = consumerStore{s: svc}.Begin(ctx)
	must(t, err)
	c = tx.(*consumerTx)
	htx = &txScope{t: c.t, ctx: ctx}
	r, err := Load(htx, agg, "c")
	must(t, err)
	add(r, 1)
	must(t, c.TxSavepoint(ctx))
	add(r, 1000)
	must(t, c.TxSavepointRollback(ctx))
	must(t, c.Commit(ctx))
	must(t, st.DB().QueryRow(`SELECT stream_version, state FROM herald_snapshots`).Scan(&version, &state))
	if version != 2 {
		t.Fatalf("snapshot %s at %d, want the one at 2 kept", state, version)
	}
	if n := testdb.Count(t, st, "herald_event_log", ""); n != 3 {
		t.Fatalf("event log has %d rows, want 3", n)
	}
}
