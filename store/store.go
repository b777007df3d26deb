// Package store is herald's SQL persistence: the event log (the audit trail
// of domain events), the transactional outbox, the idempotent inbox and the
// dead letters. One Store type runs on every dialect; store/sqlite (the
// embedded default, modernc.org/sqlite) and store/postgres (pgx/v5) open it
// and apply their embedded, versioned migrations.
//
// A store has two sides on one value. *Store is the users' side: the
// database handle to share with their own tables, the dead letters
// (DeadLetterGet, DeadLetterList, DeadLetterDeleteMany), reads of the event
// log (EventLogGet, EventLogListByCorrelation) and OutboxStats. *Engine,
// obtained with EngineOf, is the side herald's engines run on: appends,
// inbox claims, outbox reads, marks and parking, leases, savepoints and
// pruning, named noun first (OutboxPendingList, LeaseAcquire) with a
// parameter struct where a call takes several values of one type.
//
// Methods that take a *sql.Tx work inside the caller's transaction, which is
// how herald makes events atomic with the state change that caused them.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// Sentinel errors, testable with errors.Is.
var (
	// ErrNotFound is returned when a looked-up row does not exist.
	ErrNotFound = errors.New("herald/store: not found")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("herald/store: closed")
)

// Dialect is what differs between SQL engines. Implementations live in the
// dialect packages; users never implement it.
type Dialect interface {
	// Name is "sqlite" or "postgres".
	Name() string
	// Rebind turns a query written with ? placeholders into the dialect's.
	Rebind(query string) string
	// Migrate brings the schema up to date; it must be safe to run from
	// several processes at once.
	Migrate(ctx context.Context, db *sql.DB) error
	// PendingCondition is an extra WHERE clause (or "") that makes
	// OutboxPendingList return only rows whose position in commit order is final:
	// no transaction still in flight can commit a row that sorts before them.
	PendingCondition() string
}

// Listener is implemented by dialects that can tell other processes about
// new outbox rows (PostgreSQL's LISTEN/NOTIFY).
type Listener interface {
	Listen(ctx context.Context, fn func(service string)) error
}

// ErrNoListen is returned by Listen on a dialect without notifications;
// relays then rely on the in-process signal and polling.
var ErrNoListen = errors.New("herald/store: dialect has no commit notifications")

// OutboxListen calls fn with the service of every commit that wrote outbox
// rows, in any process, until ctx ends. Dialects without notifications
// return ErrNoListen at once.
func (s *Engine) OutboxListen(ctx context.Context, fn func(service string)) error {
	if err := s.live(); err != nil {
		return err
	}
	l, ok := s.d.(Listener)
	if !ok {
		return ErrNoListen
	}
	return l.Listen(ctx, fn)
}

// Store is herald's persistence on one database, as its users see it: the
// database handle to share with their own tables, the dead letters, reads of
// the event log and the outbox backlog. herald's engines reach the rest of
// the same store through EngineOf.
type Store struct {
	db      *sql.DB
	d       Dialect
	ownsDB  bool
	queries queries
	stmts   stmtCache
	one     oneRow
	closed  atomic.Bool
}

// Engine is the engine-facing side of a Store: the same value, with the
// methods herald's outbox relay, consumer, janitor and notifier run on
// (appends, inbox claims, outbox reads and marks, leases, savepoints). It is
// herald's engines' way in, not an API for users: its methods may change
// between minor versions. Get it with EngineOf.
type Engine Store

// EngineOf returns the engine-facing side of s. The conversion is free: both
// are the same value.
func EngineOf(s *Store) *Engine { return (*Engine)(s) }

