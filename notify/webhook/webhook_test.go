package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/sendertest"
	"github.com/heraldhq/herald/notify/webhook"
)

func secret(seed string) string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(seed, 32)[:32]))
}

var (
	secretA = secret("a")
	secretB = secret("b")
	secretC = secret("c")
)

// delivery is one request the receiver got.
type delivery struct {
	Header   http.Header
	Body     []byte
	Path     string
	Host     string
	Verified map[string]bool // by secret
}

// receiver is a real Standard Webhooks receiver: it verifies signatures
// with the reference library and accepts only signed requests (when
// require is set) before recording them.
type receiver struct {
	srv      *httptest.Server
	secrets  []string
	require  bool
	conns    atomic.Int64
	answer   func(w http.ResponseWriter, r *http.Request) bool // true: answered
	mu       sync.Mutex
	got      []delivery
	verifier map[string]*standardwebhooks.Webhook
}

func newReceiver(t *testing.T, require bool, secrets ...string) *receiver {
	t.Helper()
	rv := &receiver{secrets: secrets, require: require, verifier: map[string]*standardwebhooks.Webhook{}}
	for _, s := range secrets {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatalf("NewWebhook: %v", err)
		}
		rv.verifier[s] = wh
	}
	rv.srv = httptest.NewUnstartedServer(rv)
	rv.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			rv.conns.Add(1)
		}
	}
	rv.srv.Start()
	t.Cleanup(rv.srv.Close)
	return rv
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	d := delivery{Header: r.Header.Clone(), Body: body, Path: r.URL.Path, Host: r.Host, Verified: map[string]bool{}}
	ok := false
	for s, wh := range rv.verifier {
		if wh.Verify(body, r.Header) == nil {
			d.Verified[s] = true
			ok = true
		}
	}
	if rv.answer != nil && rv.answer(w, r) {
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want JSON", http.StatusUnsupportedMediaType)
		return
	}
	if rv.require && !ok {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	rv.mu.Lock()
	rv.got = append(rv.got, d)
	rv.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rv *receiver) deliveries() []delivery {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]delivery(nil), rv.got...)
}

func (rv *receiver) received() []sendertest.Received {
	var out []sendertest.Received
	for _, d := range rv.deliveries() {
		var b struct{ Subject, Text string }
		_ = json.Unmarshal(d.Body, &b)
		out = append(out, sendertest.Received{
			To: "http://" + d.Host + d.Path, Subject: b.Subject, Text: b.Text, Key: d.Header.Get("webhook-id"),
		})
	}
	return out
}

func newSender(t *testing.T, opts ...webhook.Option) *webhook.Sender {
	t.Helper()
	s, err := webhook.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "http://" + addr + "/hook"
}

func stalledURL(t *testing.T) string {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // runs before srv.Close
	return srv.URL + "/stalled"
}

func TestConformance(t *testing.T) {
	sendertest.Run(t, sendertest.Harness{
		Channel:      notify.Webhook,
		Capabilities: sendertest.Capabilities{Subject: true, Key: true, Delivered: true},
		Prepare:      func(m *notify.Message) { m.Secret = secretA },
		InvalidTo:    "ftp://127.0.0.1/hook",
		Start: func(t *testing.T) sendertest.Env {
			rv := newReceiver(t, true, secretA)
			return sendertest.Env{
				Sender:   newSender(t, webhook.WithAllow("127.0.0.1")),
				To:       func(i int) string { return fmt.Sprintf("%s/hooks/%d", rv.srv.URL, i) },
				Received: rv.received,
			}
		},
		Down: func(t *testing.T) sendertest.Target {
			return sendertest.Target{Sender: newSender(t, webhook.WithAllow("127.0.0.0/8")), To: closedURL(t)}
		},
		Stalled: func(t *testing.T) sendertest.Target {
			return sendertest.Target{Sender: newSender(t, webhook.WithAllowPrivate()), To: stalledURL(t)}
		},
	})
}

