package herald_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
)

// Stock is the state of the test aggregate. Hash folds every event in
// order, so that a state rebuilt from the wrong events, or in the wrong
// order, differs.
type Stock struct {
	Name     string `json:"name"`
	OnHand   int    `json:"on_hand"`
	Reserved int    `json:"reserved"`
	Refused  int    `json:"refused"`
	Events   int    `json:"events"`
	Hash     uint64 `json:"hash"`
}

type stockReceived struct {
	Qty int `json:"qty"`
}
type stockReserved struct {
	Qty int    `json:"qty"`
	By  string `json:"by"`
}
type stockRefused struct {
	By string `json:"by"`
}
type stockRenamed struct {
	Name string `json:"name"`
}

func (s *Stock) fold(kind, arg string, n int) {
	s.Events++
	for _, b := range []byte(fmt.Sprintf("%s|%s|%d;", kind, arg, n)) {
		s.Hash = s.Hash*1099511628211 + uint64(b)
	}
}

// stockEvents are the contracts of the test aggregate's events.
type stockEvents struct {
	received *herald.DomainEvent[stockReceived]
	reserved *herald.DomainEvent[stockReserved]
	refused  *herald.DomainEvent[stockRefused]
	renamed  *herald.DomainEvent[stockRenamed]
}

func newStockEvents() stockEvents {
	return stockEvents{
		received: herald.Domain[stockReceived]("inventory.stock-received"),
		reserved: herald.Domain[stockReserved]("inventory.stock-reserved"),
		refused:  herald.Domain[stockRefused]("inventory.reservation-refused"),
		renamed:  herald.Domain[stockRenamed]("inventory.stock-renamed"),
	}
}

// stockAggregate declares the test aggregate with every apply function.
func stockAggregate(t testing.TB, ev stockEvents, opts ...herald.AggregateOption) *herald.AggregateType[Stock] {
	t.Helper()
	a := herald.Aggregate[Stock]("inventory.stock", opts...)
	must(t, herald.Apply(a, ev.received, func(s *Stock, e stockReceived) { s.OnHand += e.Qty; s.fold("recv", "", e.Qty) }))
	must(t, herald.Apply(a, ev.reserved, func(s *Stock, e stockReserved) { s.Reserved += e.Qty; s.fold("res", e.By, e.Qty) }))
	must(t, herald.Apply(a, ev.refused, func(s *Stock, e stockRefused) { s.Refused++; s.fold("ref", e.By, 0) }))
	must(t, herald.Apply(a, ev.renamed, func(s *Stock, e stockRenamed) { s.Name = e.Name; s.fold("ren", e.Name, 0) }))
	return a
}

// inventory is a service with the test aggregate registered.
type inventory struct {
	svc *herald.Service
	st  *store.Store
	ev  stockEvents
	agg *herald.AggregateType[Stock]
}

func newInventory(t testing.TB, st *store.Store, opts ...herald.AggregateOption) *inventory {
	t.Helper()
	svc, err := herald.New("inventory", herald.WithStore(st), quietLog)
	must(t, err)
	t.Cleanup(func() { svc.Close() })
	ev := newStockEvents()
	inv := &inventory{svc: svc, st: st, ev: ev, agg: stockAggregate(t, ev, opts...)}
	must(t, svc.RegisterAggregate(inv.agg))
	return inv
}

// load returns the state of stream id in a Do of its own.
func (inv *inventory) load(t testing.TB, id string) (Stock, int64) {
	t.Helper()
	var s Stock
	var v int64
	must(t, inv.svc.Do(context.Background(), func(tx herald.Tx) error {
		r, err := herald.Load(tx, inv.agg, id)
		if err != nil {
			return err
		}
		s, v = r.State(), r.Version()
		return nil
	}))
	return s, v
}

// stockOp is one event of a random sequence.
type stockOp struct {
	kind int
	n    int
	s    string
}

func (inv *inventory) appendOp(tx herald.Tx, r *herald.Root[Stock], op stockOp) error {
	switch op.kind {
	case 0:
		return herald.Append(tx, r, inv.ev.received, stockReceived{Qty: op.n})
	case 1:
		return herald.Append(tx, r, inv.ev.reserved, stockReserved{Qty: op.n, By: op.s})
	case 2:
		return herald.Append(tx, r, inv.ev.refused, stockRefused{By: op.s})
	default:
		return herald.Append(tx, r, inv.ev.renamed, stockRenamed{Name: op.s})
	}
}