// New wraps an open database. The dialect packages call it; most users call
// sqlite.Open or postgres.Open instead. ownsDB says whether Close closes db.
func New(ctx context.Context, db *sql.DB, d Dialect, ownsDB bool) (*Store, error) {
	if err := d.Migrate(ctx, db); err != nil {
		return nil, fmt.Errorf("herald/store: migrate %s: %w", d.Name(), err)
	}
	s := &Store{db: db, d: d, ownsDB: ownsDB}
	s.queries = buildQueries(d)
	if err := EngineOf(s).prepareHot(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// DelaysVisibility reports whether the dialect shows a committed outbox row
// to OutboxPendingList only once every transaction older than its own ended
// (PostgreSQL's commit-order rule), so a relay woken by a commit may find
// nothing yet.
func (s *Engine) DelaysVisibility() bool { return s.d.PendingCondition() != "" }

// DB is the underlying database handle, shared with the user's own tables.
func (s *Store) DB() *sql.DB { return s.db }

// Dialect names the SQL engine: "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.d.Name() }

// Rebind turns a query written with ? placeholders into the dialect's.
func (s *Store) Rebind(query string) string { return s.d.Rebind(query) }

// Close closes the database if the store opened it. Every later call on the
// store fails with ErrClosed; closing twice is a no-op.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	for _, st := range s.stmts {
		st.Close() // on a shared db they would outlive the store
	}
	if s.ownsDB {
		return s.db.Close()
	}
	return nil
}

// live returns ErrClosed once Close has been called.
func (s *Engine) live() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// live returns ErrClosed once Close has been called.
func (s *Store) live() error { return EngineOf(s).live() }

// Begin starts a read-write transaction. On SQLite it is an immediate
// transaction (the write lock is taken at BEGIN, so it never fails half-way
// with SQLITE_BUSY on upgrade).
func (s *Engine) Begin(ctx context.Context) (*sql.Tx, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	return s.db.BeginTx(ctx, nil)
}

const eventCols = "id, service, type, version, kind, partition_key, event_time, correlation_id, causation_id, traceparent, tracestate, content_type, data"

type queries struct {
	eventLogInsert  string // one row; multi-row built on demand
	outboxInsert    string
	outboxPending   string
	outboxMark      string
	outboxPrune     string
	outboxStats     string
	inboxClaim      string
	inboxClaimBatch string
	inboxPrune      string
	eventLogPrune   string
	dlInsert        string
	dlGet           string
	eventLogByID    string
	eventLogByCorr  string
	outboxUnpublish string
	outboxMarkUpTo  string
}

// outboxCursor is the newest range mark of the service bound first after it:
// every row of the service up to it was published.
const outboxCursor = "COALESCE((SELECT MAX(upto_seq) FROM herald_outbox_marks WHERE service = ?), 0)"

