package herald_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/storetest"
)

type placed struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
}

type confirmed struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

type reserved struct {
	OrderID string `json:"order_id"`
}

type emailed struct {
	To string `json:"to"`
}

// shop is a small service with its own table, two domain events, a handler
// chain and a translation.
type shop struct {
	svc       *herald.Service
	st        *store.Store
	placed    *herald.DomainEvent[placed]
	reserved  *herald.DomainEvent[reserved]
	confirmed *herald.IntegrationEvent[confirmed]
	email     *herald.NotificationEvent[emailed]
	calls     []string
}

func newShop(t *testing.T, dialect string) *shop {
	t.Helper()
	st := testdb.For(t, dialect)
	if _, err := st.DB().Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	svc, err := herald.New("orders", herald.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	s := &shop{
		svc:       svc,
		st:        st,
		placed:    herald.Domain[placed]("orders.placed"),
		reserved:  herald.Domain[reserved]("orders.stock-reserved"),
		confirmed: herald.Integration[confirmed]("shop.order.confirmed", herald.Version(1), herald.KeyBy(func(c confirmed) string { return c.OrderID })),
		email:     herald.Notification[emailed]("shop.order.email", herald.Version(1)),
	}
	must(t, herald.Handle(svc, s.placed, "reserve-stock", func(ctx context.Context, tx herald.Tx, e placed) error {
		s.calls = append(s.calls, "reserve-stock")
		if e.Amount < 0 {
			return errors.New("negative amount")
		}
		if e.Amount == 666 {
			panic("the number of the beast")
		}
		return herald.Record(tx, s.reserved, reserved{OrderID: e.OrderID})
	}))
	must(t, herald.Handle(svc, s.placed, "audit", func(ctx context.Context, tx herald.Tx, e placed) error {
		s.calls = append(s.calls, "audit")
		return nil
	}))
	must(t, herald.Translate(svc, s.placed, s.confirmed, func(ctx context.Context, e placed) (confirmed, error) {
		if e.Amount == 0 {
			return confirmed{}, herald.ErrSkip
		}
		return confirmed{OrderID: e.OrderID, Total: e.Amount}, nil
	}))
	must(t, svc.Register(s.email, s.reserved))
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// place inserts an order row and records OrderPlaced in one Do.
func (s *shop) place(ctx context.Context, id string, amount int) error {
	return s.svc.Do(ctx, func(tx herald.Tx) error {
		if _, err := tx.SQL().ExecContext(tx.Context(), s.st.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`), id, amount); err != nil {
			return err
		}
		return herald.Record(tx, s.placed, placed{OrderID: id, Amount: amount})
	})
}

type counts struct{ orders, log, outbox int }

func (s *shop) counts(t *testing.T) counts {
	return counts{
		orders: testdb.Count(t, s.st, "orders", ""),
		log:    testdb.Count(t, s.st, "herald_event_log", ""),
		outbox: testdb.Count(t, s.st, "herald_outbox", ""),
	}
}

func forEachDialect(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			fn(t, d)
		})
	}
}

func TestDoCommitsStateEventsAndOutboxTogether(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		s := newShop(t, dialect)
		ctx := herald.WithCorrelationID(context.Background(), "flow-1")
		must(t, s.place(ctx, "o-1", 42))
		if got, want := s.counts(t), (counts{orders: 1, log: 2, outbox: 1}); got != want {
			t.Fatalf("counts = %+v, want %+v", got, want)
		}
		if got := strings.Join(s.calls, ","); got != "reserve-stock,audit" {
			t.Fatalf("handlers ran as %q, want registration order reserve-stock,audit", got)
		}
		events, err := s.st.EventLogListByCorrelation(ctx, "flow-1")
		must(t, err)
		if len(events) != 2 || events[0].Type != "orders.placed" || events[1].Type != "orders.stock-reserved" {
			t.Fatalf("event log = %v", events)
		}
		root, child := events[0], events[1]
		if root.CausationID != "" || child.CausationID != root.ID {
			t.Fatalf("causation: root %q, child %q (want \"\" and %q)", root.CausationID, child.CausationID, root.ID)
		}
		if root.Source != "orders" || root.Kind != herald.KindDomain || root.Version != 1 {
			t.Fatalf("root attributes: %+v", root)
		}
		storetest.Settle(t, s.st)
		rows, err := store.EngineOf(s.st).OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", Limit: 10})
		must(t, err)
		if len(rows) != 1 {
			t.Fatalf("outbox rows = %d", len(rows))
		}
		out := rows[0].Event
		if out.Type != "shop.order.confirmed" || out.Kind != herald.KindIntegration || out.Key != "o-1" ||
			out.CausationID != root.ID || out.CorrelationID != "flow-1" || string(out.Data) != `{"order_id":"o-1","total":42}` {
			t.Fatalf("outbox event = %+v data %s", out, out.Data)
		}
	})
}

func TestCorrelationDefaultsToFirstEvent(t *testing.T) {
	t.Parallel()
	s := newShop(t, "sqlite")
	must(t, s.place(context.Background(), "o-1", 5))
	rows, err := store.EngineOf(s.st).OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: "orders", Limit: 10})
	must(t, err)
	root, err := s.st.EventLogGet(context.Background(), rows[0].Event.CausationID)
	must(t, err)
	if root.CorrelationID != root.ID || rows[0].Event.CorrelationID != root.ID {
		t.Fatalf("correlation: root %q (id %q), integration %q", root.CorrelationID, root.ID, rows[0].Event.CorrelationID)
	}
}

func TestTranslationMaySkip(t *testing.T) {
	t.Parallel()
	s := newShop(t, "sqlite")
	must(t, s.place(context.Background(), "free", 0))
	if got, want := s.counts(t), (counts{orders: 1, log: 2, outbox: 0}); got != want {
		t.Fatalf("counts = %+v, want %+v", got, want)
	}
}

func TestFailuresRollBackEverything(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		s := newShop(t, dialect)
		must(t, s.place(context.Background(), "ok", 1)) // something already there
		before := s.counts(t)

		cases := []struct {
			name  string
			run   func() error
			check func(t *testing.T, err error)
		}{
			{"handler error", func() error { return s.place(context.Background(), "neg", -1) }, func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "negative amount") || !strings.Contains(err.Error(), `"reserve-stock"`) {
					t.Fatalf("err = %v", err)
				}
			}},
			{"handler panic", func() error { return s.place(context.Background(), "beast", 666) }, func(t *testing.T, err error) {
				var pe *herald.PanicError
				if !errors.As(err, &pe) || !errors.Is(err, herald.ErrPanic) || !strings.Contains(string(pe.Stack), "domain_test.go") {
					t.Fatalf("err = %v, want a *PanicError with the stack", err)
				}
			}},
			{"fn panic", func() error {
				return s.svc.Do(context.Background(), func(tx herald.Tx) error {
					if err := herald.Record(tx, s.placed, placed{OrderID: "p", Amount: 3}); err != nil {
						return err
					}
					panic(fmt.Errorf("boom"))
				})
			}, func(t *testing.T, err error) {
				if !errors.Is(err, herald.ErrPanic) || err.Error() == "" {
					t.Fatalf("err = %v", err)
				}
			}},
			{"fn error after record", func() error {
				return s.svc.Do(context.Background(), func(tx herald.Tx) error {
					if err := herald.Record(tx, s.placed, placed{OrderID: "p", Amount: 3}); err != nil {
						return err
					}
					return errors.New("changed my mind")
				})
			}, func(t *testing.T, err error) {
				if err == nil || err.Error() != "changed my mind" {
					t.Fatalf("err = %v", err)
				}
			}},
			{"handler error ignored by fn", func() error {
				return s.svc.Do(context.Background(), func(tx herald.Tx) error {
					_, _ = tx.SQL().ExecContext(tx.Context(), s.st.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`), "ignored", 1)
					_ = herald.Record(tx, s.placed, placed{OrderID: "ignored", Amount: -5})
					return nil // the caller swallowed the error: herald must still roll back
				})
			}, func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "negative amount") {
					t.Fatalf("err = %v", err)
				}
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				c.check(t, c.run())
				if got := s.counts(t); got != before {
					t.Fatalf("after %s: counts = %+v, want unchanged %+v", c.name, got, before)
				}
			})
		}
	})
}