// replay folds ops into a state, as the apply functions do.
func replay(ops []stockOp) Stock {
	var s Stock
	for _, op := range ops {
		switch op.kind {
		case 0:
			s.OnHand += op.n
			s.fold("recv", "", op.n)
		case 1:
			s.Reserved += op.n
			s.fold("res", op.s, op.n)
		case 2:
			s.Refused++
			s.fold("ref", op.s, 0)
		default:
			s.Name = op.s
			s.fold("ren", op.s, 0)
		}
	}
	return s
}

func TestAggregateAppendAndLoad(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		inv := newInventory(t, testdb.For(t, dialect))
		out := herald.Integration[stockReceived]("shop.stock.received")
		must(t, herald.Translate(inv.svc, inv.ev.received, out, func(ctx context.Context, e stockReceived) (stockReceived, error) {
			return e, nil
		}))
		var handled []int
		must(t, herald.Handle(inv.svc, inv.ev.received, "count", func(ctx context.Context, tx herald.Tx, e stockReceived) error {
			handled = append(handled, e.Qty)
			return nil
		}))

		err := inv.svc.Do(ctx, func(tx herald.Tx) error {
			r, err := herald.Load(tx, inv.agg, "p1")
			if err != nil {
				return err
			}
			if r.Version() != 0 || r.State() != (Stock{}) || r.ID() != "p1" {
				t.Errorf("new stream: version %d, state %+v, id %q", r.Version(), r.State(), r.ID())
			}
			must(t, herald.Append(tx, r, inv.ev.received, stockReceived{Qty: 10}))
			must(t, herald.Append(tx, r, inv.ev.reserved, stockReserved{Qty: 3, By: "a"}))
			again, err := herald.Load(tx, inv.agg, "p1")
			if err != nil || again.Version() != 2 || again.State() != r.State() {
				t.Errorf("Load again in the same transaction = %+v, %v; want %+v at version 2", again, err, r.State())
			}
			must(t, herald.Append(tx, again, inv.ev.renamed, stockRenamed{Name: "w"}))
			// r is behind the stream now.
			if err := herald.Append(tx, r, inv.ev.renamed, stockRenamed{Name: "x"}); !errors.Is(err, herald.ErrConcurrencyConflict) {
				t.Errorf("Append through a stale Load of the same transaction: %v, want ErrConcurrencyConflict", err)
			}
			return nil // the conflict fails the transaction anyway
		})
		if !errors.Is(err, herald.ErrConcurrencyConflict) {
			t.Fatalf("Do with a stale Append: %v", err)
		}
		if n := testdb.Count(t, inv.st, "herald_event_log", ""); n != 0 {
			t.Fatalf("%d event-log rows after a failed Do", n)
		}
		must(t, inv.svc.Do(ctx, func(tx herald.Tx) error {
			r, err := herald.Load(tx, inv.agg, "p1")
			if err != nil {
				return err
			}
			must(t, herald.Append(tx, r, inv.ev.received, stockReceived{Qty: 10}))
			must(t, herald.Append(tx, r, inv.ev.reserved, stockReserved{Qty: 3, By: "a"}))
			return herald.Record(tx, inv.ev.received, stockReceived{Qty: 99}) // not in a stream
		}))
		got, v := inv.load(t, "p1")
		want := replay([]stockOp{{kind: 0, n: 10}, {kind: 1, n: 3, s: "a"}})
		if got != want || v != 2 {
			t.Fatalf("loaded %+v at version %d, want %+v at 2", got, v, want)
		}
		if other, v := inv.load(t, "p2"); other != (Stock{}) || v != 0 {
			t.Fatalf("another stream: %+v at %d", other, v)
		}
		if !reflect.DeepEqual(handled, []int{10, 10, 99}) {
			t.Errorf("domain handler saw %v, want [10 10 99] (the first 10 rolled back)", handled)
		}
		if n := testdb.Count(t, inv.st, "herald_outbox", ""); n != 2 {
			t.Errorf("outbox rows = %d, want 2 (translations of both received events)", n)
		}
		if n := testdb.Count(t, inv.st, "herald_event_log", "aggregate_type = ? AND stream_id = ?", "inventory.stock", "p1"); n != 2 {
			t.Errorf("stream rows = %d, want 2", n)
		}
		if n := testdb.Count(t, inv.st, "herald_event_log", "aggregate_type IS NULL"); n != 1 {
			t.Errorf("plain rows = %d, want 1", n)
		}
	})
}