func buildQueries(d Dialect) queries {
	cond := d.PendingCondition()
	if cond != "" {
		cond = " AND " + cond
	}
	r := d.Rebind
	return queries{
		eventLogInsert: "INSERT INTO herald_event_log (" + eventCols + ") VALUES ",
		outboxInsert:   "INSERT INTO herald_outbox (" + eventCols + ") VALUES ",
		outboxPending: r("SELECT seq, " + eventCols + " FROM herald_outbox WHERE service = ? AND published_at IS NULL AND seq > ?" +
			" AND seq > " + outboxCursor + cond + " ORDER BY seq LIMIT ?"),
		outboxMarkUpTo: r("INSERT INTO herald_outbox_marks (service, upto_seq, published_at) SELECT ?, ?, ? WHERE " + outboxCursor +
			" >= ? ON CONFLICT DO NOTHING"),
		outboxMark:      outboxMark(d),
		outboxPrune:     r("DELETE FROM herald_outbox WHERE published_at IS NOT NULL AND published_at < ?"),
		outboxStats:     r("SELECT COUNT(*), MIN(event_time) FROM herald_outbox WHERE service = ? AND published_at IS NULL AND seq > " + outboxCursor),
		outboxUnpublish: r("UPDATE herald_outbox SET published_at = NULL WHERE service = ? AND published_at IS NOT NULL AND published_at >= ?"),
		inboxClaim:      r("INSERT INTO herald_inbox (subscription, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"),
		inboxClaimBatch: inboxClaimBatch(d),
		inboxPrune:      r("DELETE FROM herald_inbox WHERE processed_at < ?"),
		eventLogPrune:   r("DELETE FROM herald_event_log WHERE id < ?"),
		dlInsert: r("INSERT INTO herald_dead_letters (service, subscription, event_id, type, version, reason, last_error, attempts, header, data, created_at, partition_key)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		dlGet:          r("SELECT " + dlCols + " FROM herald_dead_letters WHERE id = ?"),
		eventLogByID:   r("SELECT " + eventCols + " FROM herald_event_log WHERE id = ?"),
		eventLogByCorr: r("SELECT " + eventCols + " FROM herald_event_log WHERE correlation_id = ? ORDER BY id"),
	}
}

// outboxMark marks the rows whose seqs a JSON array lists published, in one
// prepared statement whatever the number of rows.
func outboxMark(d Dialect) string {
	if d.Name() == "postgres" {
		return "UPDATE herald_outbox SET published_at = $1 WHERE seq IN (SELECT s::bigint FROM json_array_elements_text($2::json) AS ids(s))"
	}
	return "UPDATE herald_outbox SET published_at = ?1 WHERE seq IN (SELECT value FROM json_each(?2))"
}

// inboxClaimBatch inserts the inbox rows of a JSON array of event ids in
// one statement and returns the ids it inserted: the new claims. (The WHERE
// true keeps SQLite from reading ON CONFLICT as a join constraint.)
func inboxClaimBatch(d Dialect) string {
	if d.Name() == "postgres" {
		return "INSERT INTO herald_inbox (subscription, event_id, processed_at)" +
			" SELECT $1, ids.id, $3 FROM json_array_elements_text($2::json) WITH ORDINALITY AS ids(id, n) ORDER BY ids.n" +
			" ON CONFLICT DO NOTHING RETURNING event_id"
	}
	return "INSERT INTO herald_inbox (subscription, event_id, processed_at)" +
		" SELECT ?1, value, ?3 FROM json_each(?2) WHERE true ORDER BY key" +
		" ON CONFLICT DO NOTHING RETURNING event_id"
}

// placeholders returns "(?, ?, …), (…)" for rows×cols, rebound.
func (s *Engine) values(rows, cols int) string {
	var b strings.Builder
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(one)
	}
	return b.String()
}

func eventArgs(args []any, e *envelope.Envelope) []any {
	return append(args, e.ID, e.Source, e.Type, e.Version, string(e.Kind), e.Key, e.Time.UTC().UnixNano(),
		e.CorrelationID, e.CausationID, e.TraceParent, e.TraceState, e.DataContentType, blob(e.Data))
}

// blob makes empty data bind as an empty BLOB/BYTEA: both drivers bind a nil
// []byte as NULL, which the NOT NULL data columns reject.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

const nEventCols = 13

// maxRowsPerInsert keeps multi-row INSERTs under every engine's limit on
// bound parameters (SQLite: 32766, PostgreSQL: 65535).
const maxRowsPerInsert = 500

func (s *Engine) insertEvents(ctx context.Context, tx *sql.Tx, prefix string, events []*envelope.Envelope) error {
	for len(events) > 0 {
		n := min(len(events), maxRowsPerInsert)
		args := make([]any, 0, n*nEventCols)
		for _, e := range events[:n] {
			args = eventArgs(args, e)
		}
		if _, err := tx.ExecContext(ctx, s.d.Rebind(prefix+s.values(n, nEventCols)), args...); err != nil {
			return err
		}
		events = events[n:]
	}
	return nil
}

// EventLogAppend appends domain events to the event log inside tx.
func (s *Engine) EventLogAppend(ctx context.Context, tx *sql.Tx, events []*envelope.Envelope) error {
	if err := s.live(); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if err := s.insertEvents(ctx, tx, s.queries.eventLogInsert, events); err != nil {
		return fmt.Errorf("herald/store: append event log: %w", err)
	}
	return nil
}

// OutboxAppend writes events to the outbox inside tx; the relay of each
// event's Source service publishes them after commit, in commit order. On
// PostgreSQL a trigger sends NOTIFY herald_outbox with the service name, so
// relays in other processes wake at once.
func (s *Engine) OutboxAppend(ctx context.Context, tx *sql.Tx, events []*envelope.Envelope) error {
	if err := s.live(); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if err := s.insertEvents(ctx, tx, s.queries.outboxInsert, events); err != nil {
		return fmt.Errorf("herald/store: append outbox: %w", err)
	}
	return nil
}

