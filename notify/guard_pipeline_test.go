package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	. "github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/webhook"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

type hookEvent struct {
	ID string   `json:"id"`
	To []string `json:"to"`
}

var hookShipped = herald.Notification[hookEvent]("shop.order.hooked")

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWebhookGuardInPipeline runs the real webhook sender inside the
// pipeline: webhooks to the cloud metadata address and to loopback are
// refused by the SSRF guard before any connection and end failed with the
// reason "permanent" and the refusal in the last error; a receiver on an
// explicitly allowed address gets the event, signed (verified with the
// Standard Webhooks library) and with hostile data kept as inert JSON text.
func TestWebhookGuardInPipeline(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var mu sync.Mutex
	var got []string
	verifier, err := standardwebhooks.NewWebhook(secret)
	must(t, err)
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := verifier.Verify(body, r.Header); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mu.Lock()
		got = append(got, string(body))
		mu.Unlock()
	}))
	defer allowed.Close()
	// Another loopback address, which the guard was not told to allow:
	// refused before any connection is tried.
	refusedLoopback := strings.Replace(allowed.URL, "127.0.0.1", "127.0.0.2", 1)

	hook := func(url string) Recipient {
		return Recipient{Addresses: map[string]string{Webhook: url}, Secrets: map[string]string{Webhook: secret}}
	}
	dir := MapDirectory{
		"metadata": hook("http://169.254.169.254/latest/meta-data/"),
		"private":  hook("http://10.0.0.1/hook"),
		"loopback": hook(refusedLoopback),
		"partner":  hook(allowed.URL),
	}
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	svc, err := herald.New("hooks", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(quiet))
	must(t, err)
	n, err := NewNotifier(svc, dir, WithPollInterval(10*time.Millisecond), WithLogger(quiet))
	must(t, err)
	must(t, Route(n, hookShipped, Spec[hookEvent]{Category: "orders", Channels: []string{Webhook},
		Recipients: func(e hookEvent) []string { return e.To }}))
	sender, err := webhook.New(webhook.WithAllow("127.0.0.1"))
	must(t, err)
	must(t, n.Senders(Webhook, sender))
	must(t, svc.Start(ctx))
	defer svc.Close()
	must(t, n.Start(ctx))
	defer n.Close()
	must(t, svc.Do(herald.WithCorrelationID(ctx, "hooks"), func(tx herald.Tx) error {
		return herald.Notify(tx, hookShipped, hookEvent{ID: "<script>alert(1)</script>", To: []string{"metadata", "private", "loopback", "partner"}})
	}))
	m := map[string]Delivery{}
	// On a timeout the checks below say which recipient is not final.
	_ = testwait.For(20*time.Second, "4 final deliveries", func() bool {
		ds, err := n.Deliveries(ctx, DeliveryFilter{CorrelationID: "hooks"})
		must(t, err)
		final := 0
		for _, d := range ds {
			m[d.Recipient] = d
			if d.State == Failed || d.State == Sent || d.State == Delivered {
				final++
			}
		}
		return final == 4
	})
	for _, who := range []string{"metadata", "private", "loopback"} {
		d := m[who]
		if d.State != Failed || !strings.HasPrefix(d.Reason, ReasonPermanent) || !strings.Contains(d.LastError, "refused") || d.Attempts != 1 {
			t.Errorf("%s: %s %q attempts %d, last error %q; want failed, permanent, refused by the guard, one attempt", who, d.State, d.Reason, d.Attempts, d.LastError)
		}
	}
	if p := m["partner"]; p.State != Sent && p.State != Delivered {
		t.Fatalf("partner: %+v", p)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("receiver got %d webhooks, want 1", len(got))
	}
	var body struct {
		Data hookEvent `json:"data"`
	}
	must(t, json.Unmarshal([]byte(got[0]), &body))
	if body.Data.ID != "<script>alert(1)</script>" || strings.Contains(got[0], "<script>") {
		t.Fatalf("hostile data must arrive as escaped JSON text, got %s", got[0])
	}
}
