package heraldtest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/trace"
)

// The system under test: orders places an order and translates it to
// shop.order.confirmed; shipping schedules a shipment for it (a domain
// event translated to shop.shipment.scheduled); billing charges for the
// scheduled shipment.
type (
	placed    struct{ OrderID string }
	confirmed struct {
		OrderID string `json:"order_id"`
	}
	scheduled struct {
		OrderID string `json:"order_id"`
	}
)

var (
	orderPlaced       = herald.Domain[placed]("orders.placed")
	orderConfirmed    = herald.Integration[confirmed]("shop.order.confirmed", herald.Version(1), herald.KeyBy(func(e confirmed) string { return e.OrderID }))
	shipmentMade      = herald.Domain[scheduled]("shipping.scheduled")
	shipmentScheduled = herald.Integration[scheduled]("shop.shipment.scheduled", herald.Version(1), herald.KeyBy(func(e scheduled) string { return e.OrderID }))
)

// shop is the three services, and what shipping's handler does.
type shop struct {
	sys                       *heraldtest.System
	orders, shipping, billing *herald.Service
}

// newShop builds the system; schedule, if not nil, runs in shipping's
// handler before it records its effect. It starts every service except
// those named in notStarted.
func newShop(t *testing.T, schedule func(ctx context.Context) error, opts []heraldtest.Option, notStarted ...string) *shop {
	t.Helper()
	sys := heraldtest.New(t, opts...)
	fast := herald.Retry(herald.RetryPolicy{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond})
	s := &shop{sys: sys, orders: sys.Service("orders"), shipping: sys.Service("shipping", fast), billing: sys.Service("billing", fast)}
	must(t, herald.Translate(s.orders, orderPlaced, orderConfirmed, func(_ context.Context, e placed) (confirmed, error) {
		return confirmed(e), nil
	}))
	st := s.shipping.Store()
	if _, err := st.DB().Exec(`CREATE TABLE shipments (order_id TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	must(t, herald.Subscribe(s.shipping, orderConfirmed, "schedule", func(ctx context.Context, tx herald.Tx, e confirmed) error {
		if schedule != nil {
			if err := schedule(ctx); err != nil {
				return err
			}
		}
		if _, err := tx.SQL().ExecContext(ctx, st.Rebind(`INSERT INTO shipments (order_id) VALUES (?)`), e.OrderID); err != nil {
			return err
		}
		return herald.Record(tx, shipmentMade, scheduled(e))
	}))
	must(t, herald.Translate(s.shipping, shipmentMade, shipmentScheduled, func(_ context.Context, e scheduled) (scheduled, error) {
		return e, nil
	}))
	must(t, herald.Subscribe(s.billing, shipmentScheduled, "charge", func(context.Context, herald.Tx, scheduled) error { return nil }))
	var start []string
	for _, n := range []string{"orders", "shipping", "billing"} {
		if !strings.Contains(strings.Join(notStarted, ","), n) {
			start = append(start, n)
		}
	}
	sys.Start(start...)
	return s
}

// place is the action of the tests: one order, in one transaction.
func (s *shop) place(id string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		return s.orders.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, orderPlaced, placed{OrderID: id}) })
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFlowSettlesAcrossThreeServices(t *testing.T) {
	s := newShop(t, nil, nil)
	flow := s.sys.Run(t, s.place("o-1"))
	if !flow.Settled || len(flow.Correlations) != 1 {
		t.Fatalf("settled %v, correlations %v", flow.Settled, flow.Correlations)
	}
	// Settled means committed: shipping's row is there without waiting.
	var n int
	if err := s.shipping.Store().DB().QueryRow(`SELECT COUNT(*) FROM shipments`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("shipments = %d, %v", n, err)
	}
	// The causal chain, each event under its cause.
	var chain []string
	flow.Tree.Walk(func(n *trace.Node, depth int) { chain = append(chain, fmt.Sprintf("%d %s", depth, n.Type)) })
	want := []string{"0 orders.placed", "1 shop.order.confirmed", "2 shipping.scheduled", "3 shop.shipment.scheduled"}
	if strings.Join(chain, ", ") != strings.Join(want, ", ") {
		t.Fatalf("tree %v, want %v\n%s", chain, want, flow)
	}
	if got := len(flow.Handled("shipping", "schedule")); got != 1 {
		t.Errorf("shipping handled %d, want 1\n%s", got, flow)
	}
	if got := len(flow.Handled("billing", "charge")); got != 1 {
		t.Errorf("billing handled %d, want 1\n%s", got, flow)
	}
	if ev := flow.Events("shop.shipment.scheduled"); len(ev) != 1 || ev[0].Hops[0].Service != "shipping" {
		t.Errorf("shop.shipment.scheduled events %v", ev)
	}
	if len(flow.DeadLetters) != 0 || len(flow.Unfinished) != 0 {
		t.Errorf("dead letters %v, unfinished %v", flow.DeadLetters, flow.Unfinished)
	}
}

func TestFlowShowsAPermanentFailuresDeadLetter(t *testing.T) {
	s := newShop(t, func(context.Context) error { return herald.Permanent(errors.New("no such address")) }, nil)
	flow := s.sys.Run(t, s.place("o-1"))
	if !flow.Settled || len(flow.DeadLetters) != 1 {
		t.Fatalf("settled %v, dead letters %+v\n%s", flow.Settled, flow.DeadLetters, flow)
	}
	dl := flow.DeadLetters[0]
	if dl.Service != "shipping" || dl.Subscription != "schedule" || dl.Type != "shop.order.confirmed" || !strings.Contains(dl.Error, "no such address") {
		t.Fatalf("dead letter %+v", dl)
	}
	if n := len(flow.Events("shop.shipment.scheduled")); n != 0 {
		t.Fatalf("%d shipments scheduled by a failed handler", n)
	}
}

func TestFlowWaitsOutRetries(t *testing.T) {
	var mu sync.Mutex
	fails := 2
	s := newShop(t, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return errors.New("database busy")
		}
		return nil
	}, nil)
	flow := s.sys.Run(t, s.place("o-1"))
	retries := 0
	for _, r := range flow.Records {
		if r.Hop == herald.HopHandle && r.Outcome == herald.OutcomeRetry {
			retries++
		}
	}
	if retries != 2 || len(flow.Handled("billing", "charge")) != 1 {
		t.Fatalf("retries %d, billing handled %d\n%s", retries, len(flow.Handled("billing", "charge")), flow)
	}
}

// TestActionOutsideItsContextIsFollowed: a Do whose context does not come
// from Run's (an HTTP handler's, say) is followed too.
func TestActionOutsideItsContextIsFollowed(t *testing.T) {
	s := newShop(t, nil, nil)
	flow := s.sys.Run(t, func(context.Context) error { return s.place("o-1")(context.Background()) })
	if !flow.Settled || len(flow.Handled("billing", "charge")) != 1 {
		t.Fatalf("settled %v\n%s", flow.Settled, flow)
	}
}

// fakeT records what Run reports instead of failing the real test.
type fakeT struct {
	testing.TB // the real test, for what fakeT does not override
	mu         sync.Mutex
	fatals     []string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
}

func (f *fakeT) Errorf(format string, args ...any) { f.Fatalf(format, args...) }

func TestUnsettledFlowFailsListingTheOpenHops(t *testing.T) {
	cases := []struct {
		name       string
		notStarted []string
		block      bool
		want       []string
	}{
		{"subscriber not started", []string{"shipping"}, false,
			[]string{"1 hop(s) unfinished", "shop.order.confirmed", "not handled by shipping/schedule (service shipping is not started)"}},
		{"handler blocked", nil, true,
			[]string{"1 hop(s) unfinished", "shop.order.confirmed", "not handled by shipping/schedule"}},
		{"relay not running", []string{"orders"}, false,
			[]string{"1 hop(s) unfinished", "not published by the relay of orders (service orders is not started)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			release := make(chan struct{})
			var schedule func(ctx context.Context) error
			if c.block {
				schedule = func(ctx context.Context) error {
					select {
					case <-release:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			s := newShop(t, schedule, []heraldtest.Option{heraldtest.SettleTimeout(300 * time.Millisecond)}, c.notStarted...)
			// Registered after the system's cleanups, so it runs before
			// them: the blocked handler goes before its service closes.
			t.Cleanup(func() { close(release) })
			ft := &fakeT{TB: t}
			flow := s.sys.Run(ft, s.place("o-1"))
			if len(ft.fatals) != 1 {
				t.Fatalf("Run reported %d failures, want 1: %q", len(ft.fatals), ft.fatals)
			}
			for _, w := range c.want {
				if !strings.Contains(ft.fatals[0], w) {
					t.Errorf("report lacks %q:\n%s", w, ft.fatals[0])
				}
			}
			if flow.Settled || len(flow.Unfinished) != 1 {
				t.Errorf("settled %v, unfinished %q", flow.Settled, flow.Unfinished)
			}
		})
	}
}

func TestActionErrorFailsTheTest(t *testing.T) {
	sys := heraldtest.New(t)
	ft := &fakeT{TB: t}
	flow := sys.Run(ft, func(context.Context) error { return errors.New("out of stock") })
	if len(ft.fatals) != 1 || !strings.Contains(ft.fatals[0], "out of stock") || flow.Settled {
		t.Fatalf("reports %q, settled %v", ft.fatals, flow.Settled)
	}
}

// TestServicesBuiltElsewhereAreFollowed: a service a constructor of the
// user's builds (herald.New on a store of its own) is followed once it has
// Observe among its options and the system knows it (Add).
func TestServicesBuiltElsewhereAreFollowed(t *testing.T) {
	sys := heraldtest.New(t)
	orders := sys.Service("orders")
	must(t, herald.Translate(orders, orderPlaced, orderConfirmed, func(_ context.Context, e placed) (confirmed, error) {
		return confirmed(e), nil
	}))
	st := testdb.SQLite(t)
	shipping, err := herald.New("shipping", herald.WithStore(st), herald.WithBroker(sys.Broker()), sys.Observe())
	must(t, err)
	must(t, herald.Subscribe(shipping, orderConfirmed, "schedule", func(context.Context, herald.Tx, confirmed) error { return nil }))
	sys.Add(shipping)
	sys.Start() // orders; shipping is its caller's to start
	must(t, shipping.Start(context.Background()))
	t.Cleanup(func() { shipping.Close() })
	flow := sys.Run(t, (&shop{orders: orders}).place("o-1"))
	if len(flow.Handled("shipping", "schedule")) != 1 {
		t.Fatalf("shipping did not handle the order\n%s", flow)
	}
}
