package webpush_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/webpush"
)

type fixture struct {
	ps     *pushService
	sender *webpush.Sender
	pub    string
}

func setup(t *testing.T, opts ...webpush.Option) *fixture {
	t.Helper()
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	ps := newPushService(t, pub)
	s, err := webpush.New(append([]webpush.Option{
		webpush.VAPIDKeys(pub, priv),
		webpush.Subscriber("mailto:ops@example.com"),
		webpush.HTTPClient(ps.srv.Client()),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ps: ps, sender: s, pub: pub}
}

func TestDeliversEncryptedPayload(t *testing.T) {
	f := setup(t, webpush.TTL(time.Hour), webpush.Urgency("high"))
	sub, _ := f.ps.subscribe(t, "sub-1")
	if f.sender.Name() != "webpush" || f.sender.Channel() != notify.Push {
		t.Fatalf("identity %s %s", f.sender.Name(), f.sender.Channel())
	}
	rc, err := f.sender.Send(t.Context(), notify.Message{
		Channel: notify.Push, To: sub, Subject: "Order shipped", Text: "Parcel #42 <is> on its way – ünïcødé",
	})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Provider != "webpush" || rc.Delivered || rc.ProviderID != f.ps.srv.URL+"/message/1" {
		t.Fatalf("receipt %+v", rc)
	}
	got := f.ps.received()
	if len(got) != 1 {
		t.Fatalf("%d messages", len(got))
	}
	var p struct{ Title, Body string }
	if err := json.Unmarshal(got[0].Payload, &p); err != nil {
		t.Fatalf("payload %q: %v", got[0].Payload, err)
	}
	if p.Title != "Order shipped" || p.Body != "Parcel #42 <is> on its way – ünïcødé" {
		t.Fatalf("payload %+v", p)
	}
	h := got[0].Header
	if h.Get("TTL") != "3600" || h.Get("Urgency") != "high" || h.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("headers %v", h)
	}
	if got[0].Claims.Sub != "mailto:ops@example.com" || got[0].Claims.Aud != f.ps.srv.URL {
		t.Fatalf("claims %+v", got[0].Claims)
	}
}

func TestRawPayloadAndLimits(t *testing.T) {
	f := setup(t)
	sub, _ := f.ps.subscribe(t, "sub-raw")
	raw := []byte(`{"type":"order.shipped","id":42,"url":"/orders/42"}`)
	if _, err := f.sender.Send(t.Context(), notify.Message{To: sub, Text: "ignored", Payload: raw}); err != nil {
		t.Fatal(err)
	}
	// The largest payload still fits one record.
	big := []byte(strings.Repeat("x", webpush.MaxPayload))
	if _, err := f.sender.Send(t.Context(), notify.Message{To: sub, Payload: big}); err != nil {
		t.Fatal(err)
	}
	got := f.ps.received()
	if len(got) != 2 || string(got[0].Payload) != string(raw) || string(got[1].Payload) != string(big) {
		t.Fatalf("payloads %d: %+v", len(got), got)
	}
	if h := got[0].Header; h.Get("TTL") != "86400" || h.Get("Urgency") != "" {
		t.Fatalf("default headers %v", h)
	}
	// One byte more is refused before sending.
	_, err := f.sender.Send(t.Context(), notify.Message{To: sub, Payload: append(big, 'x')})
	if !errors.Is(err, notify.ErrPermanent) || f.ps.requestCount() != 2 {
		t.Fatalf("err = %v, requests %d", err, f.ps.requestCount())
	}
}

func TestResponseClassification(t *testing.T) {
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	f := setup(t, webpush.Clock(func() time.Time { return now }))
	sub, _ := f.ps.subscribe(t, "secret-capability-token")
	tests := []struct {
		name       string
		status     int
		retryAfter string
		permanent  bool
		gone       bool
		after      time.Duration // -1: not a RetryAfterError
	}{
		{"200", http.StatusOK, "", false, false, -1},
		{"202", http.StatusAccepted, "", false, false, -1},
		{"404 expired", http.StatusNotFound, "", true, true, -1},
		{"410 unsubscribed", http.StatusGone, "", true, true, -1},
		{"429 seconds", http.StatusTooManyRequests, "120", false, false, 2 * time.Minute},
		{"429 date", http.StatusTooManyRequests, now.Add(90 * time.Second).Format(http.TimeFormat), false, false, 90 * time.Second},
		{"429 date passed", http.StatusTooManyRequests, now.Add(-time.Hour).Format(http.TimeFormat), false, false, 0},
		{"429 without header", http.StatusTooManyRequests, "", false, false, 0},
		{"429 garbage header", http.StatusTooManyRequests, "soon", false, false, 0},
		{"503 retry after", http.StatusServiceUnavailable, "7", false, false, 7 * time.Second},
		{"503", http.StatusServiceUnavailable, "", false, false, -1},
		{"500", http.StatusInternalServerError, "", false, false, -1},
		{"502", http.StatusBadGateway, "", false, false, -1},
		{"400", http.StatusBadRequest, "", true, false, -1},
		{"401", http.StatusUnauthorized, "", true, false, -1},
		{"403", http.StatusForbidden, "", true, false, -1},
		{"413", http.StatusRequestEntityTooLarge, "", true, false, -1},
		{"301 not followed", http.StatusMovedPermanently, "", true, false, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.ps.setReply(func(w http.ResponseWriter) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.status == http.StatusMovedPermanently {
					w.Header().Set("Location", "https://127.0.0.1:1/elsewhere")
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte("detail from the service"))
			})
			rc, err := f.sender.Send(t.Context(), notify.Message{To: sub, Subject: "s", Text: "t"})
			if tc.status/100 == 2 {
				if err != nil || rc.Delivered || rc.Provider != "webpush" {
					t.Fatalf("receipt %+v, err %v", rc, err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, notify.ErrPermanent) != tc.permanent || errors.Is(err, notify.ErrGone) != tc.gone {
				t.Fatalf("err = %v: permanent %v gone %v", err, errors.Is(err, notify.ErrPermanent), errors.Is(err, notify.ErrGone))
			}
			var ra *notify.RetryAfterError
			if isRA := errors.As(err, &ra); isRA != (tc.after >= 0) || (isRA && ra.After != tc.after) {
				t.Fatalf("err = %v (%T), want RetryAfter %v", err, err, tc.after)
			}
			if strings.Contains(err.Error(), "secret-capability-token") {
				t.Fatalf("error leaks the endpoint path: %v", err)
			}
			if !strings.Contains(err.Error(), "detail from the service") {
				t.Fatalf("error lacks the service's detail: %v", err)
			}
		})
	}
}

func TestInvalidSubscriptionIsPermanent(t *testing.T) {
	f := setup(t)
	good, _ := f.ps.subscribe(t, "ok")
	var v map[string]any
	if err := json.Unmarshal([]byte(good), &v); err != nil {
		t.Fatal(err)
	}
	keys := v["keys"].(map[string]any)
	with := func(endpoint string, p256dh, auth any) string {
		m := map[string]any{"endpoint": endpoint, "keys": map[string]any{"p256dh": p256dh, "auth": auth}}
		b, _ := json.Marshal(m)
		return string(b)
	}
	ep := v["endpoint"].(string)
	notOnCurve := base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...))
	tests := []struct {
		name, to string
		is       error
	}{
		{"empty", "", webpush.ErrInvalidSubscription},
		{"not JSON", "mailto:x@example.com", webpush.ErrInvalidSubscription},
		{"no endpoint", with("", keys["p256dh"], keys["auth"]), webpush.ErrInvalidSubscription},
		{"relative endpoint", with("/push/ok", keys["p256dh"], keys["auth"]), webpush.ErrInvalidSubscription},
		{"ftp endpoint", with("ftp://127.0.0.1/push/ok", keys["p256dh"], keys["auth"]), webpush.ErrInvalidSubscription},
		{"missing p256dh", with(ep, "", keys["auth"]), webpush.ErrInvalidSubscription},
		{"p256dh not base64", with(ep, "!!!", keys["auth"]), webpush.ErrInvalidSubscription},
		{"p256dh not on curve", with(ep, notOnCurve, keys["auth"]), webpush.ErrInvalidSubscription},
		{"short auth", with(ep, keys["p256dh"], "AAAA"), webpush.ErrInvalidSubscription},
		{"keys of wrong type", with(ep, 42, keys["auth"]), webpush.ErrInvalidSubscription},
		{"http endpoint refused", with(strings.Replace(ep, "https:", "http:", 1), keys["p256dh"], keys["auth"]), notify.ErrRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.sender.Send(t.Context(), notify.Message{To: tc.to, Text: "x"})
			if !errors.Is(err, notify.ErrPermanent) || !errors.Is(err, tc.is) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if n := f.ps.requestCount(); n != 0 {
		t.Fatalf("%d requests reached the push service", n)
	}
	// Padded and standard base64 keys are accepted, as old browsers sent them.
	padded := with(ep, keys["p256dh"].(string)+"=", keys["auth"].(string)+"==")
	if _, err := webpush.ParseSubscription(padded); err != nil {
		t.Fatal(err)
	}
}

func TestOtherChannelIsPermanent(t *testing.T) {
	f := setup(t)
	sub, _ := f.ps.subscribe(t, "x")
	if _, err := f.sender.Send(t.Context(), notify.Message{Channel: notify.Email, To: sub, Text: "x"}); !errors.Is(err, notify.ErrPermanent) {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckEndpoint(t *testing.T) {
	f := setup(t, webpush.CheckEndpoint(func(u *url.URL) error {
		if !strings.HasSuffix(u.Hostname(), ".push.example") {
			return errors.New("not a known push service")
		}
		return nil
	}))
	sub, _ := f.ps.subscribe(t, "x")
	_, err := f.sender.Send(t.Context(), notify.Message{To: sub, Text: "x"})
	if !errors.Is(err, notify.ErrRefused) || !strings.Contains(err.Error(), "not a known push service") {
		t.Fatalf("err = %v", err)
	}
	if f.ps.requestCount() != 0 {
		t.Fatal("request sent")
	}
}

func TestAllowHTTP(t *testing.T) {
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	s, err := webpush.New(webpush.VAPIDKeys(pub, priv), webpush.Subscriber("https://shop.example/contact"), webpush.AllowHTTP(), webpush.HTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	sub := newBrowser(t).subscription(srv.URL + "/p")
	if _, err := s.Send(t.Context(), notify.Message{To: sub, Text: "x"}); err != nil {
		t.Fatal(err)
	}
	k, _ := base64.RawURLEncoding.DecodeString(pub)
	claims, err := verifyVAPID(<-got, k, srv.URL, time.Now())
	if err != nil || claims.Sub != "https://shop.example/contact" {
		t.Fatalf("claims %+v, %v", claims, err)
	}
}

// TestVerifierRejectsForgery makes sure the stand-in's checks are real: a
// header signed by another key, or for another audience, fails.
func TestVerifierRejectsForgery(t *testing.T) {
	f := setup(t)
	sub, _ := f.ps.subscribe(t, "x")
	if _, err := f.sender.Send(t.Context(), notify.Message{To: sub, Text: "x"}); err != nil {
		t.Fatal(err)
	}
	auth := f.ps.received()[0].Header.Get("Authorization")
	own, _ := base64.RawURLEncoding.DecodeString(f.pub)
	if _, err := verifyVAPID(auth, own, f.ps.srv.URL, time.Now()); err != nil {
		t.Fatalf("genuine header rejected: %v", err)
	}
	if _, err := verifyVAPID(auth, own, "https://other.example", time.Now()); err == nil {
		t.Fatal("wrong audience accepted")
	}
	if _, err := verifyVAPID(auth, own, f.ps.srv.URL, time.Now().Add(13*time.Hour)); err == nil {
		t.Fatal("expired token accepted")
	}
	otherPub, _, _ := webpush.GenerateVAPIDKeys()
	other, _ := base64.RawURLEncoding.DecodeString(otherPub)
	forged := strings.Replace(auth, "k="+f.pub, "k="+otherPub, 1)
	if _, err := verifyVAPID(forged, other, f.ps.srv.URL, time.Now()); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("forged key accepted: %v", err)
	}
	tampered := auth[:len(auth)/2] + "A" + auth[len(auth)/2+1:]
	if tampered != auth {
		if _, err := verifyVAPID(tampered, own, f.ps.srv.URL, time.Now()); err == nil {
			t.Fatal("tampered token accepted")
		}
	}
}

// TestPayloadOpensOnlyForItsBrowser: what one browser's subscription
// receives, another browser cannot decrypt.
func TestPayloadOpensOnlyForItsBrowser(t *testing.T) {
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	bodies := make(chan []byte, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- b
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	s, err := webpush.New(webpush.VAPIDKeys(pub, priv), webpush.Subscriber("ops@example.com"), webpush.HTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := newBrowser(t), newBrowser(t)
	if _, err := s.Send(t.Context(), notify.Message{To: b1.subscription(srv.URL + "/push/b1"), Text: "secret"}); err != nil {
		t.Fatal(err)
	}
	body := <-bodies
	if p, err := b1.decrypt(body); err != nil || !strings.Contains(string(p), `"body":"secret"`) {
		t.Fatalf("own browser: %q %v", p, err)
	}
	if _, err := b2.decrypt(body); err == nil {
		t.Fatal("another browser decrypted the payload")
	}
}

func TestNetworkErrorsAreRetryable(t *testing.T) {
	f := setup(t)
	sub, _ := f.ps.subscribe(t, "secret-capability-token")
	f.ps.srv.Close()
	_, err := f.sender.Send(t.Context(), notify.Message{To: sub, Text: "x"})
	if err == nil || errors.Is(err, notify.ErrPermanent) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "secret-capability-token") {
		t.Fatalf("error leaks the endpoint path: %v", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := f.sender.Send(ctx, notify.Message{To: sub, Text: "x"}); !errors.Is(err, context.Canceled) || errors.Is(err, notify.ErrPermanent) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestOptions(t *testing.T) {
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _, _ := webpush.GenerateVAPIDKeys()
	keys := webpush.VAPIDKeys(pub, priv)
	subscriber := webpush.Subscriber("ops@example.com")
	bad := map[string][]webpush.Option{
		"no keys":            {subscriber},
		"no subscriber":      {keys},
		"mismatched keys":    {webpush.VAPIDKeys(otherPub, priv), subscriber},
		"public not base64":  {webpush.VAPIDKeys("!!", priv), subscriber},
		"private not a key":  {webpush.VAPIDKeys(pub, "AAAA"), subscriber},
		"subscriber name":    {keys, webpush.Subscriber("Ops <ops@example.com>")},
		"subscriber http":    {keys, webpush.Subscriber("http://example.com")},
		"subscriber empty":   {keys, webpush.Subscriber("")},
		"subscriber no host": {keys, webpush.Subscriber("https://")},
		"negative TTL":       {keys, subscriber, webpush.TTL(-time.Second)},
		"TTL too long":       {keys, subscriber, webpush.TTL(webpush.MaxTTL + time.Second)},
		"urgency":            {keys, subscriber, webpush.Urgency("urgent")},
		"nil client":         {keys, subscriber, webpush.HTTPClient(nil)},
		"nil check":          {keys, subscriber, webpush.CheckEndpoint(nil)},
		"empty name":         {keys, subscriber, webpush.Name("")},
		"nil clock":          {keys, subscriber, webpush.Clock(nil)},
		"nil option":         {keys, subscriber, nil},
	}
	for name, opts := range bad {
		if _, err := webpush.New(opts...); !errors.Is(err, webpush.ErrInvalidOption) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	s, err := webpush.New(keys, webpush.Subscriber("mailto:ops@example.com"), webpush.TTL(0), webpush.Urgency("very-low"), webpush.Name("push-eu"))
	if err != nil || s.Name() != "push-eu" {
		t.Fatalf("good options: %v", err)
	}
	// Padded keys, as some tools print them, are accepted.
	if _, err := webpush.New(webpush.VAPIDKeys(pub+"=", priv+"="), subscriber); err != nil {
		t.Fatal(err)
	}
}

func TestGenerateVAPIDKeys(t *testing.T) {
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	p, err1 := base64.RawURLEncoding.DecodeString(pub)
	k, err2 := base64.RawURLEncoding.DecodeString(priv)
	if err1 != nil || err2 != nil || len(p) != 65 || p[0] != 4 || len(k) != 32 {
		t.Fatalf("keys %q %q", pub, priv)
	}
	pub2, _, _ := webpush.GenerateVAPIDKeys()
	if pub2 == pub {
		t.Fatal("same key twice")
	}
}