type unencodable struct {
	C chan int `json:"c"`
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		s := newShop(t, dialect)
		stranger := herald.Domain[placed]("orders.unregistered")
		bad := herald.Domain[unencodable]("orders.bad")
		must(t, s.svc.Register(bad))
		before := s.counts(t)
		var leaked herald.Tx
		must(t, s.svc.Do(context.Background(), func(tx herald.Tx) error { leaked = tx; return nil }))

		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		cases := []struct {
			name string
			run  func() error
			want error
			text string
		}{
			{"unregistered contract", func() error {
				return s.svc.Do(context.Background(), func(tx herald.Tx) error { return herald.Record(tx, stranger, placed{}) })
			}, herald.ErrUnregistered, "orders.unregistered"},
			{"outside a transaction", func() error { return herald.Record(nil, s.placed, placed{}) }, herald.ErrNoTx, "orders.placed"},
			{"after Do returned", func() error { return herald.Record(leaked, s.placed, placed{}) }, herald.ErrTxDone, "orders.placed"},
			{"unencodable data", func() error {
				return s.svc.Do(context.Background(), func(tx herald.Tx) error { return herald.Record(tx, bad, unencodable{C: make(chan int)}) })
			}, herald.ErrEncode, "orders.bad"},
			{"nil context", func() error {
				var nilCtx context.Context
				return s.svc.Do(nilCtx, func(tx herald.Tx) error { return nil })
			}, herald.ErrNilContext, "orders"},
			{"cancelled context", func() error {
				return s.svc.Do(cancelled, func(tx herald.Tx) error { return herald.Record(tx, s.placed, placed{}) })
			}, context.Canceled, "orders"},
			{"nil notification contract", func() error {
				return s.svc.Do(context.Background(), func(tx herald.Tx) error {
					return herald.Notify[emailed](tx, nil, emailed{})
				})
			}, herald.ErrInvalidContract, "nil"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := c.run()
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
					t.Fatalf("err = %v, want %v naming %q", err, c.want, c.text)
				}
				if got := s.counts(t); got != before {
					t.Fatalf("counts = %+v, want unchanged %+v", got, before)
				}
			})
		}
		t.Run("closed service", func(t *testing.T) {
			must(t, s.svc.Close())
			err := s.place(context.Background(), "late", 1)
			if !errors.Is(err, herald.ErrClosed) || !strings.Contains(err.Error(), "orders") {
				t.Fatalf("err = %v", err)
			}
			if got := s.counts(t); got != before {
				t.Fatalf("counts = %+v, want unchanged %+v", got, before)
			}
		})
	})
}

