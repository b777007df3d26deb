package notify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/store"
)

// State is the state of a delivery in the delivery log.
//
//	decided:  queued | deferred | suppressed | throttled | digested | failed
//	queued, deferred (when due) → sending (claimed, leased)
//	sending → sent | delivered           the provider accepted / confirmed
//	sending → queued                     retryable error: due after backoff
//	sending → failed                     permanent error, gone, exhausted, expired, template
//	sending → suppressed                 address suppressed meanwhile; fallback not needed
//	sending (lease expired) → sending    claimed again: the claimer died or could not renew
//	sent → delivered | failed            MarkDelivered / MarkBounced
type State string

// The states of a delivery.
const (
	// Queued: due now (or at DueAt, for a retry), waiting for a worker.
	Queued State = "queued"
	// Deferred: waiting until DueAt — quiet hours, a digest window, a
	// fallback check.
	Deferred State = "deferred"
	// Sending: claimed by a worker, which is rendering and sending it.
	Sending State = "sending"
	// Sent: the provider accepted it.
	Sent State = "sent"
	// Delivered: the provider, the receiver or MarkDelivered confirmed it.
	Delivered State = "delivered"
	// Failed: it will not be sent; Reason says why.
	Failed State = "failed"
	// Suppressed: not sent because of a preference or the suppression list.
	Suppressed State = "suppressed"
	// Throttled: not sent because its key hit the route's throttle.
	Throttled State = "throttled"
	// Digested: folded into the digest DigestID, sent as one of its items.
	Digested State = "digested"
)

// active states are the ones the worker claims.
const activeStates = "('queued', 'deferred', 'sending')"

// Kind says what a delivery row stands for.
type Kind string

// The kinds of delivery rows.
const (
	// KindMessage: one event for one recipient on one channel.
	KindMessage Kind = "message"
	// KindDigest: the one message of a digest; its items are KindMessage
	// rows in state Digested with the same DigestID.
	KindDigest Kind = "digest"
	// KindFallback: a message on a fallback channel, sent only if the
	// delivery FallbackOf was not delivered in time.
	KindFallback Kind = "fallback"
)

// Reason codes: a delivery's Reason starts with one of them, followed by
// ": " and details.
const (
	ReasonUnknownRecipient  = "unknown-recipient"   // failed: the Directory does not know the recipient
	ReasonNoAddress         = "no-address"          // failed: no contact point on the channel
	ReasonInvalidAddress    = "invalid-address"     // failed: the contact point is malformed
	ReasonOptedOut          = "opted-out"           // suppressed: a preference turned it off
	ReasonSuppressedAddress = "suppressed-address"  // suppressed: the address is on the suppression list
	ReasonQuietHours        = "quiet-hours"         // deferred: until the recipient's quiet hours end
	ReasonThrottled         = "throttled"           // throttled: the key's limit in the window was reached
	ReasonDigest            = "digest"              // digested item, or a digest message collecting
	ReasonFallback          = "fallback"            // a fallback check, and a fallback sent
	ReasonFallbackNotNeeded = "fallback-not-needed" // suppressed: the first channel delivered
	ReasonTemplate          = "template"            // failed: missing template or rendering error
	ReasonPermanent         = "permanent"           // failed: the provider said it will never work
	ReasonGone              = "gone"                // failed: the address no longer exists (and is now suppressed)
	ReasonBounced           = "bounced"             // failed after sent: MarkBounced (address suppressed)
	ReasonExhausted         = "exhausted"           // failed: Retry.MaxAttempts provider calls failed
	ReasonExpired           = "expired"             // failed: still failing after Retry.MaxAge
	ReasonNoRoute           = "no-route"            // in LastError: this instance does not know the row's route
	ReasonRetrying          = "retrying"            // queued: waiting for the next attempt
)

// Delivery is one row of the delivery log.
type Delivery struct {
	ID            string
	Key           string // the idempotency key: event id / recipient / channel
	Kind          Kind
	Route         string
	EventID       string
	EventType     string
	CorrelationID string
	Recipient     string
	Channel       string
	Address       string
	Category      string
	Template      string
	Locale        string
	Critical      bool
	State         State
	Reason        string
	Attempts      int // provider calls so far
	DueAt         time.Time
	ClaimedBy     string
	ClaimUntil    time.Time
	Provider      string // the sender's Name that took it
	ProviderID    string
	LastError     string
	ThrottleKey   string // set when the row counts against a throttle
	DigestID      string
	FallbackOf    string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	SentAt        time.Time
}

