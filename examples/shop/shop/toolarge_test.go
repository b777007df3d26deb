package shop_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestOrderTooLargeForTheBrokerIsRefused: a 175,000-'<' customer id is a
// 175 KB body, under the HTTP limit, but its event (JSON escapes '<' as
// \u003c) is over the broker's 1 MiB max payload. The order is refused with
// a JSON error (413, or 400 should input validation refuse it first),
// nothing of it is recorded, and the next order goes through.
func TestOrderTooLargeForTheBrokerIsRefused(t *testing.T) {
	sys := startShop(t)
	url := "http://" + sys.Addr["orders"] + "/orders"
	huge := `{"customer_id":"` + strings.Repeat("<", 175_000) + `","email":"a@b.c","items":[{"product_id":"p-mug","quantity":1}]}`
	code, body := post(t, url, huge)
	msg, _ := body["error"].(string)
	switch {
	case code == http.StatusRequestEntityTooLarge && strings.Contains(msg, "limit"):
	case code == http.StatusBadRequest && msg != "":
	default:
		t.Fatalf("got %d (error %.200q), want 413 with an error naming the broker's limit", code, msg)
	}
	if n := count(t, sys, "orders"); n != 0 {
		t.Fatalf("%d orders stored after the refused one", n)
	}
	if n := count(t, sys, "herald_event_log") + count(t, sys, "herald_outbox"); n != 0 {
		t.Fatalf("%d event-log and outbox rows after the refused order", n)
	}
	code, body = post(t, url, `{"customer_id":"c1","email":"a@b.c","items":[{"product_id":"p-mug","quantity":1}]}`)
	if code != http.StatusCreated {
		t.Fatalf("a normal order after it: %d %v", code, body)
	}
	if counts, err := sys.Orders.CountByStatus(context.Background()); err != nil || len(counts) == 0 {
		t.Fatalf("orders after a normal one: %v, %v", counts, err)
	}
}