// OutboxRow is one outbox entry: its position in commit order and the event.
type OutboxRow struct {
	Seq   int64
	Event *envelope.Envelope
}

type scanner interface{ Scan(dest ...any) error }

func scanEvent(sc scanner, pre ...any) (*envelope.Envelope, error) {
	e := &envelope.Envelope{}
	var kind string
	var t int64
	dest := append(pre, &e.ID, &e.Source, &e.Type, &e.Version, &kind, &e.Key, &t,
		&e.CorrelationID, &e.CausationID, &e.TraceParent, &e.TraceState, &e.DataContentType, &e.Data)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	e.Kind = envelope.Kind(kind)
	e.Time = time.Unix(0, t).UTC()
	if len(e.Data) == 0 {
		e.Data = nil // empty data reads back as nil on every driver
	}
	return e, nil
}

// OutboxPendingListParams selects the rows OutboxPendingList returns.
type OutboxPendingListParams struct {
	// Service is the service whose outbox rows are read.
	Service string
	// After skips the rows up to this seq: a relay that published up to
	// After, and is still marking those rows published, reads what follows
	// them. 0 reads from the start.
	After int64
	// Limit is the most rows returned.
	Limit int
}

// OutboxPendingList returns up to p.Limit unpublished rows of p.Service
// after seq p.After, in commit order.
func (s *Engine) OutboxPendingList(ctx context.Context, p OutboxPendingListParams) ([]OutboxRow, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	rows, err := s.stmts[s.queries.outboxPending].QueryContext(ctx, p.Service, p.After, p.Service, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("herald/store: pending outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxRow
	for rows.Next() {
		var r OutboxRow
		e, err := scanEvent(rows, &r.Seq)
		if err != nil {
			return nil, fmt.Errorf("herald/store: scan outbox: %w", err)
		}
		r.Event = e
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("herald/store: pending outbox: %w", err)
	}
	return out, nil
}

func int64List(ids []int64) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte(')')
	return b.String()
}

// int64JSON writes ids as a JSON array.
func int64JSON(ids []int64) string {
	b := make([]byte, 0, 2+len(ids)*8)
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, ']'))
}

// OutboxMarkPublished records that the broker acknowledged the rows seqs.
// Rows are kept until OutboxPrune removes them, so that a broker which lost
// its last writes can be refilled with OutboxRepublishSince.
func (s *Engine) OutboxMarkPublished(ctx context.Context, seqs []int64, at time.Time) error {
	if err := s.live(); err != nil {
		return err
	}
	if len(seqs) == 0 {
		return nil
	}
	if _, err := s.stmts[s.queries.outboxMark].ExecContext(ctx, at.UTC().UnixNano(), int64JSON(seqs)); err != nil {
		return fmt.Errorf("herald/store: mark published: %w", err)
	}
	return nil
}

// ErrMarkMoved is returned by OutboxMarkUpTo when the service's newest
// range mark went back below the one the relay's reads started from: an
// OutboxRepublishSince dropped it, and the rows it reopened must be read again.
var ErrMarkMoved = errors.New("herald/store: the outbox cursor moved back")

// OutboxCursor returns the service's newest range mark: every row up to it
// was published (0: none).
func (s *Engine) OutboxCursor(ctx context.Context, service string) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	return s.outboxCursor(ctx, s.db, service)
}

// rowQuerier is what *sql.DB and *sql.Tx share for one-row reads.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// outboxCursor is OutboxCursor through q (the store's pool or a transaction).
func (s *Engine) outboxCursor(ctx context.Context, q rowQuerier, service string) (int64, error) {
	var c int64
	if err := q.QueryRowContext(ctx, s.d.Rebind("SELECT "+outboxCursor), service).Scan(&c); err != nil {
		return 0, fmt.Errorf("herald/store: outbox cursor of %s: %w", service, err)
	}
	return c, nil
}

// OutboxMarkUpToParams says which range of a service's outbox rows
// OutboxMarkUpTo marks published.
type OutboxMarkUpToParams struct {
	// Service is the service whose rows are marked.
	Service string
	// From is the range mark the relay's reads started from (OutboxCursor,
	// or its own last mark).
	From int64
	// UpTo is the seq of the last row marked.
	UpTo int64
	// At is when the broker acknowledged the rows.
	At time.Time
}

