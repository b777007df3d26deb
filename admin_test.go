package herald_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/heraldtest"
)

type adminOrder struct {
	OrderID string `json:"order_id"`
}

var (
	adminPlaced    = herald.Domain[adminOrder]("admintest.placed")
	adminConfirmed = herald.Integration[adminOrder]("admintest.order.confirmed", herald.Version(1),
		herald.KeyBy(func(o adminOrder) string { return o.OrderID }))
)

// TestAdminOverTheBroker: dead letters listed, shown, replayed (dry run
// first) and purged, stats and the manifest read, all through the broker,
// from a client that has no database; bad requests refused naming what is
// wrong.
func TestAdminOverTheBroker(t *testing.T) {
	sys := heraldtest.New(t)
	orders, shipping := sys.Service("orders"), sys.Service("shipping")
	must(t, herald.Translate(orders, adminPlaced, adminConfirmed, func(_ context.Context, o adminOrder) (adminOrder, error) { return o, nil }))
	var broken atomic.Bool
	broken.Store(true)
	var handled atomic.Int32
	must(t, herald.Subscribe(shipping, adminConfirmed, "schedule", func(_ context.Context, _ herald.Tx, o adminOrder) error {
		if broken.Load() {
			return herald.Permanent(errors.New("no address for " + o.OrderID))
		}
		handled.Add(1)
		return nil
	}))
	sys.Start()
	for _, id := range []string{"o1", "o2"} {
		flow := sys.Run(t, func(ctx context.Context) error {
			return orders.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, adminPlaced, adminOrder{OrderID: id}) })
		})
		if len(flow.DeadLetters) != 1 {
			t.Fatalf("order %s: dead letters %v, want 1", id, flow.DeadLetters)
		}
	}
	ctx := context.Background()
	c := admin.NewClient(sys.Broker())

	list, err := c.DeadLetters(ctx, "shipping", admin.Filter{Subscription: "schedule"})
	must(t, err)
	if len(list.DeadLetters) != 2 || list.More || list.DeadLetters[0].Reason != "permanent" || list.DeadLetters[0].Data != nil {
		t.Fatalf("list %+v, want 2 permanent dead letters, without their data", list)
	}
	one, err := c.DeadLetters(ctx, "shipping", admin.Filter{Limit: 1})
	must(t, err)
	if len(one.DeadLetters) != 1 || !one.More {
		t.Fatalf("list of 1: %+v, want 1 and more", one)
	}
	d, err := c.DeadLetter(ctx, "shipping", list.DeadLetters[0].ID)
	must(t, err)
	var body adminOrder
	if err := json.Unmarshal(d.Data, &body); err != nil || body.OrderID != "o1" || d.Header["ce-type"] != "admintest.order.confirmed" {
		t.Fatalf("show: %+v (%v), want o1's message", d, err)
	}
	if _, err := c.DeadLetter(ctx, "shipping", 999999); !admin.IsNotFound(err) {
		t.Fatalf("show of no such id: %v, want not found", err)
	}

	dry, err := c.Replay(ctx, "shipping", admin.Replay{Filter: admin.Filter{Subscription: "schedule"}, DryRun: true})
	must(t, err)
	if !dry.DryRun || len(dry.DeadLetters) != 2 || dry.Subscriptions["schedule"] != 2 {
		t.Fatalf("dry run %+v, want 2 events for schedule", dry)
	}
	if again, _ := c.DeadLetters(ctx, "shipping", admin.Filter{}); len(again.DeadLetters) != 2 {
		t.Fatalf("after a dry run %d dead letters, want 2", len(again.DeadLetters))
	}

	broken.Store(false)
	flow := sys.Run(t, func(context.Context) error {
		_, err := c.Replay(ctx, "shipping", admin.Replay{Filter: admin.Filter{IDs: []int64{list.DeadLetters[0].ID}}})
		return err
	})
	if len(flow.Handled("shipping", "schedule")) != 1 || handled.Load() != 1 {
		t.Fatalf("the replay's flow: handled %d (handler ran %d times), want 1\n%s", len(flow.Handled("shipping", "schedule")), handled.Load(), flow)
	}
	left, err := c.DeadLetters(ctx, "shipping", admin.Filter{})
	must(t, err)
	if len(left.DeadLetters) != 1 {
		t.Fatalf("after replaying one, %d dead letters, want 1", len(left.DeadLetters))
	}

	if _, err := c.Purge(ctx, "shipping", admin.Purge{}); !isAdminCode(err, 400) || !strings.Contains(err.Error(), "set all") {
		t.Fatalf("purge with an empty filter: %v, want refused", err)
	}
	p, err := c.Purge(ctx, "shipping", admin.Purge{All: true})
	must(t, err)
	if p.Purged != 1 {
		t.Fatalf("purged %d, want 1", p.Purged)
	}

	st, err := c.Stats(ctx, "shipping")
	must(t, err)
	if st.Service != "shipping" || st.Instance == "" || len(st.Subscriptions) != 1 || st.Subscriptions[0].Subscription != "schedule" {
		t.Fatalf("stats %+v", st)
	}
	m, err := c.Manifest(ctx, "orders")
	must(t, err)
	if m.Service != "orders" || len(m.Translations) != 1 {
		t.Fatalf("manifest %+v", m)
	}

	// Bad requests, straight on the wire.
	for _, tc := range []struct{ req, want string }{
		{`{"v":2}`, "protocol version 2; this service speaks 1"},
		{`{"subscription":"x"}`, "no protocol version"},
		{`{"v":1,"subscripton":"x"}`, `unknown field "subscripton"`},
		{`[1,2]`, "not a JSON object"},
		{`{"v":1,"limit":5000}`, "limit 5000"},
	} {
		_, err := sys.Broker().AdminRequest(ctx, "shipping", admin.EndpointList, []byte(tc.req))
		if !isAdminCode(err, 400) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("request %s: %v, want a 400 saying %q", tc.req, err, tc.want)
		}
	}
	if _, err := c.Stats(ctx, "nobody"); err == nil || !strings.Contains(err.Error(), "no instance") {
		t.Errorf("stats of a service that does not run: %v", err)
	}

	// nats micro ls: every instance answers micro's INFO as
	// herald-<service>, with its endpoints.
	ins, err := sys.Broker().AdminInstances(ctx, 500*time.Millisecond)
	must(t, err)
	var names []string
	for _, in := range ins {
		names = append(names, in.Service)
		if in.Instance == "" || len(in.Endpoints) != 6 {
			t.Errorf("instance %+v: want its id and 6 endpoints", in)
		}
	}
	if strings.Join(names, ",") != "orders,shipping" {
		t.Fatalf("admin instances %v, want orders and shipping", names)
	}
}

func isAdminCode(err error, code int) bool {
	var ae *broker.AdminError
	return errors.As(err, &ae) && ae.Code == code
}
