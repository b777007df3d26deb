package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
	ntemplate "github.com/heraldhq/herald/notify/template"
	"github.com/heraldhq/herald/store"
)

// byKey indexes deliveries by recipient/channel.
func byKey(ds []Delivery) map[string]Delivery {
	m := map[string]Delivery{}
	for _, d := range ds {
		m[d.Recipient+"/"+d.Channel] = d
	}
	return m
}

// expect checks the state and reason code of recipient/channel in m.
func expect(t *testing.T, m map[string]Delivery, key string, st State, reason string) {
	t.Helper()
	d, ok := m[key]
	if !ok {
		t.Errorf("%s: no delivery", key)
		return
	}
	if d.State != st || !strings.HasPrefix(d.Reason, reason) {
		t.Errorf("%s: %s %q, want %s %q…", key, d.State, d.Reason, st, reason)
	}
}

// TestDeliverEndToEnd: Notify in Do → outbox → broker → Receive (decide) →
// worker (render, send) → delivery log, queryable by event, recipient and
// correlation id.
func TestDeliverEndToEnd(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		spec := defaultSpec()
		spec.Channels = []string{Email, SMS}
		e := newEnv(t, dialect, setup{spec: spec})
		e.emit("flow-1", order{ID: "o1", To: []string{"alice", "bob", "alice"}, Total: 42})
		ds := e.waitDeliveries(DeliveryFilter{CorrelationID: "flow-1"}, 4)
		m := byKey(ds)
		expect(t, m, "alice/email", Sent, "")
		expect(t, m, "alice/sms", Sent, "")
		expect(t, m, "bob/email", Sent, "")
		expect(t, m, "bob/sms", Failed, ReasonNoAddress)
		a := m["alice/email"]
		if a.Address != "alice@example.com" || a.Provider != "email-1" || a.ProviderID == "" || a.Attempts != 1 ||
			a.SentAt.IsZero() || a.Key != a.EventID+"/alice/email" || a.EventType != "shop.order.shipped" || a.Category != "orders" {
			t.Errorf("alice/email row: %+v", a)
		}
		if got := e.deliveries(DeliveryFilter{EventID: a.EventID, Recipient: "alice"}); len(got) != 2 {
			t.Errorf("by event and recipient: %s", dump(got))
		}
		if got := e.deliveries(DeliveryFilter{State: Failed}); len(got) != 1 {
			t.Errorf("by state: %s", dump(got))
		}
		var texts []string
		for _, msg := range e.senders[Email].sent() {
			texts = append(texts, msg.To+": "+msg.Subject+" / "+msg.Text)
			if msg.Key == "" || msg.EventID != a.EventID || msg.CorrelationID != "flow-1" {
				t.Errorf("message metadata: %+v", msg)
			}
		}
		slices.Sort(texts)
		want := []string{
			"alice@example.com: Order o1 shipped / Hi Alice, order o1 (42) is on its way.",
			"bob@example.com: Order o1 shipped / Hi Bob, order o1 (42) is on its way.",
		}
		if !slices.Equal(texts, want) {
			t.Errorf("e-mails:\n%q\nwant\n%q", texts, want)
		}
		if sms := e.senders[SMS].sent(); len(sms) != 1 || sms[0].Text != "Order o1 shipped" || sms[0].To != "+81312345678" {
			t.Errorf("sms (channel-specific template): %+v", sms)
		}
	})
}

