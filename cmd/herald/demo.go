package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/spf13/cobra"
)

type demoFlags struct {
	rate     int
	duration time.Duration
	dataDir  string
	keep     bool
	timeout  time.Duration
}

func newDemo() *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run an event-driven system on the embedded defaults, with a load generator",
		Long: `demo starts an in-process NATS JetStream and two services with their own SQLite
databases: orders records OrderPlaced with each order and translates it to the
integration event shop.order.confirmed; shipping schedules a shipment for each
one, exactly once. A load generator places orders at --rate for --duration,
then demo checks that every order was shipped and exits non-zero if not.`,
		Example: `  herald demo
  herald demo --rate 500 --duration 30s
  herald demo --data-dir ./demo-data --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.rate < 1 {
				return fmt.Errorf("--rate %d: want at least 1 order per second", f.rate)
			}
			if f.duration <= 0 {
				return fmt.Errorf("--duration %v: want a positive duration", f.duration)
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().IntVar(&f.rate, "rate", 100, "orders placed per second")
	cmd.Flags().DurationVar(&f.duration, "duration", 10*time.Second, "how long to place orders")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "where the databases and the JetStream files go (default: a temporary directory)")
	cmd.Flags().BoolVar(&f.keep, "keep", false, "keep the data directory afterwards")
	cmd.Flags().DurationVar(&f.timeout, "drain-timeout", 30*time.Second, "how long to wait for the last orders to be shipped")
	return cmd
}

type orderPlaced struct {
	OrderID  string `json:"order_id"`
	Customer string `json:"customer"`
	Total    int    `json:"total"`
}

type orderConfirmed struct {
	OrderID  string `json:"order_id"`
	Customer string `json:"customer"`
	Total    int    `json:"total"`
}

type shipmentScheduled struct {
	OrderID string `json:"order_id"`
}

var (
	demoOrderPlaced    = herald.Domain[orderPlaced]("orders.placed")
	demoOrderConfirmed = herald.Integration[orderConfirmed]("shop.order.confirmed",
		herald.KeyBy(func(e orderConfirmed) string { return e.OrderID }))
	demoShipmentScheduled = herald.Domain[shipmentScheduled]("shipping.scheduled")
)

func runDemo(ctx context.Context, out io.Writer, f demoFlags) error {
	dir := f.dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "herald-demo-")
		if err != nil {
			return err
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !f.keep && f.dataDir == "" {
		defer os.RemoveAll(dir)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	b, err := natsjs.Embedded(ctx, natsjs.WithDataDir(filepath.Join(dir, "nats")), natsjs.WithLogger(log))
	if err != nil {
		return fmt.Errorf("start embedded NATS JetStream: %w", err)
	}
	defer b.Close()

	open := func(name, schema string) (*store.Store, error) {
		st, err := sqlite.Open(ctx, filepath.Join(dir, name+".db"))
		if err != nil {
			return nil, err
		}
		if _, err := st.DB().ExecContext(ctx, schema); err != nil {
			st.Close()
			return nil, err
		}
		return st, nil
	}
	ordersDB, err := open("orders", `CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, total INTEGER NOT NULL)`)
	if err != nil {
		return err
	}
	defer ordersDB.Close()
	shippingDB, err := open("shipping", `CREATE TABLE IF NOT EXISTS shipments (order_id TEXT PRIMARY KEY, scheduled_at INTEGER NOT NULL)`)
	if err != nil {
		return err
	}
	defer shippingDB.Close()

	orders, err := herald.New("orders", herald.WithStore(ordersDB), herald.WithBroker(b), herald.WithLogger(log))
	if err != nil {
		return err
	}
	defer orders.Close()
	if err := herald.Translate(orders, demoOrderPlaced, demoOrderConfirmed, func(ctx context.Context, e orderPlaced) (orderConfirmed, error) {
		return orderConfirmed(e), nil
	}); err != nil {
		return err
	}

	var shipped atomic.Int64
	shipping, err := herald.New("shipping", herald.WithStore(shippingDB), herald.WithBroker(b), herald.WithLogger(log))
	if err != nil {
		return err
	}
	defer shipping.Close()
	if err := shipping.Register(demoShipmentScheduled); err != nil {
		return err
	}
	if err := herald.Subscribe(shipping, demoOrderConfirmed, "schedule-shipment", func(ctx context.Context, tx herald.Tx, e orderConfirmed) error {
		if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO shipments (order_id, scheduled_at) VALUES (?, ?)`, e.OrderID, time.Now().UnixNano()); err != nil {
			return err
		}
		shipped.Add(1)
		return herald.Record(tx, demoShipmentScheduled, shipmentScheduled{OrderID: e.OrderID})
	}); err != nil {
		return err
	}
	for _, s := range []*herald.Service{orders, shipping} {
		if err := s.Start(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "herald demo: embedded NATS JetStream + SQLite in %s\n", dir)
	fmt.Fprintf(out, "placing %d orders/s for %v (Ctrl-C stops early)\n", f.rate, f.duration)

	var placed atomic.Int64
	loadCtx, stopLoad := context.WithTimeout(ctx, f.duration)
	defer stopLoad()
	loadErr := make(chan error, 1)
	go func() { loadErr <- placeOrders(loadCtx, orders, f.rate, &placed) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	report := func() {
		backlog, age, _ := orders.OutboxStats(context.WithoutCancel(ctx))
		dls, _ := shipping.DeadLetters(context.WithoutCancel(ctx), herald.DeadLetterFilter{})
		fmt.Fprintf(out, "%5.1fs  placed %6d  shipped %6d  outbox %4d (oldest %v)  dead letters %d\n",
			time.Since(start).Seconds(), placed.Load(), shipped.Load(), backlog, age.Round(time.Millisecond), len(dls))
	}
	for done := false; !done; {
		select {
		case err := <-loadErr:
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				return err
			}
			done = true
		case <-tick.C:
			report()
		}
	}
	// Drain: wait for the last orders to reach shipping.
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
	defer cancel()
	for shipped.Load() < placed.Load() && drainCtx.Err() == nil {
		select {
		case <-drainCtx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	report()
	return verifyDemo(context.WithoutCancel(ctx), out, ordersDB, shippingDB, shipping, time.Since(start))
}

// placeOrders places rate orders per second until ctx ends.
func placeOrders(ctx context.Context, orders *herald.Service, rate int, placed *atomic.Int64) error {
	interval := time.Second / time.Duration(rate)
	next := time.Now()
	for i := 1; ; i++ {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		id := fmt.Sprintf("order-%06d", i)
		customer := fmt.Sprintf("customer-%03d", i%50)
		err := orders.Do(ctx, func(tx herald.Tx) error {
			if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO orders (id, customer, total) VALUES (?, ?, ?)`, id, customer, 1000+i%97); err != nil {
				return err
			}
			return herald.Record(tx, demoOrderPlaced, orderPlaced{OrderID: id, Customer: customer, Total: 1000 + i%97})
		})
		if err != nil {
			return err
		}
		placed.Add(1)
	}
}

// verifyDemo checks, from the services' own tables, that every order was
// shipped exactly once.
func verifyDemo(ctx context.Context, out io.Writer, ordersDB, shippingDB *store.Store, shipping *herald.Service, elapsed time.Duration) error {
	var nOrders, nShipments, missing int
	if err := ordersDB.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&nOrders); err != nil {
		return err
	}
	if err := shippingDB.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM shipments`).Scan(&nShipments); err != nil {
		return err
	}
	// orders and shipping have separate databases: compare the id sets.
	rows, err := ordersDB.DB().QueryContext(ctx, `SELECT id FROM orders`)
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids[id] = true
	}
	rows.Close()
	rows, err = shippingDB.DB().QueryContext(ctx, `SELECT order_id FROM shipments`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		delete(ids, id)
	}
	rows.Close()
	missing = len(ids)
	dls, err := shipping.DeadLetters(ctx, herald.DeadLetterFilter{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nsummary: %d orders placed, %d shipments scheduled, %d missing, %d dead letters, %.0f orders/s\n",
		nOrders, nShipments, missing, len(dls), float64(nOrders)/elapsed.Seconds())
	if missing > 0 || nShipments != nOrders || len(dls) > 0 {
		return fmt.Errorf("demo incomplete: %d of %d orders not shipped, %d dead letters", missing, nOrders, len(dls))
	}
	fmt.Fprintln(out, "every order was shipped exactly once")
	return nil
}