func send(t *testing.T, s *webhook.Sender, m notify.Message) (notify.Receipt, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, m)
}

func TestRequestAndSignature(t *testing.T) {
	rv := newReceiver(t, true, secretA)
	fixed := time.Unix(1_700_000_000, 0)
	s := newSender(t, webhook.WithAllowPrivate(), webhook.WithClock(func() time.Time { return time.Now() }))
	payload := []byte(`{"type":"invoice.paid","data":{"id":"in_1","note":"<script>x</script>"}}`)
	rc, err := send(t, s, notify.Message{Key: "evt_1/u1/webhook", To: rv.srv.URL + "/in", Payload: payload, Secret: secretA, Text: "ignored"})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !rc.Delivered || rc.Provider != "webhook" {
		t.Errorf("receipt = %+v", rc)
	}
	got := rv.deliveries()
	if len(got) != 1 {
		t.Fatalf("got %d deliveries", len(got))
	}
	d := got[0]
	if !bytes.Equal(d.Body, payload) {
		t.Errorf("body = %s, want the payload byte for byte", d.Body)
	}
	if d.Header.Get("webhook-id") != "evt_1/u1/webhook" || d.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v", d.Header)
	}
	if sig := d.Header.Get("webhook-signature"); !strings.HasPrefix(sig, "v1,") || strings.Contains(sig, " ") {
		t.Errorf("webhook-signature = %q, want one v1 signature", sig)
	}
	if !d.Verified[secretA] {
		t.Error("the reference library did not verify the signature")
	}

	// A signature is for one timestamp: Sign agrees with the library.
	wh, _ := standardwebhooks.NewWebhook(secretA)
	want, _ := wh.Sign("id", fixed, payload)
	sig, err := webhook.Sign(secretA, "id", fixed, payload)
	if err != nil || sig != want {
		t.Errorf("Sign = %q, %v; the library signs %q", sig, err, want)
	}
}

func TestDefaultBody(t *testing.T) {
	rv := newReceiver(t, true, secretA)
	s := newSender(t, webhook.WithAllowPrivate())
	m := notify.Message{Key: "k", To: rv.srv.URL, Subject: "S <b>", Text: "T \"q\" </script>", EventID: "e1", EventType: "x.y", Secret: secretA}
	if _, err := send(t, s, m); err != nil {
		t.Fatal(err)
	}
	var b map[string]string
	if err := json.Unmarshal(rv.deliveries()[0].Body, &b); err != nil {
		t.Fatal(err)
	}
	if b["subject"] != m.Subject || b["text"] != m.Text || b["event_id"] != "e1" || b["event_type"] != "x.y" {
		t.Errorf("body = %v", b)
	}
}

func TestRotation(t *testing.T) {
	// Receivers configured with either secret accept a message signed
	// during a rotation; one with a third secret does not.
	rv := newReceiver(t, false, secretA, secretB, secretC)
	s := newSender(t, webhook.WithAllowPrivate())
	if _, err := send(t, s, notify.Message{Key: "rot", To: rv.srv.URL, Text: "rotating", Secret: secretA + " " + secretB}); err != nil {
		t.Fatal(err)
	}
	d := rv.deliveries()[0]
	if sigs := strings.Fields(d.Header.Get("webhook-signature")); len(sigs) != 2 {
		t.Errorf("webhook-signature = %q, want two signatures", d.Header.Get("webhook-signature"))
	}
	if !d.Verified[secretA] || !d.Verified[secretB] {
		t.Errorf("verified by A=%v B=%v, want both", d.Verified[secretA], d.Verified[secretB])
	}
	if d.Verified[secretC] {
		t.Error("a receiver with an unrelated secret accepted the message")
	}
}