// OutboxMarkUpTo records that the broker acknowledged every unpublished row
// of p.Service after p.From up to p.UpTo: one small row, whatever the
// number of rows it covers. When the newest mark is now below p.From, it
// records nothing and returns ErrMarkMoved. A relay may use it only where
// rows become readable in seq order (!DelaysVisibility, SQLite): there no
// row below p.UpTo can still appear.
func (s *Engine) OutboxMarkUpTo(ctx context.Context, p OutboxMarkUpToParams) error {
	if err := s.live(); err != nil {
		return err
	}
	service, from, seq := p.Service, p.From, p.UpTo
	res, err := s.stmts[s.queries.outboxMarkUpTo].ExecContext(ctx, service, seq, p.At.UTC().UnixNano(), service, from)
	if err != nil {
		return fmt.Errorf("herald/store: mark %s published up to %d: %w", service, seq, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	// Nothing inserted: the same mark exists already, or the cursor moved.
	c, err := s.OutboxCursor(ctx, service)
	if err != nil {
		return err
	}
	if c < seq {
		return fmt.Errorf("herald/store: mark %s published up to %d after %d: %w (now %d)", service, seq, from, ErrMarkMoved, c)
	}
	return nil
}

// OutboxRepublishSince marks the rows of service published at or after since as
// unpublished again, so the relay sends them once more (the broker drops
// the duplicates by event id). It returns how many rows it reset.
func (s *Engine) OutboxRepublishSince(ctx context.Context, service string, since time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) { return 0, fmt.Errorf("herald/store: republish %s: %w", service, err) }
	tx, err := s.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	at := since.UTC().UnixNano()
	res, err := tx.ExecContext(ctx, s.queries.outboxUnpublish, service, at)
	if err != nil {
		return fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(err)
	}
	// Dropping the range marks made since moves the cursor back to the
	// last mark before it; the rows between are unpublished again.
	was, err := s.outboxCursor(ctx, tx, service)
	if err != nil {
		return fail(err)
	}
	if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM herald_outbox_marks WHERE service = ? AND published_at >= ?"), service, at); err != nil {
		return fail(err)
	}
	now, err := s.outboxCursor(ctx, tx, service)
	if err != nil {
		return fail(err)
	}
	if now < was {
		var m int64
		if err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM herald_outbox WHERE service = ? AND published_at IS NULL AND seq > ? AND seq <= ?"),
			service, now, was).Scan(&m); err != nil {
			return fail(err)
		}
		n += m
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return n, nil
}

// OutboxPrune deletes rows published before before, and the range marks
// older than before except each service's newest (its relay's cursor).
func (s *Engine) OutboxPrune(ctx context.Context, before time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) { return 0, fmt.Errorf("herald/store: prune outbox: %w", err) }
	at := before.UTC().UnixNano()
	res, err := s.db.ExecContext(ctx, s.queries.outboxPrune, at)
	if err != nil {
		return fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(err)
	}
	type mark struct {
		service string
		upto    int64
	}
	var marks []mark
	rows, err := s.db.QueryContext(ctx, s.d.Rebind("SELECT service, MAX(upto_seq) FROM herald_outbox_marks WHERE published_at < ? GROUP BY service"), at)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var m mark
		if err := rows.Scan(&m.service, &m.upto); err != nil {
			rows.Close()
			return fail(err)
		}
		marks = append(marks, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	for _, m := range marks {
		// The range-marked rows are still in the pending index (their own
		// published_at is NULL), which this delete walks.
		res, err := s.db.ExecContext(ctx, s.d.Rebind("DELETE FROM herald_outbox WHERE service = ? AND published_at IS NULL AND seq <= ?"), m.service, m.upto)
		if err != nil {
			return fail(err)
		}
		d, err := res.RowsAffected()
		if err != nil {
			return fail(err)
		}
		n += d
		if _, err := s.db.ExecContext(ctx, s.d.Rebind("DELETE FROM herald_outbox_marks WHERE service = ? AND upto_seq < ?"), m.service, m.upto); err != nil {
			return fail(err)
		}
	}
	return n, nil
}

