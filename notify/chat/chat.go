// Package chat delivers notifications to Slack-compatible incoming
// webhooks (Slack, Mattermost, Rocket.Chat and the like): a JSON POST of
// {"text": …}, optionally with a username and Block Kit blocks, to the
// URL in Message.To.
//
// Text is escaped the way Slack asks (&, < and > become &amp;, &lt; and
// &gt;), so a message cannot ping a channel (<!channel>), mention a user
// or forge a link: it arrives as the text it is. Destinations pass the
// webhook package's SSRF guard, and answers are classified as webhook
// classifies them, except that Slack's answers for a removed webhook or
// archived channel (404 no_service, 404 channel_not_found, 403
// invalid_token, 410 channel_is_archived) mark the address gone.
package chat

import (
	"bytes"
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

// ErrInvalidOption reports an invalid option.
var ErrInvalidOption = errors.New("chat: invalid option")

// Defaults.
const (
	DefaultName          = "slack"          // the provider name (WithName)
	DefaultTimeout       = 10 * time.Second // per delivery attempt (WithTimeout)
	DefaultMaxRetryAfter = time.Hour        // Retry-After cap (WithMaxRetryAfter)
	DefaultUserAgent     = "herald-chat/1"  // the User-Agent header
)

// BlocksFunc builds the Block Kit blocks (a JSON array) for a message.
type BlocksFunc func(m notify.Message) (json.RawMessage, error)

// Option configures a Sender.
type Option func(*config) error

type config struct {
	name          string
	timeout       time.Duration
	maxRetryAfter time.Duration
	username      string
	iconEmoji     string
	blocks        BlocksFunc
	markdown      bool
	guardOpts     []webhook.GuardOption
}

// WithName sets the provider name reported by Name and in receipts
// (default "slack").
func WithName(name string) Option {
	return func(c *config) error {
		if strings.TrimSpace(name) == "" {
			return fmt.Errorf("%w: empty name", ErrInvalidOption)
		}
		c.name = name
		return nil
	}
}

// WithTimeout bounds each delivery attempt (default DefaultTimeout).
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

// WithUsername sets the "username" the message is posted as (where the
// workspace lets incoming webhooks override it).
func WithUsername(name string) Option {
	return func(c *config) error {
		if strings.TrimSpace(name) == "" || len(name) > 80 {
			return fmt.Errorf("%w: username must be 1–80 characters", ErrInvalidOption)
		}
		c.username = name
		return nil
	}
}

// WithIconEmoji sets the "icon_emoji", e.g. ":bell:".
func WithIconEmoji(emoji string) Option {
	return func(c *config) error {
		if len(emoji) < 3 || !strings.HasPrefix(emoji, ":") || !strings.HasSuffix(emoji, ":") {
			return fmt.Errorf("%w: icon emoji %q is not :name:", ErrInvalidOption, emoji)
		}
		c.iconEmoji = emoji
		return nil
	}
}

// WithBlocks adds Block Kit blocks built by fn to every message; the text
// stays as the notification fallback. SectionBlocks is a ready fn.
func WithBlocks(fn BlocksFunc) Option {
	return func(c *config) error {
		if fn == nil {
			return fmt.Errorf("%w: nil blocks func", ErrInvalidOption)
		}
		c.blocks = fn
		return nil
	}
}

// WithoutMarkdown posts "mrkdwn": false, so *, _ and ~ in the text are not
// formatting either.
func WithoutMarkdown() Option {
	return func(c *config) error {
		c.markdown = false
		return nil
	}
}

// WithAllowPrivate lets the guard reach private, loopback and link-local
// addresses (see webhook.AllowPrivate).
func WithAllowPrivate() Option {
	return func(c *config) error {
		c.guardOpts = append(c.guardOpts, webhook.AllowPrivate())
		return nil
	}
}

// WithAllow puts CIDR prefixes, IP addresses or host names on the guard's
// allow-list (see webhook.Allow).
func WithAllow(entries ...string) Option {
	return func(c *config) error {
		if len(entries) == 0 {
			return fmt.Errorf("%w: empty allow-list", ErrInvalidOption)
		}
		c.guardOpts = append(c.guardOpts, webhook.Allow(entries...))
		return nil
	}
}

// Sender posts to Slack-compatible incoming webhooks. It is safe for
// concurrent use; Close releases idle connections.
type Sender struct {
	name          string
	guard         *webhook.Guard
	client        *http.Client
	maxRetryAfter time.Duration
	username      string
	iconEmoji     string
	blocks        BlocksFunc
	markdown      bool
}

// New returns a chat Sender. An invalid option yields an error wrapping
// ErrInvalidOption.
func New(opts ...Option) (*Sender, error) {
	c := config{name: DefaultName, timeout: DefaultTimeout, maxRetryAfter: DefaultMaxRetryAfter, markdown: true}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	g, err := webhook.NewGuard(c.guardOpts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return &Sender{
		name:          c.name,
		guard:         g,
		client:        g.NewClient(c.timeout, 0), // incoming webhooks do not redirect
		maxRetryAfter: c.maxRetryAfter,
		username:      c.username,
		iconEmoji:     c.iconEmoji,
		blocks:        c.blocks,
		markdown:      c.markdown,
	}, nil
}

// Name returns the provider name.
func (s *Sender) Name() string { return s.name }

// Channel returns notify.Chat.
func (s *Sender) Channel() string { return notify.Chat }

// Close closes idle connections.
func (s *Sender) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// Payload is the JSON body posted to the webhook.
type Payload struct {
	Text      string          `json:"text"`
	Username  string          `json:"username,omitempty"`
	IconEmoji string          `json:"icon_emoji,omitempty"`
	Blocks    json.RawMessage `json:"blocks,omitempty"`
	Markdown  *bool           `json:"mrkdwn,omitempty"`
}

// Send posts m.Text (escaped) to the webhook URL in m.To. A 2xx means the
// message was posted to the channel (Receipt.Delivered).
func (s *Sender) Send(ctx context.Context, m notify.Message) (notify.Receipt, error) {
	rc := notify.Receipt{Provider: s.name}
	if err := ctx.Err(); err != nil {
		return rc, fmt.Errorf("chat: %w", err)
	}
	u, err := url.Parse(m.To)
	if err != nil {
		return rc, fmt.Errorf("chat: %w: invalid webhook URL", notify.ErrPermanent)
	}
	if err := s.guard.CheckURL(u); err != nil {
		return rc, fmt.Errorf("chat: %w", err)
	}
	if strings.TrimSpace(m.Text) == "" {
		return rc, fmt.Errorf("chat: %w: empty text", notify.ErrPermanent)
	}
	p := Payload{Text: Escape(m.Text), Username: s.username, IconEmoji: s.iconEmoji}
	if !s.markdown {
		f := false
		p.Markdown = &f
	}
	if s.blocks != nil {
		b, err := s.blocks(m)
		if err != nil {
			return rc, fmt.Errorf("chat: %w: blocks: %w", notify.ErrPermanent, err)
		}
		if !json.Valid(b) || !bytes.HasPrefix(bytes.TrimSpace(b), []byte("[")) {
			return rc, fmt.Errorf("chat: %w: blocks are not a JSON array", notify.ErrPermanent)
		}
		p.Blocks = b
	}
	body, err := json.Marshal(p)
	if err != nil {
		return rc, fmt.Errorf("chat: %w: %w", notify.ErrPermanent, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return rc, fmt.Errorf("chat: %w: %w", notify.ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", DefaultUserAgent)
	resp, err := webhook.Do(s.client, req, s.maxRetryAfter)
	if err != nil {
		return rc, fmt.Errorf("chat: %w", gone(resp, err))
	}
	rc.Delivered = true
	return rc, nil
}

// gone upgrades Slack's answers for a webhook or channel that no longer
// exists to notify.ErrGone.
func gone(resp webhook.Response, err error) error {
	if errors.Is(err, notify.ErrGone) {
		return err
	}
	code := strings.TrimSpace(string(resp.Body))
	switch {
	case resp.Status == http.StatusNotFound && (code == "no_service" || code == "channel_not_found" || code == "no_team"),
		resp.Status == http.StatusForbidden && (code == "invalid_token" || code == "team_disabled"),
		code == "channel_is_archived":
		return fmt.Errorf("%w: %w", notify.ErrGone, err)
	}
	return err
}

// Escape escapes the three characters Slack's text treats as markup:
// & → &amp;, < → &lt;, > → &gt;.
func Escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// Unescape reverses Escape, as a receiver rendering the text does.
func Unescape(s string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(s)
}

// SectionBlocks is a BlocksFunc: a header block with the subject (when
// set) and a section with the text, both plain_text, so nothing in them is
// interpreted.
func SectionBlocks(m notify.Message) (json.RawMessage, error) {
	type text struct {
		Type  string `json:"type"`
		Text  string `json:"text"`
		Emoji bool   `json:"emoji"`
	}
	type block struct {
		Type string `json:"type"`
		Text text   `json:"text"`
	}
	var blocks []block
	if m.Subject != "" {
		subj := m.Subject
		if r := []rune(subj); len(r) > 150 { // Slack's header limit
			subj = string(r[:149]) + "…"
		}
		blocks = append(blocks, block{Type: "header", Text: text{Type: "plain_text", Text: subj, Emoji: true}})
	}
	body := m.Text
	if r := []rune(body); len(r) > 3000 { // Slack's section limit
		body = string(r[:2999]) + "…"
	}
	blocks = append(blocks, block{Type: "section", Text: text{Type: "plain_text", Text: body, Emoji: true}})
	return json.Marshal(blocks)
}
