// Package sms delivers notifications as text messages through a
// Twilio-style HTTP API: a form POST of To, From (or
// MessagingServiceSid) and Body to
//
//	{base URL}/2010-04-01/Accounts/{account SID}/Messages.json
//
// with HTTP basic auth (account SID, auth token). The JSON answer's "sid"
// becomes Receipt.ProviderID. The provider only accepts the message for
// delivery, so receipts are not Delivered.
//
// Errors: an invalid (non-E.164) number is refused before sending with
// notify.ErrPermanent; a 4xx answer is permanent, and the provider's
// "invalid number" errors (21211, 21614, 21217, 21401, 21407) are
// notify.ErrGone; 408, 429 and 5xx are retryable, as *notify.RetryAfterError
// when a Retry-After is given; transport failures and timeouts are
// retryable.
package sms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/webhook"
)

// ErrInvalidOption reports an invalid option or constructor argument.
var ErrInvalidOption = errors.New("sms: invalid option")

// Defaults.
const (
	DefaultName          = "twilio"                 // the provider name (WithName)
	DefaultBaseURL       = "https://api.twilio.com" // the API (WithBaseURL)
	DefaultTimeout       = 10 * time.Second         // per request (WithTimeout)
	DefaultMaxRetryAfter = time.Hour                // Retry-After cap (WithMaxRetryAfter)
	// MaxBody is the longest Body accepted (Twilio's limit, 1600
	// characters); a longer text is refused as permanent.
	MaxBody = 1600
)

// Option configures a Sender.
type Option func(*config) error

type config struct {
	name           string
	baseURL        *url.URL
	timeout        time.Duration
	maxRetryAfter  time.Duration
	statusCallback string
	client         *http.Client
}

// WithName sets the provider name (default "twilio").
func WithName(name string) Option {
	return func(c *config) error {
		if strings.TrimSpace(name) == "" {
			return fmt.Errorf("%w: empty name", ErrInvalidOption)
		}
		c.name = name
		return nil
	}
}

// WithBaseURL sets the API's base URL (default DefaultBaseURL), for a
// Twilio-compatible provider, a regional edge or a test server.
func WithBaseURL(raw string) Option {
	return func(c *config) error {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("%w: base URL %q is not an http(s) URL without query", ErrInvalidOption, raw)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		c.baseURL = u
		return nil
	}
}

// WithTimeout bounds each request (default DefaultTimeout). It is ignored
// with WithHTTPClient.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: timeout %v must be positive", ErrInvalidOption, d)
		}
		c.timeout = d
		return nil
	}
}

// WithMaxRetryAfter caps the pause a Retry-After can ask for (default
// DefaultMaxRetryAfter).
func WithMaxRetryAfter(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: max Retry-After %v must be positive", ErrInvalidOption, d)
		}
		c.maxRetryAfter = d
		return nil
	}
}

// WithStatusCallback asks the provider to post delivery status updates to
// callback (an https URL, or http).
func WithStatusCallback(callback string) Option {
	return func(c *config) error {
		u, err := url.Parse(callback)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%w: status callback %q is not an http(s) URL", ErrInvalidOption, callback)
		}
		c.statusCallback = callback
		return nil
	}
}

// WithHTTPClient sends through client instead of a client of the
// package's own (whose timeout WithTimeout sets).
func WithHTTPClient(client *http.Client) Option {
	return func(c *config) error {
		if client == nil {
			return fmt.Errorf("%w: nil HTTP client", ErrInvalidOption)
		}
		c.client = client
		return nil
	}
}

// Sender sends text messages. It is safe for concurrent use; Close
// releases idle connections.
type Sender struct {
	name          string
	endpoint      string
	accountSID    string
	authToken     string
	from          string
	fromField     string
	callback      string
	client        *http.Client
	ownClient     bool
	maxRetryAfter time.Duration
}

