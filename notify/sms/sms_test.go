package sms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/sendertest"
	"github.com/heraldhq/herald/notify/sms"
)

const (
	sid   = "AC0123456789abcdef0123456789abcdef"
	token = "s3cr3t-token"
	from  = "+15005550006"
)

type form struct {
	To, From, MessagingServiceSid, Body, StatusCallback string
}

// provider is an in-process Twilio-style Messages API: it checks the
// path, the basic auth and the form before it accepts a message.
type provider struct {
	srv   *httptest.Server
	seq   atomic.Int64
	mu    sync.Mutex
	got   []form
	fault func(w http.ResponseWriter, f form) bool
}

func newProvider(t *testing.T) *provider {
	t.Helper()
	p := &provider{}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

func apiError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status})
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/2010-04-01/Accounts/"+sid+"/Messages.json" {
		apiError(w, http.StatusNotFound, 20404, "The requested resource was not found")
		return
	}
	if u, pw, ok := r.BasicAuth(); !ok || u != sid || pw != token {
		apiError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		apiError(w, http.StatusBadRequest, 21200, "not a form")
		return
	}
	if err := r.ParseForm(); err != nil {
		apiError(w, http.StatusBadRequest, 21200, "bad form")
		return
	}
	f := form{To: r.PostForm.Get("To"), From: r.PostForm.Get("From"), MessagingServiceSid: r.PostForm.Get("MessagingServiceSid"),
		Body: r.PostForm.Get("Body"), StatusCallback: r.PostForm.Get("StatusCallback")}
	if p.fault != nil && p.fault(w, f) {
		return
	}
	if f.From == "" && f.MessagingServiceSid == "" {
		apiError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required")
		return
	}
	if f.To == "+15005550001" { // Twilio's magic invalid number
		apiError(w, http.StatusBadRequest, 21211, "The 'To' number +15005550001 is not a valid phone number.")
		return
	}
	n := p.seq.Add(1)
	p.mu.Lock()
	p.got = append(p.got, f)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"sid": fmt.Sprintf("SM%032d", n), "status": "queued", "to": f.To, "body": f.Body})
}

func (p *provider) forms() []form {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]form(nil), p.got...)
}

func (p *provider) received() []sendertest.Received {
	var out []sendertest.Received
	for _, f := range p.forms() {
		out = append(out, sendertest.Received{To: f.To, Text: f.Body})
	}
	return out
}