// TestAggregateConcurrentWriters runs several writers on one aggregate,
// each Do loading it, deciding on its state (reserve one if any is left,
// else refuse) and appending: without retry every failure is a reported
// conflict and no committed decision is lost; with RetryConflicts every
// decision commits, and never more is reserved than received.
func TestAggregateConcurrentWriters(t *testing.T) {
	t.Parallel()
	for _, retry := range []bool{false, true} {
		t.Run(fmt.Sprintf("retry=%v", retry), func(t *testing.T) {
			t.Parallel()
			forEachDialect(t, func(t *testing.T, dialect string) {
				ctx := context.Background()
				inv := newInventory(t, testdb.For(t, dialect), herald.Snapshot(7))
				const workers, each, stock = 4, 20, 50
				must(t, inv.svc.Do(ctx, func(tx herald.Tx) error {
					r, err := herald.Load(tx, inv.agg, "hot")
					if err != nil {
						return err
					}
					return herald.Append(tx, r, inv.ev.received, stockReceived{Qty: stock})
				}))
				var opts []herald.DoOption
				if retry {
					opts = append(opts, herald.RetryConflicts(workers*each))
				}
				var mu sync.Mutex
				committed, conflicts := 0, 0
				var wg sync.WaitGroup
				errs := make(chan error, workers*each)
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range each {
							by := fmt.Sprintf("w%d-%d", w, i)
							err := inv.svc.Do(ctx, func(tx herald.Tx) error {
								r, err := herald.Load(tx, inv.agg, "hot")
								if err != nil {
									return err
								}
								if s := r.State(); s.OnHand-s.Reserved > 0 {
									return herald.Append(tx, r, inv.ev.reserved, stockReserved{Qty: 1, By: by})
								}
								return herald.Append(tx, r, inv.ev.refused, stockRefused{By: by})
							}, opts...)
							mu.Lock()
							switch {
							case err == nil:
								committed++
							case errors.Is(err, herald.ErrConcurrencyConflict) && !retry:
								conflicts++
								if !strings.Contains(err.Error(), `aggregate "inventory.stock" stream "hot"`) {
									errs <- fmt.Errorf("conflict does not name the stream: %v", err)
								}
							default:
								errs <- err
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
				t.Logf("%s: %d committed, %d conflicts", dialect, committed, conflicts)
				if committed+conflicts != workers*each {
					t.Fatalf("%d committed + %d conflicts != %d decisions", committed, conflicts, workers*each)
				}
				if retry && committed != workers*each {
					t.Fatalf("with retry %d of %d decisions committed", committed, workers*each)
				}
				got, v := inv.load(t, "hot")
				if v != int64(1+committed) || got.Reserved+got.Refused != committed {
					t.Fatalf("state %+v at version %d after %d committed decisions", got, v, committed)
				}
				if got.Reserved != min(stock, committed) || got.Reserved > got.OnHand {
					t.Fatalf("reserved %d of %d after %d decisions: a lost update", got.Reserved, got.OnHand, committed)
				}
				// A serial replay of what committed, read from the log in
				// stream order, is the loaded state.
				if want := replayLog(t, inv.st, "hot"); got != want {
					t.Fatalf("loaded %+v, serial replay of the log %+v", got, want)
				}
			})
		})
	}
}

// replayLog folds the events of a stream as the event log holds them, in
// stream order, without herald's Load.
func replayLog(t *testing.T, st *store.Store, stream string) Stock {
	t.Helper()
	rows, err := st.DB().Query(st.Rebind(`SELECT type, data FROM herald_event_log WHERE aggregate_type = 'inventory.stock'
		AND stream_id = ? ORDER BY stream_version`), stream)
	must(t, err)
	defer rows.Close()
	var ops []stockOp
	for rows.Next() {
		var typ string
		var data []byte
		must(t, rows.Scan(&typ, &data))
		var op stockOp
		var e struct {
			Qty  int    `json:"qty"`
			By   string `json:"by"`
			Name string `json:"name"`
		}
		must(t, envelope.JSON.Unmarshal(data, &e))
		switch typ {
		case "inventory.stock-received":
			op = stockOp{kind: 0, n: e.Qty}
		case "inventory.stock-reserved":
			op = stockOp{kind: 1, n: e.Qty, s: e.By}
		case "inventory.reservation-refused":
			op = stockOp{kind: 2, s: e.By}
		default:
			op = stockOp{kind: 3, s: e.Name}
		}
		ops = append(ops, op)
	}
	must(t, rows.Err())
	return replay(ops)
}

// TestAggregateSnapshotProperty: for random event sequences appended in
// random transactions, the state from the newest snapshot and the events
// after it equals the state from replaying the whole stream, and the fold
// of the sequence.
func TestAggregateSnapshotProperty(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		st := testdb.For(t, dialect)
		rng := rand.New(rand.NewPCG(15, 2026))
		trials := 25
		if dialect == "postgres" {
			trials = 10
		}
		for trial := range trials {
			every := 1 + rng.IntN(12)
			snap := newInventory(t, st, herald.Snapshot(every))
			full := newInventory(t, st) // the same service and aggregate, without snapshots
			id := fmt.Sprintf("s%d", trial)
			ops := make([]stockOp, 1+rng.IntN(120))
			for i := range ops {
				ops[i] = stockOp{kind: rng.IntN(4), n: rng.IntN(1000) - 100, s: fmt.Sprintf("x%d", rng.IntN(50))}
			}
			for rest := ops; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(7))
				batch := rest[:n]
				rest = rest[n:]
				must(t, snap.svc.Do(ctx, func(tx herald.Tx) error {
					r, err := herald.Load(tx, snap.agg, id)
					if err != nil {
						return err
					}
					for _, op := range batch {
						if err := snap.appendOp(tx, r, op); err != nil {
							return err
						}
					}
					return nil
				}))
			}
			want := replay(ops)
			fromSnap, v1 := snap.load(t, id)
			fromLog, v2 := full.load(t, id)
			if fromSnap != want || fromLog != want || v1 != int64(len(ops)) || v2 != v1 {
				t.Fatalf("trial %d (%d events, snapshot every %d): snapshot+tail %+v at %d, full replay %+v at %d, want %+v",
					trial, len(ops), every, fromSnap, v1, fromLog, v2, want)
			}
			if n := testdb.Count(t, st, "herald_snapshots", "stream_id = ?", id); (n == 1) != (len(ops) >= every) {
				t.Fatalf("trial %d: %d snapshots of %d events, every %d", trial, n, len(ops), every)
			}
		}
	})
}

