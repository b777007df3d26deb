package shop_test

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples/shop/contract"
	"github.com/heraldhq/herald/examples/shop/service/notifications"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/service/reviews"
	"github.com/heraldhq/herald/examples/shop/service/shipping"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/store"
)

// The shop's handlers keep herald's guarantees: each subscription checked
// by heraldtest under redeliveries, crashes, transient errors and the
// orders of its events the per-key guarantee allows. The checks run in
// parallel: a run mostly waits on its broker and store.

// confirmedOrders are two customers' orders, one with two products.
var confirmedOrders = []contract.OrderConfirmed{
	{OrderID: "o1", CustomerID: "c1", Email: "c1@example.com", TotalCts: 1200,
		Items: []contract.Item{{ProductID: "p-mug", Quantity: 1, PriceCts: 1200}}},
	{OrderID: "o2", CustomerID: "c2", Email: "c2@example.com", TotalCts: 3400,
		Items: []contract.Item{{ProductID: "p-mug", Quantity: 1, PriceCts: 1200}, {ProductID: "p-tee", Quantity: 1, PriceCts: 2200}}},
	{OrderID: "o3", CustomerID: "c1", Email: "c1@example.com", TotalCts: 2200,
		Items: []contract.Item{{ProductID: "p-tee", Quantity: 1, PriceCts: 2200}}},
}

// query reads rows of st as strings, one per row, in the query's order.
func query(ctx context.Context, st *store.Store, q string) (any, error) {
	rows, err := st.DB().QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		line := ""
		for i, v := range vals {
			line += fmt.Sprintf("%s=%s ", cols[i], v.String)
		}
		out = append(out, line)
	}
	return out, rows.Err()
}

// seedOrders writes the orders the shipment events refer to, as confirmed.
func seedOrders(ctx context.Context, st *store.Store) error {
	for _, id := range []string{"o1", "o2"} {
		if _, err := st.DB().ExecContext(ctx, st.Rebind(`INSERT INTO orders (id, customer_id, email, status, total_cents) VALUES (?, 'c1', 'c1@example.com', 'confirmed', 100)`), id); err != nil {
			return err
		}
	}
	return nil
}

// seedCustomers writes the customers the shipment events notify.
func seedCustomers(ctx context.Context, st *store.Store) error {
	for _, id := range []string{"c1", "c2"} {
		if _, err := st.DB().ExecContext(ctx, st.Rebind(`INSERT INTO customers (id, email, name, locale, time_zone, push) VALUES (?, ?, ?, 'en', 'UTC', '')`),
			id, id+"@example.com", id); err != nil {
			return err
		}
	}
	return nil
}

// mailbox is what the notifications service's e-mail sender got, per run
// (per store), as a provider that honours idempotency keys keeps it: once
// per notify.Message.Key. A notifier sends at least once — a send whose
// outcome it could not record as its instance stopped goes again — with
// the same key.
type mailbox struct {
	mu   sync.Mutex
	sent map[*store.Store]map[string]string // key → "to: subject"
}

func (m *mailbox) sender(st *store.Store) notify.Sender {
	return notify.FuncSender(notify.Email, "test-mailbox", func(_ context.Context, msg notify.Message) (notify.Receipt, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.sent[st] == nil {
			m.sent[st] = map[string]string{}
		}
		m.sent[st][msg.Key] = msg.To + ": " + msg.Subject
		return notify.Receipt{}, nil
	})
}

func (m *mailbox) of(st *store.Store) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Values(m.sent[st]))
}

// check runs the guarantee check c, and fails t when the clean run had no
// effect at all: a check whose effect stays empty compares nothing.
func check[T any](t *testing.T, c heraldtest.Check[T]) *heraldtest.Report {
	t.Helper()
	r := heraldtest.CheckHandler(t, c)
	if v := reflect.ValueOf(r.Effect); !v.IsValid() || v.Len() == 0 {
		t.Fatalf("%s: the clean run's effect is empty: %v", r.Subscription, r.Effect)
	}
	t.Logf("%s: %d runs, effect %v", r.Subscription, r.Runs, r.Effect)
	return r
}

