// Package webpush delivers herald notifications to browsers with the Web
// Push protocol (RFC 8030), payloads encrypted per RFC 8291 (aes128gcm)
// and the application server identified with VAPID (RFC 8292). It wraps
// github.com/SherClockHolmes/webpush-go.
//
// A Sender serves channel notify.Push. Message.To is the browser's push
// subscription as JSON, what PushSubscription.toJSON() returns:
//
//	{"endpoint": "https://…", "keys": {"p256dh": "…", "auth": "…"}}
//
// The payload is Message.Payload when set, else {"title": Subject, "body":
// Text} as JSON; the service worker reads it with event.data.json().
//
// A push service's 201 means it accepted the message, not that the user
// saw it, so receipts have Delivered false. 404 and 410 mean the
// subscription is gone (notify.ErrGone: drop it); 429 asks for a pause
// (*notify.RetryAfterError); 5xx and network errors are retried; any other
// status, and a subscription or payload that cannot be sent, are permanent.
//
// The endpoint comes from the browser, that is from the user: a Sender
// posts only to https endpoints (see AllowHTTP), never follows redirects,
// and takes a CheckEndpoint hook and an HTTPClient, so that an SSRF guard
// can vet the destination.
package webpush

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	wp "github.com/SherClockHolmes/webpush-go"

	"github.com/heraldhq/herald/notify"
)

// ErrInvalidOption marks an invalid option passed to New, or a required
// one missing.
var ErrInvalidOption = errors.New("herald/notify/webpush: invalid option")

// ErrInvalidSubscription marks a Message.To that is not a usable push
// subscription. Send wraps it with notify.ErrPermanent.
var ErrInvalidSubscription = errors.New("herald/notify/webpush: invalid subscription")

// MaxPayload is the largest payload a Sender sends: one 4096-byte
// aes128gcm record less its header, padding delimiter and tag. Push
// services accept at least this much.
const MaxPayload = 4096 - 16 - 86 - 1

// DefaultTTL is how long the push service keeps an undelivered message
// unless TTL says otherwise.
const DefaultTTL = 24 * time.Hour

// MaxTTL is the longest TTL accepted; push services cap it around four
// weeks.
const MaxTTL = 28 * 24 * time.Hour

// Option configures a Sender.
type Option func(*config) error

type config struct {
	publicKey, privateKey string
	subscriber            string
	ttl                   time.Duration
	urgency               string
	client                *http.Client
	allowHTTP             bool
	check                 func(*url.URL) error
	name                  string
	now                   func() time.Time
}

// VAPIDKeys sets the application server's VAPID key pair (required): the
// public key is the uncompressed P-256 point, the private key the 32-byte
// scalar, both base64url-encoded (padded or not), as GenerateVAPIDKeys
// returns them. The public key is the applicationServerKey the page passes
// to pushManager.subscribe; New checks that it belongs to the private key.
func VAPIDKeys(publicKey, privateKey string) Option {
	return func(c *config) error {
		pub, err := decodeKey(publicKey)
		if err != nil {
			return fmt.Errorf("%w: VAPID public key: %w", ErrInvalidOption, err)
		}
		priv, err := decodeKey(privateKey)
		if err != nil {
			return fmt.Errorf("%w: VAPID private key: %w", ErrInvalidOption, err)
		}
		k, err := ecdh.P256().NewPrivateKey(priv)
		if err != nil {
			return fmt.Errorf("%w: VAPID private key: %w", ErrInvalidOption, err)
		}
		if !bytes.Equal(k.PublicKey().Bytes(), pub) {
			return fmt.Errorf("%w: VAPID public key does not match the private key", ErrInvalidOption)
		}
		c.publicKey = base64.RawURLEncoding.EncodeToString(pub)
		c.privateKey = base64.RawURLEncoding.EncodeToString(priv)
		return nil
	}
}

// Subscriber sets the contact the push service can reach the sender at,
// the VAPID "sub" claim (required): "mailto:ops@example.com" (or just the
// address) or an https URL.
func Subscriber(contact string) Option {
	return func(c *config) error {
		switch {
		case strings.HasPrefix(contact, "https://"):
			u, err := url.Parse(contact)
			if err != nil || u.Host == "" {
				return fmt.Errorf("%w: subscriber %q: not an https URL", ErrInvalidOption, contact)
			}
			c.subscriber = contact
		default:
			addr := strings.TrimPrefix(contact, "mailto:")
			a, err := mail.ParseAddress(addr)
			if err != nil || a.Address != addr || a.Name != "" {
				return fmt.Errorf("%w: subscriber %q: want mailto:address or an https URL", ErrInvalidOption, contact)
			}
			// webpush-go prefixes "mailto:" itself.
			c.subscriber = addr
		}
		return nil
	}
}

