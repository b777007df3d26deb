package shop_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestEveryServiceAnswersErrorsInJSON sends each service of the running
// shop requests it must refuse, and checks that the answer is JSON with the
// right status, that nothing was recorded, and that the development mailbox
// served beside notifications' API is still reachable.
func TestEveryServiceAnswersErrorsInJSON(t *testing.T) {
	sys := startShop(t)
	ctx := context.Background()
	big := `{"customer_id":"` + strings.Repeat("c", 1<<20) + `"}`
	review := `{"customer_id":"c1","product_id":"p-mug","rating":5,"body":"ok"}`
	pref := `{"category":"orders","channel":"email","enabled":false}`
	cases := []struct {
		name, service, method, path, contentType, body string
		status                                         int
		text, allow                                    string
	}{
		{"orders: text/plain", "orders", "POST", "/orders", "text/plain", `{}`, 415, `"text/plain" is not supported`, ""},
		{"orders: display name", "orders", "POST", "/orders", "application/json",
			`{"customer_id":"c1","email":"Evil <evil@attacker.test>","items":[{"product_id":"p-mug","quantity":1}]}`, 400, "display name", ""},
		{"orders: too large", "orders", "POST", "/orders", "application/json", big, 413, "larger than 1048576 bytes", ""},
		{"orders: unknown path", "orders", "GET", "/", "", "", 404, "no such resource", ""},
		{"orders: wrong method", "orders", "PUT", "/orders", "application/json", `{}`, 405, "not allowed", "POST"},
		{"reviews: text/plain", "reviews", "POST", "/reviews", "text/plain", review, 415, `"text/plain" is not supported`, ""},
		{"reviews: no Content-Type", "reviews", "POST", "/reviews", "", review, 415, "missing Content-Type", ""},
		{"reviews: too large", "reviews", "POST", "/reviews", "application/json", big, 413, "larger than", ""},
		{"reviews: unknown path", "reviews", "GET", "/reviews/1", "", "", 404, "no such resource", ""},
		{"reviews: wrong method", "reviews", "DELETE", "/verified/c1/p-mug", "", "", 405, "not allowed", "GET, HEAD"},
		{"notifications: text/plain", "notifications", "PUT", "/preferences/c1", "text/plain", pref, 415, `"text/plain" is not supported`, ""},
		{"notifications: no Content-Type", "notifications", "PUT", "/preferences/c1", "", pref, 415, "missing Content-Type", ""},
		{"notifications: unknown field", "notifications", "PUT", "/preferences/c1", "application/json", `{"email":"Evil <e@a.test>"}`, 400, `unknown field "email"`, ""},
		{"notifications: too large", "notifications", "PUT", "/preferences/c1", "application/json", big, 413, "larger than", ""},
		{"notifications: unknown path", "notifications", "GET", "/preferences", "", "", 404, "no such resource", ""},
		{"notifications: wrong method", "notifications", "POST", "/preferences/c1", "application/json", pref, 405, "not allowed", "PUT"},
		{"shipping: unknown path", "shipping", "GET", "/shipments", "", "", 404, "no such resource", ""},
		{"shipping: wrong method", "shipping", "POST", "/shipments/o1", "application/json", `{}`, 405, "not allowed", "GET, HEAD"},
		{"shipping: unknown order", "shipping", "GET", "/shipments/o1", "", "", 404, "no shipment for order o1", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, "http://"+sys.Addr[c.service]+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Error string `json:"error"`
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(raw, &body) != nil {
				t.Fatalf("answer %d is not JSON (Content-Type %q): %s", resp.StatusCode, ct, raw)
			}
			if resp.StatusCode != c.status || !strings.Contains(body.Error, c.text) {
				t.Fatalf("got %d %s, want %d with an error containing %q", resp.StatusCode, raw, c.status, c.text)
			}
			if got := resp.Header.Get("Allow"); got != c.allow {
				t.Fatalf("Allow %q, want %q", got, c.allow)
			}
		})
	}
	if counts, err := sys.Orders.CountByStatus(ctx); err != nil || len(counts) != 0 {
		t.Errorf("orders after refused requests: %v, %v", counts, err)
	}
	var reviews int
	if err := sys.Reviews.Store().DB().QueryRow(`SELECT COUNT(*) FROM reviews`).Scan(&reviews); err != nil || reviews != 0 {
		t.Errorf("reviews after refused requests: %d, %v", reviews, err)
	}
	if ps, err := sys.Notifications.Notifier.Preferences(ctx, "c1"); err != nil || len(ps) != 0 {
		t.Errorf("preferences after refused requests: %v, %v", ps, err)
	}

	// The valid requests still work, and the mailbox is still served.
	req, _ := http.NewRequest("PUT", "http://"+sys.Addr["notifications"]+"/preferences/c1", strings.NewReader(pref))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ps, err := sys.Notifications.Notifier.Preferences(ctx, "c1"); resp.StatusCode != http.StatusOK || err != nil || len(ps) != 1 {
		t.Fatalf("valid preference: %d; stored %v, %v", resp.StatusCode, ps, err)
	}
	if code, body := post(t, "http://"+sys.Addr["reviews"]+"/reviews", review); code != http.StatusCreated {
		t.Fatalf("valid review: %d %v", code, body)
	}
	resp, err = http.Get("http://" + sys.Addr["notifications"] + "/mailbox/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("mailbox: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