// TestPreferences: opt-outs per user × category × channel, '*' defaults in
// the table, code defaults, most specific wins, and critical overrides them.
func TestPreferences(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		spec := defaultSpec()
		spec.Channels = []string{Email, SMS, Push}
		e := newEnv(t, dialect, setup{spec: spec, opts: []Option{WithDefaultOff("orders", Push)}})
		for _, p := range []Preference{
			{Recipient: "alice", Category: "orders", Channel: SMS, Enabled: false},
			{Recipient: "*", Category: "orders", Channel: Email, Enabled: false},
			{Recipient: "bob", Category: "orders", Channel: Email, Enabled: true},
			{Recipient: "dave", Category: "orders", Channel: Push, Enabled: true},
			{Recipient: "dave", Category: "*", Channel: "*", Enabled: false}, // less specific than dave/orders/push
		} {
			must(t, e.n.SetPreference(e.ctx, p))
		}
		if err := e.n.SetPreference(e.ctx, Preference{Recipient: "x"}); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("invalid preference: %v", err)
		}
		to := []string{"alice", "bob", "dave"}
		e.emit("normal", order{ID: "o1", To: to})
		m := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "normal"}, 9))
		expect(t, m, "alice/email", Suppressed, ReasonOptedOut) // '*' row
		expect(t, m, "alice/sms", Suppressed, ReasonOptedOut)   // her own row
		expect(t, m, "alice/push", Suppressed, ReasonOptedOut)  // code default
		expect(t, m, "bob/email", Sent, "")                     // his row beats '*'
		expect(t, m, "bob/sms", Failed, ReasonNoAddress)
		expect(t, m, "bob/push", Suppressed, ReasonOptedOut) // preferences come before the address
		expect(t, m, "dave/email", Suppressed, ReasonOptedOut)
		expect(t, m, "dave/sms", Suppressed, ReasonOptedOut)
		expect(t, m, "dave/push", Sent, "") // his opt-in beats the code default

		e.emit("critical", order{ID: "o2", To: to, Critical: true})
		m = byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "critical"}, 9))
		for _, k := range []string{"alice/email", "alice/sms", "alice/push", "bob/email", "dave/email", "dave/push"} {
			expect(t, m, k, Sent, "")
			if !m[k].Critical {
				t.Errorf("%s not marked critical", k)
			}
		}
		expect(t, m, "bob/sms", Failed, ReasonNoAddress)
		expect(t, m, "bob/push", Failed, ReasonNoAddress)
		expect(t, m, "dave/sms", Failed, ReasonNoAddress)

		must(t, e.n.DeletePreference(e.ctx, "alice", "orders", SMS))
		ps, err := e.n.Preferences(e.ctx, "dave")
		must(t, err)
		if len(ps) != 2 {
			t.Errorf("dave's preferences: %+v", ps)
		}
		e.emit("after-delete", order{ID: "o3", To: []string{"alice"}})
		m = byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "after-delete"}, 3))
		expect(t, m, "alice/sms", Sent, "")
	})
}

// TestSuppression: a suppressed address (case-insensitive for e-mail) gets
// nothing, even critical; Unsuppress lifts it.
func TestSuppression(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect, setup{})
		must(t, e.n.Suppress(e.ctx, Email, "ALICE@example.COM", "unsubscribed"))
		s, ok, err := e.n.Suppressed(e.ctx, Email, "alice@example.com")
		must(t, err)
		if !ok || s.Reason != "unsubscribed" || s.Address != "alice@example.com" {
			t.Fatalf("suppressed: %+v %v", s, ok)
		}
		e.emit("s1", order{ID: "o1", To: []string{"alice", "bob"}, Critical: true})
		m := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "s1"}, 2))
		expect(t, m, "alice/email", Suppressed, ReasonSuppressedAddress+": unsubscribed")
		expect(t, m, "bob/email", Sent, "")
		must(t, e.n.Unsuppress(e.ctx, Email, "alice@EXAMPLE.com"))
		e.emit("s2", order{ID: "o2", To: []string{"alice"}})
		expect(t, byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "s2"}, 1)), "alice/email", Sent, "")
	})
}

