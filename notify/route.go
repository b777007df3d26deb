package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Spec says who hears about an event of type T, how, and with what limits.
type Spec[T any] struct {
	// Name is the route's subscription name on the service (lower-case
	// letters, digits, '-', '_'; default "notify-" and the contract's name).
	Name string
	// Category groups notifications for preferences and throttling, e.g.
	// "orders" or "marketing" (required).
	Category string
	// Recipients returns the recipient ids the Directory resolves (required).
	// Duplicates and empty ids are dropped.
	Recipients func(T) []string
	// Channels are the channels to deliver on, each through its own pipeline
	// (required).
	Channels []string
	// Template names the template the Renderer renders per channel and
	// locale (required unless the only channel is Webhook).
	Template string
	// Critical, when it returns true, ignores opt-outs, quiet hours, the
	// throttle and the digest (the suppression list still applies: an address
	// that bounced or is gone cannot receive anything).
	Critical func(T) bool
	// GroupBy narrows the throttle and digest key (default: per recipient,
	// category and channel; with GroupBy, also per its value).
	GroupBy func(T) string
	// Throttle limits how many notifications a key gets in a window. The
	// excess is folded into the Digest when the route has one, else recorded
	// as throttled.
	Throttle *Throttle
	// Digest batches notifications into one message per key and window.
	// With a Throttle it batches only the excess; without, everything.
	Digest *Digest
	// Fallback sends on another channel when a channel did not deliver.
	Fallback []Fallback
}

// Throttle is a sliding-window limit.
type Throttle struct {
	Window time.Duration // the window (> 0)
	Limit  int           // at most this many notifications per key in Window (>= 1)
}

// Digest is keyed batching: the first notification of a key opens a digest,
// the next ones join it, and when Window has passed since it opened (or it
// holds MaxItems) one message renders all its items.
type Digest struct {
	Window   time.Duration // how long a digest collects (> 0)
	MaxItems int           // send early with this many items (0: no limit)
	// Template renders the digest (default: the route's Template). Its
	// TemplateData has Items set.
	Template string
}

// Fallback sends on channel To when channel From has not delivered within
// After: a delivery on From that is not confirmed delivered by then (see
// Receipt.Delivered and Notifier.MarkDelivered) is followed by one on To.
// When From fails for good (permanent error, exhausted retries, no or a
// suppressed address) To is sent at once. To must not be one of the route's
// Channels.
type Fallback struct {
	From, To string
	After    time.Duration
}

// TemplateData is what a Renderer gets as data.
type TemplateData struct {
	// Data is the event's payload (T); nil in a digest.
	Data any
	// Items are the digest's items in the order they arrived; nil outside
	// a digest.
	Items []Item
	// Recipient is the recipient as the Directory described it (without
	// addresses and secrets).
	Recipient Profile
	Channel   string
	Category  string
	Locale    string
	// EventID, EventType and CorrelationID identify the event (the first
	// item's, in a digest).
	EventID       string
	EventType     string
	CorrelationID string
}

// Item is one notification folded into a digest.
type Item struct {
	EventID string
	Time    time.Time // when it was decided
	Data    any       // the event's payload (T)
}

// route is one registered Spec, with T erased.
type route struct {
	name, eventType string
	category        string
	template        string
	channels        []string
	throttle        *Throttle
	digest          *Digest
	fallbacks       []Fallback
	decode          func([]byte) (any, error)
}

// allChannels is every channel the route may send on.
func (r *route) allChannels() []string {
	out := slices.Clone(r.channels)
	for _, f := range r.fallbacks {
		if !slices.Contains(out, f.To) {
			out = append(out, f.To)
		}
	}
	return out
}

func (r *route) needsTemplates() bool {
	for _, ch := range r.allChannels() {
		if ch != Webhook {
			return true
		}
	}
	return false
}

func (r *route) digestTemplate() string {
	if r.digest != nil && r.digest.Template != "" {
		return r.digest.Template
	}
	return r.template
}

var (
	routeName    = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	categoryName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
)

// intake is what a route's Receive handler extracts from one event.
type intake struct {
	recipients []string
	critical   bool
	group      string
	data       []byte
}

