package notify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Preference says whether Recipient wants notifications of Category on
// Channel. Any of the three may be "*": the most specific row wins
// (recipient before category before channel), then the notifier's
// WithDefaultOn/WithDefaultOff, then "on". A route's Critical notifications ignore
// preferences.
type Preference struct {
	Recipient string
	Category  string
	Channel   string
	Enabled   bool
	UpdatedAt time.Time
}

type prefKey struct{ category, channel string }

func (p Preference) validate() error {
	if p.Recipient == "" || p.Category == "" || p.Channel == "" {
		return fmt.Errorf("%w: preference %+v: recipient, category and channel are required (\"*\" for any)", ErrInvalidOption, p)
	}
	return nil
}

// SetPreference creates or replaces a preference.
func (n *Notifier) SetPreference(ctx context.Context, p Preference) error {
	if err := p.validate(); err != nil {
		return err
	}
	_, err := n.st.DB().ExecContext(ctx, n.st.Rebind(`INSERT INTO herald_notify_preferences (recipient, category, channel, enabled, updated_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (recipient, category, channel) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at`),
		p.Recipient, p.Category, p.Channel, b2i(p.Enabled), nanos(n.now()))
	if err != nil {
		return fmt.Errorf("notify: set preference: %w", err)
	}
	return nil
}

// DeletePreference removes a preference, so a less specific one applies.
func (n *Notifier) DeletePreference(ctx context.Context, recipient, category, channel string) error {
	_, err := n.st.DB().ExecContext(ctx, n.st.Rebind(`DELETE FROM herald_notify_preferences WHERE recipient = ? AND category = ? AND channel = ?`),
		recipient, category, channel)
	if err != nil {
		return fmt.Errorf("notify: delete preference: %w", err)
	}
	return nil
}

// Preferences returns the rows of recipient ("*" for the defaults).
func (n *Notifier) Preferences(ctx context.Context, recipient string) ([]Preference, error) {
	rows, err := n.st.DB().QueryContext(ctx, n.st.Rebind(`SELECT recipient, category, channel, enabled, updated_at
		FROM herald_notify_preferences WHERE recipient = ? ORDER BY category, channel`), recipient)
	if err != nil {
		return nil, fmt.Errorf("notify: preferences: %w", err)
	}
	defer rows.Close()
	var out []Preference
	for rows.Next() {
		var p Preference
		var on int
		var at int64
		if err := rows.Scan(&p.Recipient, &p.Category, &p.Channel, &on, &at); err != nil {
			return nil, fmt.Errorf("notify: preferences: %w", err)
		}
		p.Enabled, p.UpdatedAt = on != 0, fromNanos(at)
		out = append(out, p)
	}
	return out, rows.Err()
}

// enabled says whether a category on a channel is on, given the most
// specific preference row that matched (pref, NULL when none did): that
// row's value, else the most specific WithDefaultOn/WithDefaultOff, else on.
func (n *Notifier) enabled(pref sql.NullInt64, category, channel string) bool {
	if pref.Valid {
		return pref.Int64 != 0
	}
	for _, k := range []prefKey{{category, channel}, {category, "*"}, {"*", channel}, {"*", "*"}} {
		if v, ok := n.cfg.defaults[k]; ok {
			return v
		}
	}
	return true
}

// Suppression is an address on a channel that gets nothing: a hard bounce,
// an unsubscribe, a gone endpoint.
type Suppression struct {
	Channel   string
	Address   string // normalized (e-mail addresses lower-cased)
	Reason    string
	CreatedAt time.Time
}

// Suppress adds address on channel to the suppression list (replacing the
// reason of an existing entry). Deliveries decided or sent afterwards to it
// are recorded as suppressed.
func (n *Notifier) Suppress(ctx context.Context, channel, address, reason string) error {
	if channel == "" || address == "" {
		return fmt.Errorf("%w: Suppress needs a channel and an address", ErrInvalidOption)
	}
	return n.suppress(ctx, n.st.DB(), channel, address, reason, n.now())
}

func (n *Notifier) suppress(ctx context.Context, db execer, channel, address, reason string, now time.Time) error {
	_, err := db.ExecContext(ctx, n.st.Rebind(`INSERT INTO herald_notify_suppressions (channel, address, reason, created_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (channel, address) DO UPDATE SET reason = excluded.reason`),
		channel, n.normalize(channel, address), reason, nanos(now))
	if err != nil {
		return fmt.Errorf("notify: suppress: %w", err)
	}
	return nil
}

// Unsuppress removes address on channel from the suppression list.
func (n *Notifier) Unsuppress(ctx context.Context, channel, address string) error {
	_, err := n.st.DB().ExecContext(ctx, n.st.Rebind(`DELETE FROM herald_notify_suppressions WHERE channel = ? AND address = ?`),
		channel, n.normalize(channel, address))
	if err != nil {
		return fmt.Errorf("notify: unsuppress: %w", err)
	}
	return nil
}

// Suppressed returns the suppression of address on channel, if any.
func (n *Notifier) Suppressed(ctx context.Context, channel, address string) (Suppression, bool, error) {
	s := Suppression{Channel: channel, Address: n.normalize(channel, address)}
	var at int64
	err := n.st.DB().QueryRowContext(ctx, n.st.Rebind(`SELECT reason, created_at FROM herald_notify_suppressions WHERE channel = ? AND address = ?`),
		s.Channel, s.Address).Scan(&s.Reason, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Suppression{}, false, nil
	}
	if err != nil {
		return Suppression{}, false, fmt.Errorf("notify: suppressed: %w", err)
	}
	s.CreatedAt = fromNanos(at)
	return s, true, nil
}