func TestNotifyWritesOutbox(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		s := newShop(t, dialect)
		must(t, s.svc.Do(context.Background(), func(tx herald.Tx) error {
			return herald.Notify(tx, s.email, emailed{To: "ada@example.com"})
		}))
		storetest.Settle(t, s.st)
		rows, err := store.EngineOf(s.st).OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: "orders", Limit: 10})
		must(t, err)
		if len(rows) != 1 || rows[0].Event.Kind != herald.KindNotification || rows[0].Event.Type != "shop.order.email" {
			t.Fatalf("outbox = %+v", rows)
		}
		if testdb.Count(t, s.st, "herald_event_log", "") != 0 {
			t.Fatal("a notification went to the domain event log")
		}
	})
}

func TestRecursionIsBounded(t *testing.T) {
	t.Parallel()
	st := testdb.SQLite(t)
	svc, err := herald.New("loop", herald.WithStore(st), herald.WithMaxDepth(5))
	must(t, err)
	ping := herald.Domain[int]("loop.ping")
	must(t, herald.Handle(svc, ping, "again", func(ctx context.Context, tx herald.Tx, n int) error {
		return herald.Record(tx, ping, n+1)
	}))
	err = svc.Do(context.Background(), func(tx herald.Tx) error { return herald.Record(tx, ping, 0) })
	if !errors.Is(err, herald.ErrTooDeep) {
		t.Fatalf("err = %v, want ErrTooDeep", err)
	}
	if n := testdb.Count(t, st, "herald_event_log", ""); n != 0 {
		t.Fatalf("event log has %d rows after a failed Do", n)
	}
}