// TestIdempotency: the same event decided twice (replayed by the broker
// after its inbox row was released, or decided directly twice) gives one
// delivery per (event, recipient, channel) and one send.
func TestIdempotency(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect, setup{})
		e.emit("i1", order{ID: "o1", To: []string{"alice", "bob"}})
		ds := e.waitDeliveries(DeliveryFilter{CorrelationID: "i1"}, 2)
		evID := ds[0].EventID

		// The broker delivers the event again and the inbox lets it through.
		sub := "notify-shop_order_shipped"
		must(t, store.EngineOf(e.st).InboxRelease(e.ctx, "shop/"+sub, evID))
		data, _ := json.Marshal(order{ID: "o1", To: []string{"alice", "bob"}})
		env := &envelope.Envelope{ID: evID, Type: orderShipped.Name(), Version: 1, Kind: envelope.KindNotification,
			Source: "shop", Time: time.Now().UTC(), DataContentType: "application/json", Data: data, CorrelationID: "i1"}
		must(t, e.b.Replay(e.ctx, "shop", sub, env))
		testwait.UntilReport(t, 10*time.Second, func() bool {
			var n int
			_ = e.st.DB().QueryRow(e.st.Rebind(`SELECT COUNT(*) FROM herald_inbox WHERE subscription = ? AND event_id = ?`), "shop/"+sub, evID).Scan(&n)
			return n == 1
		}, func() string { return "the replayed event was not handled" })

		// And the pipeline itself is run twice on one event.
		r := e.n.route(sub)
		for range 2 {
			must(t, e.svc.Do(e.ctx, func(tx herald.Tx) error {
				return e.n.decide(e.ctx, tx, r, event{ID: "direct-1", Type: orderShipped.Name(), CorrelationID: "i2"},
					intake{recipients: []string{"alice", "alice"}, data: []byte(`{"id":"o2"}`)})
			}))
		}
		e.waitDeliveries(DeliveryFilter{CorrelationID: "i2"}, 1)
		time.Sleep(100 * time.Millisecond)
		if got := e.deliveries(DeliveryFilter{CorrelationID: "i1"}); len(got) != 2 {
			t.Fatalf("after the replay: %s", dump(got))
		}
		counts := map[string]int{}
		for _, m := range e.senders[Email].sent() {
			counts[m.Key]++
		}
		if len(counts) != 3 {
			t.Errorf("keys sent: %v", counts)
		}
		for k, c := range counts {
			if c != 1 {
				t.Errorf("%s sent %d times", k, c)
			}
		}
	})
}

// TestQuietHours: in the recipient's zone (Asia/Tokyo, injected clock at
// 23:30 there) a notification is deferred until quiet hours end at 07:00;
// a critical one goes at once; a recipient whose local time is not quiet
// (New York, 09:30) gets it at once; at 07:00 the deferred one is sent.
func TestQuietHours(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		spec := defaultSpec()
		spec.Channels = []string{Email, Push}
		e := newEnv(t, dialect, setup{spec: spec, noStart: true,
			opts: []Option{WithQuietHours(QuietHours{Start: 22 * time.Hour, End: 7 * time.Hour})}})
		tokyo, _ := time.LoadLocation("Asia/Tokyo")
		e.clk.Set(time.Date(2025, 1, 15, 23, 30, 0, 0, tokyo))
		must(t, e.n.Start(e.ctx))

		e.emit("night", order{ID: "o1", To: []string{"alice", "bob"}})
		e.emit("urgent", order{ID: "o2", To: []string{"alice"}, Critical: true})
		urgent := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "urgent"}, 2))
		expect(t, urgent, "alice/email", Sent, "")
		expect(t, urgent, "alice/push", Sent, "")
		morning := time.Date(2025, 1, 16, 7, 0, 0, 0, tokyo)
		var m map[string]Delivery
		testwait.UntilReport(t, 10*time.Second, func() bool {
			m = byKey(e.deliveries(DeliveryFilter{CorrelationID: "night"}))
			return len(m) == 4 && m["bob/email"].State == Sent
		}, func() string { return fmt.Sprint(m) })
		for _, k := range []string{"alice/email", "alice/push"} {
			expect(t, m, k, Deferred, ReasonQuietHours+": until 2025-01-16 07:00 JST")
			if !m[k].DueAt.Equal(morning) {
				t.Errorf("%s due %v, want %v", k, m[k].DueAt, morning)
			}
		}
		time.Sleep(100 * time.Millisecond)
		if d := e.deliveries(DeliveryFilter{CorrelationID: "night", Recipient: "alice"}); d[0].State != Deferred {
			t.Fatalf("sent during quiet hours: %s", dump(d))
		}
		e.clk.Set(morning.Add(time.Second))
		m = byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "night"}, 4))
		expect(t, m, "bob/push", Failed, ReasonNoAddress)
		expect(t, m, "alice/email", Sent, "")
		expect(t, m, "alice/push", Sent, "")
	})
}

