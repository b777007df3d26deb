package herald_test

import (
	"context"
	"fmt"
	"testing"
	"time"

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
				tx, err := store.EngineOf(st).Begin(ctx)
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

// BenchmarkDoOverhead interleaves the bare transaction and the herald
// transaction of BenchmarkDo on one database, one after the other in every
// iteration, so both see the same machine; it reports herald's overhead over
// the bare transaction in percent (the goal: ≤ 25):
//
//	go test -run='^$' -bench=BenchmarkDoOverhead -benchtime=3000x .
func BenchmarkDoOverhead(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		b.Run(dialect, func(b *testing.B) {
			st := benchStore(b, dialect)
			if _, err := st.DB().Exec(`CREATE TABLE orders_bare (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`); err != nil {
				b.Fatal(err)
			}

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
			qBare := st.Rebind(`INSERT INTO orders_bare (id, amount) VALUES (?, ?)`)
			qHerald := st.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`)
			var bare, withHerald time.Duration
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprintf("o-%d", i)
				t0 := time.Now()
				tx, err := store.EngineOf(st).Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, qBare, id, i); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := svc.Do(ctx, func(tx herald.Tx) error {
					if _, err := tx.SQL().ExecContext(ctx, qHerald, id, i); err != nil {
						return err
					}
					return herald.Record(tx, ev, placed{OrderID: id, Amount: i})
				}); err != nil {
					b.Fatal(err)
				}
				bare += t1.Sub(t0)
				withHerald += time.Since(t1)
			}
			b.ReportMetric(float64(bare.Microseconds())/float64(b.N), "bare-µs/tx")
			b.ReportMetric(float64(withHerald.Microseconds())/float64(b.N), "herald-µs/tx")
			b.ReportMetric(100*(float64(withHerald)/float64(bare)-1), "overhead-%")
		})
	}
}
