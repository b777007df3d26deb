package devbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func newBox(t *testing.T, opts ...devbox.Option) *devbox.Box {
	t.Helper()
	b, err := devbox.New(append([]devbox.Option{devbox.Clock(func() time.Time { return t0 })}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func msg(ch, to, subject string) notify.Message {
	return notify.Message{Channel: ch, To: to, Subject: subject, Text: "body of " + subject, Key: "k-" + subject}
}

func TestSendAndList(t *testing.T) {
	ctx := t.Context()
	b := newBox(t, devbox.Name("mailpit"))
	email, sms := b.Sender(notify.Email), b.Sender(notify.SMS)
	if email.Name() != "mailpit" || email.Channel() != notify.Email || sms.Channel() != notify.SMS {
		t.Fatalf("sender identity %s %s %s", email.Name(), email.Channel(), sms.Channel())
	}
	rc, err := email.Send(ctx, msg(notify.Email, "ann@example.com", "one"))
	if err != nil {
		t.Fatal(err)
	}
	if rc != (notify.Receipt{Provider: "mailpit", ProviderID: "mailpit-1", Delivered: true}) {
		t.Fatalf("receipt %+v", rc)
	}
	// Channel may be left empty: the sender's is used.
	if _, err := sms.Send(ctx, notify.Message{To: "+41790000000", Text: "two"}); err != nil {
		t.Fatal(err)
	}
	if _, err := email.Send(ctx, msg(notify.Email, "bob@example.com", "three")); err != nil {
		t.Fatal(err)
	}
	all := b.List(devbox.Filter{})
	if len(all) != 3 || all[0].Seq != 1 || all[2].Seq != 3 || all[1].Message.Channel != notify.SMS || !all[0].At.Equal(t0) || all[0].Provider != "mailpit" {
		t.Fatalf("list %+v", all)
	}
	if got := b.List(devbox.Filter{Channel: notify.Email}); len(got) != 2 || got[1].Message.Subject != "three" {
		t.Fatalf("email filter %+v", got)
	}
	if got := b.List(devbox.Filter{To: "ann@example.com"}); len(got) != 1 || got[0].Message.Key != "k-one" {
		t.Fatalf("to filter %+v", got)
	}
	if got := b.List(devbox.Filter{Limit: 1}); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("limit %+v", got)
	}
	if got := b.List(devbox.Filter{After: 2}); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("after %+v", got)
	}
	if b.Count() != 3 {
		t.Fatalf("count %d", b.Count())
	}
	if e, ok := b.Last(); !ok || e.Seq != 3 {
		t.Fatalf("last %+v %v", e, ok)
	}
}

func TestPayloadIsCopied(t *testing.T) {
	b := newBox(t)
	p := []byte(`{"a":1}`)
	if _, err := b.Sender(notify.Webhook).Send(t.Context(), notify.Message{To: "https://x.example/hook", Payload: p}); err != nil {
		t.Fatal(err)
	}
	p[2] = 'X'
	if e, _ := b.Last(); string(e.Message.Payload) != `{"a":1}` {
		t.Fatalf("payload aliased: %s", e.Message.Payload)
	}
}

func TestRingEvicts(t *testing.T) {
	b := newBox(t, devbox.Capacity(3))
	s := b.Sender(notify.Email)
	for i := 1; i <= 7; i++ {
		if _, err := s.Send(t.Context(), msg("", "a@example.com", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	got := b.List(devbox.Filter{})
	if len(got) != 3 || got[0].Message.Subject != "5" || got[2].Message.Subject != "7" {
		t.Fatalf("ring %+v", got)
	}
	if st := b.Stats(); st != (devbox.Stats{Accepted: 7, Held: 3, Capacity: 3}) {
		t.Fatalf("stats %+v", st)
	}
	for seq := uint64(0); seq <= 8; seq++ {
		e, ok := b.Get(seq)
		if want := seq >= 5 && seq <= 7; ok != want || (ok && e.Seq != seq) {
			t.Errorf("Get(%d) = %d, %v", seq, e.Seq, ok)
		}
	}
	b.Clear()
	if len(b.List(devbox.Filter{})) != 0 || b.Count() != 7 {
		t.Fatal("clear")
	}
	if _, ok := b.Last(); ok {
		t.Fatal("last after clear")
	}
	if _, err := s.Send(t.Context(), msg("", "a@example.com", "8")); err != nil {
		t.Fatal(err)
	}
	if e, ok := b.Get(8); !ok || e.Message.Subject != "8" {
		t.Fatalf("after clear: %+v %v", e, ok)
	}
}

func TestSendErrors(t *testing.T) {
	b := newBox(t)
	s := b.Sender(notify.Email)
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name      string
		sender    *devbox.Sender
		ctx       context.Context
		m         notify.Message
		permanent bool
		is        error
	}{
		{"no recipient", s, t.Context(), notify.Message{Text: "x"}, true, notify.ErrPermanent},
		{"other channel", s, t.Context(), msg(notify.SMS, "+1", "x"), true, notify.ErrPermanent},
		{"sender without channel", b.Sender(""), t.Context(), msg("", "a@example.com", "x"), true, notify.ErrPermanent},
		{"cancelled", s, cancelled, msg("", "a@example.com", "x"), false, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.sender.Send(tc.ctx, tc.m)
			if !errors.Is(err, tc.is) || errors.Is(err, notify.ErrPermanent) != tc.permanent {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if st := b.Stats(); st.Accepted != 0 || st.Failed != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFailureInjection(t *testing.T) {
	ctx := t.Context()
	b := newBox(t)
	s := b.Sender(notify.Email)
	m := msg("", "a@example.com", "x")

	b.FailNext(2, nil)
	for range 2 {
		if _, err := s.Send(ctx, m); !errors.Is(err, devbox.ErrInjected) || errors.Is(err, notify.ErrPermanent) {
			t.Fatalf("err = %v", err)
		}
	}
	if _, err := s.Send(ctx, m); err != nil {
		t.Fatalf("third send: %v", err)
	}

	b.FailNext(1, notify.ErrGone)
	if _, err := s.Send(ctx, m); !errors.Is(err, notify.ErrGone) {
		t.Fatalf("err = %v", err)
	}
	b.FailNext(1, &notify.RetryAfterError{After: time.Minute, Err: errors.New("slow down")})
	var ra *notify.RetryAfterError
	if _, err := s.Send(ctx, m); !errors.As(err, &ra) || ra.After != time.Minute {
		t.Fatalf("err = %v", err)
	}
	b.FailNext(5, nil)
	b.FailNext(0, nil) // cancels
	if _, err := s.Send(ctx, m); err != nil {
		t.Fatal(err)
	}

	b.Down()
	if !b.IsDown() {
		t.Fatal("not down")
	}
	for range 3 {
		if _, err := b.Sender(notify.SMS).Send(ctx, msg("", "+1", "y")); !errors.Is(err, devbox.ErrDown) {
			t.Fatalf("err = %v", err)
		}
	}
	b.Up()
	if _, err := s.Send(ctx, m); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Accepted != 3 || st.Failed != 7 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWait(t *testing.T) {
	b := newBox(t)
	s := b.Sender(notify.Email)
	done := make(chan error, 1)
	go func() { done <- b.Wait(t.Context(), 3) }()
	found := make(chan []devbox.Entry, 1)
	go func() {
		es, err := b.WaitFor(t.Context(), devbox.Filter{To: "bob@example.com"}, 2)
		if err != nil {
			t.Error(err)
		}
		found <- es
	}()
	for _, to := range []string{"ann@example.com", "bob@example.com", "bob@example.com"} {
		if _, err := s.Send(t.Context(), msg("", to, "x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if es := <-found; len(es) != 2 || es[0].Seq != 2 {
		t.Fatalf("WaitFor %+v", es)
	}
	// Already satisfied: returns at once.
	if err := b.Wait(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	// Times out with the context's error.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx, 4); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if es, err := b.WaitFor(ctx, devbox.Filter{Channel: notify.SMS}, 1); !errors.Is(err, context.DeadlineExceeded) || len(es) != 0 {
		t.Fatalf("WaitFor: %v %v", es, err)
	}
}

func TestConcurrentSend(t *testing.T) {
	b := newBox(t, devbox.Capacity(50))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			s := b.Sender(fmt.Sprint("ch", g%2))
			for i := range 100 {
				if _, err := s.Send(t.Context(), msg("", "a@example.com", fmt.Sprint(i))); err != nil {
					t.Error(err)
					return
				}
				_ = b.List(devbox.Filter{Limit: 5})
			}
		})
	}
	wg.Go(func() {
		if err := b.Wait(t.Context(), 800); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	got := b.List(devbox.Filter{})
	if b.Count() != 800 || len(got) != 50 || got[0].Seq != 751 || got[49].Seq != 800 {
		t.Fatalf("count %d, held %d", b.Count(), len(got))
	}
}

func TestOptions(t *testing.T) {
	for i, o := range []devbox.Option{
		devbox.Capacity(0), devbox.Capacity(devbox.MaxCapacity + 1), devbox.Name(" "), devbox.Clock(nil), nil,
	} {
		if _, err := devbox.New(o); !errors.Is(err, devbox.ErrInvalidOption) {
			t.Errorf("option %d: err = %v", i, err)
		}
	}
}

func TestHTTPJSON(t *testing.T) {
	b := newBox(t)
	ctx := t.Context()
	if _, err := b.Sender(notify.Email).Send(ctx, notify.Message{To: "ann@example.com", Subject: "hi", Text: "t", HTML: "<p>h</p>", Key: "k1", EventType: "order.confirmed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sender(notify.Webhook).Send(ctx, notify.Message{To: "https://x.example/h", Text: "w", Payload: []byte(`{"id":7}`), Secret: "whsec_c2VjcmV0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sender(notify.Push).Send(ctx, notify.Message{To: "sub", Text: "p", Payload: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.StripPrefix("/devbox", b.Handler()))
	defer srv.Close()

	var list struct {
		Stats    map[string]any   `json:"stats"`
		Messages []map[string]any `json:"messages"`
	}
	body := get(t, srv.URL+"/devbox/messages", http.StatusOK, "application/json")
	if strings.Contains(body, "c2VjcmV0") {
		t.Fatal("secret leaked into JSON")
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Messages) != 3 || list.Stats["accepted"] != 3.0 {
		t.Fatalf("list %s", body)
	}
	m0, m1, m2 := list.Messages[0], list.Messages[1], list.Messages[2]
	if m0["channel"] != "email" || m0["html"] != "<p>h</p>" || m0["event_type"] != "order.confirmed" || m0["at"] != "2026-05-01T12:00:00Z" {
		t.Errorf("email entry %v", m0)
	}
	if p, ok := m1["payload"].(map[string]any); !ok || p["id"] != 7.0 || m1["signed"] != true {
		t.Errorf("webhook entry %v", m1)
	}
	if m2["payload_text"] != "not json" {
		t.Errorf("push entry %v", m2)
	}

	body = get(t, srv.URL+"/devbox/messages?channel=webhook&limit=5", http.StatusOK, "application/json")
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Messages) != 1 {
		t.Fatalf("filtered: %s", body)
	}
	get(t, srv.URL+"/devbox/messages?limit=x", http.StatusBadRequest, "application/json")

	body = get(t, srv.URL+"/devbox/messages/2", http.StatusOK, "application/json")
	if !strings.Contains(body, `"seq": 2`) {
		t.Fatalf("one: %s", body)
	}
	get(t, srv.URL+"/devbox/messages/9", http.StatusNotFound, "application/json")
	get(t, srv.URL+"/devbox/messages/x", http.StatusNotFound, "application/json")
	get(t, srv.URL+"/devbox/nope", http.StatusNotFound, "")
	// The bare mount point redirects to the page, with its query.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp0, err := noRedirect.Get(srv.URL + "/devbox?channel=sms")
	if err != nil {
		t.Fatal(err)
	}
	resp0.Body.Close()
	if resp0.StatusCode != http.StatusFound || resp0.Header.Get("Location") != "/devbox/?channel=sms" {
		t.Fatalf("bare mount: %d %s", resp0.StatusCode, resp0.Header.Get("Location"))
	}

	resp, err := http.Post(srv.URL+"/devbox/messages", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, srv.URL+"/devbox/messages", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || len(b.List(devbox.Filter{})) != 0 {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	body = get(t, srv.URL+"/devbox/messages", http.StatusOK, "application/json")
	if !strings.Contains(body, `"messages": []`) {
		t.Fatalf("empty list: %s", body)
	}
}

func TestHTTPPageEscapes(t *testing.T) {
	b := newBox(t, devbox.Name("box<1>"))
	evil := `<script>alert(1)</script>`
	if _, err := b.Sender(notify.Email).Send(t.Context(), notify.Message{
		To: evil + "@example.com", Subject: evil, Text: evil, HTML: `<p onclick="x()">` + evil + `"</p>`,
		EventType: evil, Payload: []byte(`{"x":"` + "</pre>" + `"}`),
	}); err != nil {
		t.Fatal(err)
	}
	b.Down()
	srv := httptest.NewServer(b.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/?refresh=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	page := string(raw)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "box<1>") || strings.Contains(page, `<p onclick`) {
		t.Fatalf("unescaped content in page:\n%s", page)
	}
	for _, want := range []string{
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		`<iframe sandbox title="HTML body of message 1" srcdoc="&lt;p onclick=&#34;x()&#34;&gt;`,
		"DOWN",
		"box&lt;1&gt;",
		"&lt;/pre&gt;",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, `http-equiv="refresh"`) {
		t.Error("refresh=0 still refreshes")
	}
	if page := get(t, srv.URL+"/?channel=sms", http.StatusOK, "text/html"); !strings.Contains(page, "No messages yet.") || !strings.Contains(page, `content="5"`) {
		t.Errorf("filtered page:\n%s", page)
	}
}

func get(t *testing.T, url string, status int, contentType string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status || !strings.HasPrefix(resp.Header.Get("Content-Type"), contentType) {
		t.Fatalf("GET %s: %d %s, want %d %s\n%s", url, resp.StatusCode, resp.Header.Get("Content-Type"), status, contentType, body)
	}
	return string(body)
}