// row is a Delivery with what the worker needs to send it.
type row struct {
	Delivery
	data    []byte
	profile []byte
	// suppressed is, for a claimed row, the suppression list's reason for
	// its address at the claim (Valid when the address is on the list).
	suppressed sql.NullString
}

const deliveryCols = "id, idem_key, kind, route, event_id, event_type, correlation_id, recipient, channel, address, " +
	"category, template, locale, profile, critical, state, reason, attempts, due_at, claimed_by, claim_until, " +
	"provider, provider_id, last_error, throttle_key, digest_id, fallback_of, data, created_at, updated_at, sent_at"

const nDeliveryCols = 31

func (r *row) args() []any {
	return []any{r.ID, r.Key, string(r.Kind), r.Route, r.EventID, r.EventType, r.CorrelationID, r.Recipient,
		r.Channel, r.Address, r.Category, r.Template, r.Locale, blob(r.profile), b2i(r.Critical), string(r.State),
		r.Reason, r.Attempts, nanos(r.DueAt), r.ClaimedBy, nanos(r.ClaimUntil), r.Provider, r.ProviderID,
		r.LastError, nullString(r.ThrottleKey), nullString(r.DigestID), nullString(r.FallbackOf), blob(r.data),
		nanos(r.CreatedAt), nanos(r.UpdatedAt), nullTime(r.SentAt)}
}

type scanner interface{ Scan(dest ...any) error }