// OutboxStats reports the unpublished backlog of service and the creation
// time of its oldest row (zero when empty).
func (s *Store) OutboxStats(ctx context.Context, service string) (backlog int64, oldest time.Time, err error) {
	if err := s.live(); err != nil {
		return 0, time.Time{}, err
	}
	var minCreated sql.NullInt64
	if err := s.db.QueryRowContext(ctx, s.queries.outboxStats, service, service).Scan(&backlog, &minCreated); err != nil {
		return 0, time.Time{}, fmt.Errorf("herald/store: outbox stats: %w", err)
	}
	if minCreated.Valid {
		oldest = time.Unix(0, minCreated.Int64).UTC()
	}
	return backlog, oldest, nil
}

// OutboxStats is Store.OutboxStats, for the engines.
func (s *Engine) OutboxStats(ctx context.Context, service string) (backlog int64, oldest time.Time, err error) {
	return (*Store)(s).OutboxStats(ctx, service)
}

// InboxClaim records inside tx that subscription processed eventID. It
// returns false when the event was already processed (a redelivery): the
// caller must then skip the handler and just acknowledge.
func (s *Engine) InboxClaim(ctx context.Context, tx *sql.Tx, subscription, eventID string) (bool, error) {
	if err := s.live(); err != nil {
		return false, err
	}
	res, err := s.exec(ctx, tx, s.queries.inboxClaim, []any{subscription, eventID, time.Now().UTC().UnixNano()})
	if err != nil {
		return false, fmt.Errorf("herald/store: claim inbox %s/%s: %w", subscription, eventID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("herald/store: claim inbox %s/%s: %w", subscription, eventID, err)
	}
	return n == 1, nil
}

// InboxPrune deletes inbox rows processed before before. Keep them longer
// than the broker can redeliver an event.
func (s *Engine) InboxPrune(ctx context.Context, before time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, s.queries.inboxPrune, before.UTC().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("herald/store: prune inbox: %w", err)
	}
	return res.RowsAffected()
}

// EventLogPrune deletes event-log rows recorded before before (retention),
// to the millisecond.
func (s *Engine) EventLogPrune(ctx context.Context, before time.Time) (int64, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	// Event ids are ULIDs: every id below the smallest id of before's
	// millisecond was recorded earlier.
	res, err := s.db.ExecContext(ctx, s.queries.eventLogPrune, envelope.MinID(before))
	if err != nil {
		return 0, fmt.Errorf("herald/store: prune event log: %w", err)
	}
	return res.RowsAffected()
}

// EventLogGet returns the event-log entry with id.
func (s *Store) EventLogGet(ctx context.Context, id string) (*envelope.Envelope, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	e, err := scanEvent(s.db.QueryRowContext(ctx, s.queries.eventLogByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("herald/store: event %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("herald/store: event %s: %w", id, err)
	}
	return e, nil
}

// EventLogListByCorrelation returns the event-log entries of one business flow in
// the order they were recorded. It scans the log (which has no index but its
// key, to keep business transactions cheap): use it for audits and tools, not
// on a hot path.
func (s *Store) EventLogListByCorrelation(ctx context.Context, correlationID string) ([]*envelope.Envelope, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.queries.eventLogByCorr, correlationID)
	if err != nil {
		return nil, fmt.Errorf("herald/store: events of %s: %w", correlationID, err)
	}
	defer rows.Close()
	var out []*envelope.Envelope
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("herald/store: scan event: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Event returns the event-log entry with id.
//
// Deprecated: use EventLogGet.
func (s *Store) Event(ctx context.Context, id string) (*envelope.Envelope, error) {
	return s.EventLogGet(ctx, id)
}

// EventsByCorrelation returns the event-log entries of one business flow in
// the order they were recorded.
//
// Deprecated: use EventLogListByCorrelation.
func (s *Store) EventsByCorrelation(ctx context.Context, correlationID string) ([]*envelope.Envelope, error) {
	return s.EventLogListByCorrelation(ctx, correlationID)
}