func TestSecretAndPayloadErrors(t *testing.T) {
	rv := newReceiver(t, false, secretA)
	s := newSender(t, webhook.WithAllowPrivate(), webhook.WithRequireSignature())
	cases := map[string]notify.Message{
		"bad secret":   {Key: "k", To: rv.srv.URL, Text: "x", Secret: "whsec_!!!not-base64"},
		"no secret":    {Key: "k", To: rv.srv.URL, Text: "x"},
		"bad payload":  {Key: "k", To: rv.srv.URL, Text: "x", Secret: secretA, Payload: []byte("{nope")},
		"bad url":      {Key: "k", To: "http://[::1", Text: "x", Secret: secretA},
		"no host":      {Key: "k", To: "http:///path", Text: "x", Secret: secretA},
		"other scheme": {Key: "k", To: "file:///etc/passwd", Text: "x", Secret: secretA},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := send(t, s, m)
			if !errors.Is(err, notify.ErrPermanent) {
				t.Errorf("Send = %v, want ErrPermanent", err)
			}
			if strings.Contains(fmt.Sprint(err), "not-base64") {
				t.Errorf("error %q echoes the secret", err)
			}
		})
	}
	if n := rv.conns.Load(); n != 0 {
		t.Errorf("receiver saw %d connections, want none", n)
	}
}

func TestGuardRefuses(t *testing.T) {
	rv := newReceiver(t, false)
	port := rv.srv.Listener.Addr().(*net.TCPAddr).Port
	s := newSender(t) // no allow option
	urls := []string{
		rv.srv.URL, // 127.0.0.1
		fmt.Sprintf("http://localhost:%d/", port),          // a name resolving to loopback: caught at dial time
		fmt.Sprintf("http://[::1]:%d/", port),              // IPv6 loopback
		fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/", port), // IPv4-mapped loopback
		fmt.Sprintf("http://0.0.0.0:%d/", port),            // unspecified
		"http://169.254.169.254/latest/meta-data/",         // cloud metadata
		"http://10.0.0.1/",                                 // RFC 1918
		"http://192.168.1.1/", "http://172.16.0.1/", "http://100.64.0.1/",
		"http://[fd00::1]/", "http://[fe80::1%25eth0]/", "http://224.0.0.1/", "http://255.255.255.255/",
		"http://[64:ff9b::a00:1]/", // NAT64 of 10.0.0.1
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			_, err := send(t, s, notify.Message{Key: "k", To: u, Text: "x"})
			if !errors.Is(err, notify.ErrRefused) {
				t.Errorf("Send(%s) = %v, want ErrRefused", u, err)
			}
		})
	}
	if n := rv.conns.Load(); n != 0 {
		t.Errorf("receiver saw %d connections, want none: the guard must refuse before connecting", n)
	}
}

func TestGuardAtDialTime(t *testing.T) {
	g, err := webhook.NewGuard()
	if err != nil {
		t.Fatal(err)
	}
	// The Control function alone refuses private addresses; no socket is
	// created here at all.
	for _, addr := range []string{"10.0.0.1:80", "169.254.169.254:80", "[::1]:443", "127.0.0.1:25", "[fc00::1]:80", "0.0.0.0:80"} {
		if err := g.Control("tcp", addr, nil); !errors.Is(err, notify.ErrRefused) {
			t.Errorf("Control(%s) = %v, want ErrRefused", addr, err)
		}
	}
	for _, addr := range []string{"93.184.216.34:443", "[2606:2800:220:1:248:1893:25c8:1946]:443", "1.1.1.1:80"} {
		if err := g.Control("tcp", addr, nil); err != nil {
			t.Errorf("Control(%s) = %v, want nil", addr, err)
		}
	}
	// DialContext resolves and checks each address before connecting.
	var accepted atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("localhost:%d", port)} {
		if _, err := g.DialContext(t.Context(), "tcp", addr); !errors.Is(err, notify.ErrRefused) {
			t.Errorf("DialContext(%s) = %v, want ErrRefused", addr, err)
		}
	}
	// Allowed by CIDR or by host name, the same dial goes through.
	for _, opt := range []webhook.GuardOption{webhook.Allow("127.0.0.0/8"), webhook.Allow("LocalHost"), webhook.AllowPrivate()} {
		ok, err := webhook.NewGuard(opt)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ok.DialContext(t.Context(), "tcp", fmt.Sprintf("localhost:%d", port))
		if err != nil {
			t.Errorf("allowed dial: %v", err)
			continue
		}
		_, _ = io.Copy(io.Discard, c) // EOF once the listener accepted and closed it
		_ = c.Close()
	}
	_ = l.Close()
	<-done
	if n := accepted.Load(); n != 3 {
		t.Errorf("listener accepted %d connections, want exactly the 3 allowed ones", n)
	}
}

