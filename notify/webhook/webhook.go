// Package webhook delivers notifications as HTTP POSTs signed per the
// Standard Webhooks specification (https://www.standardwebhooks.com):
//
//	webhook-id:        Message.Key (the receiver drops a resend by it)
//	webhook-timestamp: Unix seconds
//	webhook-signature: v1,<base64 HMAC-SHA256(secret, id + "." + timestamp + "." + body)>
//
// with one space-separated signature per secret in Message.Secret
// ("whsec_<base64>", two of them during a rotation). The body is
// Message.Payload, or a JSON object with the subject and text when the
// payload is empty.
//
// Every destination passes an SSRF Guard, at dial time on the resolved
// address and on every redirect; the package also exports the guard and
// the HTTP answer classification (Do, Classify) for the other HTTP
// channels.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/notify"
)

// ErrInvalidOption reports an invalid option or constructor argument.
var ErrInvalidOption = errors.New("webhook: invalid option")

// Defaults.
const (
	DefaultName          = "webhook"          // the provider name (WithName)
	DefaultTimeout       = 10 * time.Second   // per delivery attempt (WithTimeout)
	DefaultMaxRetryAfter = time.Hour          // Retry-After cap (WithMaxRetryAfter)
	DefaultMaxRedirects  = 3                  // redirects followed (WithMaxRedirects)
	DefaultUserAgent     = "herald-webhook/1" // the User-Agent header (WithUserAgent)
)

// Option configures a Sender.
type Option func(*config) error

type config struct {
	name             string
	timeout          time.Duration
	maxRetryAfter    time.Duration
	maxRedirects     int
	userAgent        string
	requireSignature bool
	now              func() time.Time
	guardOpts        []GuardOption
}

// WithName sets the provider name reported by Name and in receipts.
func WithName(name string) Option {
	return func(c *config) error {
		if strings.TrimSpace(name) == "" {
			return fmt.Errorf("%w: empty name", ErrInvalidOption)
		}
		c.name = name
		return nil
	}
}

// WithTimeout bounds each delivery attempt, connection, redirects and
// response included (default DefaultTimeout). A timeout is retryable.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: timeout %v must be positive", ErrInvalidOption, d)
		}
		c.timeout = d
		return nil
	}
}

// WithMaxRetryAfter caps the pause a receiver can ask for with Retry-After
// (default DefaultMaxRetryAfter).
func WithMaxRetryAfter(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: max Retry-After %v must be positive", ErrInvalidOption, d)
		}
		c.maxRetryAfter = d
		return nil
	}
}

// WithMaxRedirects sets how many redirects are followed, each checked by
// the guard (default DefaultMaxRedirects; 0 follows none, and a 3xx is then
// a permanent failure).
func WithMaxRedirects(n int) Option {
	return func(c *config) error {
		if n < 0 || n > 20 {
			return fmt.Errorf("%w: max redirects %d not in [0, 20]", ErrInvalidOption, n)
		}
		c.maxRedirects = n
		return nil
	}
}

// WithUserAgent sets the User-Agent header (default DefaultUserAgent).
func WithUserAgent(ua string) Option {
	return func(c *config) error {
		if ua == "" || strings.ContainsAny(ua, "\r\n") {
			return fmt.Errorf("%w: invalid user agent %q", ErrInvalidOption, ua)
		}
		c.userAgent = ua
		return nil
	}
}

// WithRequireSignature refuses, with notify.ErrPermanent, to send a message
// without a secret; by default such a message is posted unsigned (with its
// webhook-id and webhook-timestamp).
func WithRequireSignature() Option {
	return func(c *config) error {
		c.requireSignature = true
		return nil
	}
}

// WithClock sets the clock for webhook-timestamp (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		c.now = now
		return nil
	}
}

// WithAllowPrivate lets the guard reach private, loopback and link-local
// addresses (see AllowPrivate).
func WithAllowPrivate() Option {
	return func(c *config) error {
		c.guardOpts = append(c.guardOpts, AllowPrivate())
		return nil
	}
}

// WithAllow puts CIDR prefixes, IP addresses or host names on the guard's
// allow-list (see Allow).
func WithAllow(entries ...string) Option {
	return func(c *config) error {
		if len(entries) == 0 {
			return fmt.Errorf("%w: empty allow-list", ErrInvalidOption)
		}
		c.guardOpts = append(c.guardOpts, Allow(entries...))
		return nil
	}
}

// Sender posts signed webhooks. It is safe for concurrent use; Close
// releases its idle connections.
type Sender struct {
	name             string
	guard            *Guard
	client           *http.Client
	maxRetryAfter    time.Duration
	userAgent        string
	requireSignature bool
	now              func() time.Time
}

