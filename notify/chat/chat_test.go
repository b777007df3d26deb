package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/chat"
	"github.com/heraldhq/herald/notify/sendertest"
)

type post struct {
	URL     string
	Payload map[string]json.RawMessage
	Text    string
}

// slack is an in-process Slack-style incoming webhook: JSON only,
// "ok" on success, Slack's error strings otherwise.
type slack struct {
	srv   *httptest.Server
	conns atomic.Int64
	mu    sync.Mutex
	got   []post
}

func newSlack(t *testing.T) *slack {
	t.Helper()
	sl := &slack{}
	sl.srv = httptest.NewUnstartedServer(sl)
	sl.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			sl.conns.Add(1)
		}
	}
	sl.srv.Start()
	t.Cleanup(sl.srv.Close)
	return sl
}

func (sl *slack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/services/revoked":
		http.Error(w, "no_service", http.StatusNotFound)
		return
	case "/services/archived":
		http.Error(w, "channel_is_archived", http.StatusGone)
		return
	case "/services/bad-token":
		http.Error(w, "invalid_token", http.StatusForbidden)
		return
	case "/services/forbidden":
		http.Error(w, "action_prohibited", http.StatusForbidden)
		return
	case "/services/limited":
		w.Header().Set("Retry-After", "30")
		http.Error(w, "rate_limited", http.StatusTooManyRequests)
		return
	case "/services/broken":
		http.Error(w, "internal_error", http.StatusInternalServerError)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	var p map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	var text string
	if err := json.Unmarshal(p["text"], &text); err != nil || text == "" {
		http.Error(w, "no_text", http.StatusBadRequest)
		return
	}
	sl.mu.Lock()
	sl.got = append(sl.got, post{URL: "http://" + r.Host + r.URL.Path, Payload: p, Text: text})
	sl.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (sl *slack) posts() []post {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return append([]post(nil), sl.got...)
}

func (sl *slack) received() []sendertest.Received {
	var out []sendertest.Received
	for _, p := range sl.posts() {
		// Slack renders the escaped text back into what was meant.
		out = append(out, sendertest.Received{To: p.URL, Text: chat.Unescape(p.Text)})
	}
	return out
}

func newSender(t *testing.T, opts ...chat.Option) *chat.Sender {
	t.Helper()
	s, err := chat.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	sendertest.Run(t, sendertest.Harness{
		Channel:      notify.Chat,
		Capabilities: sendertest.Capabilities{Delivered: true},
		InvalidTo:    "javascript:alert(1)",
		Start: func(t *testing.T) sendertest.Env {
			sl := newSlack(t)
			return sendertest.Env{
				Sender:   newSender(t, chat.WithAllow("127.0.0.1")),
				To:       func(i int) string { return fmt.Sprintf("%s/services/T0/B%d/secret", sl.srv.URL, i) },
				Received: sl.received,
			}
		},
		Down: func(t *testing.T) sendertest.Target {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			_ = l.Close()
			return sendertest.Target{Sender: newSender(t, chat.WithAllowPrivate()), To: "http://" + addr + "/services/x"}
		},
		Stalled: func(t *testing.T) sendertest.Target {
			stop := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-stop:
				}
			}))
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(stop) })
			return sendertest.Target{Sender: newSender(t, chat.WithAllowPrivate()), To: srv.URL + "/services/stalled"}
		},
	})
}

func send(t *testing.T, s *chat.Sender, m notify.Message) (notify.Receipt, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, m)
}

