package shop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
)

func startShop(t *testing.T) *shop.System {
	t.Helper()
	sys, _ := startSettledShop(t, 20*time.Millisecond)
	return sys
}

// startSettledShop starts the shop on the broker of a heraldtest system
// that follows every service, so that the test can run settled flows;
// tune, if any, change its configuration first.
func startSettledShop(t *testing.T, dispatchDelay time.Duration, tune ...func(*shop.Config)) (*shop.System, *heraldtest.System) {
	t.Helper()
	ctx := context.Background()
	hs := heraldtest.New(t)
	cfg := shop.Config{Broker: hs.Broker(), DataDir: t.TempDir(), DispatchDelay: dispatchDelay, Options: []herald.Option{hs.Observe()}}
	for _, f := range tune {
		f(&cfg)
	}
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
	hs.Add(sys.Orders.Service, sys.Shipping.Service, sys.Notifications.Service, sys.Reviews.Service)
	return sys, hs
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

// TestOrderFlowsToShippedAndVerifiedReview places orders through the HTTP
// API and follows them with settled flows (heraldtest), not a wait loop:
// once the flow of the placing settles every order is scheduled and its
// buyer verified; once the flow of the dispatch settles every order is
// shipped. Time, which causes the dispatch, is the test's to move: the
// shipments' ETAs are an hour away until the test brings them due.
func TestOrderFlowsToShippedAndVerifiedReview(t *testing.T) {
	sys, hs := startSettledShop(t, time.Hour)
	ctx := context.Background()
	const n = 20
	var ids []string
	placing := hs.Run(t, func(context.Context) error {
		for i := range n {
			code, body := post(t, "http://"+sys.Addr["orders"]+"/orders",
				fmt.Sprintf(`{"customer_id":"c%d","email":"c%d@example.com","items":[{"product_id":"p-lamp","quantity":1},{"product_id":"p-tea","quantity":2}]}`, i, i))
			if code != http.StatusCreated {
				return fmt.Errorf("place: %d %v", code, body)
			}
			ids = append(ids, body["id"].(string))
		}
		return nil
	})
	if len(placing.Correlations) != n || len(placing.Handled("reviews", "verify-buyers")) != n {
		t.Fatalf("%d flows, %d verified, want %d", len(placing.Correlations), len(placing.Handled("reviews", "verify-buyers")), n)
	}
	counts, err := sys.Orders.CountByStatus(ctx)
	if err != nil || counts[orders.StatusScheduled] != n {
		t.Fatalf("statuses %v, %v; want %d scheduled", counts, err, n)
	}

	st := sys.Shipping.Store()
	if _, err := st.DB().ExecContext(ctx, st.Rebind(`UPDATE shipments SET eta = ?`), time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	hs.Run(t, func(ctx context.Context) error {
		k, err := sys.Shipping.DispatchDue(ctx)
		if err == nil && k != n {
			err = fmt.Errorf("dispatched %d, want %d", k, n)
		}
		return err
	})
	if counts, err = sys.Orders.CountByStatus(ctx); err != nil || counts[orders.StatusShipped] != n {
		t.Fatalf("statuses %v, %v; want %d shipped", counts, err, n)
	}
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
