package notify

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/observehook"
)

// event is what the pipeline needs of an event's envelope.
type event struct {
	ID, Type, CorrelationID string
}

// zones caches time.LoadLocation, which reads the zone database each time.
var zones sync.Map // name → *time.Location

func loadLocation(name string) (*time.Location, error) {
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zones.Store(name, l)
	return l, nil
}

// tupleKey encodes parts unambiguously (recipient ids and GroupBy values
// may contain any separator), readable in the delivery log.
func tupleKey(parts ...string) string {
	b, _ := json.Marshal(parts)
	return string(b)
}

// idemKey is the idempotency key of an event for a recipient on a channel.
func idemKey(eventID, recipient, channel string) string {
	return eventID + "/" + recipient + "/" + channel
}

// decide runs the pipeline for every recipient and channel of one event,
// inside htx (the subscription's transaction, with the inbox row). It writes
// one delivery row per (event, recipient, channel) and sends nothing; each
// is reported to the service's observers (herald.HopDecide) once htx
// commits. An error (the Directory or the database failing) rolls the
// event back, and the subscription retries it.
func (n *Notifier) decide(ctx context.Context, htx herald.Tx, r *route, ev event, in intake) error {
	now := n.now()
	observing := observehook.Observing(n.svc)
	note := func(d *row) {
		n.decided(d)
		if observing {
			observehook.OnCommit(htx, n.decideObservation(d))
		}
	}
	tx := htx.SQL()
	seen := map[string]bool{}
	for _, rid := range in.recipients {
		if rid == "" || seen[rid] {
			continue
		}
		seen[rid] = true
		if err := n.decideRecipient(ctx, tx, r, ev, in, rid, now, note); err != nil {
			return err
		}
	}
	n.signal()
	return nil
}

// subject is one recipient as the pipeline sees it.
type subject struct {
	rec     Recipient
	unknown string // why the recipient is unknown, if it is
	loc     *time.Location
	quiet   *QuietHours
	profile []byte
}