// New returns a Sender for the account accountSID with authToken, sending
// from from: an E.164 number, or a messaging service SID ("MG…"), posted
// as MessagingServiceSid. Invalid arguments or options yield an error
// wrapping ErrInvalidOption.
func New(accountSID, authToken, from string, opts ...Option) (*Sender, error) {
	if accountSID == "" || strings.ContainsAny(accountSID, "/?#:% \t\r\n") {
		return nil, fmt.Errorf("%w: invalid account SID", ErrInvalidOption)
	}
	if authToken == "" {
		return nil, fmt.Errorf("%w: empty auth token", ErrInvalidOption)
	}
	fromField := "From"
	switch {
	case ValidE164(from):
	case strings.HasPrefix(from, "MG") && len(from) == 34:
		fromField = "MessagingServiceSid"
	default:
		return nil, fmt.Errorf("%w: from %q is neither an E.164 number nor a messaging service SID", ErrInvalidOption, from)
	}
	base, _ := url.Parse(DefaultBaseURL)
	c := config{name: DefaultName, baseURL: base, timeout: DefaultTimeout, maxRetryAfter: DefaultMaxRetryAfter}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	s := &Sender{
		name:          c.name,
		endpoint:      c.baseURL.JoinPath("2010-04-01", "Accounts", accountSID, "Messages.json").String(),
		accountSID:    accountSID,
		authToken:     authToken,
		from:          from,
		fromField:     fromField,
		callback:      c.statusCallback,
		client:        c.client,
		maxRetryAfter: c.maxRetryAfter,
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: c.timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
		s.ownClient = true
	}
	return s, nil
}

// Name returns the provider name.
func (s *Sender) Name() string { return s.name }

// Channel returns notify.SMS.
func (s *Sender) Channel() string { return notify.SMS }

// Close closes the idle connections of the Sender's own client.
func (s *Sender) Close() error {
	if s.ownClient {
		s.client.CloseIdleConnections()
	}
	return nil
}

// ValidE164 reports whether n is an E.164 number: "+", a non-zero digit,
// then 1 to 14 more digits, nothing else.
func ValidE164(n string) bool {
	if len(n) < 3 || len(n) > 16 || n[0] != '+' || n[1] == '0' {
		return false
	}
	for i := 1; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}

// APIError is the provider's error answer.
type APIError struct {
	Status   int    `json:"status"`
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
}

// Error returns the provider's code, the HTTP status and the message.
func (e *APIError) Error() string {
	return fmt.Sprintf("provider error %d (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// goneCode reports whether a provider error code says the number cannot
// receive messages: invalid 'To' number (21211), not a mobile number
// (21614), invalid phone number (21217, 21401), number not SMS-capable
// (21407).
func goneCode(code int) bool {
	switch code {
	case 21211, 21614, 21217, 21401, 21407:
		return true
	}
	return false
}

// Send sends m.Text to the E.164 number m.To.
func (s *Sender) Send(ctx context.Context, m notify.Message) (notify.Receipt, error) {
	rc := notify.Receipt{Provider: s.name}
	if err := ctx.Err(); err != nil {
		return rc, fmt.Errorf("sms: %w", err)
	}
	if !ValidE164(m.To) {
		return rc, fmt.Errorf("sms: %w: %q is not an E.164 number", notify.ErrPermanent, m.To)
	}
	if strings.TrimSpace(m.Text) == "" {
		return rc, fmt.Errorf("sms: %w: empty text", notify.ErrPermanent)
	}
	if n := len([]rune(m.Text)); n > MaxBody {
		return rc, fmt.Errorf("sms: %w: text of %d characters exceeds %d", notify.ErrPermanent, n, MaxBody)
	}
	form := url.Values{"To": {m.To}, s.fromField: {s.from}, "Body": {m.Text}}
	if s.callback != "" {
		form.Set("StatusCallback", s.callback)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return rc, fmt.Errorf("sms: %w: %w", notify.ErrPermanent, err)
	}
	req.SetBasicAuth(s.accountSID, s.authToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := webhook.Do(s.client, req, s.maxRetryAfter)
	if err != nil {
		return rc, fmt.Errorf("sms: %w", classify(resp, err))
	}
	var ok struct {
		SID string `json:"sid"`
	}
	// Accepted even when the answer is not what we expect: a retry would
	// send the message twice.
	if json.Unmarshal(resp.Body, &ok) == nil {
		rc.ProviderID = ok.SID
	}
	return rc, nil
}

// classify refines webhook's classification with the provider's error
// body: a gone number becomes notify.ErrGone.
func classify(resp webhook.Response, err error) error {
	if resp.Status == 0 {
		return err // no answer: transport failure, retryable
	}
	var api APIError
	if json.Unmarshal(resp.Body, &api) != nil || api.Code == 0 {
		return err
	}
	api.Status = resp.Status
	if resp.Status >= 400 && resp.Status < 500 && goneCode(api.Code) {
		return fmt.Errorf("%w: %w (%w)", notify.ErrGone, &api, err)
	}
	return fmt.Errorf("%w (%w)", &api, err)
}