// TTL sets how long the push service keeps a message for a browser that
// is offline (default 24h; 0 means deliver now or never; at most 28 days;
// whole seconds).
func TTL(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 || d > MaxTTL {
			return fmt.Errorf("%w: TTL %v not in [0, %v]", ErrInvalidOption, d, MaxTTL)
		}
		c.ttl = d.Truncate(time.Second)
		return nil
	}
}

// Urgency sets the Urgency header: "very-low", "low", "normal" or "high"
// (default: none sent, which push services read as normal).
func Urgency(u string) Option {
	return func(c *config) error {
		switch wp.Urgency(u) {
		case wp.UrgencyVeryLow, wp.UrgencyLow, wp.UrgencyNormal, wp.UrgencyHigh:
			c.urgency = u
			return nil
		}
		return fmt.Errorf("%w: urgency %q: want very-low, low, normal or high", ErrInvalidOption, u)
	}
}

// HTTPClient sets the client that posts to push services (default: a
// client of its own with a 30s timeout). Pass one whose dialer refuses
// private addresses to guard against SSRF. The Sender uses a copy that
// does not follow redirects: push services do not redirect, and a
// redirect could lead anywhere.
func HTTPClient(client *http.Client) Option {
	return func(c *config) error {
		if client == nil {
			return fmt.Errorf("%w: nil HTTP client", ErrInvalidOption)
		}
		cp := *client
		cp.CheckRedirect = noRedirect
		c.client = &cp
		return nil
	}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// AllowHTTP lets the Sender post to http:// endpoints, for a push service
// stand-in on loopback in development. Real push services are https.
func AllowHTTP() Option {
	return func(c *config) error {
		c.allowHTTP = true
		return nil
	}
}

// CheckEndpoint sets a function that vets each subscription's endpoint
// before anything is sent to it, e.g. against a list of known push
// services (fcm.googleapis.com, updates.push.services.mozilla.com,
// *.notify.windows.com, *.push.apple.com). A non-nil error refuses the
// message with notify.ErrRefused.
func CheckEndpoint(check func(endpoint *url.URL) error) Option {
	return func(c *config) error {
		if check == nil {
			return fmt.Errorf("%w: nil endpoint check", ErrInvalidOption)
		}
		c.check = check
		return nil
	}
}

// Name sets the provider name of the Sender (default "webpush").
func Name(name string) Option {
	return func(c *config) error {
		if strings.TrimSpace(name) == "" {
			return fmt.Errorf("%w: empty name", ErrInvalidOption)
		}
		c.name = name
		return nil
	}
}

// Clock sets the function the Sender reads the time from, to resolve a
// Retry-After given as a date (default time.Now).
func Clock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		c.now = now
		return nil
	}
}

