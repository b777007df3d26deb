package herald_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testdb"
)

// BenchmarkAggregateAppend measures Do with a Load and one Append, on one
// hot aggregate (its stream grows by one event per op; a snapshot every 100
// events keeps its Load short) and on many (each op on another of 10,000
// aggregates):
//
//	go test -run='^$' -bench=BenchmarkAggregateAppend .
func BenchmarkAggregateAppend(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		for _, c := range []struct {
			name   string
			stream func(i int) string
		}{
			{"hot", func(int) string { return "hot" }},
			{"many", func(i int) string { return fmt.Sprintf("p%d", i%10000) }},
		} {
			b.Run(dialect+"/"+c.name, func(b *testing.B) {
				inv := newInventory(b, testdb.For(b, dialect), herald.Snapshot(100))
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if err := inv.svc.Do(ctx, func(tx herald.Tx) error {
						r, err := herald.Load(tx, inv.agg, c.stream(i))
						if err != nil {
							return err
						}
						return herald.Append(tx, r, inv.ev.reserved, stockReserved{Qty: 1, By: "bench"})
					}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}

// BenchmarkAggregateLoad measures rebuilding one aggregate (a Do with one
// Load) against the length of its stream, replaying every event
// (snapshots=off) or the newest snapshot and the events after it
// (snapshots=on, a snapshot every 100 events). Building the 100k-event
// stream takes a while; leave it out with -bench='AggregateLoad/.*/events=(10|1000)/':
//
//	go test -run='^$' -bench=BenchmarkAggregateLoad .
func BenchmarkAggregateLoad(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		for _, n := range []int{10, 1000, 100000} {
			b.Run(fmt.Sprintf("%s/events=%d", dialect, n), func(b *testing.B) {
				st := testdb.For(b, dialect)
				snap := newInventory(b, st, herald.Snapshot(100))
				full := newInventory(b, st) // the same aggregate without snapshots
				ctx := context.Background()
				for done := 0; done < n; {
					batch := min(n-done, 1000)
					if err := snap.svc.Do(ctx, func(tx herald.Tx) error {
						r, err := herald.Load(tx, snap.agg, "p")
						if err != nil {
							return err
						}
						for i := range batch {
							if err := snap.appendOp(tx, r, stockOp{kind: (done + i) % 4, n: i, s: "bench"}); err != nil {
								return err
							}
						}
						return nil
					}); err != nil {
						b.Fatal(err)
					}
					done += batch
				}
				for _, c := range []struct {
					name string
					inv  *inventory
				}{{"snapshots=off", full}, {"snapshots=on", snap}} {
					b.Run(c.name, func(b *testing.B) {
						b.ReportAllocs()
						for range b.N {
							if _, v := c.inv.load(b, "p"); v != int64(n) {
								b.Fatalf("loaded version %d, want %d", v, n)
							}
						}
					})
				}
			})
		}
	}
}