func TestQuietHoursUntil(t *testing.T) {
	t.Parallel()
	ny, _ := time.LoadLocation("America/New_York")
	night := &QuietHours{Start: 22 * time.Hour, End: 7 * time.Hour}
	lunch := &QuietHours{Start: 12 * time.Hour, End: 13*time.Hour + 30*time.Minute}
	for _, c := range []struct {
		q     *QuietHours
		at    time.Time
		quiet bool
		until time.Time
	}{
		{night, time.Date(2025, 3, 8, 23, 0, 0, 0, ny), true, time.Date(2025, 3, 9, 7, 0, 0, 0, ny)}, // across the DST change
		{night, time.Date(2025, 3, 9, 6, 59, 0, 0, ny), true, time.Date(2025, 3, 9, 7, 0, 0, 0, ny)},
		{night, time.Date(2025, 3, 9, 7, 0, 0, 0, ny), false, time.Time{}},
		{night, time.Date(2025, 3, 9, 21, 59, 59, 0, ny), false, time.Time{}},
		{lunch, time.Date(2025, 6, 1, 12, 0, 0, 0, ny), true, time.Date(2025, 6, 1, 13, 30, 0, 0, ny)},
		{lunch, time.Date(2025, 6, 1, 13, 30, 0, 0, ny), false, time.Time{}},
		{&QuietHours{Start: time.Hour, End: time.Hour}, time.Date(2025, 6, 1, 1, 0, 0, 0, ny), false, time.Time{}},
	} {
		until, quiet := c.q.until(c.at.UTC(), ny)
		if quiet != c.quiet || !until.Equal(c.until) {
			t.Errorf("%v–%v at %v: %v %v, want %v %v", c.q.Start, c.q.End, c.at, quiet, until, c.quiet, c.until)
		}
	}
	if (&QuietHours{Start: time.Hour, End: 2 * time.Hour}).applies(Webhook) || !(&QuietHours{Start: time.Hour}).applies(SMS) {
		t.Error("default channels of quiet hours")
	}
}

// TestThrottle: at most Limit per window and key; the excess is recorded
// as throttled; another GroupBy value is another key; critical bypasses it;
// the window slides with the clock.
func TestThrottle(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		spec := defaultSpec()
		spec.Throttle = &Throttle{Window: time.Hour, Limit: 2}
		e := newEnv(t, dialect, setup{spec: spec})
		for i := range 5 {
			e.emit("t", order{ID: fmt.Sprintf("o%d", i), To: []string{"bob"}, Group: "g1"})
		}
		e.emit("t", order{ID: "other-group", To: []string{"bob"}, Group: "g2"})
		e.emit("t", order{ID: "critical", To: []string{"bob"}, Group: "g1", Critical: true})
		ds := e.waitDeliveries(DeliveryFilter{CorrelationID: "t"}, 7)
		states := map[State]int{}
		for _, d := range ds {
			states[d.State]++
			if d.State == Throttled && !strings.HasPrefix(d.Reason, ReasonThrottled+": 2 per 1h0m0s") {
				t.Errorf("reason %q", d.Reason)
			}
		}
		if states[Sent] != 4 || states[Throttled] != 3 {
			t.Fatalf("states %v: %s", states, dump(ds))
		}
		e.clk.Advance(time.Hour + time.Second)
		e.emit("t2", order{ID: "later", To: []string{"bob"}, Group: "g1"})
		expect(t, byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "t2"}, 1)), "bob/email", Sent, "")
	})
}