// GenerateVAPIDKeys returns a new VAPID key pair, base64url-encoded without
// padding, for VAPIDKeys. Keep the private key secret; the public key goes
// to the browser.
func GenerateVAPIDKeys() (publicKey, privateKey string, err error) {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("webpush: generate VAPID keys: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()),
		base64.RawURLEncoding.EncodeToString(k.Bytes()), nil
}

// Sender delivers notify.Push messages to push services. It is safe for
// concurrent use.
type Sender struct {
	cfg config
}

var _ notify.Sender = (*Sender)(nil)

// New returns a Sender. VAPIDKeys and Subscriber are required.
func New(opts ...Option) (*Sender, error) {
	c := config{ttl: DefaultTTL, name: "webpush", now: time.Now}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	if c.privateKey == "" {
		return nil, fmt.Errorf("%w: VAPIDKeys is required", ErrInvalidOption)
	}
	if c.subscriber == "" {
		return nil, fmt.Errorf("%w: Subscriber is required", ErrInvalidOption)
	}
	if c.client == nil {
		c.client = &http.Client{
			Timeout:       30 * time.Second,
			Transport:     http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: noRedirect,
		}
	}
	return &Sender{cfg: c}, nil
}

// Name returns the provider name, "webpush" unless set with Name.
func (s *Sender) Name() string { return s.cfg.name }

// Channel returns notify.Push.
func (s *Sender) Channel() string { return notify.Push }

// Subscription is a browser's push subscription.
type Subscription struct {
	// Endpoint is the push service URL for this browser; its path is a
	// secret capability, so keep it out of logs.
	Endpoint string `json:"endpoint"`
	// Keys are the browser's encryption keys, base64url.
	Keys struct {
		P256dh string `json:"p256dh"` // the browser's P-256 public key
		Auth   string `json:"auth"`   // the 16-byte authentication secret
	} `json:"keys"`
}

// ParseSubscription parses and checks a push subscription as JSON: the
// endpoint must be an absolute http(s) URL, p256dh a P-256 public key and
// auth a 16-byte secret, both base64url. Errors wrap
// ErrInvalidSubscription. Use it to vet a subscription when the browser
// registers it.
func ParseSubscription(data string) (Subscription, error) {
	var sub Subscription
	if err := json.Unmarshal([]byte(data), &sub); err != nil {
		return sub, fmt.Errorf("%w: not JSON: %w", ErrInvalidSubscription, err)
	}
	u, err := url.Parse(sub.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return sub, fmt.Errorf("%w: endpoint is not an absolute http(s) URL", ErrInvalidSubscription)
	}
	dh, err := decodeKey(sub.Keys.P256dh)
	if err != nil {
		return sub, fmt.Errorf("%w: keys.p256dh: %w", ErrInvalidSubscription, err)
	}
	if _, err := ecdh.P256().NewPublicKey(dh); err != nil {
		return sub, fmt.Errorf("%w: keys.p256dh: %w", ErrInvalidSubscription, err)
	}
	auth, err := decodeKey(sub.Keys.Auth)
	if err != nil {
		return sub, fmt.Errorf("%w: keys.auth: %w", ErrInvalidSubscription, err)
	}
	if len(auth) != 16 {
		return sub, fmt.Errorf("%w: keys.auth is %d bytes, want 16", ErrInvalidSubscription, len(auth))
	}
	return sub, nil
}

// Send encrypts m's payload for the subscription in m.To and posts it to
// the subscription's push service.
func (s *Sender) Send(ctx context.Context, m notify.Message) (notify.Receipt, error) {
	if m.Channel != "" && m.Channel != notify.Push {
		return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("webpush: cannot send a %s message", m.Channel))
	}
	sub, err := ParseSubscription(m.To)
	if err != nil {
		return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("webpush: %w", err))
	}
	u, _ := url.Parse(sub.Endpoint) // parsed by ParseSubscription
	origin := u.Scheme + "://" + u.Host
	if u.Scheme != "https" && !s.cfg.allowHTTP {
		return notify.Receipt{}, fmt.Errorf("webpush: endpoint %s: not https: %w", origin, notify.ErrRefused)
	}
	if s.cfg.check != nil {
		if err := s.cfg.check(u); err != nil {
			return notify.Receipt{}, fmt.Errorf("webpush: endpoint %s: %w: %w", origin, notify.ErrRefused, err)
		}
	}
	payload := m.Payload
	if len(payload) == 0 {
		payload, err = json.Marshal(struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		}{m.Subject, m.Text})
		if err != nil {
			return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("webpush: payload: %w", err))
		}
	}
	if len(payload) > MaxPayload {
		return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("webpush: payload of %d bytes exceeds %d", len(payload), MaxPayload))
	}
	if err := ctx.Err(); err != nil {
		return notify.Receipt{}, fmt.Errorf("webpush: %w", err)
	}

	ws := wp.Subscription{Endpoint: sub.Endpoint, Keys: wp.Keys{P256dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}}
	resp, err := wp.SendNotificationWithContext(ctx, payload, &ws, &wp.Options{
		HTTPClient:      s.cfg.client,
		Subscriber:      s.cfg.subscriber,
		TTL:             int(s.cfg.ttl / time.Second),
		Urgency:         wp.Urgency(s.cfg.urgency),
		VAPIDPublicKey:  s.cfg.publicKey,
		VAPIDPrivateKey: s.cfg.privateKey,
	})
	if err != nil {
		if errors.Is(err, wp.ErrMaxPadExceeded) {
			return notify.Receipt{}, notify.PermanentFailure(fmt.Errorf("webpush: %w", err))
		}
		// A *url.Error names the whole endpoint, whose path is the
		// subscription's secret capability: report the origin only.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return notify.Receipt{}, fmt.Errorf("webpush: POST %s: %w", origin, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return notify.Receipt{Provider: s.cfg.name, ProviderID: resp.Header.Get("Location")}, nil
	}
	status := fmt.Errorf("webpush: push service %s answered %s%s", origin, resp.Status, excerpt(body))
	switch code := resp.StatusCode; {
	case code == http.StatusNotFound || code == http.StatusGone:
		return notify.Receipt{}, fmt.Errorf("%w: %w", notify.ErrGone, status)
	case code == http.StatusTooManyRequests:
		after, _ := retryAfter(resp.Header.Get("Retry-After"), s.cfg.now())
		return notify.Receipt{}, &notify.RetryAfterError{After: after, Err: status}
	case code >= 500:
		if after, ok := retryAfter(resp.Header.Get("Retry-After"), s.cfg.now()); ok {
			return notify.Receipt{}, &notify.RetryAfterError{After: after, Err: status}
		}
		return notify.Receipt{}, status
	default:
		return notify.Receipt{}, notify.PermanentFailure(status)
	}
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, int64(MaxTTL/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func excerpt(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return ": " + strconv.Quote(s)
}

// decodeKey decodes base64url with or without padding, and, as browsers
// of old did, standard base64.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if s == "" {
		return nil, errors.New("empty")
	}
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	return b, nil
}
