package shop_test

import (
	"context"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/catalog/schematest"
	"github.com/heraldhq/herald/examples/shop/service/notifications"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/service/reviews"
	"github.com/heraldhq/herald/examples/shop/service/shipping"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
)

// TestShopContractsMatchTheLock checks the public contracts of the four
// services (integration and notification events) against the committed
// examples/shop/herald.lock.json: a breaking change without a version bump
// fails here, naming the field. HERALD_UPDATE_LOCK=1 rewrites the lock.
func TestShopContractsMatchTheLock(t *testing.T) {
	ctx := context.Background()
	box, err := devbox.New()
	if err != nil {
		t.Fatal(err)
	}
	o, err := orders.New(ctx, testdb.SQLite(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := shipping.New(ctx, testdb.SQLite(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := reviews.New(ctx, testdb.SQLite(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := notifications.New(ctx, testdb.SQLite(t), notifications.Senders{Email: box.Sender(notify.Email), Push: box.Sender(notify.Push)}, notifications.Config{})
	if err != nil {
		t.Fatal(err)
	}
	schematest.CheckServices(t, "../herald.lock.json", []*herald.Service{o.Service, s.Service, r.Service, n.Service}...)
}