func TestPayload(t *testing.T) {
	sl := newSlack(t)
	s := newSender(t, chat.WithAllowPrivate(), chat.WithUsername("herald"), chat.WithIconEmoji(":bell:"),
		chat.WithBlocks(chat.SectionBlocks), chat.WithoutMarkdown())
	m := notify.Message{To: sl.srv.URL + "/services/T/B/x", Subject: "Deploy <done>", Text: "ping <!channel> & <@U1>"}
	if _, err := send(t, s, m); err != nil {
		t.Fatal(err)
	}
	p := sl.posts()[0]
	if p.Text != "ping &lt;!channel&gt; &amp; &lt;@U1&gt;" {
		t.Errorf("text = %q: <, > and & must be escaped", p.Text)
	}
	var username, icon string
	var mrkdwn bool
	_ = json.Unmarshal(p.Payload["username"], &username)
	_ = json.Unmarshal(p.Payload["icon_emoji"], &icon)
	_ = json.Unmarshal(p.Payload["mrkdwn"], &mrkdwn)
	if username != "herald" || icon != ":bell:" || mrkdwn || p.Payload["mrkdwn"] == nil {
		t.Errorf("username=%q icon=%q mrkdwn=%s", username, icon, p.Payload["mrkdwn"])
	}
	var blocks []struct {
		Type string
		Text struct{ Type, Text string }
	}
	if err := json.Unmarshal(p.Payload["blocks"], &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 || blocks[0].Type != "header" || blocks[0].Text.Text != m.Subject ||
		blocks[1].Type != "section" || blocks[1].Text.Type != "plain_text" || blocks[1].Text.Text != m.Text {
		t.Errorf("blocks = %+v", blocks)
	}

	// Without options: only the text.
	plain := newSender(t, chat.WithAllowPrivate())
	if _, err := send(t, plain, m); err != nil {
		t.Fatal(err)
	}
	if p := sl.posts()[1].Payload; len(p) != 1 {
		t.Errorf("payload = %v, want only text", p)
	}
}

func TestBadBlocks(t *testing.T) {
	sl := newSlack(t)
	for name, fn := range map[string]chat.BlocksFunc{
		"object": func(notify.Message) (json.RawMessage, error) { return json.RawMessage(`{"a":1}`), nil },
		"error":  func(notify.Message) (json.RawMessage, error) { return nil, errors.New("boom") },
	} {
		s := newSender(t, chat.WithAllowPrivate(), chat.WithBlocks(fn))
		if _, err := send(t, s, notify.Message{To: sl.srv.URL, Text: "x"}); !errors.Is(err, notify.ErrPermanent) {
			t.Errorf("%s: Send = %v, want ErrPermanent", name, err)
		}
	}
}

func TestResponses(t *testing.T) {
	sl := newSlack(t)
	s := newSender(t, chat.WithAllowPrivate(), chat.WithMaxRetryAfter(10*time.Second))
	cases := []struct {
		path            string
		permanent, gone bool
		after           time.Duration
	}{
		{"/services/revoked", true, true, 0},
		{"/services/archived", true, true, 0},
		{"/services/bad-token", true, true, 0},
		{"/services/forbidden", true, false, 0},
		{"/services/limited", false, false, 10 * time.Second},
		{"/services/broken", false, false, 0},
	}
	for _, c := range cases {
		_, err := send(t, s, notify.Message{To: sl.srv.URL + c.path, Text: "x"})
		if err == nil {
			t.Errorf("%s: Send succeeded", c.path)
			continue
		}
		if errors.Is(err, notify.ErrPermanent) != c.permanent || errors.Is(err, notify.ErrGone) != c.gone {
			t.Errorf("%s: Send = %v, want permanent=%v gone=%v", c.path, err, c.permanent, c.gone)
		}
		var ra *notify.RetryAfterError
		if errors.As(err, &ra) != (c.after > 0) || (ra != nil && ra.After != c.after) {
			t.Errorf("%s: Send = %v, want Retry-After %v", c.path, err, c.after)
		}
		if strings.Contains(err.Error(), "/services/") {
			t.Errorf("%s: error %q names the webhook URL, which is a secret", c.path, err)
		}
	}
}

func TestGuard(t *testing.T) {
	sl := newSlack(t)
	port := sl.srv.Listener.Addr().(*net.TCPAddr).Port
	s := newSender(t)
	for _, u := range []string{
		sl.srv.URL + "/services/x",
		fmt.Sprintf("http://localhost:%d/services/x", port),
		fmt.Sprintf("http://[::1]:%d/services/x", port),
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1/services/x",
	} {
		if _, err := send(t, s, notify.Message{To: u, Text: "x"}); !errors.Is(err, notify.ErrRefused) {
			t.Errorf("Send(%s) = %v, want ErrRefused", u, err)
		}
	}
	if n := sl.conns.Load(); n != 0 {
		t.Errorf("receiver saw %d connections, want none", n)
	}
}

func TestEscape(t *testing.T) {
	for _, s := range []string{"", "a & b", "<!here>", "&amp; &lt;", "x<y>z&&"} {
		if got := chat.Unescape(chat.Escape(s)); got != s {
			t.Errorf("Unescape(Escape(%q)) = %q", s, got)
		}
		if e := chat.Escape(s); strings.ContainsAny(e, "<>") {
			t.Errorf("Escape(%q) = %q still has < or >", s, e)
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, o := range map[string]chat.Option{
		"timeout":  chat.WithTimeout(-1),
		"cap":      chat.WithMaxRetryAfter(0),
		"username": chat.WithUsername(""),
		"emoji":    chat.WithIconEmoji("bell"),
		"blocks":   chat.WithBlocks(nil),
		"name":     chat.WithName(""),
		"allow":    chat.WithAllow("::zz/99"),
		"nil":      nil,
	} {
		if _, err := chat.New(o); !errors.Is(err, chat.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
		}
	}
}
