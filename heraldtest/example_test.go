package heraldtest_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/trace"
)

// exampleT stands in for the *testing.T a test function gets, so that the
// examples run: it keeps the cleanups and runs them at done, and panics on
// a failure.
type exampleT struct {
	testing.TB
	cleanups []func()
}

func (t *exampleT) Helper()             {}
func (t *exampleT) Cleanup(f func())    { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Logf(string, ...any) {}
func (t *exampleT) Log(...any)          {}
func (t *exampleT) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
func (t *exampleT) Errorf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

func (t *exampleT) TempDir() string {
	dir, err := os.MkdirTemp("", "heraldtest-example-")
	if err != nil {
		panic(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// done runs the cleanups, the last registered first, as the testing
// package does.
func (t *exampleT) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// A flow across two services: orders confirms an order, shipping schedules
// it. Run returns once shipping handled the event, with the causal tree.
// In a test, t is the test's *testing.T.
func ExampleSystem_Run() {
	t := &exampleT{}
	defer t.done()

	sys := heraldtest.New(t)
	orders, shipping := sys.Service("orders"), sys.Service("shipping")
	_ = herald.Translate(orders, orderPlaced, orderConfirmed, func(_ context.Context, e placed) (confirmed, error) {
		return confirmed(e), nil
	})
	_ = herald.Subscribe(shipping, orderConfirmed, "schedule", func(ctx context.Context, tx herald.Tx, e confirmed) error {
		return herald.Record(tx, shipmentMade, scheduled(e))
	}, herald.Emits(shipmentMade))
	sys.Start()

	flow := sys.Run(t, func(ctx context.Context) error {
		return orders.Do(ctx, func(tx herald.Tx) error {
			return herald.Record(tx, orderPlaced, placed{OrderID: "o-1"})
		})
	})
	flow.Tree.Walk(func(n *trace.Node, depth int) {
		fmt.Printf("%s%s (%s)\n", strings.Repeat("  ", depth), n.Type, n.Hops[0].Service)
	})
	fmt.Println("shipping handled:", len(flow.Handled("shipping", "schedule")))
	// Output:
	// orders.placed (orders)
	//   shop.order.confirmed (orders)
	//     shipping.scheduled (shipping)
	// shipping handled: 1
}

// A handler that fails permanently: the flow settles with its dead letter.
func ExampleFlow_deadLetters() {
	t := &exampleT{}
	defer t.done()

	sys := heraldtest.New(t)
	orders, shipping := sys.Service("orders"), sys.Service("shipping")
	_ = herald.Translate(orders, orderPlaced, orderConfirmed, func(_ context.Context, e placed) (confirmed, error) {
		return confirmed(e), nil
	})
	_ = herald.Subscribe(shipping, orderConfirmed, "schedule", func(context.Context, herald.Tx, confirmed) error {
		return herald.Permanent(fmt.Errorf("no address for the order"))
	})
	sys.Start()

	flow := sys.Run(t, func(ctx context.Context) error {
		return orders.Do(ctx, func(tx herald.Tx) error {
			return herald.Record(tx, orderPlaced, placed{OrderID: "o-1"})
		})
	})
	for _, dl := range flow.DeadLetters {
		fmt.Printf("%s/%s gave up on %s: %s\n", dl.Service, dl.Subscription, dl.Type, dl.Error)
	}
	// Output:
	// shipping/schedule gave up on shop.order.confirmed: permanent: no address for the order
}

// Testing one subscriber: the test plays the producer (a translation of a
// domain event of its own), and asserts on the subscriber's table once the
// flow settled.
func Example_subscriber() {
	t := &exampleT{}
	defer t.done()
	ctx := context.Background()

	sys := heraldtest.New(t)
	producer, shipping := sys.Service("test-producer"), sys.Service("shipping")
	_ = herald.Translate(producer, orderPlaced, orderConfirmed, func(_ context.Context, e placed) (confirmed, error) {
		return confirmed(e), nil
	})
	st := shipping.Store()
	_, _ = st.DB().ExecContext(ctx, `CREATE TABLE shipments (order_id TEXT PRIMARY KEY)`)
	_ = herald.Subscribe(shipping, orderConfirmed, "schedule", func(ctx context.Context, tx herald.Tx, e confirmed) error {
		_, err := tx.SQL().ExecContext(ctx, st.Rebind(`INSERT INTO shipments (order_id) VALUES (?)`), e.OrderID)
		return err
	})
	sys.Start()

	sys.Run(t, func(ctx context.Context) error {
		return producer.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, orderPlaced, placed{OrderID: "o-1"}) })
	})
	var n int
	_ = st.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM shipments WHERE order_id = 'o-1'`).Scan(&n)
	fmt.Println("shipments of o-1:", n)
	// Output:
	// shipments of o-1: 1
}

// schedulingService builds the shipping service of the guarantee examples:
// its subscription "schedule" runs the handler handler makes for its store.
func schedulingService(handler func(st *store.Store) func(context.Context, herald.Tx, confirmed) error) func(context.Context, *store.Store, ...herald.Option) (heraldtest.Instance, error) {
	return func(ctx context.Context, st *store.Store, opts ...herald.Option) (heraldtest.Instance, error) {
		if _, err := st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS shipments (order_id TEXT NOT NULL)`); err != nil {
			return nil, err
		}
		svc, err := herald.New("shipping", append([]herald.Option{herald.WithStore(st)}, opts...)...)
		if err != nil {
			return nil, err
		}
		return svc, herald.Subscribe(svc, orderConfirmed, "schedule", handler(st))
	}
}

