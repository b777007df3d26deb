package shop_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
)

// TestPlacedOrderIsScheduledAndMailedOnce is issue 16's test: an order
// placed through the orders service's HTTP API, one settled flow, and
// then — no sleep, no wait loop — shipping has scheduled it and the
// customer got exactly one e-mail, the confirmation; also when the
// mailbox refuses the first try, and the notifier sends it on a retry
// after the rest of the flow finished. (Shipment updates collect into a
// digest; its window is an hour here, so the digest's e-mail is not part
// of the flow: its item is, digested.)
func TestPlacedOrderIsScheduledAndMailedOnce(t *testing.T) {
	for _, failFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("first send fails %v", failFirst), func(t *testing.T) {
			sys, hs := startSettledShop(t, time.Hour, func(c *shop.Config) {
				c.Notifications.DigestWindow = time.Hour
				c.Notifications.NotifyOptions = []notify.Option{notify.WithSendRetry(notify.Retry{BaseDelay: 200 * time.Millisecond})}
			})
			if failFirst {
				sys.Mailbox.FailNext(1, nil)
			}
			flow := hs.Run(t, func(context.Context) error {
				code, body := post(t, "http://"+sys.Addr["orders"]+"/orders", `{"customer_id":"c1","email":"c1@example.com","items":[{"product_id":"p-mug","quantity":1}]}`)
				if code != http.StatusCreated {
					return fmt.Errorf("place: %d %v", code, body)
				}
				return nil
			})
			if got := len(flow.Handled("shipping", "schedule-shipment")); got != 1 {
				t.Fatalf("shipping scheduled %d, want 1\n%s", got, flow)
			}
			if mails := flow.Sent(notify.Email); len(mails) != 1 || mails[0].Recipient != "c1" {
				t.Fatalf("e-mails sent %+v, want one to c1\n%s", mails, flow)
			}
			if got := sys.Mailbox.List(devbox.Filter{To: "c1@example.com"}); len(got) != 1 {
				t.Fatalf("mailbox has %d e-mails to c1, want 1\n%s", len(got), flow)
			}
			// The shipment update was decided too, into the digest.
			var digested int
			for _, d := range flow.Deliveries() {
				if d.Outcome == "digested" {
					digested++
				}
			}
			if digested != 1 {
				t.Errorf("deliveries %+v, want the shipment update digested", flow.Deliveries())
			}
		})
	}
}
