package herald

import (
	"context"
	"fmt"
	"testing"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/observehook"
	"github.com/heraldhq/herald/internal/testdb"
)

// TestOnCommitObservations: what a package built on herald asks to report
// at commit (observehook.OnCommit) is reported after the transaction's
// events when it commits; a savepoint rollback in a consumer batch drops
// what was asked since the savepoint, and a service without observers
// keeps nothing.
func TestOnCommitObservations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var seen []string
	svc, err := New("notes", WithStore(testdb.SQLite(t)), WithObserver(inlineFunc(func(_ context.Context, o Observation) {
		seen = append(seen, string(o.Hop)+" "+o.Event.ID)
	})))
	must(t, err)
	t.Cleanup(func() { svc.Close() })
	decide := func(id string) Observation { return Observation{Hop: HopDecide, Event: envelope.Envelope{ID: id}} }

	tx, err := consumerStore{s: svc}.Begin(ctx)
	must(t, err)
	c := tx.(*consumerTx)
	htx := &txScope{t: c.t, ctx: ctx} // what a handler gets
	c.t.outbox = append(c.t.outbox, &envelope.Envelope{ID: "n", Kind: envelope.KindNotification})
	observehook.OnCommit(htx, decide("kept"))
	must(t, c.TxSavepoint(ctx))
	observehook.OnCommit(htx, decide("undone"))
	must(t, c.TxSavepointRollback(ctx))
	// What the consumer does once the transaction committed.
	consumerObserver{s: svc}.Committed(ctx, c)
	must(t, c.Rollback())
	if want := "[notify n decide kept]"; fmt.Sprint(seen) != want {
		t.Errorf("observed %v, want %s", seen, want)
	}

	quiet, err := New("quiet", WithStore(testdb.SQLite(t)))
	must(t, err)
	t.Cleanup(func() { quiet.Close() })
	tx, err = consumerStore{s: quiet}.Begin(ctx)
	must(t, err)
	observehook.OnCommit(&txScope{t: tx.(*consumerTx).t, ctx: ctx}, decide("unheard"))
	if n := len(tx.(*consumerTx).t.onCommit); n != 0 {
		t.Errorf("a service without observers kept %d observations", n)
	}
	must(t, tx.Rollback())
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// inlineFunc is an inline ObserverFunc: called on the hot path, in order.
type inlineFunc func(ctx context.Context, o Observation)

func (f inlineFunc) Observe(ctx context.Context, o Observation) { f(ctx, o) }
func (inlineFunc) Inline()                                      {}