func newSender(t *testing.T, base string, opts ...sms.Option) *sms.Sender {
	t.Helper()
	s, err := sms.New(sid, token, from, append([]sms.Option{sms.WithBaseURL(base)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	sendertest.Run(t, sendertest.Harness{
		Channel:      notify.SMS,
		Capabilities: sendertest.Capabilities{ProviderID: true},
		InvalidTo:    "555-0100",
		Start: func(t *testing.T) sendertest.Env {
			p := newProvider(t)
			return sendertest.Env{
				Sender:   newSender(t, p.srv.URL),
				To:       func(i int) string { return fmt.Sprintf("+1555010%04d", i) },
				Received: p.received,
			}
		},
		Down: func(t *testing.T) sendertest.Target {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			_ = l.Close()
			return sendertest.Target{Sender: newSender(t, "http://"+addr), To: "+15550100000"}
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
			return sendertest.Target{Sender: newSender(t, srv.URL), To: "+15550100000"}
		},
	})
}

func send(t *testing.T, s *sms.Sender, m notify.Message) (notify.Receipt, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, m)
}

func TestFormAndReceipt(t *testing.T) {
	p := newProvider(t)
	s := newSender(t, p.srv.URL+"/", sms.WithStatusCallback("https://status.example.test/cb"), sms.WithName("acme-sms"))
	rc, err := send(t, s, notify.Message{To: "+447700900123", Text: "Your code is 123456 & <b>"})
	if err != nil {
		t.Fatal(err)
	}
	if rc.ProviderID != fmt.Sprintf("SM%032d", 1) || rc.Provider != "acme-sms" || rc.Delivered {
		t.Errorf("receipt = %+v", rc)
	}
	f := p.forms()[0]
	want := form{To: "+447700900123", From: from, Body: "Your code is 123456 & <b>", StatusCallback: "https://status.example.test/cb"}
	if f != want {
		t.Errorf("form = %+v, want %+v", f, want)
	}

	// A messaging service SID is sent as MessagingServiceSid.
	mg := "MG" + strings.Repeat("0", 32)
	s2, err := sms.New(sid, token, mg, sms.WithBaseURL(p.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := send(t, s2, notify.Message{To: "+15550100001", Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	if f := p.forms()[1]; f.MessagingServiceSid != mg || f.From != "" {
		t.Errorf("form = %+v", f)
	}
}

func TestWrongCredentials(t *testing.T) {
	p := newProvider(t)
	s, err := sms.New(sid, "wrong", from, sms.WithBaseURL(p.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	_, err = send(t, s, notify.Message{To: "+15550100001", Text: "hi"})
	var api *sms.APIError
	if !errors.Is(err, notify.ErrPermanent) || errors.Is(err, notify.ErrGone) || !errors.As(err, &api) || api.Code != 20003 {
		t.Errorf("Send with a wrong token = %v, want a permanent APIError 20003", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error %q leaks the token", err)
	}
}

func TestClassification(t *testing.T) {
	p := newProvider(t)
	p.fault = func(w http.ResponseWriter, f form) bool {
		switch f.Body {
		case "limited":
			w.Header().Set("Retry-After", "12")
			apiError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
		case "limited-no-header":
			apiError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
		case "unavailable":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "broken":
			w.WriteHeader(http.StatusInternalServerError)
		case "not-mobile":
			apiError(w, http.StatusBadRequest, 21614, "'To' number is not a valid mobile number")
		case "unsubscribed":
			apiError(w, http.StatusBadRequest, 21610, "Attempt to send to unsubscribed recipient")
		case "html-error":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte("<html>bad gateway config</html>"))
		default:
			return false
		}
		return true
	}
	s := newSender(t, p.srv.URL)
	cases := []struct {
		to, body        string
		permanent, gone bool
		after           time.Duration
	}{
		{"+15005550001", "invalid", true, true, 0}, // 21211
		{"+15550100001", "not-mobile", true, true, 0},
		{"+15550100001", "unsubscribed", true, false, 0},
		{"+15550100001", "html-error", true, false, 0},
		{"+15550100001", "limited", false, false, 12 * time.Second},
		{"+15550100001", "limited-no-header", false, false, 0},
		{"+15550100001", "unavailable", false, false, 3 * time.Second},
		{"+15550100001", "broken", false, false, 0},
	}
	for _, c := range cases {
		_, err := send(t, s, notify.Message{To: c.to, Text: c.body})
		if err == nil {
			t.Errorf("%s: Send succeeded", c.body)
			continue
		}
		if errors.Is(err, notify.ErrPermanent) != c.permanent || errors.Is(err, notify.ErrGone) != c.gone {
			t.Errorf("%s: Send = %v, want permanent=%v gone=%v", c.body, err, c.permanent, c.gone)
		}
		var ra *notify.RetryAfterError
		if errors.As(err, &ra) != (c.after > 0) || (ra != nil && ra.After != c.after) {
			t.Errorf("%s: Send = %v, want Retry-After %v", c.body, err, c.after)
		}
	}
	if n := len(p.forms()); n != 0 {
		t.Errorf("provider accepted %d messages", n)
	}
}

func TestRefusedBeforeSending(t *testing.T) {
	p := newProvider(t)
	var hits atomic.Int64
	p.fault = func(http.ResponseWriter, form) bool { hits.Add(1); return false }
	s := newSender(t, p.srv.URL)
	for _, m := range []notify.Message{
		{To: "+0123456", Text: "x"},
		{To: "15550100001", Text: "x"},
		{To: "+1555010000112345", Text: "x"},
		{To: "+1 555 0100", Text: "x"},
		{To: "+1555\n0100", Text: "x"},
		{To: "", Text: "x"},
		{To: "+15550100001", Text: "  "},
		{To: "+15550100001", Text: strings.Repeat("a", sms.MaxBody+1)},
	} {
		if _, err := send(t, s, m); !errors.Is(err, notify.ErrPermanent) {
			t.Errorf("Send(%q, %d chars) = %v, want ErrPermanent", m.To, len(m.Text), err)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests reached the provider", hits.Load())
	}
}

func TestValidE164(t *testing.T) {
	for n, want := range map[string]bool{
		"+15550100001": true, "+447700900123": true, "+12": true, "+123456789012345": true,
		"+1234567890123456": false, "+1": false, "+0123": false, "1555": false, "+1-555": false, "": false, "+": false,
	} {
		if got := sms.ValidE164(n); got != want {
			t.Errorf("ValidE164(%q) = %v, want %v", n, got, want)
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, o := range map[string]sms.Option{
		"base scheme":  sms.WithBaseURL("ftp://x"),
		"base query":   sms.WithBaseURL("https://x/?a=1"),
		"timeout":      sms.WithTimeout(0),
		"cap":          sms.WithMaxRetryAfter(-1),
		"callback":     sms.WithStatusCallback("not a url"),
		"nil client":   sms.WithHTTPClient(nil),
		"empty name":   sms.WithName(""),
		"nil option":   nil,
		"base no host": sms.WithBaseURL("https:///path"),
	} {
		if _, err := sms.New(sid, token, from, o); !errors.Is(err, sms.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
		}
	}
	for name, args := range map[string][3]string{
		"sid":   {"", token, from},
		"sid/":  {"AC/../x", token, from},
		"token": {sid, "", from},
		"from":  {sid, token, "555"},
	} {
		if _, err := sms.New(args[0], args[1], args[2]); !errors.Is(err, sms.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
		}
	}
}
