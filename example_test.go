package herald_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
)

// The contracts of the examples: a domain event of the orders service, the
// integration event it is translated to (two versions), and a notification.
type OrderPlaced struct {
	OrderID string
	Total   int
}

type OrderConfirmed struct {
	OrderID string `json:"order_id"`
	Cents   int    `json:"cents"`
}

type OrderConfirmedV1 struct {
	OrderID string  `json:"order_id"`
	Euros   float64 `json:"euros"`
}

type OrderMail struct {
	OrderID string `json:"order_id"`
	To      string `json:"to"`
}

var (
	exOrderPlaced      = herald.Domain[OrderPlaced]("orders.placed")
	exOrderConfirmed   = herald.Integration[OrderConfirmed]("shop.order.confirmed", herald.Version(2), herald.KeyBy(func(e OrderConfirmed) string { return e.OrderID }))
	exOrderConfirmedV1 = herald.Integration[OrderConfirmedV1]("shop.order.confirmed", herald.Version(1), herald.KeyBy(func(e OrderConfirmedV1) string { return e.OrderID }))
	exOrderMail        = herald.Notification[OrderMail]("shop.order.mail")
)

// exampleDB opens a throw-away SQLite database in dir.
func exampleDB(ctx context.Context, dir, name string) *store.Store {
	st, err := sqlite.Open(ctx, filepath.Join(dir, name+".db"))
	if err != nil {
		panic(err)
	}
	return st
}

// exampleDir is a temporary directory, for examples without a broker.
func exampleDir() (dir string, done func()) {
	dir, err := os.MkdirTemp("", "herald-example-")
	if err != nil {
		panic(err)
	}
	return dir, func() { os.RemoveAll(dir) }
}

// exampleWorld is a temporary directory and an in-process JetStream.
func exampleWorld(ctx context.Context) (dir string, b *natsjs.Broker, done func()) {
	dir, err := os.MkdirTemp("", "herald-example-")
	if err != nil {
		panic(err)
	}
	b, err = natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	return dir, b, func() { b.Close(); os.RemoveAll(dir) }
}

var quietLog = herald.WithLogger(slog.New(slog.DiscardHandler))

