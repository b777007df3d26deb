package heraldtest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
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