// TestThrottleFoldsIntoDigest: with a Digest, the throttle's excess is
// folded into one digest message that lists every item, sent when the
// digest window ends.
func TestThrottleFoldsIntoDigest(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		spec := defaultSpec()
		spec.Throttle = &Throttle{Window: time.Hour, Limit: 2}
		spec.Digest = &Digest{Window: 10 * time.Minute, Template: "order.shipped.digest"}
		e := newEnv(t, dialect, setup{spec: spec})
		for i := 1; i <= 5; i++ {
			e.emit("d", order{ID: fmt.Sprintf("o%d", i), To: []string{"bob"}})
		}
		var items []Delivery
		testwait.UntilReport(t, 10*time.Second, func() bool {
			items = e.deliveries(DeliveryFilter{CorrelationID: "d", State: Digested})
			return len(items) == 3 && len(e.deliveries(DeliveryFilter{CorrelationID: "d", State: Sent})) == 2
		}, func() string { return dump(e.deliveries(DeliveryFilter{})) })
		digest := e.deliveries(DeliveryFilter{Kind: KindDigest})
		if len(digest) != 1 || digest[0].State != Deferred || digest[0].DigestID != items[0].DigestID || !strings.HasPrefix(digest[0].Reason, ReasonDigest) {
			t.Fatalf("digest message: %s", dump(digest))
		}
		e.clk.Advance(10*time.Minute + time.Second)
		e.waitState(DeliveryFilter{Kind: KindDigest}, Sent)
		sent := e.senders[Email].sent()
		last := sent[len(sent)-1]
		if len(sent) != 3 || last.Subject != "3 orders shipped" || last.Text != "3 orders: o3 o4 o5" || last.Key != "digest/"+items[0].DigestID {
			t.Fatalf("sent %d, digest %+v", len(sent), last)
		}
	})
}

// TestDigestMaxItems: without a throttle everything joins a digest; a full
// digest (MaxItems) goes at once, the rest when the window ends; the
// template gets the list.
func TestDigestMaxItems(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		spec := defaultSpec()
		spec.Digest = &Digest{Window: time.Hour, MaxItems: 3, Template: "order.shipped.digest"}
		e := newEnv(t, dialect, setup{spec: spec})
		for i := 1; i <= 7; i++ {
			e.emit("m", order{ID: fmt.Sprintf("o%d", i), To: []string{"bob"}})
		}
		// Two full digests are sent; wait for their rows to be final before
		// moving the clock (a jump beyond the lease would expire a claim in
		// flight and send it again, as a crash would).
		testwait.UntilReport(t, 10*time.Second, func() bool {
			return len(e.deliveries(DeliveryFilter{Kind: KindDigest, State: Sent})) == 2
		}, func() string { return dump(e.deliveries(DeliveryFilter{})) })
		time.Sleep(50 * time.Millisecond)
		if n := len(e.senders[Email].sent()); n != 2 {
			t.Fatalf("%d messages before the window ended", n)
		}
		e.clk.Advance(time.Hour + time.Second)
		testwait.UntilReport(t, 10*time.Second, func() bool { return len(e.senders[Email].sent()) == 3 },
			func() string { return dump(e.deliveries(DeliveryFilter{})) })
		var got []string
		var sizes []int
		for _, m := range e.senders[Email].sent() {
			f := strings.Fields(strings.SplitN(m.Text, ":", 2)[1])
			got = append(got, f...)
			sizes = append(sizes, len(f))
		}
		slices.Sort(got)
		if !slices.Equal(sizes, []int{3, 3, 1}) || !slices.Equal(got, []string{"o1", "o2", "o3", "o4", "o5", "o6", "o7"}) {
			t.Fatalf("digests %v: %v", sizes, got)
		}
		ds := e.waitDeliveries(DeliveryFilter{Kind: KindDigest}, 3)
		for _, d := range ds {
			if d.State != Sent {
				t.Errorf("digest rows: %s", dump(ds))
			}
		}
	})
}