func TestCheckIP(t *testing.T) {
	g, _ := webhook.NewGuard(webhook.Allow("10.1.0.0/16", "fd00::5"))
	cases := map[string]bool{ // address → allowed
		"10.1.2.3": true, "10.2.0.1": false, "fd00::5": true, "fd00::6": false,
		"8.8.8.8": true, "2001:4860:4860::8888": true, "169.254.169.254": false,
		"::ffff:10.1.2.3": true, "::ffff:192.168.0.1": false, "2002:c0a8:0101::1": false, // 6to4 of 192.168.1.1
	}
	for a, want := range cases {
		err := g.CheckIP(netip.MustParseAddr(a))
		if (err == nil) != want {
			t.Errorf("CheckIP(%s) = %v, want allowed=%v", a, err, want)
		}
	}
}

func TestRedirects(t *testing.T) {
	target := newReceiver(t, true, secretA)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusTemporaryRedirect)
		case "/loopback":
			http.Redirect(w, r, target.srv.URL+"/sneaky", http.StatusTemporaryRedirect)
		default:
			http.Redirect(w, r, target.srv.URL+"/moved", http.StatusPermanentRedirect)
		}
	}))
	t.Cleanup(redirector.Close)
	redirectorHost := strings.TrimPrefix(redirector.URL, "http://")
	m := notify.Message{Key: "r", Text: "redirected", Secret: secretA}

	s := newSender(t, webhook.WithAllow("127.0.0.1"))
	m.To = redirector.URL + "/metadata"
	if _, err := send(t, s, m); !errors.Is(err, notify.ErrRefused) {
		t.Errorf("redirect to the metadata address = %v, want ErrRefused", err)
	}
	// Only the host name "localhost" is allowed: the redirector is reached
	// through it, and its redirect to 127.0.0.1 is refused.
	onlyName := newSender(t, webhook.WithAllow("localhost"))
	m.To = fmt.Sprintf("http://localhost:%d/loopback", redirector.Listener.Addr().(*net.TCPAddr).Port)
	if _, err := send(t, onlyName, m); !errors.Is(err, notify.ErrRefused) {
		t.Errorf("redirect to a refused loopback address = %v, want ErrRefused", err)
	}
	if n := target.conns.Load(); n != 0 {
		t.Errorf("the refused redirect target saw %d connections", n)
	}
	m.To = redirector.URL + "/ok"
	if _, err := send(t, s, m); err != nil {
		t.Fatalf("allowed redirect: %v", err)
	}
	got := target.deliveries()
	if len(got) != 1 || got[0].Path != "/moved" || !got[0].Verified[secretA] {
		t.Fatalf("redirect target got %+v, want one signed delivery", got)
	}

	noFollow := newSender(t, webhook.WithAllowPrivate(), webhook.WithMaxRedirects(0))
	m.To = "http://" + redirectorHost + "/ok"
	if _, err := send(t, noFollow, m); !errors.Is(err, notify.ErrPermanent) {
		t.Errorf("unfollowed redirect = %v, want ErrPermanent", err)
	}
}