// New returns a webhook Sender. An invalid option yields an error
// wrapping ErrInvalidOption.
func New(opts ...Option) (*Sender, error) {
	c := config{
		name:          DefaultName,
		timeout:       DefaultTimeout,
		maxRetryAfter: DefaultMaxRetryAfter,
		maxRedirects:  DefaultMaxRedirects,
		userAgent:     DefaultUserAgent,
		now:           time.Now,
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	g, err := NewGuard(c.guardOpts...)
	if err != nil {
		return nil, err
	}
	return &Sender{
		name:             c.name,
		guard:            g,
		client:           g.NewClient(c.timeout, c.maxRedirects),
		maxRetryAfter:    c.maxRetryAfter,
		userAgent:        c.userAgent,
		requireSignature: c.requireSignature,
		now:              c.now,
	}, nil
}

// Name returns the provider name ("webhook" unless WithName).
func (s *Sender) Name() string { return s.name }

// Channel returns notify.Webhook.
func (s *Sender) Channel() string { return notify.Webhook }

// Close closes idle connections. Sends may still run afterwards; they open
// new ones.
func (s *Sender) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// Send posts m to the URL in m.To. See the package documentation for the
// request and Classify for how answers map to errors; the guard's refusal
// wraps notify.ErrRefused, an invalid URL, payload or secret wraps
// notify.ErrPermanent, and a transport failure or timeout is retryable.
// A 2xx is a confirmed delivery.
func (s *Sender) Send(ctx context.Context, m notify.Message) (notify.Receipt, error) {
	rc := notify.Receipt{Provider: s.name}
	if err := ctx.Err(); err != nil {
		return rc, fmt.Errorf("webhook: %w", err)
	}
	u, err := url.Parse(m.To)
	if err != nil {
		return rc, fmt.Errorf("webhook: %w: invalid URL", notify.ErrPermanent)
	}
	if err := s.guard.CheckURL(u); err != nil {
		return rc, fmt.Errorf("webhook: %w", err)
	}
	body, err := Body(m)
	if err != nil {
		return rc, fmt.Errorf("webhook: %w", err)
	}
	id := m.Key
	if id == "" {
		id, err = randomID()
		if err != nil {
			return rc, fmt.Errorf("webhook: message id: %w", err)
		}
	}
	ts := s.now()
	sig, err := Sign(m.Secret, id, ts, body)
	if err != nil {
		return rc, fmt.Errorf("webhook: %w", err)
	}
	if sig == "" && s.requireSignature {
		return rc, fmt.Errorf("webhook: %w: no signing secret", notify.ErrPermanent)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return rc, fmt.Errorf("webhook: %w: %w", notify.ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.userAgent)
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	if sig != "" {
		req.Header.Set(HeaderSignature, sig)
	}
	if _, err := Do(s.client, req, s.maxRetryAfter); err != nil {
		return rc, fmt.Errorf("webhook: %w", err)
	}
	rc.Delivered = true
	return rc, nil
}

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Body returns the request body for m: m.Payload when set (it must be
// valid JSON, else notify.ErrPermanent), else a JSON object with the
// subject, the text and the event's identifiers.
func Body(m notify.Message) ([]byte, error) {
	if len(m.Payload) > 0 {
		if !json.Valid(m.Payload) {
			return nil, fmt.Errorf("%w: payload is not valid JSON", notify.ErrPermanent)
		}
		return m.Payload, nil
	}
	b, err := json.Marshal(struct {
		Subject       string `json:"subject,omitempty"`
		Text          string `json:"text"`
		EventID       string `json:"event_id,omitempty"`
		EventType     string `json:"event_type,omitempty"`
		CorrelationID string `json:"correlation_id,omitempty"`
	}{m.Subject, m.Text, m.EventID, m.EventType, m.CorrelationID})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", notify.ErrPermanent, err)
	}
	return b, nil
}

// Sign returns the webhook-signature header value for a message: one
// "v1,<base64 HMAC-SHA256>" per whitespace-separated secret in secrets
// ("whsec_<base64>", the prefix optional), space-separated, or "" when
// secrets is empty. An undecodable secret wraps notify.ErrPermanent.
func Sign(secrets, id string, ts time.Time, body []byte) (string, error) {
	var sigs []string
	for i, sec := range strings.Fields(secrets) {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sec, "whsec_"))
		if err != nil || len(key) == 0 {
			// Never echo the secret.
			return "", fmt.Errorf("%w: signing secret #%d is not whsec_<base64>", notify.ErrPermanent, i+1)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write(strconv.AppendInt(nil, ts.Unix(), 10))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " "), nil
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "msg_" + hex.EncodeToString(b[:]), nil
}
