package notify

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// ErrUnknownRecipient is what a Directory returns (wrapped or not) for an id
// it does not know. The deliveries for that recipient are recorded as failed;
// any other Directory error is retried with the event.
var ErrUnknownRecipient = errors.New("notify: unknown recipient")

// Directory resolves recipient ids to contact points. The notifier calls it
// inside the subscription's transaction, once per recipient and event, so it
// should be fast (a local table or a cache); a slow one delays the notifier,
// never the business flow. On SQLite a Directory that reads the same file
// uses another connection, which WAL mode allows during the transaction.
type Directory interface {
	Lookup(ctx context.Context, recipient string) (Recipient, error)
}

// DirectoryFunc adapts a function to Directory.
type DirectoryFunc func(ctx context.Context, recipient string) (Recipient, error)

// Lookup calls f.
func (f DirectoryFunc) Lookup(ctx context.Context, recipient string) (Recipient, error) {
	return f(ctx, recipient)
}

// MapDirectory is a fixed Directory keyed by recipient id, for tests and
// small setups.
type MapDirectory map[string]Recipient

// Lookup returns m[recipient] or ErrUnknownRecipient.
func (m MapDirectory) Lookup(_ context.Context, recipient string) (Recipient, error) {
	r, ok := m[recipient]
	if !ok {
		return Recipient{}, fmt.Errorf("%w: %q", ErrUnknownRecipient, recipient)
	}
	if r.ID == "" {
		r.ID = recipient
	}
	return r, nil
}

// Recipient is a person or system as the Directory knows it.
type Recipient struct {
	ID   string
	Name string
	// Addresses maps a channel to the recipient's contact point on it: an
	// e-mail address, an E.164 number, a push subscription, a URL.
	Addresses map[string]string
	// Secrets maps a channel to a signing secret (webhooks); it is looked up
	// again at send time and never stored.
	Secrets map[string]string
	// Locale is a BCP 47 tag for the templates, e.g. "de-CH".
	Locale string
	// TimeZone is an IANA zone, e.g. "Europe/Zurich", for quiet hours
	// (default UTC; an unknown zone counts as UTC and is logged).
	TimeZone string
	// QuietHours overrides the notifier's WithQuietHours for this recipient.
	QuietHours *QuietHours
	// Attributes are passed to templates as they are.
	Attributes map[string]string
}

// Profile is the part of a Recipient kept with a delivery and passed to
// templates.
type Profile struct {
	ID         string            `json:"id"`
	Name       string            `json:"name,omitempty"`
	Locale     string            `json:"locale,omitempty"`
	TimeZone   string            `json:"time_zone,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

func (r Recipient) profile() Profile {
	return Profile{ID: r.ID, Name: r.Name, Locale: r.Locale, TimeZone: r.TimeZone, Attributes: r.Attributes}
}

// QuietHours is a daily span, in the recipient's time zone, in which
// notifications wait until it ends. Start and End are offsets from local
// midnight (22*time.Hour, 7*time.Hour); Start > End spans midnight;
// Start == End is never quiet.
type QuietHours struct {
	Start, End time.Duration
	// Channels it applies to (default: every channel but Webhook).
	Channels []string
}

func (q QuietHours) validate() error {
	if q.Start < 0 || q.Start >= 24*time.Hour || q.End < 0 || q.End >= 24*time.Hour {
		return fmt.Errorf("%w: quiet hours %v–%v: want offsets in [0, 24h)", ErrInvalidOption, q.Start, q.End)
	}
	return nil
}

func (q *QuietHours) applies(channel string) bool {
	if q == nil || q.Start == q.End {
		return false
	}
	if len(q.Channels) == 0 {
		return channel != Webhook
	}
	for _, c := range q.Channels {
		if c == channel {
			return true
		}
	}
	return false
}

// until reports whether t falls in quiet hours in loc, and when they end.
func (q *QuietHours) until(t time.Time, loc *time.Location) (time.Time, bool) {
	if q == nil || q.Start == q.End {
		return time.Time{}, false
	}
	lt := t.In(loc)
	y, m, d := lt.Date()
	at := func(day int, off time.Duration) time.Time {
		h, mi, s := int(off/time.Hour), int(off%time.Hour/time.Minute), int(off%time.Minute/time.Second)
		return time.Date(y, m, d+day, h, mi, s, 0, loc)
	}
	tod := time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute +
		time.Duration(lt.Second())*time.Second + time.Duration(lt.Nanosecond())
	if q.Start < q.End {
		if tod >= q.Start && tod < q.End {
			return at(0, q.End), true
		}
		return time.Time{}, false
	}
	switch {
	case tod >= q.Start:
		return at(1, q.End), true
	case tod < q.End:
		return at(0, q.End), true
	}
	return time.Time{}, false
}

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// checkAddress validates address on channel and returns its normalized
// form.
func (n *Notifier) checkAddress(channel, address string) (string, error) {
	if f := n.cfg.validate[channel]; f != nil {
		return f(address)
	}
	address = strings.TrimSpace(address)
	if address == "" {
		return "", errors.New("empty")
	}
	switch channel {
	case Email:
		a, err := mail.ParseAddress(address)
		if err != nil {
			return "", err
		}
		return strings.ToLower(a.Address), nil
	case SMS:
		if !e164.MatchString(address) {
			return "", fmt.Errorf("%q is not an E.164 number", address)
		}
	case Chat, Webhook:
		u, err := url.Parse(address)
		if err != nil {
			return "", err
		}
		if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return "", fmt.Errorf("%q is not an absolute http(s) URL", address)
		}
	}
	return address, nil
}

// normalize is checkAddress without the error, for suppression keys.
func (n *Notifier) normalize(channel, address string) string {
	if a, err := n.checkAddress(channel, address); err == nil {
		return a
	}
	return strings.TrimSpace(address)
}