func TestResponses(t *testing.T) {
	type want struct {
		permanent, gone bool
		after           time.Duration // > 0: a RetryAfterError with this pause
	}
	date := time.Now().Add(45 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		name   string
		status int
		header map[string]string
		want   want
	}{
		{"410 gone", 410, nil, want{permanent: true, gone: true}},
		{"429 retry-after seconds", 429, map[string]string{"Retry-After": "7"}, want{after: 7 * time.Second}},
		{"429 retry-after capped", 429, map[string]string{"Retry-After": "86400"}, want{after: time.Minute}},
		{"503 retry-after date", 503, map[string]string{"Retry-After": date}, want{after: 45 * time.Second}},
		{"503 without retry-after", 503, nil, want{}},
		{"500", 500, nil, want{}},
		{"429 bad retry-after", 429, map[string]string{"Retry-After": "soon"}, want{}},
		{"408", 408, nil, want{}},
		{"400", 400, nil, want{permanent: true}},
		{"401", 401, nil, want{permanent: true}},
		{"404", 404, nil, want{permanent: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rv := newReceiver(t, false, secretA)
			rv.answer = func(w http.ResponseWriter, _ *http.Request) bool {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, `{"error":"nope"}`)
				return true
			}
			s := newSender(t, webhook.WithAllowPrivate(), webhook.WithMaxRetryAfter(time.Minute))
			_, err := send(t, s, notify.Message{Key: "k", To: rv.srv.URL, Text: "x", Secret: secretA})
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if got := errors.Is(err, notify.ErrPermanent); got != tc.want.permanent {
				t.Errorf("permanent = %v, want %v (%v)", got, tc.want.permanent, err)
			}
			if got := errors.Is(err, notify.ErrGone); got != tc.want.gone {
				t.Errorf("gone = %v, want %v (%v)", got, tc.want.gone, err)
			}
			var ra *notify.RetryAfterError
			isRA := errors.As(err, &ra)
			switch {
			case tc.want.after > 0 && !isRA:
				t.Errorf("want a RetryAfterError, got %v", err)
			case tc.want.after == 0 && isRA:
				t.Errorf("unexpected RetryAfterError %v", err)
			case isRA && (ra.After > tc.want.after || ra.After < tc.want.after-3*time.Second):
				t.Errorf("After = %v, want ≈ %v", ra.After, tc.want.after)
			}
			var se *webhook.StatusError
			if !errors.As(err, &se) || se.Code != tc.status {
				t.Errorf("want a StatusError %d in %v", tc.status, err)
			}
		})
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	s := newSender(t, webhook.WithAllowPrivate(), webhook.WithTimeout(100*time.Millisecond))
	_, err := send(t, s, notify.Message{Key: "k", To: stalledURL(t), Text: "x"})
	if err == nil || errors.Is(err, notify.ErrPermanent) {
		t.Errorf("Send to a stalled receiver = %v, want a retryable error", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{" 120 ", 2 * time.Minute, true},
		{"-5", 0, false},
		{"", 0, false},
		{"1.5", 0, false},
		{now.Add(time.Hour).Format(http.TimeFormat), time.Hour, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"Mon, 99 Foo 2026", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, c := range cases {
		got, ok := webhook.ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	bad := map[string]webhook.Option{
		"zero timeout":       webhook.WithTimeout(0),
		"negative cap":       webhook.WithMaxRetryAfter(-time.Second),
		"redirects":          webhook.WithMaxRedirects(-1),
		"empty name":         webhook.WithName(" "),
		"user agent":         webhook.WithUserAgent("a\r\nX-Evil: 1"),
		"nil clock":          webhook.WithClock(nil),
		"bad allow entry":    webhook.WithAllow("not a cidr/!!"),
		"empty allow list":   webhook.WithAllow(),
		"empty allow string": webhook.WithAllow(""),
		"nil option":         nil,
	}
	for name, o := range bad {
		if _, err := webhook.New(o); !errors.Is(err, webhook.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
		}
	}
	if _, err := webhook.NewGuard(webhook.Allow("300.1.1.1/8")); !errors.Is(err, webhook.ErrInvalidOption) {
		t.Errorf("NewGuard with a bad CIDR = %v", err)
	}
}
