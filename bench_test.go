package herald_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
)

// BenchmarkDo compares a herald transaction — the user's INSERT plus one
// domain event translated to one integration event (event log + outbox) —
// with the bare transaction doing the same INSERT without herald, on each
// dialect. Compare the two ns/op of one dialect:
//
//	go test -run='^$' -bench=BenchmarkDo -benchtime=3s .
func BenchmarkDo(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		b.Run(dialect+"/bare", func(b *testing.B) {
			st := benchStore(b, dialect)
			ctx := context.Background()
			q := st.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				tx, err := st.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, q, fmt.Sprintf("o-%d", i), i); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(dialect+"/herald", func(b *testing.B) {
			st := benchStore(b, dialect)
			svc, err := herald.New("orders", herald.WithStore(st))
			if err != nil {
				b.Fatal(err)
			}
			defer svc.Close()
			ev := herald.Domain[placed]("orders.placed")
			out := herald.Integration[confirmed]("shop.order.confirmed", herald.KeyBy(func(c confirmed) string { return c.OrderID }))
			if err := herald.Translate(svc, ev, out, func(ctx context.Context, e placed) (confirmed, error) {
				return confirmed{OrderID: e.OrderID, Total: e.Amount}, nil
			}); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			q := st.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprintf("o-%d", i)
				if err := svc.Do(ctx, func(tx herald.Tx) error {
					if _, err := tx.SQL().ExecContext(ctx, q, id, i); err != nil {
						return err
					}
					return herald.Record(tx, ev, placed{OrderID: id, Amount: i})
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchStore(b *testing.B, dialect string) *store.Store {
	st := testdb.For(b, dialect)
	if _, err := st.DB().Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	return st
}
