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
	// UniqueViolation reports whether err is the violation of a unique
	// constraint: an aggregate's stream version that another transaction
	// appended first.
	UniqueViolation(err error) bool
}

// Listener is implemented by dialects that can tell other processes about
// new outbox rows (PostgreSQL's LISTEN/NOTIFY).
type Listener interface {
	Listen(ctx context.Context, fn func(service string)) error
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
	streamQ streamQueries
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

// NewOption tunes New.
type NewOption func(*Store)

// SharedDB makes Close leave the database open: the caller owns it (and
// may share it with other code). Without it, Close closes db.
func SharedDB() NewOption { return func(s *Store) { s.ownsDB = false } }

// New wraps an open database; Close closes it unless SharedDB is given. The
// dialect packages call it; most users call sqlite.Open or postgres.Open
// instead.
func New(ctx context.Context, db *sql.DB, d Dialect, opts ...NewOption) (*Store, error) {
	if err := d.Migrate(ctx, db); err != nil {
		return nil, fmt.Errorf("herald/store: migrate %s: %w", d.Name(), err)
	}
	s := &Store{db: db, d: d, ownsDB: true}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	s.queries = buildQueries(d)
	s.streamQ = buildStreamQueries(d)
	if err := EngineOf(s).prepareHot(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

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

// stmtCache holds the hot statements, prepared once on the pool when the
// store opens. database/sql then prepares each on a connection the first
// time a transaction there uses it and reuses it after, so the hot path never
// parses SQL again. (Preparing lazily from inside a transaction could
// deadlock: the pool may have no free connection while that transaction
// holds SQLite's write lock.)
type stmtCache map[string]*sql.Stmt

// oneRow holds the texts of the one-row inserts, built once so the hot path
// does no string work: each is also the key of its prepared statement.
type oneRow struct {
	log, outbox, both string
	stream            string // one event of an aggregate's stream
	// multi holds, on SQLite, the prepared multi-row inserts by prefix
	// (event log, outbox), largest first.
	multi map[string][]multiRow
}

// multiRow is a prepared insert of n rows.
type multiRow struct {
	n int
	q string
}

// multiRowSizes are the row counts of SQLite's prepared multi-row inserts: a
// transaction's events go in as few statements of these sizes as fit, the
// rest one row at a time. Each statement costs a call through database/sql
// and the driver; the rows cost the same either way.
var multiRowSizes = []int{32, 8}

func (s *Engine) prepareHot(ctx context.Context) error {
	s.stmts = stmtCache{}
	s.one = oneRow{
		log:    s.d.Rebind(s.queries.eventLogInsert + s.values(1, nEventCols)),
		outbox: s.d.Rebind(s.queries.outboxInsert + s.values(1, nEventCols)),
		stream: s.d.Rebind(s.streamQ.insert + s.values(1, nStreamCols)),
	}
	var multi []string
	if s.d.Name() != "postgres" {
		s.one.multi = map[string][]multiRow{}
		for _, prefix := range []string{s.queries.eventLogInsert, s.queries.outboxInsert} {
			for _, n := range multiRowSizes {
				q := s.d.Rebind(prefix + s.values(n, nEventCols))
				s.one.multi[prefix] = append(s.one.multi[prefix], multiRow{n: n, q: q})
				multi = append(multi, q)
			}
		}
	}
	qs := []string{s.one.log, s.one.outbox, s.one.stream, s.streamQ.snapPut, s.queries.inboxClaim, s.queries.inboxClaimBatch, s.queries.outboxPending, s.queries.outboxMark, s.queries.outboxMarkUpTo, sqlSavepoint, sqlRelease, sqlRollbackTo}
	if s.d.Name() == "postgres" {
		s.one.both = s.appendBoth(1, 1)
		qs = append(qs, s.one.both)
	}
	qs = append(qs, multi...)
	for _, q := range qs {
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("herald/store: prepare %q: %w", q, err)
		}
		s.stmts[q] = st
	}
	return nil
}

// exec runs q in tx, through its prepared statement when it is a hot one.
func (s *Engine) exec(ctx context.Context, tx *sql.Tx, q string, args []any) (sql.Result, error) {
	if st, ok := s.stmts[q]; ok {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
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
		eventLogPrune:   r("DELETE FROM herald_event_log WHERE id < ? AND aggregate_type IS NULL"),
		dlInsert: r("INSERT INTO herald_dead_letters (service, subscription, event_id, type, version, reason, last_error, attempts, header, data, created_at, partition_key)" +
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		dlGet:          r("SELECT " + dlCols + " FROM herald_dead_letters WHERE id = ?"),
		eventLogByID:   r("SELECT " + eventCols + " FROM herald_event_log WHERE id = ?"),
		eventLogByCorr: r("SELECT " + eventCols + " FROM herald_event_log WHERE correlation_id = ? ORDER BY id"),
	}
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

// rowQuerier is what *sql.DB and *sql.Tx share for one-row reads.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// querier is what *sql.DB and *sql.Tx share for reads of many rows.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// execer is satisfied by *sql.DB and *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
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
