package orders_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/internal/testdb"
)

// serve runs the orders service's real handler on loopback. The service is
// not started: placing an order needs only its store (the outbox rows wait
// there for a relay).
func serve(t *testing.T) (*orders.Service, *httptest.Server) {
	t.Helper()
	svc, err := orders.New(context.Background(), testdb.SQLite(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return svc, srv
}

// answer is the JSON error the API answers with.
type answer struct {
	Error string `json:"error"`
	Field string `json:"field"`
}

func call(t *testing.T, srv *httptest.Server, method, path, contentType, body string) (*http.Response, answer, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e answer
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: answer's Content-Type %q: %s", method, path, ct, raw)
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, raw)
	}
	return resp, e, raw
}

// recorded counts what placing orders writes: orders, their items, the
// outbox and the event log.
func recorded(t *testing.T, svc *orders.Service) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"orders", "order_items", "herald_outbox", "herald_event_log"} {
		var n int
		if err := svc.Store().DB().QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	return out
}

func order(email string) string {
	b, _ := json.Marshal(map[string]any{"customer_id": "c1", "email": email,
		"items": []map[string]any{{"product_id": "p-mug", "quantity": 2}}})
	return string(b)
}

const jsonType = "application/json"

func TestBadRequestsAreRefusedInJSONAndRecordNothing(t *testing.T) {
	svc, srv := serve(t)
	cases := []struct {
		name, method, path, contentType, body string
		status                                int
		text, field, allow                    string
	}{
		{"text/plain body", "POST", "/orders", "text/plain", order("a@b.test"), 415, `Content-Type "text/plain" is not supported: send "application/json"`, "", ""},
		{"no Content-Type", "POST", "/orders", "", order("a@b.test"), 415, `missing Content-Type: send Content-Type "application/json"`, "", ""},
		{"form", "POST", "/orders", "application/x-www-form-urlencoded", "customer_id=c1", 415, "is not supported", "", ""},
		{"display name", "POST", "/orders", jsonType, order("Evil <evil@attacker.test>"), 400, `email "Evil <evil@attacker.test>" has angle brackets or a display name`, "email", ""},
		{"quoted display name", "POST", "/orders", jsonType, order(`"Shop" <evil@attacker.test>`), 400, "display name", "email", ""},
		{"angle brackets", "POST", "/orders", jsonType, order("<evil@attacker.test>"), 400, "angle brackets", "email", ""},
		{"two addresses", "POST", "/orders", jsonType, order("a@b.test, c@d.test"), 400, "lists several addresses", "email", ""},
		{"two addresses, no space", "POST", "/orders", jsonType, order("a@b.test,c@d.test"), 400, "lists several addresses", "email", ""},
		{"group", "POST", "/orders", jsonType, order("friends: a@b.test, c@d.test;"), 400, "email", "email", ""},
		{"group of one", "POST", "/orders", jsonType, order("g:a@b.test;"), 400, "group syntax", "email", ""},
		{"comment", "POST", "/orders", jsonType, order("a@b.test(boss)"), 400, "comment", "email", ""},
		{"CRLF header injection", "POST", "/orders", jsonType, order("a@b.test\r\nBcc: victim@c.test"), 400, "line break", "email", ""},
		{"padded", "POST", "/orders", jsonType, order(" a@b.test "), 400, "whitespace", "email", ""},
		{"no @", "POST", "/orders", jsonType, order("nope"), 400, `email "nope" is not an e-mail address`, "email", ""},
		{"missing", "POST", "/orders", jsonType, order(""), 400, "email is required", "email", ""},
		{"too long", "POST", "/orders", jsonType, order(strings.Repeat("a", 64) + "@" + strings.Repeat("b", 200) + ".test"), 400, "email is 270 bytes long", "email", ""},
		{"local part too long", "POST", "/orders", jsonType, order(strings.Repeat("a", 65) + "@b.test"), 400, "local part of 65 bytes", "email", ""},
		{"invalid JSON", "POST", "/orders", jsonType, `{"customer_id":`, 400, "invalid JSON body", "", ""},
		{"trailing data", "POST", "/orders", jsonType, order("a@b.test") + "x", 400, "more than one JSON value", "", ""},
		{"unknown field", "POST", "/orders", jsonType, `{"customer_id":"c1","bcc":"x@y.test"}`, 400, `unknown field "bcc"`, "", ""},
		{"oversized body", "POST", "/orders", jsonType, `{"customer_id":"` + strings.Repeat("c", 1<<20) + `"}`, 413, "request body is larger than 1048576 bytes", "", ""},
		{"unknown path", "GET", "/customers", "", "", 404, "no such resource: GET /customers", "", ""},
		{"unknown order", "GET", "/orders/nope", "", "", 404, "order not found", "", ""},
		{"GET the collection", "GET", "/orders", "", "", 405, "method GET is not allowed on /orders", "", "POST"},
		{"DELETE an order", "DELETE", "/orders/x", "", "", 405, "method DELETE is not allowed", "", "GET, HEAD"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := recorded(t, svc)
			resp, e, raw := call(t, srv, c.method, c.path, c.contentType, c.body)
			if resp.StatusCode != c.status || !strings.Contains(e.Error, c.text) || e.Field != c.field {
				t.Fatalf("got %d %s, want %d with an error containing %q, field %q", resp.StatusCode, raw, c.status, c.text, c.field)
			}
			if got := resp.Header.Get("Allow"); got != c.allow {
				t.Fatalf("Allow %q, want %q", got, c.allow)
			}
			if after := recorded(t, svc); !maps.Equal(after, before) {
				t.Fatalf("recorded %v, before the request %v", after, before)
			}
		})
	}

	// A valid order still gets 201, and records the order, its event and
	// its outbox row; the address is stored as sent.
	for _, ct := range []string{jsonType, "application/json; charset=utf-8", "Application/JSON"} {
		resp, _, raw := call(t, srv, "POST", "/orders", ct, order("c1+shop@example.com"))
		var o orders.Order
		if err := json.Unmarshal(raw, &o); err != nil || resp.StatusCode != http.StatusCreated || o.Email != "c1+shop@example.com" {
			t.Fatalf("Content-Type %q: valid order answered %d %s", ct, resp.StatusCode, raw)
		}
		resp, _, raw = call(t, srv, "GET", "/orders/"+o.ID, "", "")
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"email":"c1+shop@example.com"`) {
			t.Fatalf("GET the placed order: %d %s", resp.StatusCode, raw)
		}
	}
	if t.Failed() {
		return // a refused case may have placed an order
	}
	after := recorded(t, svc)
	if after["orders"] != 3 || after["order_items"] != 3 || after["herald_outbox"] != 3 {
		t.Fatalf("after three valid orders: %v", after)
	}
}
