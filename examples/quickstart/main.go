// Quickstart: two services on the embedded defaults (SQLite files and an
// in-process NATS JetStream). orders records a domain event in the same
// transaction as its own row; an explicit translation turns it into the
// integration event shop.order.confirmed; shipping handles that exactly once
// in its own transaction.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/store/sqlite"
)

// OrderPlaced is private to orders: a domain event.
type OrderPlaced struct {
	OrderID string
	Total   int
}

// OrderConfirmed is the public contract other services rely on.
type OrderConfirmed struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

var (
	orderPlaced    = herald.Domain[OrderPlaced]("orders.placed")
	orderConfirmed = herald.Integration[OrderConfirmed]("shop.order.confirmed",
		herald.Version(1), herald.KeyBy(func(e OrderConfirmed) string { return e.OrderID }))
)

func main() {
	dir, err := os.MkdirTemp("", "herald-quickstart-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, dir, 3); err != nil {
		log.Fatal(err)
	}
}

// run places n orders and waits until shipping has scheduled each one.
func run(ctx context.Context, dir string, n int) error {
	b, err := natsjs.Embedded(ctx, natsjs.WithDataDir(filepath.Join(dir, "nats")))
	if err != nil {
		return err
	}
	defer b.Close()

	// orders: its own table, a domain event, and the translation out.
	ordersDB, err := sqlite.Open(ctx, filepath.Join(dir, "orders.db"))
	if err != nil {
		return err
	}
	defer ordersDB.Close()
	if _, err := ordersDB.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total INTEGER)`); err != nil {
		return err
	}
	orders, err := herald.New("orders", herald.WithStore(ordersDB), herald.WithBroker(b))
	if err != nil {
		return err
	}
	defer orders.Close()
	if err := herald.Translate(orders, orderPlaced, orderConfirmed,
		func(ctx context.Context, e OrderPlaced) (OrderConfirmed, error) {
			return OrderConfirmed{OrderID: e.OrderID, Total: e.Total}, nil
		}); err != nil {
		return err
	}

	// shipping: subscribes to the public contract only.
	shippingDB, err := sqlite.Open(ctx, filepath.Join(dir, "shipping.db"))
	if err != nil {
		return err
	}
	defer shippingDB.Close()
	if _, err := shippingDB.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS shipments (order_id TEXT PRIMARY KEY)`); err != nil {
		return err
	}
	shipping, err := herald.New("shipping", herald.WithStore(shippingDB), herald.WithBroker(b))
	if err != nil {
		return err
	}
	defer shipping.Close()
	if err := herald.Subscribe(shipping, orderConfirmed, "schedule-shipment",
		func(ctx context.Context, tx herald.Tx, e OrderConfirmed) error {
			_, err := tx.SQL().ExecContext(ctx, `INSERT INTO shipments (order_id) VALUES (?)`, e.OrderID)
			return err
		}); err != nil {
		return err
	}

	if err := orders.Start(ctx); err != nil {
		return err
	}
	if err := shipping.Start(ctx); err != nil {
		return err
	}

	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("order-%d", i)
		err := orders.Do(ctx, func(tx herald.Tx) error { // one DB transaction
			if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO orders (id, total) VALUES (?, ?)`, id, 100*i); err != nil {
				return err
			}
			return herald.Record(tx, orderPlaced, OrderPlaced{OrderID: id, Total: 100 * i})
		})
		if err != nil {
			return err
		}
	}
	for {
		var shipped int
		if err := shippingDB.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM shipments`).Scan(&shipped); err != nil {
			return err
		}
		if shipped == n {
			fmt.Printf("placed %d orders, shipping scheduled %d\n", n, shipped)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("shipping scheduled %d of %d orders: %w", shipped, n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