// Record appends a domain event to the service's event log and runs its
// domain handlers in the same transaction as the caller's own rows; a
// handler's error rolls everything back. No broker is needed for the domain
// tier.
func ExampleRecord() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "herald-example-")
	defer os.RemoveAll(dir)
	db := exampleDB(ctx, dir, "orders")
	defer db.Close()

	orders, _ := herald.New("orders", herald.WithStore(db), quietLog)
	_ = herald.Handle(orders, exOrderPlaced, "check-total", func(ctx context.Context, tx herald.Tx, e OrderPlaced) error {
		if e.Total <= 0 {
			return fmt.Errorf("order %s: total %d", e.OrderID, e.Total)
		}
		fmt.Println("handled", e.OrderID, "in the order's transaction")
		return nil
	})
	_, _ = db.DB().Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY)`)
	place := func(id string, total int) error {
		return orders.Do(ctx, func(tx herald.Tx) error {
			if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, id); err != nil {
				return err
			}
			return herald.Record(tx, exOrderPlaced, OrderPlaced{OrderID: id, Total: total})
		})
	}
	fmt.Println(place("o-1", 1200))
	fmt.Println(place("o-2", 0) != nil)
	var n int
	_ = db.DB().QueryRow(`SELECT COUNT(*) FROM orders`).Scan(&n)
	fmt.Println("orders stored:", n)
	// Output:
	// handled o-1 in the order's transaction
	// <nil>
	// true
	// orders stored: 1
}

// Translate is the only way a domain event leaves its service: the
// integration event goes to the outbox in the same transaction, the relay
// publishes it after commit, and Subscribe's handler runs in the consumer's
// transaction with an inbox row, so it takes effect once.
func ExampleSubscribe() {
	ctx := context.Background()
	dir, b, done := exampleWorld(ctx)
	defer done()

	orders, _ := herald.New("orders", herald.WithStore(exampleDB(ctx, dir, "orders")), herald.WithBroker(b), quietLog)
	_ = herald.Translate(orders, exOrderPlaced, exOrderConfirmed, func(ctx context.Context, e OrderPlaced) (OrderConfirmed, error) {
		return OrderConfirmed{OrderID: e.OrderID, Cents: e.Total}, nil
	})
	shipping, _ := herald.New("shipping", herald.WithStore(exampleDB(ctx, dir, "shipping")), herald.WithBroker(b), quietLog)
	got := make(chan OrderConfirmed, 1)
	_ = herald.Subscribe(shipping, exOrderConfirmed, "schedule-shipment", func(ctx context.Context, tx herald.Tx, e OrderConfirmed) error {
		got <- e
		return nil
	})
	_ = orders.Start(ctx)
	defer orders.Close()
	_ = shipping.Start(ctx)
	defer shipping.Close()

	_ = orders.Do(ctx, func(tx herald.Tx) error {
		return herald.Record(tx, exOrderPlaced, OrderPlaced{OrderID: "o-1", Total: 1200})
	})
	e := <-got
	fmt.Printf("shipping got %s, %d cents\n", e.OrderID, e.Cents)
	// Output: shipping got o-1, 1200 cents
}

// Upcast lets a consumer of version 2 take the version 1 events an older
// producer still publishes.
func ExampleUpcast() {
	ctx := context.Background()
	dir, b, done := exampleWorld(ctx)
	defer done()

	oldOrders, _ := herald.New("orders", herald.WithStore(exampleDB(ctx, dir, "orders")), herald.WithBroker(b), quietLog)
	_ = herald.Translate(oldOrders, exOrderPlaced, exOrderConfirmedV1, func(ctx context.Context, e OrderPlaced) (OrderConfirmedV1, error) {
		return OrderConfirmedV1{OrderID: e.OrderID, Euros: float64(e.Total) / 100}, nil
	})
	shipping, _ := herald.New("shipping", herald.WithStore(exampleDB(ctx, dir, "shipping")), herald.WithBroker(b), quietLog)
	_ = herald.Upcast(shipping, exOrderConfirmedV1, exOrderConfirmed, func(o OrderConfirmedV1) (OrderConfirmed, error) {
		return OrderConfirmed{OrderID: o.OrderID, Cents: int(o.Euros*100 + 0.5)}, nil
	})
	got := make(chan OrderConfirmed, 1)
	_ = herald.Subscribe(shipping, exOrderConfirmed, "schedule-shipment", func(ctx context.Context, tx herald.Tx, e OrderConfirmed) error {
		got <- e
		return nil
	})
	_ = oldOrders.Start(ctx)
	defer oldOrders.Close()
	_ = shipping.Start(ctx)
	defer shipping.Close()

	_ = oldOrders.Do(ctx, func(tx herald.Tx) error {
		return herald.Record(tx, exOrderPlaced, OrderPlaced{OrderID: "o-7", Total: 995})
	})
	e := <-got
	fmt.Printf("v1 event reached the v2 handler: %s, %d cents\n", e.OrderID, e.Cents)
	// Output: v1 event reached the v2 handler: o-7, 995 cents
}

// A handler that returns herald.Permanent (or fails on every attempt) makes
// its event a dead letter with the reason; operators list, replay and purge
// dead letters through the service (or `herald dlq`).
func ExampleService_DeadLetters() {
	ctx := context.Background()
	dir, b, done := exampleWorld(ctx)
	defer done()

	orders, _ := herald.New("orders", herald.WithStore(exampleDB(ctx, dir, "orders")), herald.WithBroker(b), quietLog)
	_ = herald.Translate(orders, exOrderPlaced, exOrderConfirmed, func(ctx context.Context, e OrderPlaced) (OrderConfirmed, error) {
		return OrderConfirmed{OrderID: e.OrderID, Cents: e.Total}, nil
	})
	shipping, _ := herald.New("shipping", herald.WithStore(exampleDB(ctx, dir, "shipping")), herald.WithBroker(b), quietLog)
	_ = herald.Subscribe(shipping, exOrderConfirmed, "schedule-shipment", func(ctx context.Context, tx herald.Tx, e OrderConfirmed) error {
		return herald.Permanent(errors.New("no address for " + e.OrderID))
	})
	_ = orders.Start(ctx)
	defer orders.Close()
	_ = shipping.Start(ctx)
	defer shipping.Close()

	_ = orders.Do(ctx, func(tx herald.Tx) error {
		return herald.Record(tx, exOrderPlaced, OrderPlaced{OrderID: "o-9", Total: 100})
	})
	var dls []herald.DeadLetter
	for len(dls) == 0 {
		time.Sleep(10 * time.Millisecond)
		dls, _ = shipping.DeadLetters(ctx, herald.DeadLetterFilter{})
	}
	d := dls[0]
	fmt.Println(d.Subscription, d.Type, d.Reason, d.Attempts)
	fmt.Println(d.LastError)
	// Output:
	// schedule-shipment shop.order.confirmed permanent 1
	// permanent: no address for o-9
}

// Notify writes a notification event to the outbox in the business
// transaction; the notifier's service receives it with Receive (the notify
// package builds channels, preferences and a delivery log on it).
func ExampleNotify() {
	ctx := context.Background()
	dir, b, done := exampleWorld(ctx)
	defer done()

	orders, _ := herald.New("orders", herald.WithStore(exampleDB(ctx, dir, "orders")), herald.WithBroker(b), quietLog)
	_ = orders.Register(exOrderMail)
	notifier, _ := herald.New("notifications", herald.WithStore(exampleDB(ctx, dir, "notifications")), herald.WithBroker(b), quietLog)
	got := make(chan OrderMail, 1)
	_ = herald.Receive(notifier, exOrderMail, "mail", func(ctx context.Context, tx herald.Tx, m OrderMail) error {
		got <- m
		return nil
	})
	_ = orders.Start(ctx)
	defer orders.Close()
	_ = notifier.Start(ctx)
	defer notifier.Close()

	_ = orders.Do(ctx, func(tx herald.Tx) error {
		return herald.Notify(tx, exOrderMail, OrderMail{OrderID: "o-1", To: "ada@example.com"})
	})
	m := <-got
	fmt.Println("to deliver:", m.OrderID, m.To)
	// Output: to deliver: o-1 ada@example.com
}

// An observer hears every hop of every event. It cannot stop the flow: a
// panic is contained, and an observer that is not an InlineObserver gets
// its observations from a queue of its own, in order; Close delivers what
// is still queued.
func ExampleWithObserver() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "herald-example-")
	defer os.RemoveAll(dir)
	db := exampleDB(ctx, dir, "orders")
	defer db.Close()

	var mu sync.Mutex
	var hops []string
	seen := herald.ObserverFunc(func(ctx context.Context, o herald.Observation) {
		mu.Lock()
		defer mu.Unlock()
		hops = append(hops, fmt.Sprintf("%s %s %s %s", o.Service, o.Hop, o.Event.Type, o.Outcome))
	})
	orders, _ := herald.New("orders", herald.WithStore(db), herald.WithObserver(seen), quietLog)
	_ = orders.Register(exOrderPlaced)
	_ = orders.Do(ctx, func(tx herald.Tx) error {
		return herald.Record(tx, exOrderPlaced, OrderPlaced{OrderID: "o-1", Total: 1})
	})
	_ = orders.Close() // delivers what the observer's queue holds

	mu.Lock()
	sort.Strings(hops)
	fmt.Println(hops)
	mu.Unlock()
	// Output: [orders record orders.placed ok]
}

// Retry is one option for two calls: passed to New it is the default retry
// policy of every subscription of the service, passed to Subscribe (or
// Receive) it is that subscription's own. An option that fits neither, such
// as BatchSize given to New, does not compile.
func ExampleRetry() {
	ctx := context.Background()
	dir, done := exampleDir()
	defer done()

	patient := herald.RetryPolicy{MaxAttempts: 20, BaseDelay: 100 * time.Millisecond, MaxDelay: 5 * time.Second}
	shipping, err := herald.New("shipping", herald.WithStore(exampleDB(ctx, dir, "shipping")), quietLog,
		herald.Retry(herald.RetryPolicy{MaxAttempts: 3, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Second}))
	if err != nil {
		panic(err)
	}
	err = herald.Subscribe(shipping, exOrderConfirmed, "schedule-shipment",
		func(ctx context.Context, tx herald.Tx, e OrderConfirmed) error { return nil },
		herald.Retry(patient), herald.BatchSize(32))
	fmt.Println("subscribed:", err == nil)

	err = herald.Subscribe(shipping, exOrderConfirmed, "bill",
		func(ctx context.Context, tx herald.Tx, e OrderConfirmed) error { return nil },
		herald.Retry(herald.RetryPolicy{MaxAttempts: 0}))
	fmt.Println("invalid policy:", errors.Is(err, herald.ErrInvalidOption))
	// Output:
	// subscribed: true
	// invalid policy: true
}

// Emits declares what a handler records and notifies, for the catalog: the
// same option for a domain handler (Handle) and for a subscription
// (Subscribe, Receive). The manifest shows it.
func ExampleEmits() {
	ctx := context.Background()
	dir, done := exampleDir()
	defer done()

	orders, err := herald.New("orders", herald.WithStore(exampleDB(ctx, dir, "orders")), quietLog,
		herald.ServiceVersion("1.4.2"))
	if err != nil {
		panic(err)
	}
	mailed := herald.Domain[OrderMail]("orders.mailed")
	_ = herald.Handle(orders, exOrderPlaced, "mail-buyer",
		func(ctx context.Context, tx herald.Tx, e OrderPlaced) error {
			if err := herald.Notify(tx, exOrderMail, OrderMail{OrderID: e.OrderID}); err != nil {
				return err
			}
			return herald.Record(tx, mailed, OrderMail{OrderID: e.OrderID})
		},
		herald.Emits(exOrderMail, mailed))
	_ = herald.Subscribe(orders, exOrderConfirmed, "confirm",
		func(ctx context.Context, tx herald.Tx, e OrderConfirmed) error { return nil },
		herald.Emits(mailed))

	m, err := orders.Manifest()
	if err != nil {
		panic(err)
	}
	fmt.Println("version:", m.Version)
	for _, h := range m.Handlers {
		fmt.Println("handler", h.Name, "emits", h.Emits)
	}
	for _, s := range m.Subscriptions {
		fmt.Println("subscription", s.Name, "emits", s.Emits)
	}
	// Output:
	// version: 1.4.2
	// handler mail-buyer emits [shop.order.mail v1 orders.mailed v1]
	// subscription confirm emits [orders.mailed v1]
}