func TestShopHandlersKeepTheGuarantees(t *testing.T) {
	t.Run("shipping/schedule-shipment", func(t *testing.T) {
		t.Parallel()
		check(t, heraldtest.Check[contract.OrderConfirmed]{
			Event: contract.OrderConfirmedV1, Subscription: "schedule-shipment", Events: confirmedOrders,
			Service: func(ctx context.Context, st *store.Store, opts ...herald.Option) (heraldtest.Instance, error) {
				return shipping.New(ctx, st, time.Hour, opts...) // dispatched in an hour: not in the check
			},
			Effect: func(ctx context.Context, st *store.Store) (any, error) {
				return query(ctx, st, `SELECT order_id, customer_id, status FROM shipments ORDER BY order_id`)
			},
		})
	})
	shipments := []contract.ShipmentScheduled{
		{OrderID: "o1", ShipmentID: "s1", CustomerID: "c1", ETA: "2026-12-04T10:00:00Z"},
		{OrderID: "o2", ShipmentID: "s2", CustomerID: "c2", ETA: "2026-12-04T11:00:00Z"},
	}
	dispatched := []contract.ShipmentDispatched{
		{OrderID: "o1", ShipmentID: "s1", CustomerID: "c1", Carrier: "dhl", Tracking: "t1"},
		{OrderID: "o2", ShipmentID: "s2", CustomerID: "c2", Carrier: "ups", Tracking: "t2"},
	}
	orderStatus := func(ctx context.Context, st *store.Store) (any, error) {
		return query(ctx, st, `SELECT id, status FROM orders ORDER BY id`)
	}
	newOrders := func(ctx context.Context, st *store.Store, opts ...herald.Option) (heraldtest.Instance, error) {
		return orders.New(ctx, st, opts...)
	}
	t.Run("orders/track-scheduled", func(t *testing.T) {
		t.Parallel()
		r := check(t, heraldtest.Check[contract.ShipmentScheduled]{
			Event: contract.ShipmentScheduledV1, Subscription: "track-scheduled", Events: shipments,
			Service: newOrders, Seed: seedOrders, Effect: orderStatus,
		})
		if want := []string{"id=o1 status=scheduled ", "id=o2 status=scheduled "}; !reflect.DeepEqual(r.Effect, want) {
			t.Errorf("effect %q, want %q", r.Effect, want)
		}
	})
	t.Run("orders/track-dispatched", func(t *testing.T) {
		t.Parallel()
		r := check(t, heraldtest.Check[contract.ShipmentDispatched]{
			Event: contract.ShipmentDispatchedV1, Subscription: "track-dispatched", Events: dispatched,
			Service: newOrders, Seed: seedOrders, Effect: orderStatus,
		})
		if want := []string{"id=o1 status=shipped ", "id=o2 status=shipped "}; !reflect.DeepEqual(r.Effect, want) {
			t.Errorf("effect %q, want %q", r.Effect, want)
		}
	})
	newReviews := func(ctx context.Context, st *store.Store, opts ...herald.Option) (heraldtest.Instance, error) {
		return reviews.New(ctx, st, opts...)
	}
	t.Run("reviews/verify-buyers", func(t *testing.T) {
		t.Parallel()
		check(t, heraldtest.Check[contract.OrderConfirmed]{
			Event: contract.OrderConfirmedV1, Subscription: "verify-buyers", Events: confirmedOrders, Service: newReviews,
			Effect: func(ctx context.Context, st *store.Store) (any, error) {
				return query(ctx, st, `SELECT customer_id, product_id FROM verified_buyers ORDER BY customer_id, product_id`)
			},
		})
	})
	t.Run("reviews/mark-trending", func(t *testing.T) {
		t.Parallel()
		check(t, heraldtest.Check[contract.ProductTrending]{
			Event: contract.ProductTrendingV1, Subscription: "mark-trending", Service: newReviews,
			Events: []contract.ProductTrending{{ProductID: "p-mug", Orders: 3, Threshold: 3}, {ProductID: "p-tee", Orders: 3, Threshold: 3}},
			Effect: func(ctx context.Context, st *store.Store) (any, error) {
				return query(ctx, st, `SELECT product_id, orders FROM trending_products ORDER BY product_id`) // not event_id: new in each run
			},
		})
	})

	// The notifications service: its subscriptions emit notifications, and
	// its notifier's routes (subscriptions too) send them; the effect is
	// what the customers got.
	mails := &mailbox{sent: map[*store.Store]map[string]string{}}
	var mu sync.Mutex
	live := map[*store.Store]*notifications.Service{} // the instance of each run now running
	newNotifications := func(ctx context.Context, st *store.Store, opts ...herald.Option) (heraldtest.Instance, error) {
		s, err := notifications.New(ctx, st, notifications.Senders{Email: mails.sender(st)},
			notifications.Config{DigestWindow: time.Hour}, opts...)
		if err == nil {
			mu.Lock()
			live[st] = s
			mu.Unlock()
		}
		return s, err
	}
	t.Run("notifications/confirmation", func(t *testing.T) {
		t.Parallel()
		check(t, heraldtest.Check[contract.OrderConfirmed]{
			Event: contract.OrderConfirmedV1, Subscription: "confirmation", Events: confirmedOrders, Service: newNotifications,
			Effect: func(ctx context.Context, st *store.Store) (any, error) {
				customers, err := query(ctx, st, `SELECT id, email FROM customers ORDER BY id`)
				return []any{customers, mails.of(st)}, err
			},
		})
	})
	t.Run("notifications/shipment-updates", func(t *testing.T) {
		t.Parallel()
		// The updates collect into a digest (an hour's window here): the
		// effect is the delivery log, each update digested once.
		check(t, heraldtest.Check[contract.ShipmentScheduled]{
			Event: contract.ShipmentScheduledV1, Subscription: "shipment-updates", Events: shipments, Service: newNotifications,
			Seed: seedCustomers,
			Effect: func(ctx context.Context, st *store.Store) (any, error) {
				mu.Lock()
				s := live[st]
				mu.Unlock()
				ds, err := s.Notifier.Deliveries(ctx, notify.DeliveryFilter{})
				var out []string
				for _, d := range ds {
					out = append(out, fmt.Sprintf("%s %s %s %s", d.Recipient, d.Channel, d.Template, d.State))
				}
				slices.Sort(out)
				return out, err
			},
		})
	})
	t.Run("notifications/shipped", func(t *testing.T) {
		t.Parallel()
		check(t, heraldtest.Check[contract.ShipmentDispatched]{
			Event: contract.ShipmentDispatchedV1, Subscription: "shipped", Events: dispatched, Service: newNotifications,
			Seed:   seedCustomers,
			Effect: func(_ context.Context, st *store.Store) (any, error) { return mails.of(st), nil },
		})
	})
}