func TestAggregateSnapshots(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		st := testdb.For(t, dialect)
		inv := newInventory(t, st, herald.Snapshot(3))
		appendN := func(inv *inventory, n int) {
			t.Helper()
			for range n {
				must(t, inv.svc.Do(ctx, func(tx herald.Tx) error {
					r, err := herald.Load(tx, inv.agg, "p")
					if err != nil {
						return err
					}
					return herald.Append(tx, r, inv.ev.received, stockReceived{Qty: 1})
				}))
			}
		}
		snapshot := func() (version int64, schema int, state string) {
			t.Helper()
			must(t, st.DB().QueryRow(`SELECT stream_version, schema_version, state FROM herald_snapshots`).Scan(&version, &schema, &state))
			return
		}
		appendN(inv, 7)
		if v, schema, state := snapshot(); v != 6 || schema != 1 || !strings.Contains(state, `"on_hand":6`) {
			t.Fatalf("snapshot at %d, schema %d: %s; want version 6, schema 1", v, schema, state)
		}

		// A new schema version ignores the old snapshot (the state comes
		// from the events) and writes the next one in its own.
		v2 := newInventory(t, st, herald.Snapshot(3), herald.SnapshotSchema(2))
		must(t, v2.svc.Do(ctx, func(tx herald.Tx) error {
			r, err := herald.Load(tx, v2.agg, "p")
			if err == nil && (r.State().OnHand != 7 || r.Version() != 7) {
				t.Errorf("schema 2 loaded %+v at %d, want 7 on hand at 7", r.State(), r.Version())
			}
			return err
		}))
		if _, err := st.DB().Exec(`UPDATE herald_snapshots SET state = ` + map[string]string{"sqlite": "X'6e6f74206a736f6e'", "postgres": "'not json'::bytea"}[dialect]); err != nil {
			t.Fatal(err)
		}
		if s, v := v2.load(t, "p"); s.OnHand != 7 || v != 7 {
			t.Fatalf("schema 2 with a broken schema 1 snapshot: %+v at %d", s, v)
		}
		appendN(v2, 2)
		if v, schema, _ := snapshot(); v != 9 || schema != 2 {
			t.Fatalf("snapshot at %d, schema %d; want version 9, schema 2", v, schema)
		}

		// A snapshot of the aggregate's schema that does not decode fails
		// the Load, naming the aggregate, stream and version, and the
		// transaction with it.
		if _, err := st.DB().Exec(`UPDATE herald_snapshots SET state = ` + map[string]string{"sqlite": "X'7b2262726f6b656e'", "postgres": "'{\"broken'::bytea"}[dialect]); err != nil {
			t.Fatal(err)
		}
		before := testdb.Count(t, st, "herald_event_log", "")
		err := v2.svc.Do(ctx, func(tx herald.Tx) error {
			must(t, herald.Record(tx, v2.ev.renamed, stockRenamed{Name: "half"}))
			_, _ = herald.Load(tx, v2.agg, "p")
			return nil // the error swallowed: the transaction fails anyway
		})
		if !errors.Is(err, herald.ErrCorruptSnapshot) || !strings.Contains(err.Error(), `aggregate "inventory.stock" stream "p"`) ||
			!strings.Contains(err.Error(), "version 9") {
			t.Fatalf("Do with a corrupt snapshot = %v; want ErrCorruptSnapshot naming the aggregate, stream and version", err)
		}
		if after := testdb.Count(t, st, "herald_event_log", ""); after != before {
			t.Fatalf("event log %d rows after a failed Load, was %d", after, before)
		}
	})
}

func TestAggregateBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.SQLite(t)
	inv := newInventory(t, st)
	must(t, inv.svc.Do(ctx, func(tx herald.Tx) error {
		r, err := herald.Load(tx, inv.agg, "p")
		if err != nil {
			return err
		}
		must(t, herald.Append(tx, r, inv.ev.received, stockReceived{Qty: 5}))
		return herald.Append(tx, r, inv.ev.renamed, stockRenamed{Name: "widget"})
	}))
	rows := func() int { return testdb.Count(t, st, "herald_event_log", "") }
	before := rows()

	t.Run("append without apply", func(t *testing.T) {
		other := herald.Domain[stockRefused]("inventory.audited")
		must(t, inv.svc.Register(other))
		err := inv.svc.Do(ctx, func(tx herald.Tx) error {
			r, err := herald.Load(tx, inv.agg, "p")
			if err != nil {
				return err
			}
			must(t, herald.Append(tx, r, inv.ev.received, stockReceived{Qty: 1}))
			_ = herald.Append(tx, r, other, stockRefused{}) // ignored: Do fails anyway
			return nil
		})
		if !errors.Is(err, herald.ErrNoApply) || !strings.Contains(err.Error(), `"inventory.audited"`) ||
			!strings.Contains(err.Error(), `aggregate "inventory.stock"`) {
			t.Fatalf("Append without apply: %v; want ErrNoApply naming the event type and the aggregate", err)
		}
		if rows() != before {
			t.Fatalf("event log has %d rows, was %d: half-written", rows(), before)
		}
	})

	t.Run("load without apply", func(t *testing.T) {
		// Another instance of the service that knows only one event of
		// the stream (say, an older version of the code).
		svc, err := herald.New("inventory", herald.WithStore(st), quietLog)
		must(t, err)
		defer svc.Close()
		ev := newStockEvents()
		narrow := herald.Aggregate[Stock]("inventory.stock")
		must(t, herald.Apply(narrow, ev.received, func(s *Stock, e stockReceived) { s.OnHand += e.Qty }))
		must(t, svc.RegisterAggregate(narrow))
		err = svc.Do(ctx, func(tx herald.Tx) error {
			must(t, herald.Record(tx, ev.received, stockReceived{Qty: 1}))
			_, err := herald.Load(tx, narrow, "p")
			return err
		})
		if !errors.Is(err, herald.ErrNoApply) || !strings.Contains(err.Error(), `"inventory.stock-renamed"`) ||
			!strings.Contains(err.Error(), `aggregate "inventory.stock"`) || !strings.Contains(err.Error(), "stream version 2") {
			t.Fatalf("Load without apply: %v; want ErrNoApply naming the event type, aggregate and version", err)
		}
		if rows() != before {
			t.Fatalf("event log has %d rows, was %d: half-written", rows(), before)
		}
	})

	t.Run("misuse", func(t *testing.T) {
		var stale *herald.Root[Stock]
		must(t, inv.svc.Do(ctx, func(tx herald.Tx) error {
			var err error
			stale, err = herald.Load(tx, inv.agg, "p")
			return err
		}))
		unregistered := stockAggregate(t, newStockEvents())
		cases := []struct {
			name string
			fn   func(tx herald.Tx) error
			want error
		}{
			{"root of another transaction", func(tx herald.Tx) error {
				return herald.Append(tx, stale, inv.ev.received, stockReceived{Qty: 1})
			}, herald.ErrTxDone},
			{"unregistered aggregate", func(tx herald.Tx) error {
				_, err := herald.Load(tx, unregistered, "p")
				return err
			}, herald.ErrUnregistered},
			{"empty stream id", func(tx herald.Tx) error {
				_, err := herald.Load(tx, inv.agg, "")
				return err
			}, herald.ErrInvalidAggregate},
			{"nil root", func(tx herald.Tx) error {
				return herald.Append(tx, (*herald.Root[Stock])(nil), inv.ev.received, stockReceived{Qty: 1})
			}, herald.ErrInvalidAggregate},
			{"nil contract", func(tx herald.Tx) error {
				r, err := herald.Load(tx, inv.agg, "p")
				if err != nil {
					return err
				}
				return herald.Append[Stock, stockReceived](tx, r, nil, stockReceived{})
			}, herald.ErrInvalidContract},
		}
		for _, c := range cases {
			if err := inv.svc.Do(ctx, c.fn); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
		}
		if _, err := herald.Load(nil, inv.agg, "p"); !errors.Is(err, herald.ErrNoTx) {
			t.Errorf("Load without a Tx: %v", err)
		}
		if rows() != before {
			t.Fatalf("event log has %d rows, was %d", rows(), before)
		}
	})

	t.Run("declarations", func(t *testing.T) {
		ev := newStockEvents()
		noEvents := herald.Aggregate[Stock]("inventory.empty")
		badName := herald.Aggregate[Stock]("Inventory Stock")
		must(t, herald.Apply(badName, ev.received, func(*Stock, stockReceived) {}))
		badOpt := herald.Aggregate[Stock]("inventory.bad", herald.Snapshot(0))
		must(t, herald.Apply(badOpt, ev.received, func(*Stock, stockReceived) {}))
		twice := herald.Aggregate[Stock]("inventory.twice")
		must(t, herald.Apply(twice, ev.received, func(*Stock, stockReceived) {}))
		if err := herald.Apply(twice, ev.received, func(*Stock, stockReceived) {}); !errors.Is(err, herald.ErrInvalidAggregate) {
			t.Errorf("second Apply of one contract: %v", err)
		}
		dup := stockAggregate(t, ev) // a second "inventory.stock"
		var nilAgg *herald.AggregateType[Stock]
		for _, c := range []struct {
			name string
			agg  herald.EventSourced
			want string
		}{
			{"no events", noEvents, `aggregate "inventory.empty" has no events`},
			{"bad name", badName, `aggregate "Inventory Stock": name must be`},
			{"bad option", badOpt, `aggregate "inventory.bad": snapshot every 0 events`},
			{"apply twice", twice, `declared twice`},
			{"duplicate name", dup, `aggregate "inventory.stock" is already registered`},
			{"nil", nilAgg, `nil aggregate`},
		} {
			err := inv.svc.RegisterAggregate(c.agg)
			if !errors.Is(err, herald.ErrInvalidAggregate) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: RegisterAggregate = %v; want ErrInvalidAggregate with %q", c.name, err, c.want)
			}
		}
		if err := herald.Apply(inv.agg, herald.Domain[int]("inventory.late"), func(*Stock, int) {}); !errors.Is(err, herald.ErrInvalidAggregate) {
			t.Errorf("Apply after registration: %v", err)
		}
		if err := inv.svc.Do(ctx, func(herald.Tx) error { return nil }, herald.RetryConflicts(-1)); !errors.Is(err, herald.ErrInvalidOption) {
			t.Errorf("RetryConflicts(-1): %v", err)
		}
	})
}