// scanRow scans deliveryCols, then extra.
func scanRow(sc scanner, extra ...any) (*row, error) {
	r := &row{}
	var kind, state string
	var critical int
	var due, claimUntil, created, updated int64
	var throttle, digest, fallback sql.NullString
	var sent sql.NullInt64
	dest := append([]any{&r.ID, &r.Key, &kind, &r.Route, &r.EventID, &r.EventType, &r.CorrelationID, &r.Recipient,
		&r.Channel, &r.Address, &r.Category, &r.Template, &r.Locale, &r.profile, &critical, &state, &r.Reason,
		&r.Attempts, &due, &r.ClaimedBy, &claimUntil, &r.Provider, &r.ProviderID, &r.LastError, &throttle,
		&digest, &fallback, &r.data, &created, &updated, &sent}, extra...)
	err := sc.Scan(dest...)
	if err != nil {
		return nil, err
	}
	r.Kind, r.State, r.Critical = Kind(kind), State(state), critical != 0
	r.DueAt, r.ClaimUntil, r.CreatedAt, r.UpdatedAt = fromNanos(due), fromNanos(claimUntil), fromNanos(created), fromNanos(updated)
	r.ThrottleKey, r.DigestID, r.FallbackOf = throttle.String, digest.String, fallback.String
	if sent.Valid {
		r.SentAt = fromNanos(sent.Int64)
	}
	return r, nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullTime(t time.Time) sql.NullInt64 {
	return sql.NullInt64{Int64: t.UnixNano(), Valid: !t.IsZero()}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// blob makes empty data bind as an empty BLOB/BYTEA, not NULL.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// DeliveryFilter selects rows of the delivery log; zero fields match
// everything.
type DeliveryFilter struct {
	EventID       string
	Recipient     string
	CorrelationID string
	State         State
	Channel       string
	DigestID      string
	Kind          Kind
	// Limit bounds the rows returned (default 1000).
	Limit int
}

// Deliveries returns the rows of the delivery log matching f, oldest
// first.
func (n *Notifier) Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	var where []string
	var args []any
	add := func(col, v string) {
		if v != "" {
			where = append(where, col+" = ?")
			args = append(args, v)
		}
	}
	add("event_id", f.EventID)
	add("recipient", f.Recipient)
	add("correlation_id", f.CorrelationID)
	add("state", string(f.State))
	add("channel", f.Channel)
	add("digest_id", f.DigestID)
	add("kind", string(f.Kind))
	q := "SELECT " + deliveryCols + " FROM herald_notify_deliveries"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	q += " ORDER BY created_at, id LIMIT ?"
	args = append(args, limit)
	rows, err := n.st.DB().QueryContext(ctx, n.st.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("notify: deliveries: %w", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, fmt.Errorf("notify: scan delivery: %w", err)
		}
		out = append(out, r.Delivery)
	}
	return out, rows.Err()
}

// Ref names one delivery: by its idempotency Key, or by the Provider's
// name and the ProviderID it returned.
type Ref struct {
	Key        string
	Provider   string
	ProviderID string
}

func (r Ref) where() (string, []any, error) {
	switch {
	case r.Key != "":
		return "idem_key = ?", []any{r.Key}, nil
	case r.Provider != "" && r.ProviderID != "":
		return "provider = ? AND provider_id = ?", []any{r.Provider, r.ProviderID}, nil
	}
	return "", nil, fmt.Errorf("%w: a delivery ref needs a Key, or a Provider and a ProviderID", ErrInvalidOption)
}

// MarkDelivered records that a sent delivery reached its recipient — a
// provider's delivery report, or the app that displayed a push (the
// message's Key travels with it). A pending fallback of it is cancelled.
func (n *Notifier) MarkDelivered(ctx context.Context, ref Ref) error {
	w, args, err := ref.where()
	if err != nil {
		return err
	}
	id, err := n.lookupID(ctx, w, args)
	if err != nil {
		return err
	}
	now := n.now()
	res, err := n.st.DB().ExecContext(ctx, n.st.Rebind(`UPDATE herald_notify_deliveries SET state = ?, updated_at = ?
		WHERE id = ? AND state IN ('sent', 'delivered')`), string(Delivered), nanos(now), id)
	if err != nil {
		return fmt.Errorf("notify: mark delivered: %w", err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return fmt.Errorf("%w: %+v is not sent", ErrNotFound, ref)
	}
	return n.cancelFallbacks(ctx, n.st.DB(), id, now)
}

// MarkBounced records that a sent delivery bounced for good (a hard bounce
// report): it becomes failed and its address is suppressed on its channel.
func (n *Notifier) MarkBounced(ctx context.Context, ref Ref, reason string) error {
	w, args, err := ref.where()
	if err != nil {
		return err
	}
	id, err := n.lookupID(ctx, w, args)
	if err != nil {
		return err
	}
	var channel, address string
	if err := n.st.DB().QueryRowContext(ctx, n.st.Rebind(`SELECT channel, address FROM herald_notify_deliveries WHERE id = ?`), id).
		Scan(&channel, &address); err != nil {
		return fmt.Errorf("notify: mark bounced: %w", err)
	}
	now := n.now()
	tx, err := n.eng.Begin(ctx)
	if err != nil {
		return fmt.Errorf("notify: mark bounced: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, n.st.Rebind(`UPDATE herald_notify_deliveries SET state = ?, reason = ?, updated_at = ?
		WHERE id = ? AND state IN ('sent', 'delivered')`), string(Failed), ReasonBounced+": "+reason, nanos(now), id); err != nil {
		return fmt.Errorf("notify: mark bounced: %w", err)
	}
	if err := n.suppress(ctx, tx, channel, address, ReasonBounced+": "+reason, now); err != nil {
		return err
	}
	return tx.Commit()
}

func (n *Notifier) lookupID(ctx context.Context, where string, args []any) (string, error) {
	var id string
	err := n.st.DB().QueryRowContext(ctx, n.st.Rebind("SELECT id FROM herald_notify_deliveries WHERE "+where+" ORDER BY created_at DESC LIMIT 1"), args...).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%w: %s %v", ErrNotFound, where, args)
	}
	if err != nil {
		return "", fmt.Errorf("notify: find delivery: %w", err)
	}
	return id, nil
}

// execer is a *sql.DB or a *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// on runs the notifier's hot queries on db (a *sql.DB or *sql.Tx) through
// statements prepared once, so the hot path does not parse SQL again.
func (n *Notifier) on(db execer) execer { return prepared{n: n, db: db} }

type prepared struct {
	n  *Notifier
	db execer
}

// quiet returns the context a statement runs with. Inside an SQLite
// transaction no statement waits (the transaction holds the write lock from
// its BEGIN), and the driver watches a cancellable context with a goroutine
// per statement: there the context's cancellation is dropped. PostgreSQL
// statements may wait for row and advisory locks and keep it.
func (p prepared) quiet(ctx context.Context) context.Context {
	if _, ok := p.db.(*sql.Tx); ok && !p.n.pg {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

func (p prepared) stmt(ctx context.Context, q string) *sql.Stmt {
	st := p.n.stmts[q]
	if st == nil {
		return nil
	}
	if tx, ok := p.db.(*sql.Tx); ok {
		return tx.StmtContext(ctx, st)
	}
	return st
}

func (p prepared) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx = p.quiet(ctx)
	if st := p.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.db.ExecContext(ctx, q, args...)
}

func (p prepared) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx = p.quiet(ctx)
	if st := p.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.db.QueryContext(ctx, q, args...)
}

func (p prepared) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	ctx = p.quiet(ctx)
	if st := p.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.db.QueryRowContext(ctx, q, args...)
}

// prepare prepares the hot queries on the pool (never from inside a
// transaction: the pool may have no free connection while it holds
// SQLite's write lock).
func (n *Notifier) prepare(ctx context.Context) error {
	n.stmts = map[string]*sql.Stmt{}
	q := n.q
	for _, s := range append([]string{q.keyExists, q.insert, q.facts, q.lock, q.digestOpen,
		q.digestJoin, q.digestNew, q.digestClose, q.digestDue, q.finish, q.retry, q.release, q.stateOf, q.items}, q.claim[:]...) {
		if s == "" {
			continue
		}
		st, err := n.st.DB().PrepareContext(ctx, s)
		if err != nil {
			return fmt.Errorf("notify: prepare %q: %w", s, err)
		}
		n.stmts[s] = st
	}
	return nil
}

// cancelFallbacks marks the fallback checks of delivery id not needed.
func (n *Notifier) cancelFallbacks(ctx context.Context, db execer, id string, now time.Time) error {
	_, err := db.ExecContext(ctx, n.st.Rebind(`UPDATE herald_notify_deliveries SET state = ?, reason = ?, due_at = 0, updated_at = ?
		WHERE fallback_of = ? AND state IN ('queued', 'deferred')`),
		string(Suppressed), ReasonFallbackNotNeeded+": the first channel delivered", nanos(now), id)
	if err != nil {
		return fmt.Errorf("notify: cancel fallbacks of %s: %w", id, err)
	}
	return nil
}

// hurryFallbacks makes the fallback checks of delivery id due now: it
// failed for good.
func (n *Notifier) hurryFallbacks(ctx context.Context, db execer, id string, now time.Time) error {
	_, err := db.ExecContext(ctx, n.st.Rebind(`UPDATE herald_notify_deliveries SET due_at = ?, updated_at = ?
		WHERE fallback_of = ? AND state IN ('queued', 'deferred') AND due_at > ?`), nanos(now), nanos(now), id, nanos(now))
	if err != nil {
		return fmt.Errorf("notify: hurry fallbacks of %s: %w", id, err)
	}
	return nil
}

// prefProbes are the preference rows that may apply to (recipient,
// category, channel), most specific first; their parameters are
// prefArgs.
var prefProbes = func() string {
	var ps []string
	for _, r := range []string{"?", "'*'"} {
		for _, c := range []string{"?", "'*'"} {
			for _, ch := range []string{"?", "'*'"} {
				ps = append(ps, "(SELECT enabled FROM herald_notify_preferences WHERE recipient = "+r+
					" AND category = "+c+" AND channel = "+ch+")")
			}
		}
	}
	return strings.Join(ps, ", ")
}()

// prefArgs appends the parameters of prefProbes to args.
func prefArgs(args []any, recipient, category, channel string) []any {
	r, c, ch := any(recipient), any(category), any(channel) // boxed once
	for _, hasR := range []bool{true, false} {
		for _, hasC := range []bool{true, false} {
			for _, hasCh := range []bool{true, false} {
				if hasR {
					args = append(args, r)
				}
				if hasC {
					args = append(args, c)
				}
				if hasCh {
					args = append(args, ch)
				}
			}
		}
	}
	return args
}

// queries are the hot statements, rebound once.
type queries struct {
	keyExists   string
	insert      string
	facts       string
	lock        string
	digestOpen  string
	digestJoin  string
	digestNew   string
	digestClose string
	digestDue   string
	claim       [claimSizes]string // claim[i] claims up to 1<<i rows
	finish      string
	retry       string
	release     string
	stateOf     string
	items       string
}

func buildQueries(st *store.Store, pg bool) queries {
	r := st.Rebind
	skipLocked := ""
	if pg {
		skipLocked = " FOR UPDATE SKIP LOCKED"
	}
	q := queries{
		keyExists: r(`SELECT 1 FROM herald_notify_deliveries WHERE idem_key = ?`),
		insert: r("INSERT INTO herald_notify_deliveries (" + deliveryCols + ") VALUES (" +
			strings.TrimSuffix(strings.Repeat("?, ", nDeliveryCols), ", ") + ") ON CONFLICT DO NOTHING"),
		// The most specific preference (recipient over category over
		// channel, each before '*': eight primary key probes, the first hit
		// wins), the suppression, and the throttle count, bounded by the
		// limit: a key never costs more than Limit rows.
		facts: r(`SELECT COALESCE(` + prefProbes + `),
			(SELECT reason FROM herald_notify_suppressions WHERE channel = ? AND address = ?),
			(SELECT COUNT(*) FROM (SELECT 1 FROM herald_notify_deliveries
				WHERE throttle_key = ? AND created_at > ? LIMIT ?) t)`),
		digestOpen: r(`SELECT id FROM herald_notify_digests WHERE digest_key = ? AND open = 1`),
		digestJoin: r(`UPDATE herald_notify_digests SET items = items + 1 WHERE id = ? AND open = 1 RETURNING items, max_items`),
		digestNew: r(`INSERT INTO herald_notify_digests (id, digest_key, open, items, max_items, created_at, closes_at)
			VALUES (?, ?, 1, 1, ?, ?, ?) ON CONFLICT DO NOTHING`),
		digestClose: r(`UPDATE herald_notify_digests SET open = 0 WHERE id = ?`),
		digestDue: r(`UPDATE herald_notify_deliveries SET due_at = ?, reason = ?, updated_at = ?
			WHERE digest_id = ? AND kind = 'digest' AND state = 'deferred'`),
		finish: r(`UPDATE herald_notify_deliveries SET state = ?, reason = ?, attempts = ?, provider = ?, provider_id = ?,
			last_error = ?, sent_at = ?, due_at = 0, updated_at = ? WHERE id = ? AND claimed_by = ? AND state = 'sending'`),
		retry: r(`UPDATE herald_notify_deliveries SET state = 'queued', reason = ?, attempts = ?, provider = ?,
			last_error = ?, due_at = ?, updated_at = ? WHERE id = ? AND claimed_by = ? AND state = 'sending'`),
		release: r(`UPDATE herald_notify_deliveries SET state = 'queued', due_at = ?, updated_at = ?
			WHERE id = ? AND claimed_by = ? AND state = 'sending'`),
		stateOf: r(`SELECT state FROM herald_notify_deliveries WHERE id = ?`),
		items: r(`SELECT event_id, event_type, correlation_id, data, created_at FROM herald_notify_deliveries
			WHERE digest_id = ? AND kind = 'message' AND state = 'digested' ORDER BY created_at, id`),
	}
	for i := range q.claim {
		// The limit is part of the text, not a parameter: SQLite plans a
		// statement for the value bound to its LIMIT and compiles it again
		// whenever that value changes.
		q.claim[i] = r(`UPDATE herald_notify_deliveries SET state = 'sending', claimed_by = ?, claim_until = ?, due_at = ?, updated_at = ?
			WHERE id IN (SELECT id FROM herald_notify_deliveries WHERE state IN ` + activeStates + ` AND due_at <= ?
			ORDER BY due_at LIMIT ` + strconv.Itoa(1<<i) + skipLocked + `) RETURNING ` + deliveryCols +
			// the suppression list's reason for the address, if it is on it
			`, (SELECT s.reason FROM herald_notify_suppressions s
				WHERE s.channel = herald_notify_deliveries.channel AND s.address = herald_notify_deliveries.address)`)
	}
	if pg {
		// Throttle counts must see every decision of the key: serialise the
		// deciders of one key for the rest of the transaction.
		q.lock = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`
	}
	return q
}