// shipmentRows is the effect of the guarantee examples: the shipments, in
// order.
func shipmentRows(ctx context.Context, st *store.Store) (any, error) {
	rows, err := st.DB().QueryContext(ctx, `SELECT order_id FROM shipments ORDER BY order_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Checking a handler's guarantees: it writes its effect in the transaction
// herald hands it, so every fault leaves the effect of one clean delivery.
func ExampleCheckHandler() {
	t := &exampleT{}
	defer t.done()

	r := heraldtest.CheckHandler(t, heraldtest.Check[confirmed]{
		Event: orderConfirmed, Subscription: "schedule",
		Events: []confirmed{{OrderID: "o-1"}, {OrderID: "o-2"}},
		Service: schedulingService(func(st *store.Store) func(context.Context, herald.Tx, confirmed) error {
			return func(ctx context.Context, tx herald.Tx, e confirmed) error {
				_, err := tx.SQL().ExecContext(ctx, st.Rebind(`INSERT INTO shipments (order_id) VALUES (?)`), e.OrderID)
				return err
			}
		}),
		Effect: shipmentRows,
	})
	fmt.Println(r.Subscription, "kept every guarantee:", r.OK())
	fmt.Println("faults:", r.Faults)
	// Output:
	// shipping/schedule kept every guarantee: true
	// faults: [none delivered twice crash between commit and ack crash inside the handler transient errors]
}

// A handler that sends its effect to an external system — here a ledger in
// memory, one per run's store, standing in for an HTTP API — without an
// idempotency key: a crash inside the handler, or a retry, makes the effect
// happen twice. Examine returns what CheckHandler would fail the test with.
func ExampleExamine() {
	t := &exampleT{}
	defer t.done()

	var mu sync.Mutex
	ledger := map[*store.Store][]string{} // the external system, per run
	r := heraldtest.Examine(t, heraldtest.Check[confirmed]{
		Event: orderConfirmed, Subscription: "schedule",
		Events: []confirmed{{OrderID: "o-1"}, {OrderID: "o-2"}},
		Service: schedulingService(func(st *store.Store) func(context.Context, herald.Tx, confirmed) error {
			return func(_ context.Context, _ herald.Tx, e confirmed) error {
				mu.Lock()
				defer mu.Unlock()
				ledger[st] = append(ledger[st], e.OrderID) // outside tx, no idempotency key
				return nil
			}
		}),
		Effect: func(_ context.Context, st *store.Store) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Sorted(slices.Values(ledger[st])), nil
		},
	})
	for _, v := range r.Violations {
		fmt.Printf("%s: events %v, one clean delivery gives %v, this run %v\n", v.Fault, v.Events, v.Want, v.Got)
	}
	// Output:
	// crash inside the handler: events [1], one clean delivery gives [o-1], this run [o-1 o-1]
	// transient errors: events [1], one clean delivery gives [o-1], this run [o-1 o-1 o-1]
}
