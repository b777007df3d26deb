package smtp_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/sendertest"
	"github.com/heraldhq/herald/notify/smtp"
)

const from = "Herald <noreply@herald.test>"

func newSender(t *testing.T, addr string, opts ...smtp.Option) *smtp.Sender {
	t.Helper()
	s, err := smtp.New(addr, from, append([]smtp.Option{smtp.WithTLSPolicy(smtp.TLSNone), smtp.WithTimeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func send(t *testing.T, s *smtp.Sender, m notify.Message) (notify.Receipt, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, m)
}

func received(t *testing.T, b *backend) func() []sendertest.Received {
	return func() []sendertest.Received {
		var out []sendertest.Received
		for _, st := range b.messages() {
			p := parse(t, st.Data)
			to := strings.Join(st.To, ",")
			if hdr := p.Header.Get("To"); hdr != "<"+to+">" && hdr != to {
				t.Errorf("To header %q does not match the envelope %q", hdr, to)
			}
			out = append(out, sendertest.Received{To: to, Subject: p.Subject, Text: p.Text, HTML: p.HTML, Key: p.Header.Get("Message-Id")})
		}
		return out
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// stalledAddr accepts connections and never sends the greeting.
func stalledAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func TestConformance(t *testing.T) {
	sendertest.Run(t, sendertest.Harness{
		Channel:      notify.Email,
		Capabilities: sendertest.Capabilities{Subject: true, HTML: true, Key: true, ProviderID: true},
		InvalidTo:    "not an address",
		KeyOf:        func(k string) string { return smtp.MessageID(k, smtp.DefaultMessageIDDomain) },
		Start: func(t *testing.T) sendertest.Env {
			b := &backend{}
			srv := startServer(t, b, nil)
			return sendertest.Env{
				Sender:   newSender(t, srv.addr, smtp.WithPoolSize(4)),
				To:       func(i int) string { return fmt.Sprintf("user%d@example.test", i) },
				Received: received(t, b),
			}
		},
		Down: func(t *testing.T) sendertest.Target {
			return sendertest.Target{Sender: newSender(t, closedAddr(t)), To: "someone@example.test"}
		},
		Stalled: func(t *testing.T) sendertest.Target {
			return sendertest.Target{Sender: newSender(t, stalledAddr(t), smtp.WithTimeout(time.Minute)), To: "someone@example.test"}
		},
	})
}

func TestMessage(t *testing.T) {
	b := &backend{}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr, smtp.WithMessageIDDomain("mail.herald.test"))
	m := notify.Message{
		Key:     "evt-9/user-1/email",
		To:      "ada@example.test",
		Subject: "Your invoice ✓",
		Text:    "Hello Ada,\nyour invoice is ready.\n",
		HTML:    "<p>Hello Ada,</p><p>your invoice is <b>ready</b>.</p>",
	}
	rc, err := send(t, s, m)
	if err != nil {
		t.Fatal(err)
	}
	wantID := smtp.MessageID(m.Key, "mail.herald.test")
	if rc.ProviderID != wantID || rc.Provider != "smtp" || rc.Delivered {
		t.Errorf("receipt = %+v, want ProviderID %s", rc, wantID)
	}
	msgs := b.messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages", len(msgs))
	}
	st := msgs[0]
	if st.From != "noreply@herald.test" || len(st.To) != 1 || st.To[0] != m.To {
		t.Errorf("envelope from %q to %v", st.From, st.To)
	}
	p := parse(t, st.Data)
	if got := p.Header.Get("Message-Id"); got != wantID {
		t.Errorf("Message-ID = %q, want %q", got, wantID)
	}
	if !strings.HasPrefix(wantID, "<") || len(wantID) != len("<@mail.herald.test>")+64 {
		t.Errorf("Message-ID %q is not <hex(sha256)@domain>", wantID)
	}
	fromHdr, err := p.Header.AddressList("From")
	if err != nil || len(fromHdr) != 1 || fromHdr[0].Address != "noreply@herald.test" || fromHdr[0].Name != "Herald" {
		t.Errorf("From = %v, %v", fromHdr, err)
	}
	toHdr, err := p.Header.AddressList("To")
	if err != nil || len(toHdr) != 1 || toHdr[0].Address != m.To {
		t.Errorf("To = %v, %v", toHdr, err)
	}
	if p.Subject != m.Subject {
		t.Errorf("Subject = %q", p.Subject)
	}
	if _, err := p.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if p.MediaType != "multipart/alternative" || len(p.Parts) != 2 || p.Parts[0] != "text/plain" || p.Parts[1] != "text/html" {
		t.Errorf("structure = %s %v, want multipart/alternative [text/plain text/html]", p.MediaType, p.Parts)
	}
	if norm(p.Text) != m.Text || norm(p.HTML) != m.HTML {
		t.Errorf("text = %q\nhtml = %q", p.Text, p.HTML)
	}

	// Text only: no multipart.
	m.HTML, m.Key = "", "evt-10/user-1/email"
	if _, err := send(t, s, m); err != nil {
		t.Fatal(err)
	}
	p = parse(t, b.messages()[1].Data)
	if p.MediaType != "text/plain" || norm(p.Text) != m.Text || p.HTML != "" {
		t.Errorf("text-only message: %s text=%q html=%q", p.MediaType, p.Text, p.HTML)
	}
	// The same key, the same Message-ID.
	if _, err := send(t, s, m); err != nil {
		t.Fatal(err)
	}
	a, c := parse(t, b.messages()[1].Data), parse(t, b.messages()[2].Data)
	if a.Header.Get("Message-Id") != c.Header.Get("Message-Id") {
		t.Errorf("a resend has Message-ID %q, the first %q", c.Header.Get("Message-Id"), a.Header.Get("Message-Id"))
	}
}

func norm(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

func TestHeaderInjection(t *testing.T) {
	b := &backend{}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr)
	m := notify.Message{Key: "k", To: "ada@example.test", Subject: "Hi\r\nBcc: victim@example.test\r\nX-Injected: 1", Text: "body\r\n.\r\nMAIL FROM:<evil@example.test>\r\n"}
	if _, err := send(t, s, m); err != nil {
		t.Fatal(err)
	}
	msgs := b.messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 {
		t.Fatalf("messages = %+v", msgs)
	}
	p := parse(t, msgs[0].Data)
	if p.Header.Get("X-Injected") != "" || p.Header.Get("Bcc") != "" {
		t.Errorf("a header was injected: %v", p.Header)
	}
	if p.Subject != m.Subject || norm(p.Text) != norm(m.Text) {
		t.Errorf("subject %q text %q", p.Subject, p.Text)
	}
	for _, to := range []string{"ada@example.test\r\nRCPT TO:<x@y>", "ada@example.test, eve@example.test", "<ada@example.test", "ada", "@example.test", ""} {
		if _, err := send(t, s, notify.Message{To: to, Text: "x"}); !errors.Is(err, notify.ErrPermanent) {
			t.Errorf("Send to %q = %v, want ErrPermanent", to, err)
		}
	}
	if n := len(b.messages()); n != 1 {
		t.Errorf("%d messages after the invalid addresses, want 1", n)
	}
}

func TestReplies(t *testing.T) {
	b := &backend{}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr, smtp.WithPoolSize(1))
	cases := []struct {
		to              string
		text            string
		permanent, gone bool
		code            int
	}{
		{"gone@example.test", "x", true, true, 550},        // 550 5.1.1 user unknown: a hard bounce
		{"unavailable@example.test", "x", true, true, 550}, // 550 mailbox unavailable
		{"policy@example.test", "x", true, false, 550},     // 550 5.7.1: policy, the address is fine
		{"relay@example.test", "x", true, false, 554},
		{"greylisted@example.test", "x", false, false, 451},
		{"full@example.test", "x", false, false, 452},
		{"ada@example.test", "REJECT-AT-DATA", true, false, 554},
	}
	for _, c := range cases {
		_, err := send(t, s, notify.Message{Key: c.to, To: c.to, Text: c.text})
		if err == nil {
			t.Errorf("%s: Send succeeded", c.to)
			continue
		}
		if errors.Is(err, notify.ErrPermanent) != c.permanent || errors.Is(err, notify.ErrGone) != c.gone {
			t.Errorf("%s: Send = %v, want permanent=%v gone=%v", c.to, err, c.permanent, c.gone)
		}
		var re *smtp.ReplyError
		if !errors.As(err, &re) || re.Code != c.code {
			t.Errorf("%s: Send = %v, want a ReplyError %d", c.to, err, c.code)
		}
	}
	// The session survived the refusals: one connection for all of it.
	if _, err := send(t, s, notify.Message{Key: "ok", To: "ada@example.test", Text: "fine"}); err != nil {
		t.Fatal(err)
	}
	if n := b.sessions.Load(); n != 1 {
		t.Errorf("%d SMTP sessions, want 1 reused across refusals", n)
	}
}

func TestPoolReuseAndBound(t *testing.T) {
	b := &backend{}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr, smtp.WithPoolSize(3))
	for i := range 10 {
		if _, err := send(t, s, notify.Message{Key: fmt.Sprint(i), To: "ada@example.test", Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.sessions.Load(); n != 1 {
		t.Errorf("sequential sends opened %d sessions, want 1", n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			_, err := send(t, s, notify.Message{Key: fmt.Sprint("c", i), To: "ada@example.test", Text: fmt.Sprint("c", i)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := b.sessions.Load(); n > 3 {
		t.Errorf("concurrent sends opened %d sessions, want at most the pool size 3", n)
	}
	if n := len(b.messages()); n != 50 {
		t.Errorf("%d messages, want 50", n)
	}
}

func TestServerRestart(t *testing.T) {
	b := &backend{}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr, smtp.WithPoolSize(2))
	m := notify.Message{Key: "k", To: "ada@example.test", Text: "before"}
	// Fill the pool with two sessions.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := send(t, s, m); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	srv.stop()
	_, err := send(t, s, notify.Message{Key: "k2", To: "ada@example.test", Text: "while down"})
	if err == nil || errors.Is(err, notify.ErrPermanent) {
		t.Fatalf("Send with the server stopped = %v, want a retryable error", err)
	}

	srv.start() // the same address
	for i := range 3 {
		if _, err := send(t, s, notify.Message{Key: fmt.Sprint("after", i), To: "ada@example.test", Text: fmt.Sprint("after ", i)}); err != nil {
			t.Fatalf("Send %d after the restart: %v", i, err)
		}
	}
	var texts []string
	for _, st := range b.messages() {
		texts = append(texts, strings.TrimSuffix(norm(parse(t, st.Data).Text), "\n")) // SMTP ends the body with a line break
	}
	if strings.Join(texts, "|") != "before|before|after 0|after 1|after 2" {
		t.Errorf("messages = %q", texts)
	}
}

func TestPooledSessionDroppedByServer(t *testing.T) {
	// The server restarts between two sends: the pooled session is dead,
	// and the next Send must redial without failing.
	b := &backend{}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr)
	if _, err := send(t, s, notify.Message{Key: "1", To: "ada@example.test", Text: "1"}); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	srv.start()
	if _, err := send(t, s, notify.Message{Key: "2", To: "ada@example.test", Text: "2"}); err != nil {
		t.Fatalf("Send on a pooled session the server dropped: %v", err)
	}
	if n := b.sessions.Load(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
}

func TestPooledSessionClosedWith421(t *testing.T) {
	// The server answers MAIL on a pooled session with 421 (it is closing
	// the session): nothing of the message was sent, so the Send moves to a
	// new session instead of failing.
	b := &backend{closeAfter: 1}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr)
	for i := range 3 {
		if _, err := send(t, s, notify.Message{Key: fmt.Sprint(i), To: "ada@example.test", Text: fmt.Sprint(i)}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n, m := b.sessions.Load(), len(b.messages()); n != 3 || m != 3 {
		t.Errorf("%d sessions, %d messages; want 3 and 3", n, m)
	}
}

func TestSTARTTLSMandatoryWithPlainAuth(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	b := &backend{user: "herald", pass: "hunter2", mechs: []string{"PLAIN", "LOGIN"}}
	srv := startServer(t, b, serverTLS)
	s, err := smtp.New(srv.addr, from, smtp.WithTLSPolicy(smtp.TLSMandatory), smtp.WithTLSConfig(clientTLS),
		smtp.WithAuth(smtp.AuthPlain, "herald", "hunter2"), smtp.WithHELO("sender.herald.test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := send(t, s, notify.Message{Key: "tls", To: "ada@example.test", Text: "over TLS"}); err != nil {
		t.Fatal(err)
	}
	if msgs := b.messages(); len(msgs) != 1 || msgs[0].User != "herald" {
		t.Errorf("messages = %+v, want one from the authenticated user", msgs)
	}

	// An untrusted certificate fails the connection, retryably.
	untrusting, err := smtp.New(srv.addr, from, smtp.WithTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}), smtp.WithAuth(smtp.AuthPlain, "herald", "hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = untrusting.Close() })
	if _, err := send(t, untrusting, notify.Message{Key: "x", To: "ada@example.test", Text: "x"}); err == nil || errors.Is(err, notify.ErrPermanent) {
		t.Errorf("Send with an untrusted certificate = %v, want a retryable error", err)
	}
}

func TestImplicitTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	b := &backend{user: "herald", pass: "hunter2", mechs: []string{"PLAIN"}}
	srv := &server{t: t, b: b, tls: serverTLS, implicit: true, addr: "127.0.0.1:0"}
	srv.start()
	t.Cleanup(srv.stop)
	s, err := smtp.New(srv.addr, from, smtp.WithImplicitTLS(), smtp.WithTLSConfig(clientTLS), smtp.WithAuth(smtp.AuthPlain, "herald", "hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := send(t, s, notify.Message{Key: "smtps", To: "ada@example.test", Text: "over SMTPS"}); err != nil {
		t.Fatal(err)
	}
	if msgs := b.messages(); len(msgs) != 1 || msgs[0].User != "herald" {
		t.Errorf("messages = %+v", msgs)
	}
}

func TestSTARTTLSPolicies(t *testing.T) {
	b := &backend{}
	srv := startServer(t, b, nil) // no STARTTLS offered
	mandatory, err := smtp.New(srv.addr, from)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mandatory.Close() })
	_, err = send(t, mandatory, notify.Message{Key: "m", To: "ada@example.test", Text: "x"})
	if err == nil || errors.Is(err, notify.ErrPermanent) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("mandatory STARTTLS against a server without it = %v, want a retryable STARTTLS error", err)
	}
	opportunistic := newSender(t, srv.addr, smtp.WithTLSPolicy(smtp.TLSOpportunistic))
	if _, err := send(t, opportunistic, notify.Message{Key: "o", To: "ada@example.test", Text: "x"}); err != nil {
		t.Errorf("opportunistic: %v", err)
	}
	if n := len(b.messages()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
}

func TestAuthMechanisms(t *testing.T) {
	for _, mech := range []smtp.AuthMechanism{smtp.AuthPlain, smtp.AuthLogin, smtp.AuthCRAMMD5, smtp.AuthAutoDiscover} {
		t.Run(string(mech), func(t *testing.T) {
			b := &backend{user: "herald", pass: "hunter2", mechs: []string{"PLAIN", "LOGIN", "CRAM-MD5"}}
			srv := startServer(t, b, nil)
			s := newSender(t, srv.addr, smtp.WithAuth(mech, "herald", "hunter2"))
			if _, err := send(t, s, notify.Message{Key: "a", To: "ada@example.test", Text: "authenticated"}); err != nil {
				t.Fatal(err)
			}
			if msgs := b.messages(); len(msgs) != 1 || msgs[0].User != "herald" {
				t.Errorf("messages = %+v", msgs)
			}
			wrong := newSender(t, srv.addr, smtp.WithAuth(mech, "herald", "wrong"))
			_, err := send(t, wrong, notify.Message{Key: "a", To: "ada@example.test", Text: "x"})
			if err == nil || errors.Is(err, notify.ErrPermanent) {
				t.Errorf("wrong password = %v, want a retryable error", err)
			}
			if strings.Contains(fmt.Sprint(err), "wrong") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	b := &backend{}
	srv := startServer(t, b, nil)
	s := newSender(t, srv.addr)
	if _, err := send(t, s, notify.Message{Key: "1", To: "ada@example.test", Text: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	_, err := send(t, s, notify.Message{Key: "2", To: "ada@example.test", Text: "2"})
	if !errors.Is(err, smtp.ErrClosed) || errors.Is(err, notify.ErrPermanent) {
		t.Errorf("Send after Close = %v, want ErrClosed (retryable)", err)
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, o := range map[string]smtp.Option{
		"policy":      smtp.WithTLSPolicy(smtp.TLSPolicy(9)),
		"tls config":  smtp.WithTLSConfig(nil),
		"auth mech":   smtp.WithAuth("NTLMv0", "u", "p"),
		"auth user":   smtp.WithAuth(smtp.AuthPlain, "", "p"),
		"helo":        smtp.WithHELO("a b"),
		"timeout":     smtp.WithTimeout(0),
		"pool":        smtp.WithPoolSize(0),
		"idle":        smtp.WithIdleTimeout(-1),
		"id domain":   smtp.WithMessageIDDomain("bad domain>"),
		"name":        smtp.WithName(""),
		"nil option":  nil,
		"empty label": smtp.WithMessageIDDomain("a..b"),
	} {
		if _, err := smtp.New("127.0.0.1:25", from, o); !errors.Is(err, smtp.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
		}
	}
	for _, args := range [][2]string{{"127.0.0.1", from}, {"127.0.0.1:0", from}, {":25", from}, {"127.0.0.1:25", "not an address"}, {"127.0.0.1:25", "a@b\r\nBcc: c@d"}} {
		if _, err := smtp.New(args[0], args[1]); !errors.Is(err, smtp.ErrInvalidOption) {
			t.Errorf("New(%q, %q) = %v, want ErrInvalidOption", args[0], args[1], err)
		}
	}
}