func TestEventLogRetention(t *testing.T) {
	t.Parallel()
	st := testdb.SQLite(t)
	svc, err := herald.New("keep", herald.WithStore(st), herald.WithEventLogRetention(time.Hour))
	must(t, err)
	ev := herald.Domain[int]("keep.tick")
	must(t, svc.Register(ev))
	must(t, svc.Do(context.Background(), func(tx herald.Tx) error { return herald.Record(tx, ev, 1) }))
	// Age the row by two hours: event ids are ULIDs, which carry the time.
	if _, err := st.DB().Exec(`UPDATE herald_event_log SET id = ?`, envelope.NewID(time.Now().Add(-2*time.Hour))); err != nil {
		t.Fatal(err)
	}
	must(t, svc.Do(context.Background(), func(tx herald.Tx) error { return herald.Record(tx, ev, 2) }))
	n, err := svc.PruneEventLog(context.Background())
	must(t, err)
	if n != 1 || testdb.Count(t, st, "herald_event_log", "") != 1 {
		t.Fatalf("pruned %d, left %d; want 1 and 1", n, testdb.Count(t, st, "herald_event_log", ""))
	}
}

func TestConcurrentDo(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		st := newShop(t, dialect).st
		svc, err := herald.New("orders", herald.WithStore(st))
		must(t, err)
		defer svc.Close()
		ev := herald.Domain[placed]("orders.placed")
		out := herald.Integration[confirmed]("shop.order.confirmed")
		must(t, herald.Translate(svc, ev, out, func(ctx context.Context, e placed) (confirmed, error) {
			return confirmed{OrderID: e.OrderID}, nil
		}))
		const workers, each = 8, 25
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				for i := range each {
					id := fmt.Sprintf("w%d-%d", w, i)
					if err := svc.Do(context.Background(), func(tx herald.Tx) error {
						if _, err := tx.SQL().ExecContext(tx.Context(), st.Rebind(`INSERT INTO orders (id, amount) VALUES (?, ?)`), id, i); err != nil {
							return err
						}
						return herald.Record(tx, ev, placed{OrderID: id})
					}); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if n := testdb.Count(t, st, "herald_outbox", ""); n != workers*each {
			t.Fatalf("outbox rows = %d, want %d", n, workers*each)
		}
	})
}

func TestHeaderUnsafeKeyAndSwallowedErrorsRollBack(t *testing.T) {
	t.Parallel()
	st := testdb.SQLite(t)
	if _, err := st.DB().Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	svc, err := herald.New("orders", herald.WithStore(st))
	must(t, err)
	ev := herald.Domain[placed]("orders.placed")
	out := herald.Integration[confirmed]("shop.order.confirmed", herald.KeyBy(func(c confirmed) string { return c.OrderID }))
	must(t, herald.Translate(svc, ev, out, func(ctx context.Context, e placed) (confirmed, error) {
		return confirmed{OrderID: e.OrderID}, nil
	}))
	stranger := herald.Domain[placed]("orders.stranger")
	insert := func(tx herald.Tx, id string) {
		_, _ = tx.SQL().ExecContext(tx.Context(), `INSERT INTO orders (id, amount) VALUES (?, 1)`, id)
	}
	// A key with a line break could not travel in a header: refused at record time.
	err = svc.Do(context.Background(), func(tx herald.Tx) error {
		insert(tx, "k")
		return herald.Record(tx, ev, placed{OrderID: "evil\r\nX-Injected: 1"})
	})
	if !errors.Is(err, herald.ErrEncode) || !strings.Contains(err.Error(), "partition key") {
		t.Fatalf("header-unsafe key: %v", err)
	}
	// An unregistered contract whose error the caller swallows still rolls back.
	err = svc.Do(context.Background(), func(tx herald.Tx) error {
		insert(tx, "s")
		_ = herald.Record(tx, stranger, placed{OrderID: "s"})
		return nil
	})
	if !errors.Is(err, herald.ErrUnregistered) {
		t.Fatalf("swallowed unregistered: %v", err)
	}
	if n := testdb.Count(t, st, "orders", ""); n != 0 {
		t.Fatalf("orders has %d rows after two failed transactions", n)
	}
}