// TestAggregateRetention: a service's retention keeps its aggregates'
// events, whatever their age.
func TestAggregateRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.SQLite(t)
	svc, err := herald.New("inventory", herald.WithStore(st), herald.WithEventLogRetention(time.Hour), quietLog)
	must(t, err)
	defer svc.Close()
	ev := newStockEvents()
	agg := stockAggregate(t, ev)
	must(t, svc.RegisterAggregate(agg))
	must(t, svc.Do(ctx, func(tx herald.Tx) error {
		r, err := herald.Load(tx, agg, "p")
		if err != nil {
			return err
		}
		must(t, herald.Append(tx, r, ev.received, stockReceived{Qty: 4}))
		return herald.Record(tx, ev.received, stockReceived{Qty: 1})
	}))
	if _, err := st.DB().Exec(`UPDATE herald_event_log SET id = '0' || id`); err != nil { // below every recent ULID
		t.Fatal(err)
	}
	n, err := svc.PruneEventLog(ctx)
	must(t, err)
	if n != 1 {
		t.Fatalf("pruned %d, want the 1 plain event", n)
	}
	must(t, svc.Do(ctx, func(tx herald.Tx) error {
		r, err := herald.Load(tx, agg, "p")
		if err == nil && r.State().OnHand != 4 {
			t.Errorf("after retention: %+v", r.State())
		}
		return err
	}))
}