// TestBadInput: an unknown recipient, a missing or invalid address, a
// missing template, a template that fails and a sender that panics each end
// in a clear state and reason; nothing crashes and the service goes on.
func TestBadInput(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		missing := herald.Notification[order]("shop.order.missing")
		broken := herald.Notification[order]("shop.order.broken")
		spec := defaultSpec()
		spec.Channels = []string{Email, SMS}
		e := newEnv(t, dialect, setup{spec: spec, extra: func(e *env) error {
			s := defaultSpec()
			s.Template = "no.such.template"
			if err := Route(e.n, missing, s); err != nil {
				return err
			}
			s.Template = "order.broken"
			return Route(e.n, broken, s)
		}})
		e.senders[Email].setFail(func(m Message, _ int) error {
			if m.To == "dave@example.com" {
				panic("sender bug")
			}
			return nil
		})
		e.emit("bad", order{ID: "o1", To: []string{"zed", "carol", "bob", "dave"}})
		emitOn(e, missing, "missing", order{ID: "o2", To: []string{"bob"}})
		emitOn(e, broken, "broken", order{ID: "o3", To: []string{"bob"}})
		m := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "bad"}, 8))
		expect(t, m, "zed/email", Failed, ReasonUnknownRecipient)
		expect(t, m, "zed/sms", Failed, ReasonUnknownRecipient)
		expect(t, m, "carol/email", Failed, ReasonInvalidAddress)
		expect(t, m, "carol/sms", Failed, ReasonInvalidAddress+": sms address of carol: \"0123\" is not an E.164 number")
		expect(t, m, "bob/email", Sent, "")
		expect(t, m, "bob/sms", Failed, ReasonNoAddress)
		expect(t, m, "dave/email", Failed, ReasonExhausted)
		if d := m["dave/email"]; d.Attempts != 4 || !strings.Contains(d.LastError, "panicked: sender bug") {
			t.Errorf("panicking sender: %+v", d)
		}
		expect(t, byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "missing"}, 1)), "bob/email", Failed,
			ReasonTemplate+": no.such.template for email: notify: template not found")
		b := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "broken"}, 1))
		expect(t, b, "bob/email", Failed, ReasonTemplate)
		if !strings.Contains(b["bob/email"].Reason, "Nope") || b["bob/email"].Attempts != 0 {
			t.Errorf("template error: %+v", b["bob/email"])
		}
		dls, err := e.svc.DeadLetters(e.ctx, herald.DeadLetterFilter{})
		must(t, err)
		if len(dls) != 0 {
			t.Errorf("dead letters: %+v", dls)
		}
	})
}

// TestDirectoryOutage: a Directory error other than ErrUnknownRecipient
// rolls the event back; the subscription retries it and it is decided once
// the Directory answers.
func TestDirectoryOutage(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	dir := testDirectory()
	flaky := DirectoryFunc(func(ctx context.Context, id string) (Recipient, error) {
		if calls.Add(1) <= 2 {
			return Recipient{}, errors.New("directory down")
		}
		return dir.Lookup(ctx, id)
	})
	e := newEnv(t, "sqlite", setup{noStart: true})
	// Swap the directory in before anything arrives.
	e.n.dir = flaky
	must(t, e.n.Start(e.ctx))
	e.emit("dir", order{ID: "o1", To: []string{"bob"}})
	expect(t, byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "dir"}, 1)), "bob/email", Sent, "")
	if calls.Load() < 3 {
		t.Errorf("directory called %d times", calls.Load())
	}
}