// Route registers spec for the notification events of c: it subscribes the
// notifier's service to c (herald.Receive, with opts) with a handler that
// decides, in the subscription's transaction and exactly once per event,
// what happens for each recipient and channel. Call it before the service's
// Start.
func Route[T any](n *Notifier, c *herald.NotificationEvent[T], spec Spec[T], opts ...herald.SubscribeOption) error {
	if n == nil || c == nil {
		return fmt.Errorf("%w: Route needs a notifier and a contract", ErrInvalidOption)
	}
	r, err := newRoute(c.Name(), spec)
	if err != nil {
		return err
	}
	n.mu.Lock()
	if err := n.registrable("Route"); err != nil {
		n.mu.Unlock()
		return err
	}
	if _, dup := n.routes[r.name]; dup {
		n.mu.Unlock()
		return fmt.Errorf("%w: route %q registered twice", ErrInvalidOption, r.name)
	}
	n.routes[r.name] = r
	n.mu.Unlock()

	err = herald.Receive(n.svc, c, r.name, func(ctx context.Context, tx herald.Tx, v T) error {
		ev, _ := herald.EventFrom(ctx)
		data, err := json.Marshal(v)
		if err != nil {
			return herald.Permanent(fmt.Errorf("notify: route %s: encode %s data as JSON: %w", r.name, ev.Type, err))
		}
		in := intake{recipients: spec.Recipients(v), data: data}
		if spec.Critical != nil {
			in.critical = spec.Critical(v)
		}
		if spec.GroupBy != nil {
			in.group = spec.GroupBy(v)
		}
		return n.decide(ctx, tx, r, event{ID: ev.ID, Type: ev.Type, CorrelationID: ev.CorrelationID}, in)
	}, append(slices.Clone(opts), herald.Delivers(r.allChannels()...))...)
	if err != nil {
		n.mu.Lock()
		delete(n.routes, r.name)
		n.mu.Unlock()
		return fmt.Errorf("notify: route %s: %w", r.name, err)
	}
	return nil
}

// newRoute validates spec.
func newRoute[T any](eventType string, spec Spec[T]) (*route, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: route of %s: %s", ErrInvalidOption, eventType, fmt.Sprintf(format, args...))
	}
	name := spec.Name
	if name == "" {
		name = defaultRouteName(eventType)
	}
	if !routeName.MatchString(name) {
		return nil, bad("name %q: want lower-case letters, digits, '-' or '_', starting with a letter, at most 63", name)
	}
	if !categoryName.MatchString(spec.Category) {
		return nil, bad("category %q: want letters, digits, '.', '_', ':' or '-' (and not '*')", spec.Category)
	}
	if spec.Recipients == nil {
		return nil, bad("no Recipients function")
	}
	if len(spec.Channels) == 0 {
		return nil, bad("no Channels")
	}
	for i, ch := range spec.Channels {
		if ch == "" || ch == "*" || strings.ContainsAny(ch, "/ ") {
			return nil, bad("channel %q", ch)
		}
		if slices.Contains(spec.Channels[:i], ch) {
			return nil, bad("channel %s listed twice", ch)
		}
	}
	if t := spec.Throttle; t != nil && (t.Window <= 0 || t.Limit < 1) {
		return nil, bad("throttle %+v: want Window > 0 and Limit >= 1", *t)
	}
	if d := spec.Digest; d != nil && (d.Window <= 0 || d.MaxItems < 0) {
		return nil, bad("digest %+v: want Window > 0 and MaxItems >= 0", *d)
	}
	for _, f := range spec.Fallback {
		switch {
		case !slices.Contains(spec.Channels, f.From):
			return nil, bad("fallback from %q, which is not one of the Channels", f.From)
		case f.To == "" || f.To == "*" || strings.ContainsAny(f.To, "/ "):
			return nil, bad("fallback to channel %q", f.To)
		case slices.Contains(spec.Channels, f.To):
			return nil, bad("fallback to %s, which the route sends on anyway", f.To)
		case f.After < 0:
			return nil, bad("fallback after %v < 0", f.After)
		}
	}
	r := &route{
		name:      name,
		eventType: eventType,
		category:  spec.Category,
		template:  spec.Template,
		channels:  slices.Clone(spec.Channels),
		fallbacks: slices.Clone(spec.Fallback),
		decode: func(b []byte) (any, error) {
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		},
	}
	if spec.Throttle != nil {
		t := *spec.Throttle
		r.throttle = &t
	}
	if spec.Digest != nil {
		d := *spec.Digest
		r.digest = &d
	}
	if r.needsTemplates() && r.template == "" {
		return nil, bad("no Template")
	}
	return r, nil
}

// defaultRouteName derives a subscription name from an event type.
func defaultRouteName(eventType string) string {
	name := "notify-" + strings.NewReplacer(".", "_").Replace(eventType)
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(eventType))
	return name[:50] + "-" + hex.EncodeToString(sum[:6])
}