// TestAggregateConflictInterleaved interleaves two transactions on
// PostgreSQL deterministically: both load version 1, the first appends and
// commits, the second's append then fails at commit with
// ErrConcurrencyConflict; with RetryConflicts(1) its second run loads
// version 2 and commits. (SQLite's writers are serialised from BEGIN: the
// second would wait for the first before loading.)
func TestAggregateConflictInterleaved(t *testing.T) {
	t.Parallel()
	for _, retry := range []int{0, 1} {
		t.Run(fmt.Sprintf("retry=%d", retry), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			inv := newInventory(t, testdb.Postgres(t))
			must(t, inv.svc.Do(ctx, func(tx herald.Tx) error {
				r, err := herald.Load(tx, inv.agg, "p")
				if err != nil {
					return err
				}
				return herald.Append(tx, r, inv.ev.received, stockReceived{Qty: 1})
			}))
			aLoaded, bLoaded, aDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
			go func() {
				aDone <- inv.svc.Do(ctx, func(tx herald.Tx) error {
					r, err := herald.Load(tx, inv.agg, "p")
					if err != nil {
						return err
					}
					close(aLoaded)
					<-bLoaded
					return herald.Append(tx, r, inv.ev.renamed, stockRenamed{Name: "a"})
				})
			}()
			var runs []int64
			var aErr error
			err := inv.svc.Do(ctx, func(tx herald.Tx) error {
				if len(runs) == 0 {
					select {
					case <-aLoaded:
					case err := <-aDone: // A failed before loading
						t.Fatalf("first transaction: %v", err)
					}
				}
				r, err := herald.Load(tx, inv.agg, "p")
				if err != nil {
					return err
				}
				runs = append(runs, r.Version())
				if len(runs) == 1 {
					close(bLoaded)
					aErr = <-aDone
				}
				return herald.Append(tx, r, inv.ev.renamed, stockRenamed{Name: "b"})
			}, herald.RetryConflicts(retry))
			must(t, aErr)
			got, v := inv.load(t, "p")
			switch retry {
			case 0:
				if !errors.Is(err, herald.ErrConcurrencyConflict) || !reflect.DeepEqual(runs, []int64{1}) || v != 2 || got.Name != "a" {
					t.Fatalf("without retry: %v after runs at %v; stream at %d named %q; want a conflict, runs [1], a at 2",
						err, runs, v, got.Name)
				}
			default:
				if err != nil || !reflect.DeepEqual(runs, []int64{1, 2}) || v != 3 || got.Name != "b" {
					t.Fatalf("with retry: %v after runs at %v; stream at %d named %q; want nil, runs [1 2], b at 3",
						err, runs, v, got.Name)
				}
			}
		})
	}
}

