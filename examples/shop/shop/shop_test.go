package shop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
)

func startShop(t *testing.T) *shop.System {
	t.Helper()
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cfg := shop.Config{Broker: b, DataDir: t.TempDir(), DispatchDelay: 20 * time.Millisecond}
	if testdb.PostgresEnabled() {
		cfg.Postgres = map[string]string{}
		for _, s := range shop.Services {
			cfg.Postgres[s] = testdb.PostgresURL(t)
		}
	}
	sys, err := shop.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST %s: response is not JSON: %v", url, err)
	}
	return resp.StatusCode, out
}

func TestBadOrdersAreRefusedAndRecordNothing(t *testing.T) {
	sys := startShop(t)
	url := "http://" + sys.Addr["orders"] + "/orders"
	cases := []struct{ name, body, text string }{
		{"invalid JSON", `{"customer_id": "c1",`, "invalid JSON"},
		{"not an object", `[1,2]`, "invalid JSON"},
		{"unknown field", `{"customer_id":"c1","email":"a@b.c","items":[{"product_id":"p-mug","quantity":1}],"coupon":"x"}`, "unknown field"},
		{"unknown product", `{"customer_id":"c1","email":"a@b.c","items":[{"product_id":"p-unicorn","quantity":1}]}`, `unknown product "p-unicorn"`},
		{"negative quantity", `{"customer_id":"c1","email":"a@b.c","items":[{"product_id":"p-mug","quantity":-3}]}`, "quantity -3"},
		{"zero quantity", `{"customer_id":"c1","email":"a@b.c","items":[{"product_id":"p-mug","quantity":0}]}`, "quantity 0"},
		{"no items", `{"customer_id":"c1","email":"a@b.c","items":[]}`, "at least one item"},
		{"no customer", `{"email":"a@b.c","items":[{"product_id":"p-mug","quantity":1}]}`, "customer_id"},
		{"bad email", `{"customer_id":"c1","email":"nope","items":[{"product_id":"p-mug","quantity":1}]}`, "e-mail"},
		{"display name", `{"customer_id":"c1","email":"Evil <evil@attacker.test>","items":[{"product_id":"p-mug","quantity":1}]}`, "display name"},
		{"two addresses", `{"customer_id":"c1","email":"a@b.test, c@d.test","items":[{"product_id":"p-mug","quantity":1}]}`, "several addresses"},
		{"group", `{"customer_id":"c1","email":"g:a@b.test;","items":[{"product_id":"p-mug","quantity":1}]}`, "group syntax"},
		{"CRLF", `{"customer_id":"c1","email":"a@b.test\r\nBcc: v@c.test","items":[{"product_id":"p-mug","quantity":1}]}`, "line break"},
		{"two values", `{"customer_id":"c1","email":"a@b.c","items":[{"product_id":"p-mug","quantity":1}]} {}`, "more than one"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := post(t, url, c.body)
			msg, _ := body["error"].(string)
			if code != http.StatusBadRequest || !strings.Contains(msg, c.text) {
				t.Fatalf("got %d %v, want 400 with an error naming %q", code, body, c.text)
			}
		})
	}
	counts, err := sys.Orders.CountByStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 0 {
		t.Fatalf("orders table after bad requests: %v", counts)
	}
	backlog, _, err := sys.Orders.OutboxStats(context.Background())
	if err != nil || backlog != 0 {
		t.Fatalf("outbox backlog %d, err %v", backlog, err)
	}
	rows, err := store.EngineOf(sys.Orders.Store()).OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: "orders", Limit: 10})
	if err != nil || len(rows) != 0 {
		t.Fatalf("outbox rows %d, err %v", len(rows), err)
	}
	if n := count(t, sys, "herald_event_log"); n != 0 {
		t.Fatalf("event log has %d rows after bad requests", n)
	}
}

func count(t *testing.T, sys *shop.System, table string) int {
	var n int
	if err := sys.Orders.Store().DB().QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOrderFlowsToShippedAndVerifiedReview(t *testing.T) {
	sys := startShop(t)
	ctx := context.Background()
	const n = 20
	var ids []string
	for i := range n {
		code, body := post(t, "http://"+sys.Addr["orders"]+"/orders",
			fmt.Sprintf(`{"customer_id":"c%d","email":"c%d@example.com","items":[{"product_id":"p-lamp","quantity":1},{"product_id":"p-tea","quantity":2}]}`, i, i))
		if code != http.StatusCreated {
			t.Fatalf("place: %d %v", code, body)
		}
		ids = append(ids, body["id"].(string))
	}
	var counts map[string]int
	testwait.UntilReport(t, 30*time.Second, func() bool {
		var err error
		counts, err = sys.Orders.CountByStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return counts[orders.StatusShipped] == n
	}, func() string { return fmt.Sprintf("statuses %v, want %d shipped", counts, n) })
	o, err := sys.Orders.Get(ctx, ids[0])
	if err != nil || o.Status != orders.StatusShipped || len(o.Items) != 2 {
		t.Fatalf("order = %+v, %v", o, err)
	}
	// reviews joined without touching orders: c0 bought the lamp.
	code, body := post(t, "http://"+sys.Addr["reviews"]+"/reviews", `{"customer_id":"c0","product_id":"p-lamp","rating":5,"body":"bright"}`)
	if code != http.StatusCreated || body["verified"] != true {
		t.Fatalf("review of a buyer: %d %v", code, body)
	}
	code, body = post(t, "http://"+sys.Addr["reviews"]+"/reviews", `{"customer_id":"c0","product_id":"p-desk","rating":2,"body":"never bought"}`)
	if code != http.StatusCreated || body["verified"] != false {
		t.Fatalf("review of a non-buyer: %d %v", code, body)
	}
	code, body = post(t, "http://"+sys.Addr["reviews"]+"/reviews", `{"customer_id":"c0","product_id":"p-lamp","rating":9}`)
	if code != http.StatusBadRequest {
		t.Fatalf("rating 9: %d %v", code, body)
	}
}