// TestWebhookPayload: a webhook needs no template; it gets a Standard
// Webhooks payload with the event's data, the key as webhook id and the
// secret the Directory gives at send time.
func TestWebhookPayload(t *testing.T) {
	t.Parallel()
	dir := testDirectory()
	dir["hooks"] = Recipient{Addresses: map[string]string{Webhook: "https://hooks.example/x"}, Secrets: map[string]string{Webhook: "whsec_abc"}}
	spec := defaultSpec()
	spec.Channels, spec.Template = []string{Webhook}, ""
	e := newEnv(t, "sqlite", setup{spec: spec, dir: dir})
	e.emit("w", order{ID: "o1", To: []string{"hooks"}, Total: 7})
	d := e.waitState(DeliveryFilter{CorrelationID: "w"}, Sent)
	msgs := e.senders[Webhook].sent()
	if len(msgs) != 1 {
		t.Fatalf("%d webhooks", len(msgs))
	}
	m := msgs[0]
	var body struct {
		Type string `json:"type"`
		Data order  `json:"data"`
	}
	must(t, json.Unmarshal(m.Payload, &body))
	if m.Secret != "whsec_abc" || m.Key != d.Key || body.Type != "shop.order.shipped" || body.Data.ID != "o1" || body.Data.Total != 7 || m.Text == "" {
		t.Fatalf("webhook %+v, body %+v", m, body)
	}
}

// TestTemplateSetRenderer: a notify/template Set is the notifier's renderer
// as it is, with its locale fallback; a webhook it has no template for gets
// the default payload (its ErrNoTemplate counts as ErrTemplateNotFound).
func TestTemplateSetRenderer(t *testing.T) {
	t.Parallel()
	set, err := ntemplate.NewSet()
	must(t, err)
	must(t, set.Add(ntemplate.Spec{Name: "order.shipped", Channel: Email, Subject: "Order {{.Data.ID}} shipped",
		Text: "Hi {{.Recipient.Name}}, {{money .Data.Total}} on its way."}))
	must(t, set.Add(ntemplate.Spec{Name: "order.shipped", Channel: Email, Locale: "ja", Subject: "{{.Data.ID}} 発送",
		Text: "{{.Recipient.Name}}さん"}))
	dir := testDirectory()
	dir["hooks"] = Recipient{Name: "Hooks", Addresses: map[string]string{Email: "hooks@example.com", Webhook: "https://hooks.example/x"}}
	spec := defaultSpec()
	spec.Channels = []string{Email, Webhook}
	e := newEnv(t, "sqlite", setup{spec: spec, dir: dir, opts: []Option{WithRenderer(set)}})
	e.emit("set", order{ID: "o1", To: []string{"hooks", "alice"}, Total: 1250})
	got := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "set"}, 4))
	expect(t, got, "hooks/email", Sent, "")
	expect(t, got, "hooks/webhook", Sent, "")
	expect(t, got, "alice/email", Sent, "")
	expect(t, got, "alice/webhook", Failed, ReasonNoAddress)
	mails := map[string]Message{}
	for _, m := range e.senders[Email].sent() {
		mails[m.To] = m
	}
	if m := mails["hooks@example.com"]; m.Subject != "Order o1 shipped" || m.Text != "Hi Hooks, 12.50 on its way." {
		t.Errorf("e-mail to hooks: %+v", m)
	}
	if m := mails["alice@example.com"]; m.Subject != "o1 発送" || m.Text != "Aliceさん" { // locale ja-JP falls back to ja
		t.Errorf("e-mail to alice (ja-JP): %+v", m)
	}
	hooks := e.senders[Webhook].sent()
	if len(hooks) != 1 || !strings.HasPrefix(hooks[0].Text, "shop.order.shipped ") || len(hooks[0].Payload) == 0 {
		t.Errorf("webhook without a template: %+v", hooks)
	}
}