// TestRetryConflictsIsBounded: a decision that conflicts every time runs
// 1+n times and Do returns the conflict.
func TestRetryConflictsIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	inv := newInventory(t, testdb.SQLite(t))
	runs := 0
	err := inv.svc.Do(ctx, func(tx herald.Tx) error {
		runs++
		stale, err := herald.Load(tx, inv.agg, "p")
		if err != nil {
			return err
		}
		fresh, err := herald.Load(tx, inv.agg, "p")
		if err != nil {
			return err
		}
		must(t, herald.Append(tx, fresh, inv.ev.received, stockReceived{Qty: 1}))
		return herald.Append(tx, stale, inv.ev.received, stockReceived{Qty: 1}) // behind fresh: a conflict
	}, herald.RetryConflicts(3))
	if !errors.Is(err, herald.ErrConcurrencyConflict) || runs != 4 {
		t.Fatalf("Do = %v after %d runs; want ErrConcurrencyConflict after 4", err, runs)
	}
	if n := testdb.Count(t, inv.st, "herald_event_log", ""); n != 0 {
		t.Fatalf("%d event-log rows after the conflicts", n)
	}
}

// noted is an event with a field its JSON codec drops.
type noted struct {
	N    int    `json:"n"`
	Note string `json:"-"` // never stored: a replay never sees it
}

type tally struct {
	Count int    `json:"count"`
	Notes string `json:"notes"`
}

// An event applies the same in its own transaction as in a replay: as the
// stream holds it (decoded from its data), so the state does not depend on
// whether a snapshot was taken from an Append's state.
func TestAggregateAppendAppliesWhatTheStreamHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ev := herald.Domain[noted]("tally.noted")
	states := map[int]tally{}
	for _, every := range []int{0, 1, 2} {
		opts := []herald.AggregateOption{}
		if every > 0 {
			opts = append(opts, herald.Snapshot(every))
		}
		agg := herald.Aggregate[tally]("tally", opts...)
		must(t, herald.Apply(agg, ev, func(s *tally, e noted) { s.Count += e.N; s.Notes += e.Note }))
		svc, err := herald.New("tally", herald.WithStore(testdb.SQLite(t)))
		must(t, err)
		must(t, svc.RegisterAggregate(agg))
		var inTx tally
		for range 3 {
			must(t, svc.Do(ctx, func(tx herald.Tx) error {
				r, err := herald.Load(tx, agg, "t")
				if err != nil {
					return err
				}
				if err := herald.Append(tx, r, ev, noted{N: 1, Note: "n"}); err != nil {
					return err
				}
				inTx = r.State()
				return nil
			}))
		}
		must(t, svc.Do(ctx, func(tx herald.Tx) error {
			r, err := herald.Load(tx, agg, "t")
			if err == nil {
				states[every] = r.State()
			}
			return err
		}))
		if inTx != states[every] {
			t.Errorf("snapshot every %d: state %+v in the appending transaction, %+v loaded", every, inTx, states[every])
		}
	}
	if states[0] != states[1] || states[0] != states[2] || states[0] != (tally{Count: 3}) {
		t.Fatalf("loaded states by snapshot interval %+v: want {Count:3} for each", states)
	}
}
