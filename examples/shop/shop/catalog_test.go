package shop_test

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/catalog/schematest"
	"github.com/heraldhq/herald/examples/shop/analytics"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/internal/asyncapitest"
)

// shopEdges is the shop's topology as DESIGN.md and the services' code
// describe it: every translation, subscription, declared effect and
// notification channel.
var shopEdges = []string{
	// orders: an order placed goes out as shop.order.confirmed; shipping's
	// events move the order's status.
	"dom:orders/orders.order-placed -translates-> int:shop.order.confirmed",
	"int:shop.shipment.scheduled -delivers-> sub:orders/track-scheduled",
	"int:shop.shipment.dispatched -delivers-> sub:orders/track-dispatched",
	"sub:orders/track-scheduled -records-> dom:orders/orders.status-changed",
	"sub:orders/track-dispatched -records-> dom:orders/orders.status-changed",
	// shipping schedules a shipment per confirmed order and dispatches it.
	"int:shop.order.confirmed -delivers-> sub:shipping/schedule-shipment",
	"sub:shipping/schedule-shipment -records-> dom:shipping/shipping.shipment-scheduled",
	"dom:shipping/shipping.shipment-scheduled -translates-> int:shop.shipment.scheduled",
	"dom:shipping/shipping.shipment-dispatched -translates-> int:shop.shipment.dispatched",
	// notifications turns them into notification events and sends them.
	"int:shop.order.confirmed -delivers-> sub:notifications/confirmation",
	"sub:notifications/confirmation -notifies-> ntf:shop.notify.order-confirmed",
	"int:shop.shipment.scheduled -delivers-> sub:notifications/shipment-updates",
	"sub:notifications/shipment-updates -notifies-> ntf:shop.notify.shipment-update",
	"int:shop.shipment.dispatched -delivers-> sub:notifications/shipped",
	"sub:notifications/shipped -notifies-> ntf:shop.notify.order-shipped",
	"ntf:shop.notify.order-confirmed -delivers-> sub:notifications/notify-shop_notify_order-confirmed",
	"ntf:shop.notify.shipment-update -delivers-> sub:notifications/notify-shop_notify_shipment-update",
	"ntf:shop.notify.order-shipped -delivers-> sub:notifications/notify-shop_notify_order-shipped",
	"sub:notifications/notify-shop_notify_order-confirmed -sends-> chan:notifications/email",
	"sub:notifications/notify-shop_notify_shipment-update -sends-> chan:notifications/email",
	"sub:notifications/notify-shop_notify_order-shipped -sends-> chan:notifications/email",
	"sub:notifications/notify-shop_notify_order-shipped -sends-> chan:notifications/push",
	// reviews marks verified buyers, added without touching orders.
	"int:shop.order.confirmed -delivers-> sub:reviews/verify-buyers",
	"sub:reviews/verify-buyers -records-> dom:reviews/reviews.buyer-verified",
	// analytics, in JavaScript, counts orders and publishes trending
	// products, which reviews marks.
	"int:shop.order.confirmed -delivers-> sub:analytics/count-orders",
	"dom:analytics/analytics.threshold-reached -translates-> int:shop.product.trending",
	"int:shop.product.trending -delivers-> sub:reviews/mark-trending",
}

// TestShopCatalog starts the four herald services on one embedded broker,
// puts the manifest of the Node.js analytics service beside theirs (what it
// publishes at start, with a heartbeat; analytics' TestRoundTrip runs it), reads the
// manifests back from the broker's key-value bucket, validates each against
// the documented manifest format, and checks the catalog against the
// expected graph, its warnings, and the chain of `why order.confirmed`.
func TestShopCatalog(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	sys, err := shop.Start(ctx, shop.Config{Broker: b, DataDir: t.TempDir(), DispatchDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	nodeManifest, err := analytics.Files.ReadFile("manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutManifest(ctx, analytics.Service, nodeManifest); err != nil {
		t.Fatal(err)
	}
	beat, _ := json.Marshal(catalog.Instance{ID: "node-1", Started: time.Now().UTC()})
	if err := b.Heartbeat(ctx, analytics.Service, "node-1", beat); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for service, data := range raw {
		if err := schematest.CheckManifest(data); err != nil {
			t.Errorf("the manifest of %s: %v", service, err)
		}
	}
	ms, err := catalog.Load(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Service)
		if m.Stale || len(m.Instances) != 1 {
			t.Errorf("service %s: stale=%v with %d instances, want 1 live instance", m.Service, m.Stale, len(m.Instances))
		}
	}
	if want := []string{"analytics", "notifications", "orders", "reviews", "shipping"}; !slices.Equal(names, want) {
		t.Fatalf("manifests of %v, want %v", names, want)
	}
	g, err := catalog.Build(ms)
	if err != nil {
		t.Fatal(err)
	}
	got, want := g.EdgeStrings(), slices.Sorted(slices.Values(shopEdges))
	for _, e := range want {
		if !slices.Contains(got, e) {
			t.Errorf("missing edge %s", e)
		}
	}
	for _, e := range got {
		if !slices.Contains(want, e) {
			t.Errorf("unexpected edge %s", e)
		}
	}
	if len(g.Warnings) != 0 {
		t.Errorf("warnings for the shop: %v", g.Warnings)
	}

	why, err := g.Why("order.confirmed")
	if err != nil {
		t.Fatal(err)
	}
	if why.Node.ID != "int:shop.order.confirmed" {
		t.Fatalf("why order.confirmed starts at %s", why.Node.ID)
	}
	for _, id := range []string{
		"sub:reviews/verify-buyers", "dom:reviews/reviews.buyer-verified", // the reviews service
		"ntf:shop.notify.order-confirmed", "chan:notifications/email", // the customer's e-mails
		"ntf:shop.notify.shipment-update",  // through shipping
		"dom:orders/orders.status-changed", // back to orders
		"sub:notifications/notify-shop_notify_order-confirmed",
	} {
		if !why.Reaches(id) {
			t.Errorf("why order.confirmed does not reach %s", id)
		}
	}
	if why.Reaches("ntf:shop.notify.order-shipped") {
		t.Errorf("why order.confirmed reaches the shipped notification, which the dispatcher's timer causes, not the event")
	}
	var text strings.Builder
	if err := g.WriteWhy(&text, why); err != nil {
		t.Fatal(err)
	}
	t.Logf("herald catalog why order.confirmed:\n%s", text.String())
	if testing.Verbose() {
		_ = g.WriteText(os.Stdout)
	}

	// The shop as an AsyncAPI 3.0 document, checked by the official parser
	// (a subtest: it skips without node).
	t.Run("asyncapi", func(t *testing.T) {
		var doc strings.Builder
		if err := g.WriteAsyncAPI(&doc, catalog.AsyncAPIOptions{Title: "shop"}); err != nil {
			t.Fatal(err)
		}
		if out, valid := asyncapitest.Validate(t, []byte(doc.String())); !valid[0] {
			t.Errorf("the official AsyncAPI parser refused the shop's document:\n%s", out)
		}
	})

	// A service that stops cleanly withdraws its instance: stale, still listed.
	if err := sys.Reviews.Close(); err != nil {
		t.Fatal(err)
	}
	ms, err = catalog.Load(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Stale != (m.Service == "reviews") {
			t.Errorf("after reviews stopped: %s stale=%v", m.Service, m.Stale)
		}
	}
}