// decideRecipient decides the deliveries of one recipient, calling note
// with each row it inserted.
func (n *Notifier) decideRecipient(ctx context.Context, tx *sql.Tx, r *route, ev event, in intake, rid string, now time.Time, note func(*row)) error {
	// Idempotency first: it needs nothing else, and a replayed event must
	// not consult the directory again.
	pending := map[string]bool{}
	for _, ch := range r.allChannels() {
		var one int
		err := n.on(tx).QueryRowContext(ctx, n.q.keyExists, idemKey(ev.ID, rid, ch)).Scan(&one)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			pending[ch] = true
		case err != nil:
			return fmt.Errorf("notify: idempotency key: %w", err)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	sub, err := n.resolve(ctx, rid)
	if err != nil {
		return err
	}
	decided := map[string]*row{}
	for _, ch := range r.channels {
		if !pending[ch] {
			continue
		}
		d := n.newRow(r, ev, rid, ch, in, sub, now)
		if err := n.pipeline(ctx, tx, r, d, sub, in, now); err != nil {
			return err
		}
		if err := n.insert(ctx, tx, d); err != nil {
			return err
		}
		note(d)
		decided[ch] = d
	}
	for _, fb := range r.fallbacks {
		from := decided[fb.From]
		if from == nil || !pending[fb.To] || sub.unknown != "" {
			continue
		}
		var due time.Time
		switch {
		case from.State == Queued || from.State == Deferred:
			due = from.DueAt.Add(fb.After)
		case strings.HasPrefix(from.Reason, ReasonNoAddress), strings.HasPrefix(from.Reason, ReasonInvalidAddress),
			strings.HasPrefix(from.Reason, ReasonSuppressedAddress):
			due = now // the first channel cannot be reached at all
		default:
			continue // opted out, throttled, digested: no fallback
		}
		d := n.newRow(r, ev, rid, fb.To, in, sub, now)
		d.Kind, d.FallbackOf, d.DueAt = KindFallback, from.ID, due
		if err := n.fallbackPipeline(ctx, tx, r, d, sub, in, fb, now); err != nil {
			return err
		}
		if err := n.insert(ctx, tx, d); err != nil {
			return err
		}
		note(d)
	}
	return nil
}

// resolve looks the recipient up. An unknown recipient is not an error: its
// deliveries fail with a reason. Any other directory error is.
func (n *Notifier) resolve(ctx context.Context, rid string) (*subject, error) {
	rec, err := n.dir.Lookup(ctx, rid)
	if errors.Is(err, ErrUnknownRecipient) {
		return &subject{unknown: err.Error(), loc: time.UTC, profile: []byte(`{}`)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("notify: directory lookup of %q: %w", rid, err)
	}
	if rec.ID == "" {
		rec.ID = rid
	}
	s := &subject{rec: rec, loc: time.UTC, quiet: rec.QuietHours}
	if s.quiet == nil {
		s.quiet = n.cfg.quiet
	}
	if rec.TimeZone != "" {
		if loc, err := loadLocation(rec.TimeZone); err == nil {
			s.loc = loc
		} else {
			n.log.Warn("recipient has an unknown time zone, using UTC", "recipient", rid, "zone", rec.TimeZone, "err", err)
		}
	}
	if s.profile, err = json.Marshal(rec.profile()); err != nil {
		return nil, fmt.Errorf("notify: encode profile of %q: %w", rid, err)
	}
	return s, nil
}

func (n *Notifier) newRow(r *route, ev event, rid, ch string, in intake, sub *subject, now time.Time) *row {
	return &row{
		Delivery: Delivery{
			ID:            envelope.NewID(time.Now()),
			Key:           idemKey(ev.ID, rid, ch),
			Kind:          KindMessage,
			Route:         r.name,
			EventID:       ev.ID,
			EventType:     ev.Type,
			CorrelationID: ev.CorrelationID,
			Recipient:     rid,
			Channel:       ch,
			Category:      r.category,
			Template:      r.template,
			Locale:        sub.rec.Locale,
			Critical:      in.critical,
			State:         Queued,
			DueAt:         now,
			CreatedAt:     now,
			UpdatedAt:     now,
		},
		data:    in.data,
		profile: sub.profile,
	}
}

func (d *row) set(s State, reason string) {
	d.State, d.Reason = s, reason
	if s != Queued && s != Deferred {
		d.DueAt = time.Time{}
	}
}

// facts are what the pipeline reads about one delivery, in one query.
type facts struct {
	pref       sql.NullInt64  // the most specific preference row's enabled
	suppressed sql.NullString // the suppression list's reason for the address
	count      int            // deliveries of the throttle key in its window
}

// readFacts reads the preference of d's recipient, category and channel,
// the suppression of address on d's channel and, with a throttle t, how
// many deliveries counted against key in the window ending now, in one
// query.
func (n *Notifier) readFacts(ctx context.Context, tx *sql.Tx, d *row, address, key string, t *Throttle, now time.Time) (facts, error) {
	var f facts
	since, limit := int64(math.MaxInt64), 0
	if t != nil {
		if n.q.lock != "" {
			if _, err := n.on(tx).ExecContext(ctx, n.q.lock, "herald_notify/throttle/"+key); err != nil {
				return f, fmt.Errorf("notify: throttle lock: %w", err)
			}
		}
		since, limit = nanos(now.Add(-t.Window)), t.Limit
	}
	args := append(prefArgs(make([]any, 0, 17), d.Recipient, d.Category, d.Channel), d.Channel, address, key, since, limit)
	err := n.on(tx).QueryRowContext(ctx, n.q.facts, args...).Scan(&f.pref, &f.suppressed, &f.count)
	if err != nil {
		return f, fmt.Errorf("notify: preferences, suppression list and throttle of %s: %w", d.Recipient, err)
	}
	return f, nil
}

// reach runs the checks shared by every delivery: the recipient is known,
// wants this (unless critical), has a valid address, and the address is not
// suppressed. It reports whether the delivery may go on, and with the
// throttle t (nil: none) the facts it read hold key's count.
func (n *Notifier) reach(ctx context.Context, tx *sql.Tx, d *row, sub *subject, key string, t *Throttle, now time.Time) (facts, bool, error) {
	if sub.unknown != "" {
		d.set(Failed, ReasonUnknownRecipient+": "+sub.unknown)
		return facts{}, false, nil
	}
	addr := sub.rec.Addresses[d.Channel]
	norm, addrErr := "", error(nil)
	if strings.TrimSpace(addr) != "" {
		norm, addrErr = n.checkAddress(d.Channel, addr)
	}
	f, err := n.readFacts(ctx, tx, d, norm, key, t, now)
	if err != nil {
		return f, false, err
	}
	if !d.Critical && !n.enabled(f.pref, d.Category, d.Channel) {
		d.set(Suppressed, fmt.Sprintf("%s: %s turned %s off on %s", ReasonOptedOut, d.Recipient, d.Category, d.Channel))
		return f, false, nil
	}
	switch {
	case strings.TrimSpace(addr) == "":
		d.set(Failed, fmt.Sprintf("%s: %s has no %s address", ReasonNoAddress, d.Recipient, d.Channel))
		return f, false, nil
	case addrErr != nil:
		d.Address = addr
		d.set(Failed, fmt.Sprintf("%s: %s address of %s: %v", ReasonInvalidAddress, d.Channel, d.Recipient, addrErr))
		return f, false, nil
	}
	d.Address = norm
	if f.suppressed.Valid {
		d.set(Suppressed, ReasonSuppressedAddress+": "+f.suppressed.String)
		return f, false, nil
	}
	return f, true, nil
}

// pipeline decides one delivery: reach → quiet hours → throttle → digest.
func (n *Notifier) pipeline(ctx context.Context, tx *sql.Tx, r *route, d *row, sub *subject, in intake, now time.Time) error {
	var key string
	t := r.throttle
	if d.Critical {
		t = nil
	}
	if t != nil {
		key = tupleKey("throttle", r.category, d.Recipient, d.Channel, in.group)
	}
	f, ok, err := n.reach(ctx, tx, d, sub, key, t, now)
	if !ok || err != nil {
		return err
	}
	var quietUntil time.Time
	if !d.Critical && sub.quiet.applies(d.Channel) {
		if end, quiet := sub.quiet.until(now, sub.loc); quiet {
			quietUntil = end
		}
	}
	if !d.Critical {
		if t != nil {
			if f.count >= t.Limit {
				if r.digest != nil {
					return n.joinDigest(ctx, tx, r, d, sub, in, now)
				}
				d.set(Throttled, fmt.Sprintf("%s: %d per %v reached for %s", ReasonThrottled, t.Limit, t.Window, key))
				return nil
			}
			d.ThrottleKey = key
		} else if r.digest != nil {
			return n.joinDigest(ctx, tx, r, d, sub, in, now)
		}
	}
	if !quietUntil.IsZero() {
		d.DueAt = quietUntil
		d.set(Deferred, fmt.Sprintf("%s: until %s", ReasonQuietHours, quietUntil.In(sub.loc).Format("2006-01-02 15:04 MST")))
	}
	return nil
}

// fallbackPipeline decides a fallback check: reach, then quiet hours at its
// due time. It waits (deferred) until then.
func (n *Notifier) fallbackPipeline(ctx context.Context, tx *sql.Tx, r *route, d *row, sub *subject, in intake, fb Fallback, now time.Time) error {
	if _, ok, err := n.reach(ctx, tx, d, sub, "", nil, now); !ok || err != nil {
		return err
	}
	reason := fmt.Sprintf("%s: if %s is not delivered by %s", ReasonFallback, fb.From, d.DueAt.In(sub.loc).Format("2006-01-02 15:04:05 MST"))
	if !d.Critical && sub.quiet.applies(d.Channel) {
		if end, quiet := sub.quiet.until(d.DueAt, sub.loc); quiet {
			d.DueAt = end
			reason += fmt.Sprintf(", %s until %s", ReasonQuietHours, end.In(sub.loc).Format("15:04 MST"))
		}
	}
	if d.DueAt.After(now) {
		d.set(Deferred, reason)
	} else {
		d.set(Queued, reason)
	}
	return nil
}

// joinDigest folds d into the open digest of its key, opening one (with
// its digest message, deferred until the window ends) if there is none.
func (n *Notifier) joinDigest(ctx context.Context, tx *sql.Tx, r *route, d *row, sub *subject, in intake, now time.Time) error {
	key := tupleKey("digest", r.name, d.Recipient, d.Channel, in.group)
	dg := r.digest
	for range 3 {
		var id string
		err := n.on(tx).QueryRowContext(ctx, n.q.digestOpen, key).Scan(&id)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("notify: find digest: %w", err)
		}
		if err == nil {
			var items, maxItems int
			err := n.on(tx).QueryRowContext(ctx, n.q.digestJoin, id).Scan(&items, &maxItems)
			if errors.Is(err, sql.ErrNoRows) {
				continue // closed meanwhile: open a new one
			}
			if err != nil {
				return fmt.Errorf("notify: join digest: %w", err)
			}
			d.DigestID = id
			d.set(Digested, fmt.Sprintf("%s: item %d of digest %s", ReasonDigest, items, id))
			if maxItems > 0 && items >= maxItems {
				return n.fillDigest(ctx, tx, id, sub, d.Channel, now)
			}
			return nil
		}
		// Open one, with its message.
		id = envelope.NewID(time.Now())
		closes := now.Add(dg.Window)
		res, err := n.on(tx).ExecContext(ctx, n.q.digestNew, id, key, dg.MaxItems, nanos(now), nanos(closes))
		if err != nil {
			return fmt.Errorf("notify: open digest: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			continue // another decider opened one first
		}
		msg := &row{Delivery: d.Delivery, profile: d.profile, data: []byte(`null`)}
		msg.ID = envelope.NewID(time.Now())
		msg.Key = "digest/" + id
		msg.Kind = KindDigest
		msg.Template = r.digestTemplate()
		msg.DigestID = id
		msg.DueAt = closes
		reason := fmt.Sprintf("%s: collecting until %s", ReasonDigest, closes.In(sub.loc).Format("2006-01-02 15:04:05 MST"))
		if sub.quiet.applies(d.Channel) {
			if end, quiet := sub.quiet.until(closes, sub.loc); quiet {
				msg.DueAt = end
				reason += fmt.Sprintf(", %s until %s", ReasonQuietHours, end.In(sub.loc).Format("15:04 MST"))
			}
		}
		msg.State, msg.Reason = Deferred, reason
		if err := n.insert(ctx, tx, msg); err != nil {
			return err
		}
		d.DigestID = id
		d.set(Digested, fmt.Sprintf("%s: item 1 of digest %s", ReasonDigest, id))
		if dg.MaxItems == 1 {
			return n.fillDigest(ctx, tx, id, sub, d.Channel, now)
		}
		return nil
	}
	return fmt.Errorf("notify: digest %s keeps closing under us", key)
}

// fillDigest closes a full digest and makes its message due now (or when
// quiet hours end).
func (n *Notifier) fillDigest(ctx context.Context, tx *sql.Tx, id string, sub *subject, channel string, now time.Time) error {
	if _, err := n.on(tx).ExecContext(ctx, n.q.digestClose, id); err != nil {
		return fmt.Errorf("notify: close digest: %w", err)
	}
	due, reason := now, ReasonDigest+": full"
	if sub.quiet.applies(channel) {
		if end, quiet := sub.quiet.until(now, sub.loc); quiet {
			due = end
			reason += fmt.Sprintf(", %s until %s", ReasonQuietHours, end.In(sub.loc).Format("15:04 MST"))
		}
	}
	if _, err := n.on(tx).ExecContext(ctx, n.q.digestDue, nanos(due), reason, nanos(now), id); err != nil {
		return fmt.Errorf("notify: digest due: %w", err)
	}
	return nil
}

func (n *Notifier) insert(ctx context.Context, tx *sql.Tx, d *row) error {
	if _, err := n.on(tx).ExecContext(ctx, n.q.insert, d.args()...); err != nil {
		return fmt.Errorf("notify: record delivery %s: %w", d.Key, err)
	}
	return nil
}
