// Package storetest is the conformance suite of herald's store: every
// dialect (store/sqlite, store/postgres, and any future one) runs the same
// subtests through Run, so the Store methods behave the same on every SQL
// engine.
//
// A dialect's test supplies a Config whose NewDB creates a new, empty
// database for one subtest and returns a function that opens a Store on it:
//
//	func TestConformance(t *testing.T) {
//		ms, _ := store.LoadMigrations(migrationsFS, "migrations")
//		storetest.Run(t, storetest.Config{
//			NewDB: func(t *testing.T) func() (*store.Store, error) {
//				path := filepath.Join(t.TempDir(), "herald.db")
//				return func() (*store.Store, error) { return sqlite.Open(context.Background(), path) }
//			},
//			Migrations: ms,
//		})
//	}
//
// Most subtests open the database once. The migration subtests call the
// open function again, and from several goroutines at once, to check that
// a second Store on the same database finds the schema current and that
// concurrent first starts all succeed; that is why the suite takes a
// database factory rather than a Store factory.
//
// The suite only uses the Store API, except where a behaviour can only be
// arranged or observed in SQL: it backdates inbox rows, fakes a newer
// schema version in herald_migrations and, on PostgreSQL, waits for
// transactions of other tests on the same server to end before it expects
// committed outbox rows to be pending (see Settle).
package storetest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// Config is what a dialect gives the suite.
type Config struct {
	// NewDB creates a new, empty database that lives until t ends and
	// returns a function opening a Store (which applies the migrations) on
	// it. The function is called several times, also concurrently from
	// several goroutines: every call must open an independent Store with its
	// own connection pool. The suite closes the stores it opens.
	NewDB func(t *testing.T) func() (*store.Store, error)
	// Migrations are the dialect's embedded migrations. When set, the suite
	// checks that herald_migrations records exactly these; when nil, only
	// that the recorded versions are 1..n.
	Migrations []store.Migration
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, c Config) {
	if c.NewDB == nil {
		t.Fatal("storetest: Config.NewDB is nil")
	}
	h := &harness{c: c}
	t.Run("EventLog", func(t *testing.T) {
		t.Run("RoundTrip", h.eventLogRoundTrip)
		t.Run("EmptyData", h.eventLogEmptyData)
		t.Run("Rollback", h.eventLogRollback)
		t.Run("DuplicateID", h.eventLogDuplicateID)
		t.Run("ByCorrelation", h.eventLogByCorrelation)
		t.Run("Prune", h.eventLogPrune)
		t.Run("NotFound", h.eventLogNotFound)
	})
	t.Run("Outbox", func(t *testing.T) {
		t.Run("CommitOrder", h.outboxCommitOrder)
		t.Run("RoundTrip", h.outboxRoundTrip)
		t.Run("Limit", h.outboxLimit)
		t.Run("MarkPublished", h.outboxMarkPublished)
		t.Run("MarkPublishedUpTo", h.outboxMarkUpTo)
		t.Run("RepublishSince", h.outboxRepublish)
		t.Run("Prune", h.outboxPrune)
		t.Run("Stats", h.outboxStats)
		t.Run("Rollback", h.outboxRollback)
		t.Run("LargeBatch", h.outboxLargeBatch)
		t.Run("ConcurrentCommitOrder", h.outboxConcurrent)
		t.Run("InFlightTransaction", h.outboxInFlight)
		t.Run("LastPublished", h.outboxLastPublished)
		t.Run("Listen", h.outboxListen)
	})
	t.Run("Append", func(t *testing.T) {
		t.Run("Both", h.appendBoth)
		t.Run("Savepoints", h.appendSavepoints)
	})
	t.Run("Inbox", func(t *testing.T) {
		t.Run("Claim", h.inboxClaim)
		t.Run("ClaimBatch", h.inboxClaimBatch)
		t.Run("Rollback", h.inboxRollback)
		t.Run("Prune", h.inboxPrune)
		t.Run("Release", h.inboxRelease)
	})
	t.Run("DeadLetters", func(t *testing.T) {
		t.Run("Add", h.deadLetterAdd)
		t.Run("RoundTrip", h.deadLetterRoundTrip)
		t.Run("Filter", h.deadLetterFilter)
		t.Run("Delete", h.deadLetterDelete)
		t.Run("NotFound", h.deadLetterNotFound)
	})
	t.Run("Parked", func(t *testing.T) {
		t.Run("Park", h.parkOutbox)
		t.Run("HeldOnlyWhileParked", h.parkHeldOnlyWhileParked)
		t.Run("Gone", h.parkGone)
		t.Run("Replay", h.parkReplay)
		t.Run("ReplayPart", h.parkReplayPart)
		t.Run("HeldAfterReplay", h.parkHeldAfterReplay)
		t.Run("RangeMarks", h.parkRangeMarks)
		t.Run("Reopen", h.parkReopen)
	})
	t.Run("Leases", func(t *testing.T) {
		t.Run("Exclusive", h.leaseExclusive)
		t.Run("Expiry", h.leaseExpiry)
		t.Run("Release", h.leaseRelease)
	})
	t.Run("Migrations", func(t *testing.T) {
		t.Run("Reopen", h.migrateReopen)
		t.Run("Concurrent", h.migrateConcurrent)
		t.Run("NewerSchema", h.migrateNewer)
		t.Run("LoadErrors", loadMigrationErrors)
	})
	t.Run("Closed", h.closed)
}

type harness struct{ c Config }

// open returns a store on a new database.
func (h *harness) open(t *testing.T) *store.Store {
	t.Helper()
	return mustOpen(t, h.c.NewDB(t))
}

func mustOpen(t *testing.T, open func() (*store.Store, error)) *store.Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// t0 has nanoseconds, so a store that rounds times fails.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// event returns an envelope with every attribute set and binary data that
// is not valid UTF-8 and contains NUL bytes and quotes.
func event(service, id string, at time.Time) *envelope.Envelope {
	return &envelope.Envelope{
		ID:              id,
		Type:            "shop.order.confirmed",
		Version:         3,
		Kind:            envelope.KindIntegration,
		Source:          service,
		Key:             "order-" + id,
		Time:            at,
		CorrelationID:   "corr-" + id,
		CausationID:     "cause-" + id,
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
		DataContentType: "application/octet-stream",
		Data:            append([]byte{0x00, 0xff, 0xfe, 0x80, '\'', '"', '\\', '?', 0x00}, id...),
	}
}

// events returns n events of service with ids prefix-0000… and times t0+i ms.
func events(service, prefix string, n int) []*envelope.Envelope {
	out := make([]*envelope.Envelope, n)
	for i := range out {
		out[i] = event(service, fmt.Sprintf("%s-%04d", prefix, i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	return out
}

// diffEnvelope lists the attributes in which got differs from want. Times
// must be the same instant and come back in UTC.
func diffEnvelope(want, got *envelope.Envelope) []string {
	if got == nil {
		return []string{"got nil envelope"}
	}
	wv, gv := reflect.ValueOf(want).Elem(), reflect.ValueOf(got).Elem()
	var diffs []string
	for i := range wv.NumField() {
		name := wv.Type().Field(i).Name
		w, g := wv.Field(i).Interface(), gv.Field(i).Interface()
		var same bool
		switch w := w.(type) {
		case time.Time:
			g := g.(time.Time)
			same = w.Equal(g) && g.Location() == time.UTC
		case []byte:
			same = bytes.Equal(w, g.([]byte))
		default:
			same = reflect.DeepEqual(w, g)
		}
		if !same {
			diffs = append(diffs, fmt.Sprintf("%s: got %#v, want %#v", name, g, w))
		}
	}
	return diffs
}

func checkEnvelope(t *testing.T, what string, want, got *envelope.Envelope) {
	t.Helper()
	if d := diffEnvelope(want, got); d != nil {
		t.Errorf("%s: envelope differs from the one written:\n\t%s", what, strings.Join(d, "\n\t"))
	}
}

// commit runs fn in a transaction and commits it.
func commit(t *testing.T, s *store.Store, fn func(tx *sql.Tx)) {
	eng := store.EngineOf(s)
	t.Helper()
	tx, err := eng.Begin(context.Background())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback()
	fn(tx)
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// rollback runs fn in a transaction and rolls it back.
func rollback(t *testing.T, s *store.Store, fn func(tx *sql.Tx)) {
	eng := store.EngineOf(s)
	t.Helper()
	tx, err := eng.Begin(context.Background())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	fn(tx)
	if err := tx.Rollback(); err != nil {
		t.Fatalf("rollback: %v", err)
	}
}

func appendOutbox(t *testing.T, s *store.Store, tx *sql.Tx, evs ...*envelope.Envelope) {
	eng := store.EngineOf(s)
	t.Helper()
	if err := eng.OutboxAppend(context.Background(), tx, evs); err != nil {
		t.Fatalf("AppendOutbox: %v", err)
	}
}

func appendEventLog(t *testing.T, s *store.Store, tx *sql.Tx, evs ...*envelope.Envelope) {
	eng := store.EngineOf(s)
	t.Helper()
	if err := eng.EventLogAppend(context.Background(), tx, evs); err != nil {
		t.Fatalf("AppendEventLog: %v", err)
	}
}

// Settle waits until every committed outbox row has its final place in
// commit order, so that PendingOutbox returns every committed row. On PostgreSQL PendingOutbox holds back rows committed after
// a transaction that is still running anywhere on the server (that is the
// point of Dialect.PendingCondition), and other tests may share the server;
// elsewhere commits are serialised and there is nothing to wait for. The
// query mirrors the PostgreSQL dialect's PendingCondition.
func Settle(t testing.TB, s *store.Store) {
	t.Helper()
	if s.Dialect() != "postgres" {
		return
	}
	const q = `SELECT COUNT(*) FROM herald_outbox
		WHERE published_at IS NULL AND NOT (txid < pg_snapshot_xmin(pg_current_snapshot()))`
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		if err := s.DB().QueryRow(q).Scan(&n); err != nil {
			t.Fatalf("storetest.Settle: %v", err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("storetest.Settle: %d committed outbox rows still held back by transactions in flight after a minute", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pending settles, then returns PendingOutbox(service, limit).
func pending(t *testing.T, s *store.Store, service string, limit int) []store.OutboxRow {
	eng := store.EngineOf(s)
	t.Helper()
	Settle(t, s)
	rows, err := eng.OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: service, Limit: limit})
	if err != nil {
		t.Fatalf("PendingOutbox(%s, %d): %v", service, limit, err)
	}
	return rows
}

func ids(rows []store.OutboxRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Event.ID
	}
	return out
}

func seqs(rows []store.OutboxRow) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r.Seq
	}
	return out
}

func envIDs(evs []*envelope.Envelope) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// checkPending asserts that rows are exactly the events want, in that order,
// with increasing seqs and every attribute intact.
func checkPending(t *testing.T, what string, rows []store.OutboxRow, want []*envelope.Envelope) {
	t.Helper()
	if got, w := ids(rows), envIDs(want); !slices.Equal(got, w) {
		t.Fatalf("%s: pending ids %v, want %v", what, got, w)
	}
	for i, r := range rows {
		if i > 0 && r.Seq <= rows[i-1].Seq {
			t.Errorf("%s: seq %d after %d: not increasing", what, r.Seq, rows[i-1].Seq)
		}
		checkEnvelope(t, what+" "+r.Event.ID, want[i], r.Event)
	}
}

// ---- event log ----

func (h *harness) eventLogRoundTrip(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	evs := []*envelope.Envelope{
		event("orders", "rt-utc", t0),
		// Another zone: the same instant comes back, in UTC.
		event("orders", "rt-zone", t0.In(time.FixedZone("UTC-7", -7*3600)).Add(time.Nanosecond)),
		// Before 1970: a negative Unix time.
		event("orders", "rt-1969", time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC)),
		event("orders", "rt-2200", time.Date(2200, 1, 2, 3, 4, 5, 6, time.UTC)),
	}
	// A domain event without key, causation or trace, and a large binary
	// payload with every byte value.
	bare := &envelope.Envelope{ID: "rt-bare", Type: "x", Version: 1, Kind: envelope.KindDomain, Source: "orders",
		Time: t0, CorrelationID: "rt-bare", DataContentType: "application/json"}
	bare.Data = make([]byte, 1<<16)
	for i := range bare.Data {
		bare.Data[i] = byte(i * 7)
	}
	// Text that needs quoting in SQL, and non-ASCII.
	odd := event("orders", "rt-odd", t0)
	odd.Type, odd.Key, odd.TraceState = "it's a \"type\" ? $1 --", "clé-🔑", "a=b;c=\\'"
	evs = append(evs, bare, odd)

	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, evs...) })
	for _, want := range evs {
		got, err := s.EventLogGet(ctx, want.ID)
		if err != nil {
			t.Fatalf("Event(%s): %v", want.ID, err)
		}
		checkEnvelope(t, "Event("+want.ID+")", want, got)
	}
}

func (h *harness) eventLogEmptyData(t *testing.T) {
	s := h.open(t)
	nilData := event("orders", "nil-data", t0)
	nilData.Data = nil
	emptyData := event("orders", "empty-data", t0)
	emptyData.Data = []byte{}
	commit(t, s, func(tx *sql.Tx) {
		appendEventLog(t, s, tx, nilData, emptyData)
		appendOutbox(t, s, tx, nilData, emptyData)
	})
	for _, want := range []*envelope.Envelope{nilData, emptyData} {
		got, err := s.EventLogGet(context.Background(), want.ID)
		if err != nil {
			t.Fatalf("Event(%s): %v", want.ID, err)
		}
		checkEnvelope(t, "Event("+want.ID+")", want, got)
		if got.Data != nil {
			t.Errorf("Event(%s).Data = %#v, want nil (empty data reads back as nil)", want.ID, got.Data)
		}
	}
	rows := pending(t, s, "orders", 10)
	checkPending(t, "outbox", rows, []*envelope.Envelope{nilData, emptyData})
	for _, r := range rows {
		if r.Event.Data != nil {
			t.Errorf("outbox %s: Data = %#v, want nil", r.Event.ID, r.Event.Data)
		}
	}
}

func (h *harness) eventLogRollback(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	e := event("orders", "rolled-back", t0)
	rollback(t, s, func(tx *sql.Tx) {
		appendEventLog(t, s, tx, e)
		// Visible inside its own transaction…
		var n int
		if err := tx.QueryRow(s.Rebind("SELECT COUNT(*) FROM herald_event_log WHERE id = ?"), e.ID).Scan(&n); err != nil {
			t.Fatalf("count in tx: %v", err)
		}
		if n != 1 {
			t.Fatalf("event not visible inside its transaction (count %d)", n)
		}
	})
	// …and gone after rollback.
	if _, err := s.EventLogGet(context.Background(), e.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Event after rollback: err = %v, want ErrNotFound", err)
	}
	got, err := s.EventLogListByCorrelation(context.Background(), e.CorrelationID)
	if err != nil || len(got) != 0 {
		t.Fatalf("EventsByCorrelation after rollback = %d events, %v; want none", len(got), err)
	}
	if err := eng.EventLogAppend(context.Background(), nil, nil); err != nil {
		t.Errorf("AppendEventLog of no events: %v", err)
	}
}

func (h *harness) eventLogDuplicateID(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	e := event("orders", "dup", t0)
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, e) })
	tx, err := eng.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := eng.EventLogAppend(context.Background(), tx, []*envelope.Envelope{event("orders", "dup", t0.Add(time.Second))}); err == nil {
		t.Fatal("AppendEventLog of an id already in the log succeeded; want an error")
	}
}

func (h *harness) eventLogByCorrelation(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	// Two flows interleaved over several transactions; times deliberately
	// out of order: "recorded order" is the order of appends.
	var flowA, flowB []*envelope.Envelope
	mk := func(corr string, i int) *envelope.Envelope {
		e := event("orders", fmt.Sprintf("%s-%02d", corr, i), t0.Add(time.Duration(10-i)*time.Second))
		e.CorrelationID = corr
		return e
	}
	for txn := range 4 {
		commit(t, s, func(tx *sql.Tx) {
			for j := range 3 {
				a, b := mk("flow-a", txn*3+j), mk("flow-b", txn*3+j)
				flowA, flowB = append(flowA, a), append(flowB, b)
				appendEventLog(t, s, tx, a)
				appendEventLog(t, s, tx, b)
			}
		})
	}
	// More than one multi-row INSERT's worth in a single call.
	var big []*envelope.Envelope
	for i := range 1201 {
		e := event("orders", fmt.Sprintf("flow-big-%04d", i), t0)
		e.CorrelationID = "flow-big"
		big = append(big, e)
	}
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, big...) })

	for _, flow := range [][]*envelope.Envelope{flowA, flowB, big} {
		corr := flow[0].CorrelationID
		got, err := s.EventLogListByCorrelation(ctx, corr)
		if err != nil {
			t.Fatalf("EventsByCorrelation(%s): %v", corr, err)
		}
		if g, w := envIDs(got), envIDs(flow); !slices.Equal(g, w) {
			t.Fatalf("EventsByCorrelation(%s) ids %v, want %v", corr, g, w)
		}
		for i := range got {
			checkEnvelope(t, corr, flow[i], got[i])
		}
	}
	got, err := s.EventLogListByCorrelation(ctx, "no-such-flow")
	if err != nil || len(got) != 0 {
		t.Fatalf("EventsByCorrelation(unknown) = %d events, %v; want none", len(got), err)
	}
}

func (h *harness) eventLogPrune(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	// Ids are ULIDs of the event times, as herald records them (a store may
	// prune by id). Retention is to the millisecond at best, so the events
	// are a millisecond or more away from the cutoff.
	at := func(d time.Duration) *envelope.Envelope { return event("orders", envelope.NewID(t0.Add(d)), t0.Add(d)) }
	old1 := at(-2 * time.Hour)
	old2 := at(-time.Millisecond)
	edge := at(0) // not before the cutoff: kept
	newer := at(time.Hour)
	// Recorded newest first: pruning goes by event time, not by seq.
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, newer, edge, old2, old1) })

	n, err := eng.EventLogPrune(ctx, t0)
	if err != nil {
		t.Fatalf("PruneEventLog: %v", err)
	}
	if n != 2 {
		t.Errorf("PruneEventLog removed %d, want 2", n)
	}
	for _, e := range []*envelope.Envelope{old1, old2} {
		if _, err := s.EventLogGet(ctx, e.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Event(%s) after prune: err = %v, want ErrNotFound", e.ID, err)
		}
	}
	for _, e := range []*envelope.Envelope{edge, newer} {
		if _, err := s.EventLogGet(ctx, e.ID); err != nil {
			t.Errorf("Event(%s) after prune: %v, want kept", e.ID, err)
		}
	}
	if n, err := eng.EventLogPrune(ctx, t0); err != nil || n != 0 {
		t.Errorf("second PruneEventLog = %d, %v; want 0", n, err)
	}
}

func (h *harness) eventLogNotFound(t *testing.T) {
	s := h.open(t)
	_, err := s.EventLogGet(context.Background(), "no-such-event")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Event(unknown): err = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "no-such-event") {
		t.Errorf("Event(unknown) error %q does not name the id", err)
	}
}

// ---- outbox ----

func (h *harness) outboxCommitOrder(t *testing.T) {
	s := h.open(t)
	a := events("orders", "a", 6)
	b := events("billing", "b", 2)
	commit(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, a[0], b[0], a[1])
	})
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[2]) })
	rollback(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, event("orders", "rolled-back", t0)) })
	commit(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, a[3])
		appendOutbox(t, s, tx, b[1])
		appendOutbox(t, s, tx, a[4], a[5])
	})
	checkPending(t, "orders", pending(t, s, "orders", 100), a)
	checkPending(t, "billing", pending(t, s, "billing", 100), b)
	if rows := pending(t, s, "shipping", 100); len(rows) != 0 {
		t.Errorf("PendingOutbox of a service without rows returned %v", ids(rows))
	}
	// Reading does not consume.
	checkPending(t, "orders again", pending(t, s, "orders", 100), a)
}

func (h *harness) outboxRoundTrip(t *testing.T) {
	s := h.open(t)
	evs := []*envelope.Envelope{
		event("orders", "z-utc", t0),
		event("orders", "z-zone", t0.In(time.FixedZone("UTC+5:30", 5*3600+1800)).Add(time.Nanosecond)),
		event("orders", "z-1969", time.Date(1969, 7, 20, 20, 17, 40, 1, time.UTC)),
	}
	evs[2].Kind, evs[2].Key, evs[2].CausationID, evs[2].TraceParent, evs[2].TraceState = envelope.KindNotification, "", "", "", ""
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, evs...) })
	checkPending(t, "orders", pending(t, s, "orders", 10), evs)
}

func (h *harness) outboxLimit(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	a := events("orders", "l", 5)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	for _, limit := range []int{1, 2, 4, 5, 6} {
		want := a[:min(limit, len(a))]
		checkPending(t, fmt.Sprintf("limit %d", limit), pending(t, s, "orders", limit), want)
	}
	// After a seq: the rows that follow it, published or not before it.
	all := pending(t, s, "orders", 100)
	for i, r := range all {
		rows, err := eng.OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: "orders", After: r.Seq, Limit: 2})
		if err != nil {
			t.Fatalf("PendingOutboxAfter: %v", err)
		}
		checkPending(t, fmt.Sprintf("after row %d", i), rows, a[i+1:min(i+3, len(a))])
	}
	if err := eng.OutboxMarkPublished(context.Background(), []int64{all[3].Seq}, t0); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	rows, err := eng.OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: "orders", After: all[1].Seq, Limit: 100})
	if err != nil {
		t.Fatalf("PendingOutboxAfter: %v", err)
	}
	checkPending(t, "after row 1, row 3 published", rows, []*envelope.Envelope{a[2], a[4]})
}

func (h *harness) outboxMarkPublished(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := events("orders", "m", 5)
	b := events("billing", "mb", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], a[1], b[0], a[2], a[3], a[4]) })
	rows := pending(t, s, "orders", 2)
	if err := eng.OutboxMarkPublished(ctx, seqs(rows), t0); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	checkPending(t, "after marking 2", pending(t, s, "orders", 100), a[2:])
	if err := eng.OutboxMarkPublished(ctx, nil, t0); err != nil {
		t.Errorf("MarkPublished(no seqs): %v", err)
	}
	// Marking out of order, again, or an unknown seq is harmless.
	rows = pending(t, s, "orders", 100)
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[2].Seq, rows[0].Seq, rows[0].Seq, 1 << 50}, t0); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	checkPending(t, "after marking 4", pending(t, s, "orders", 100), a[3:4])
	checkPending(t, "billing untouched", pending(t, s, "billing", 100), b)
	if n, _, err := s.OutboxStats(ctx, "orders"); err != nil || n != 1 {
		t.Errorf("OutboxStats backlog = %d, %v; want 1", n, err)
	}
}

// outboxMarkUpTo checks range marks: everything of a service up to a seq is
// published with one row, seen by PendingOutbox, OutboxStats,
// LastPublished, RepublishSince and PruneOutbox like per-row marks.
func (h *harness) outboxMarkUpTo(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := events("orders", "u", 6)
	b := events("billing", "ub", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], a[1], b[0], a[2], a[3], b[1], a[4], a[5]) })
	rows := pending(t, s, "orders", 100)
	cursor := func() int64 {
		t.Helper()
		c, err := eng.OutboxCursor(ctx, "orders")
		if err != nil {
			t.Fatalf("OutboxCursor: %v", err)
		}
		return c
	}
	if c := cursor(); c != 0 {
		t.Fatalf("OutboxCursor before any mark = %d, want 0", c)
	}
	upTo := func(i int, at time.Time) {
		t.Helper()
		if err := eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: cursor(), UpTo: rows[i].Seq, At: at}); err != nil {
			t.Fatalf("MarkPublishedUpTo(%d): %v", i, err)
		}
	}
	upTo(1, t0.Add(-2*time.Hour))
	if c := cursor(); c != rows[1].Seq {
		t.Fatalf("OutboxCursor = %d, want %d", c, rows[1].Seq)
	}
	checkPending(t, "after marking up to a[1]", pending(t, s, "orders", 100), a[2:])
	checkPending(t, "billing untouched", pending(t, s, "billing", 100), b)
	// A read after an older position still starts after the mark.
	if got, err := eng.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", After: rows[0].Seq, Limit: 100}); err != nil {
		t.Fatal(err)
	} else {
		checkPending(t, "after an older cursor", got, a[2:])
	}
	upTo(3, t0)
	upTo(3, t0.Add(time.Minute)) // again: harmless
	upTo(2, t0)                  // an older mark does not move the cursor back
	checkPending(t, "after marking up to a[3]", pending(t, s, "orders", 100), a[4:])
	if n, oldest, err := s.OutboxStats(ctx, "orders"); err != nil || n != 2 || !oldest.Equal(a[4].Time) {
		t.Errorf("OutboxStats = %d, %v, %v; want 2, %v", n, oldest, err, a[4].Time)
	}
	if got, err := eng.OutboxLastPublished(ctx, "orders"); err != nil || !got.Equal(t0) {
		t.Errorf("LastPublished = %v, %v; want %v", got, err, t0)
	}
	// A per-row mark after the range works alongside it.
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[5].Seq}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkPending(t, "after a per-row mark", pending(t, s, "orders", 100), a[4:5])
	// Republishing since t0 drops the marks made since: the cursor goes
	// back to a[1], and a[2], a[3] and a[5] are sent again.
	n, err := eng.OutboxRepublishSince(ctx, "orders", t0)
	if err != nil || n != 3 {
		t.Fatalf("RepublishSince(t0) = %d, %v; want 3", n, err)
	}
	checkPending(t, "republished", pending(t, s, "orders", 100), a[2:])
	// A relay whose reads built on the dropped mark may not cover the
	// reopened rows again.
	err = eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: rows[3].Seq, UpTo: rows[5].Seq, At: t0.Add(2 * time.Hour)})
	if !errors.Is(err, store.ErrMarkMoved) {
		t.Fatalf("MarkPublishedUpTo from a dropped mark: err = %v, want ErrMarkMoved", err)
	}
	checkPending(t, "after the refused mark", pending(t, s, "orders", 100), a[2:])
	if got, err := eng.OutboxLastPublished(ctx, "orders"); err != nil || !got.Equal(t0.Add(-2*time.Hour)) {
		t.Errorf("LastPublished after republish = %v, %v; want %v", got, err, t0.Add(-2*time.Hour))
	}
	// Pruning deletes the rows under marks older than the cutoff and keeps
	// the newest mark, so the cursor stays where it is.
	upTo(3, t0)
	n, err = eng.OutboxPrune(ctx, t0.Add(-time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PruneOutbox = %d, %v; want 2 (a[0], a[1])", n, err)
	}
	checkPending(t, "after prune", pending(t, s, "orders", 100), a[4:])
	if n, err = eng.OutboxPrune(ctx, t0.Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("second PruneOutbox = %d, %v; want 2 (a[2], a[3])", n, err)
	}
	checkPending(t, "after the second prune", pending(t, s, "orders", 100), a[4:])
	checkPending(t, "billing after prunes", pending(t, s, "billing", 100), b)
}

func (h *harness) outboxRepublish(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	p := events("orders", "p", 4)
	o := events("billing", "o", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, p...); appendOutbox(t, s, tx, o...) })
	rows := pending(t, s, "orders", 100)
	mark := func(at time.Time, rs ...store.OutboxRow) {
		t.Helper()
		if err := eng.OutboxMarkPublished(ctx, seqs(rs), at); err != nil {
			t.Fatalf("MarkPublished: %v", err)
		}
	}
	mark(t0.Add(-2*time.Hour), rows[0])
	mark(t0.Add(-time.Nanosecond), rows[1])
	mark(t0, rows[2]) // at since: republished
	mark(t0.Add(time.Minute), rows[3])
	mark(t0, pending(t, s, "billing", 100)...)
	if got := pending(t, s, "orders", 100); len(got) != 0 {
		t.Fatalf("pending after marking all: %v", ids(got))
	}

	n, err := eng.OutboxRepublishSince(ctx, "orders", t0)
	if err != nil {
		t.Fatalf("RepublishSince: %v", err)
	}
	if n != 2 {
		t.Errorf("RepublishSince reset %d rows, want 2", n)
	}
	checkPending(t, "republished", pending(t, s, "orders", 100), p[2:])
	if got := pending(t, s, "billing", 100); len(got) != 0 {
		t.Errorf("RepublishSince(orders) reset billing rows %v", ids(got))
	}
	// Pending rows are not counted again.
	if n, err := eng.OutboxRepublishSince(ctx, "orders", t0); err != nil || n != 0 {
		t.Errorf("second RepublishSince = %d, %v; want 0", n, err)
	}
	if n, err := eng.OutboxRepublishSince(ctx, "orders", time.Time{}.Add(time.Hour)); err != nil || n != 2 {
		t.Errorf("RepublishSince(long ago) = %d, %v; want 2", n, err)
	}
	checkPending(t, "all republished", pending(t, s, "orders", 100), p)
}

func (h *harness) outboxPrune(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	q := events("orders", "q", 4)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, q...) })
	rows := pending(t, s, "orders", 100)
	for i, at := range []time.Time{t0.Add(-2 * time.Hour), t0.Add(-time.Nanosecond), t0.Add(time.Hour)} {
		if err := eng.OutboxMarkPublished(ctx, []int64{rows[i].Seq}, at); err != nil {
			t.Fatalf("MarkPublished: %v", err)
		}
	}
	// q[3] stays pending: never pruned, however old.
	n, err := eng.OutboxPrune(ctx, t0)
	if err != nil {
		t.Fatalf("PruneOutbox: %v", err)
	}
	if n != 2 {
		t.Errorf("PruneOutbox removed %d, want 2", n)
	}
	if n, err := eng.OutboxPrune(ctx, t0); err != nil || n != 0 {
		t.Errorf("second PruneOutbox = %d, %v; want 0", n, err)
	}
	// What is left: q[2] (published after the cutoff) and q[3] (pending).
	if n, err := eng.OutboxRepublishSince(ctx, "orders", time.Time{}.Add(time.Hour)); err != nil || n != 1 {
		t.Errorf("RepublishSince(long ago) after prune = %d, %v; want 1", n, err)
	}
	checkPending(t, "after prune", pending(t, s, "orders", 100), q[2:])
	if n, err := eng.OutboxPrune(ctx, t0.Add(1000*time.Hour)); err != nil || n != 0 {
		t.Errorf("PruneOutbox with only pending rows = %d, %v; want 0", n, err)
	}
}

func (h *harness) outboxStats(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	n, oldest, err := s.OutboxStats(ctx, "orders")
	if err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("OutboxStats(empty) = %d, %v, %v; want 0, zero time", n, oldest, err)
	}
	late := event("orders", "late", t0.Add(5*time.Minute))
	early := event("orders", "early", t0.Add(-3*time.Minute+time.Nanosecond))
	mid := event("orders", "mid", t0)
	other := event("billing", "other", t0.Add(-time.Hour))
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, late, early, mid, other) })
	n, oldest, err = s.OutboxStats(ctx, "orders")
	if err != nil || n != 3 || !oldest.Equal(early.Time) {
		t.Fatalf("OutboxStats = %d, %v, %v; want 3, %v", n, oldest, err, early.Time)
	}
	if oldest.Location() != time.UTC {
		t.Errorf("OutboxStats oldest in %v, want UTC", oldest.Location())
	}
	rows := pending(t, s, "orders", 100)
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[1].Seq}, t0); err != nil { // early
		t.Fatal(err)
	}
	n, oldest, err = s.OutboxStats(ctx, "orders")
	if err != nil || n != 2 || !oldest.Equal(mid.Time) {
		t.Fatalf("OutboxStats after publishing the oldest = %d, %v, %v; want 2, %v", n, oldest, err, mid.Time)
	}
	if err := eng.OutboxMarkPublished(ctx, seqs(pending(t, s, "orders", 100)), t0); err != nil {
		t.Fatal(err)
	}
	n, oldest, err = s.OutboxStats(ctx, "orders")
	if err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("OutboxStats after publishing all = %d, %v, %v; want 0, zero time", n, oldest, err)
	}
	if n, _, err := s.OutboxStats(ctx, "billing"); err != nil || n != 1 {
		t.Errorf("OutboxStats(billing) = %d, %v; want 1", n, err)
	}
}

func (h *harness) outboxRollback(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	rollback(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, events("orders", "r", 3)...)
		appendEventLog(t, s, tx, events("orders", "r", 3)...)
	})
	if rows := pending(t, s, "orders", 100); len(rows) != 0 {
		t.Fatalf("pending after rollback: %v", ids(rows))
	}
	if n, _, err := s.OutboxStats(ctx, "orders"); err != nil || n != 0 {
		t.Fatalf("OutboxStats after rollback = %d, %v; want 0", n, err)
	}
	// The store works normally afterwards.
	e := event("orders", "after", t0)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, e) })
	checkPending(t, "after rollback", pending(t, s, "orders", 100), []*envelope.Envelope{e})
	if err := eng.OutboxAppend(ctx, nil, nil); err != nil {
		t.Errorf("AppendOutbox of no events: %v", err)
	}
}

func (h *harness) outboxLargeBatch(t *testing.T) {
	s := h.open(t)
	// 1201 = two full multi-row INSERTs (500 rows) and a partial one.
	big := events("orders", "big", 1201)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, big...) })
	checkPending(t, "1201 events", pending(t, s, "orders", 5000), big)
	// Exactly one chunk's worth, too.
	s2 := h.open(t)
	chunk := events("orders", "chunk", 500)
	commit(t, s2, func(tx *sql.Tx) { appendOutbox(t, s2, tx, chunk...) })
	if rows := pending(t, s2, "orders", 5000); len(rows) != 500 {
		t.Fatalf("500 events: %d pending", len(rows))
	}
}

// outboxConcurrent has several writers commit transactions of outbox rows
// while a relay reads pending rows and marks them published, as the real
// relay does. Every row must be relayed exactly once, and each writer's rows
// in the order the writer committed them.
func (h *harness) outboxConcurrent(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	const (
		writers = 6
		txs     = 20
		perTx   = 3
		total   = writers * txs * perTx
	)
	errc := make(chan error, writers+1)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for k := range txs {
				evs := make([]*envelope.Envelope, perTx)
				for r := range evs {
					evs[r] = event("orders", fmt.Sprintf("w%02d-%04d", w, k*perTx+r), t0)
				}
				tx, err := eng.Begin(ctx)
				if err != nil {
					errc <- fmt.Errorf("writer %d: begin: %w", w, err)
					return
				}
				// Two statements per transaction: rows of one transaction
				// need not come from one INSERT.
				if err := eng.OutboxAppend(ctx, tx, evs[:1]); err != nil {
					tx.Rollback()
					errc <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				if err := eng.OutboxAppend(ctx, tx, evs[1:]); err != nil {
					tx.Rollback()
					errc <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				if err := tx.Commit(); err != nil {
					errc <- fmt.Errorf("writer %d: commit: %w", w, err)
					return
				}
			}
		})
	}
	// The relay, running while the writers commit.
	relayed := make(chan []string, 1)
	go func() {
		var got []string
		defer func() { relayed <- got }()
		deadline := time.Now().Add(2 * time.Minute)
		for len(got) < total {
			if time.Now().After(deadline) {
				errc <- fmt.Errorf("relay: %d of %d rows after two minutes", len(got), total)
				return
			}
			rows, err := eng.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", Limit: 7})
			if err != nil {
				errc <- fmt.Errorf("relay: %w", err)
				return
			}
			if len(rows) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			got = append(got, ids(rows)...)
			if err := eng.OutboxMarkPublished(ctx, seqs(rows), time.Now()); err != nil {
				errc <- fmt.Errorf("relay: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	got := <-relayed
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	next := make(map[string]int)
	seen := make(map[string]bool)
	for _, id := range got {
		if seen[id] {
			t.Fatalf("row %s relayed twice", id)
		}
		seen[id] = true
		w, n, _ := strings.Cut(id, "-")
		if want := fmt.Sprintf("%04d", next[w]); n != want {
			t.Fatalf("writer %s: relayed row %s before row %s-%s: not in commit order", w, id, w, want)
		}
		next[w]++
	}
	if len(got) != total {
		t.Fatalf("relayed %d rows, want %d", len(got), total)
	}
	if rows := pending(t, s, "orders", 10); len(rows) != 0 {
		t.Fatalf("rows pending after the relay took them all: %v", ids(rows))
	}
}

// outboxInFlight checks the visibility rule that keeps the relay in commit
// order on PostgreSQL: while a transaction A that wrote outbox rows is
// running, rows that a later transaction B committed are not pending,
// because A could still commit rows that sort before them. On engines that
// serialise writers (SQLite) A and B cannot overlap and the rule holds
// trivially; there the test only checks the sequential case.
func (h *harness) outboxInFlight(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	if s.Dialect() != "postgres" {
		a, b := event("orders", "a", t0), event("orders", "b", t0)
		commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a) })
		commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, b) })
		checkPending(t, "sequential", pending(t, s, "orders", 10), []*envelope.Envelope{a, b})
		return
	}
	for _, end := range []string{"commit", "rollback"} {
		t.Run(end, func(t *testing.T) {
			a, b := event("orders", "a-"+end, t0), event("orders", "b-"+end, t0)
			txA, err := eng.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer txA.Rollback()
			appendOutbox(t, s, txA, a)
			commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, b) })

			rows, err := eng.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 0 {
				t.Fatalf("PendingOutbox returned %v while a transaction that wrote an earlier outbox row is still running", ids(rows))
			}
			want := []*envelope.Envelope{a, b}
			if end == "commit" {
				if err := txA.Commit(); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := txA.Rollback(); err != nil {
					t.Fatal(err)
				}
				want = want[1:]
			}
			rows = pending(t, s, "orders", 10)
			checkPending(t, "after "+end, rows, want)
			if err := eng.OutboxMarkPublished(ctx, seqs(rows), t0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func (h *harness) outboxLastPublished(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	last := func(service string, want time.Time) {
		t.Helper()
		got, err := eng.OutboxLastPublished(ctx, service)
		if err != nil {
			t.Fatalf("LastPublished(%s): %v", service, err)
		}
		if !got.Equal(want) || (!got.IsZero() && got.Location() != time.UTC) {
			t.Fatalf("LastPublished(%s) = %v, want %v (UTC)", service, got, want)
		}
	}
	last("orders", time.Time{})
	commit(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, events("orders", "lp", 3)...)
		appendOutbox(t, s, tx, events("billing", "lb", 1)...)
	})
	last("orders", time.Time{}) // pending rows were never published
	rows := pending(t, s, "orders", 10)
	later := t0.Add(time.Hour + time.Nanosecond)
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[1].Seq}, later); err != nil {
		t.Fatal(err)
	}
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[0].Seq}, t0); err != nil { // marked after, published earlier
		t.Fatal(err)
	}
	last("orders", later)
	last("billing", time.Time{})
	if _, err := eng.OutboxPrune(ctx, later.Add(time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	last("orders", time.Time{})
}

// outboxListen checks Store.Listen: a dialect without commit notifications
// says so at once with ErrNoListen; one with them reports the service of
// every commit of outbox rows, from any connection, until ctx ends.
func (h *harness) outboxListen(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Notification channels may be shared by every test on the server.
	service := fmt.Sprintf("listen-%d", time.Now().UnixNano())
	heard := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- eng.OutboxListen(ctx, func(svc string) {
			if svc == service {
				select {
				case heard <- struct{}{}:
				default:
				}
			}
		})
	}()
	// Listen connects in the background: commit until a commit is heard.
	deadline := time.After(time.Minute)
	for i := 0; ; i++ {
		select {
		case err := <-done:
			if errors.Is(err, store.ErrNoListen) {
				if s.Dialect() == "postgres" {
					t.Fatalf("Listen on PostgreSQL: %v", err)
				}
				t.Logf("Listen: %v (the store polls)", err)
				return
			}
			t.Fatalf("Listen returned %v before ctx ended", err)
		case <-heard:
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Listen after ctx ended: %v, want nil", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("Listen did not return within a minute of ctx ending")
			}
			return
		case <-deadline:
			t.Fatal("no notification of an outbox commit within a minute")
		case <-time.After(50 * time.Millisecond):
			commit(t, s, func(tx *sql.Tx) {
				appendOutbox(t, s, tx, event(service, fmt.Sprintf("l%d", i), t0))
			})
		}
	}
}

// ---- Append and savepoints ----

func (h *harness) appendBoth(t *testing.T) {
	for _, tc := range []struct {
		name         string
		nLog, nOutbx int
	}{
		{"log only", 3, 0},
		{"outbox only", 0, 3},
		{"one each", 1, 1},
		{"several each", 4, 5},
		{"one chunk", 250, 250},
		{"more than one chunk", 300, 301},
		{"large log", 1201, 2},
		{"none", 0, 0},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			s := h.open(t)
			eng := store.EngineOf(s)
			ctx := context.Background()
			log := events("orders", "log", tc.nLog)
			for _, e := range log {
				e.Kind, e.CorrelationID = envelope.KindDomain, "flow"
			}
			outbox := events("orders", "out", tc.nOutbx)
			rollback(t, s, func(tx *sql.Tx) {
				if err := eng.EventAppend(ctx, tx, store.EventAppendParams{Log: log, Outbox: outbox}); err != nil {
					t.Fatalf("Append: %v", err)
				}
			})
			if rows := pending(t, s, "orders", 10000); len(rows) != 0 {
				t.Fatalf("rolled-back Append left %d outbox rows", len(rows))
			}
			commit(t, s, func(tx *sql.Tx) {
				if err := eng.EventAppend(ctx, tx, store.EventAppendParams{Log: log, Outbox: outbox}); err != nil {
					t.Fatalf("Append: %v", err)
				}
			})
			got, err := s.EventLogListByCorrelation(ctx, "flow")
			if err != nil {
				t.Fatal(err)
			}
			if g, w := envIDs(got), envIDs(log); !slices.Equal(g, w) {
				t.Fatalf("event log ids %v, want %v", g, w)
			}
			for i := range got {
				checkEnvelope(t, "event log", log[i], got[i])
			}
			for _, e := range outbox {
				if _, err := s.EventLogGet(ctx, e.ID); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("outbox event %s in the event log: %v", e.ID, err)
				}
			}
			checkPending(t, "outbox", pending(t, s, "orders", 10000), outbox)
		})
	}
}

// appendSavepoints isolates events of one transaction with savepoints, as a
// batched consumer does: work undone with RollbackTo disappears, released
// work commits, and a failed statement inside a savepoint does not doom the
// transaction (on PostgreSQL an error aborts the transaction up to the last
// savepoint).
func (h *harness) appendSavepoints(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	ev := func(id string) *envelope.Envelope { return event("orders", id, t0) }
	commit(t, s, func(tx *sql.Tx) { appendEventLog(t, s, tx, ev("existing")) })
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	commit(t, s, func(tx *sql.Tx) {
		must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev("kept-1")}}))

		must("Savepoint", eng.TxSavepoint(ctx, tx))
		must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev("undone")}}))
		claim(t, s, tx, "sub", "undone", true)
		must("RollbackTo", eng.TxSavepointRollback(ctx, tx))

		must("Savepoint", eng.TxSavepoint(ctx, tx))
		if err := eng.EventAppend(ctx, tx, store.EventAppendParams{Log: []*envelope.Envelope{ev("existing")}, Outbox: []*envelope.Envelope{ev("failed")}}); err == nil {
			t.Fatal("Append of an event id already in the log succeeded")
		}
		must("RollbackTo after an error", eng.TxSavepointRollback(ctx, tx))

		must("Savepoint", eng.TxSavepoint(ctx, tx))
		must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev("kept-2")}}))
		claim(t, s, tx, "sub", "kept-2", true)
		must("Release", eng.TxSavepointRelease(ctx, tx))

		// Savepoints can be used again and again in one transaction.
		for i := range 3 {
			must("Savepoint", eng.TxSavepoint(ctx, tx))
			must("Append", eng.EventAppend(ctx, tx, store.EventAppendParams{Log: nil, Outbox: []*envelope.Envelope{ev(fmt.Sprintf("loop-%d", i))}}))
			if i == 1 {
				must("RollbackTo", eng.TxSavepointRollback(ctx, tx))
			} else {
				must("Release", eng.TxSavepointRelease(ctx, tx))
			}
		}
	})
	if got, want := ids(pending(t, s, "orders", 100)), []string{"kept-1", "kept-2", "loop-0", "loop-2"}; !slices.Equal(got, want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "sub", "undone", true)
		claim(t, s, tx, "sub", "kept-2", false)
	})
}

// ---- inbox ----

func claim(t *testing.T, s *store.Store, tx *sql.Tx, sub, id string, want bool) {
	eng := store.EngineOf(s)
	t.Helper()
	got, err := eng.InboxClaim(context.Background(), tx, sub, id)
	if err != nil {
		t.Fatalf("ClaimInbox(%s, %s): %v", sub, id, err)
	}
	if got != want {
		t.Fatalf("ClaimInbox(%s, %s) = %v, want %v", sub, id, got, want)
	}
}

func (h *harness) inboxClaim(t *testing.T) {
	s := h.open(t)
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", true)
		claim(t, s, tx, "billing.orders", "e1", false) // same transaction
		claim(t, s, tx, "billing.orders", "e2", true)
	})
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", false) // redelivery
		claim(t, s, tx, "shipping.orders", "e1", true) // another subscription
		claim(t, s, tx, "billing.orders", "E1", true)  // ids are case-sensitive
	})
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e2", false)
		claim(t, s, tx, "shipping.orders", "e1", false)
	})
}

// inboxClaimBatch claims many ids in one statement: the same rows and
// answers as one ClaimInbox after another, in order.
func (h *harness) inboxClaimBatch(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	batch := func(tx *sql.Tx, sub string, ids []string, want []bool) {
		t.Helper()
		got, err := eng.InboxClaimMany(ctx, tx, sub, ids)
		if err != nil {
			t.Fatalf("ClaimInboxBatch(%s, %v): %v", sub, ids, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ClaimInboxBatch(%s, %v) = %v, want %v", sub, ids, got, want)
		}
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e2", true)
		// e1 twice in one batch: the second copy is a duplicate; e2 was
		// claimed earlier in the transaction.
		batch(tx, "billing.orders", []string{"e3", "e1", "e2", "e1", "e4"}, []bool{true, true, false, false, true})
		batch(tx, "billing.orders", nil, []bool{})
	})
	commit(t, s, func(tx *sql.Tx) {
		batch(tx, "billing.orders", []string{"e1", "e5", "e4"}, []bool{false, true, false})
		batch(tx, "shipping.orders", []string{"e1", "E1", `"quoted" \\ id`}, []bool{true, true, true})
		claim(t, s, tx, "billing.orders", "e5", false)
	})
	rollback(t, s, func(tx *sql.Tx) { batch(tx, "billing.orders", []string{"e6", "e7"}, []bool{true, true}) })
	commit(t, s, func(tx *sql.Tx) {
		batch(tx, "billing.orders", []string{"e7", "e6", "e3"}, []bool{true, true, false})
		batch(tx, "shipping.orders", []string{`"quoted" \\ id`}, []bool{false})
	})
	// Many ids: one statement, whatever the batch size.
	ids := make([]string, 2000)
	want := make([]bool, len(ids))
	for i := range ids {
		ids[i] = fmt.Sprintf("big-%04d", i)
		want[i] = i%2 == 0
	}
	commit(t, s, func(tx *sql.Tx) {
		odd := make([]string, 0, len(ids)/2)
		for i := 1; i < len(ids); i += 2 {
			odd = append(odd, ids[i])
		}
		batch(tx, "big", odd, slicesRepeat(true, len(odd)))
		batch(tx, "big", ids, want)
	})
}

func slicesRepeat(v bool, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func (h *harness) inboxRollback(t *testing.T) {
	s := h.open(t)
	rollback(t, s, func(tx *sql.Tx) { claim(t, s, tx, "billing.orders", "e1", true) })
	commit(t, s, func(tx *sql.Tx) { claim(t, s, tx, "billing.orders", "e1", true) })
	commit(t, s, func(tx *sql.Tx) { claim(t, s, tx, "billing.orders", "e1", false) })
}

func (h *harness) inboxPrune(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "old", true)
		claim(t, s, tx, "shipping.orders", "old", true)
		claim(t, s, tx, "billing.orders", "new", true)
	})
	// ClaimInbox stamps the current time; backdate two rows.
	if _, err := s.DB().Exec(s.Rebind("UPDATE herald_inbox SET processed_at = ? WHERE event_id = ?"),
		time.Now().Add(-48*time.Hour).UnixNano(), "old"); err != nil {
		t.Fatalf("backdate inbox rows: %v", err)
	}
	n, err := eng.InboxPrune(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatalf("PruneInbox: %v", err)
	}
	if n != 2 {
		t.Errorf("PruneInbox removed %d, want 2", n)
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "old", true) // pruned: claimable again
		claim(t, s, tx, "billing.orders", "new", false)
	})
	n, err = eng.InboxPrune(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 2 {
		t.Errorf("PruneInbox(future) = %d, %v; want 2", n, err)
	}
}

func (h *harness) inboxRelease(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", true)
		claim(t, s, tx, "shipping.orders", "e1", true)
	})
	if err := eng.InboxRelease(ctx, "billing.orders", "e1"); err != nil {
		t.Fatalf("ReleaseInbox: %v", err)
	}
	if err := eng.InboxRelease(ctx, "billing.orders", "never-claimed"); err != nil {
		t.Fatalf("ReleaseInbox of an unclaimed event: %v", err)
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", true)   // released: runs again
		claim(t, s, tx, "shipping.orders", "e1", false) // other subscription untouched
	})
}

// ---- dead letters ----

func deadLetter(service, sub, typ, reason string, i int) store.DeadLetter {
	return store.DeadLetter{
		Service:      service,
		Subscription: sub,
		EventID:      fmt.Sprintf("ev-%d", i),
		Type:         typ,
		Version:      2,
		Reason:       reason,
		LastError:    fmt.Sprintf("attempt %d:\n\tboom 'quoted' \"twice\"", i),
		Attempts:     i + 1,
		Header:       map[string]string{"ce-id": fmt.Sprintf("ev-%d", i), "ce-type": typ, "x-ünï": "✓"},
		Data:         []byte{0x00, 0xff, byte(i), 0x80, 0x00},
		Time:         t0.Add(time.Duration(i) * time.Second),
	}
}

func addDeadLetter(t *testing.T, s *store.Store, tx *sql.Tx, d store.DeadLetter) int64 {
	eng := store.EngineOf(s)
	t.Helper()
	id, err := eng.DeadLetterInsert(context.Background(), tx, d)
	if err != nil {
		t.Fatalf("AddDeadLetter: %v", err)
	}
	return id
}

func dlIDs(ds []store.DeadLetter) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func checkDeadLetter(t *testing.T, want, got store.DeadLetter) {
	t.Helper()
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Errorf("dead letter %d: Time %v, want %v in UTC", want.ID, got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dead letter %d:\n\tgot  %#v\n\twant %#v", want.ID, got, want)
	}
}

func (h *harness) deadLetterAdd(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	d1 := addDeadLetter(t, s, nil, deadLetter("orders", "sub", "t", store.ReasonExhausted, 1))
	var d2 int64
	commit(t, s, func(tx *sql.Tx) {
		d2 = addDeadLetter(t, s, tx, deadLetter("orders", "sub", "t", store.ReasonExhausted, 2))
		claim(t, s, tx, "sub", "ev-2", true) // settled together with its inbox row
	})
	rollback(t, s, func(tx *sql.Tx) {
		addDeadLetter(t, s, tx, deadLetter("orders", "sub", "t", store.ReasonExhausted, 3))
	})
	d4 := addDeadLetter(t, s, nil, deadLetter("orders", "sub", "t", store.ReasonExhausted, 4))
	if !(d1 < d2 && d2 < d4) {
		t.Errorf("ids %d, %d, %d: not increasing", d1, d2, d4)
	}
	all, err := s.DeadLetterList(ctx, store.DeadLetterFilter{})
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if got, want := dlIDs(all), []int64{d1, d2, d4}; !slices.Equal(got, want) {
		t.Fatalf("DeadLetters ids %v, want %v (the rolled-back one must not be stored)", got, want)
	}
	for i, d := range all {
		if want := []string{"ev-1", "ev-2", "ev-4"}[i]; d.EventID != want {
			t.Errorf("dead letter %d: event %s, want %s", d.ID, d.EventID, want)
		}
	}
}

func (h *harness) deadLetterRoundTrip(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	full := deadLetter("orders", "billing.orders", "shop.order.confirmed", store.ReasonMalformed, 7)
	full.Time = full.Time.In(time.FixedZone("UTC-3", -3*3600)).Add(time.Nanosecond)
	full.Data = make([]byte, 4096)
	for i := range full.Data {
		full.Data[i] = byte(255 - i)
	}
	bare := store.DeadLetter{Service: "orders", Subscription: "s", Reason: store.ReasonUnknownType, Time: t0}
	empty := store.DeadLetter{Service: "orders", Subscription: "s", Reason: store.ReasonVersion, Time: t0,
		Header: map[string]string{}, Data: []byte{}}
	for _, want := range []store.DeadLetter{full, bare, empty} {
		id := addDeadLetter(t, s, nil, want)
		got, err := s.DeadLetterGet(ctx, id)
		if err != nil {
			t.Fatalf("DeadLetter(%d): %v", id, err)
		}
		want.ID = id
		if len(want.Data) == 0 {
			want.Data = nil // empty data reads back as nil
		}
		checkDeadLetter(t, want, got)
	}
	// A zero Time is stamped with the current time.
	before := time.Now()
	id := addDeadLetter(t, s, nil, store.DeadLetter{Service: "orders", Subscription: "s", Reason: store.ReasonPermanent})
	after := time.Now()
	got, err := s.DeadLetterGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Time.Before(before.Truncate(time.Microsecond)) || got.Time.After(after.Add(time.Microsecond)) {
		t.Errorf("zero Time stored as %v, want between %v and %v", got.Time, before, after)
	}
}

func (h *harness) addDeadLetterSet(t *testing.T, s *store.Store) []store.DeadLetter {
	t.Helper()
	var all []store.DeadLetter
	i := 0
	for _, service := range []string{"orders", "billing"} {
		for _, sub := range []string{"a", "b", ""} { // "": producer side
			for _, typ := range []string{"t1", "t2"} {
				reason := []string{store.ReasonExhausted, store.ReasonPermanent, store.ReasonMalformed}[i%3]
				d := deadLetter(service, sub, typ, reason, i)
				if sub == "" {
					d.Key = fmt.Sprintf("key-%d", i%2)
				}
				d.ID = addDeadLetter(t, s, nil, d)
				all = append(all, d)
				i++
			}
		}
	}
	return all
}

// match is the reference implementation of DeadLetterFilter.
func match(all []store.DeadLetter, f store.DeadLetterFilter) []int64 {
	var out []int64
	for _, d := range all {
		if (f.Service == "" || d.Service == f.Service) &&
			(f.Subscription == "" || d.Subscription == f.Subscription) &&
			(f.Type == "" || d.Type == f.Type) &&
			(f.Reason == "" || d.Reason == f.Reason) &&
			(!f.ProducerSide || d.Subscription == "") &&
			(len(f.IDs) == 0 || slices.Contains(f.IDs, d.ID)) {
			out = append(out, d.ID)
		}
	}
	slices.Sort(out)
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

func filters(all []store.DeadLetter) map[string]store.DeadLetterFilter {
	return map[string]store.DeadLetterFilter{
		"all":                    {},
		"service":                {Service: "billing"},
		"subscription":           {Subscription: "b"},
		"type":                   {Type: "t2"},
		"reason":                 {Reason: store.ReasonPermanent},
		"ids":                    {IDs: []int64{all[5].ID, all[1].ID, all[6].ID, 1 << 50}},
		"limit":                  {Limit: 3},
		"service+subscription":   {Service: "orders", Subscription: "b"},
		"service+type+reason":    {Service: "billing", Type: "t1", Reason: store.ReasonExhausted},
		"ids+service":            {IDs: []int64{all[0].ID, all[4].ID, all[7].ID}, Service: "billing"},
		"subscription+limit":     {Subscription: "a", Limit: 2},
		"no match":               {Service: "nobody"},
		"unknown reason":         {Reason: "no-such-reason"},
		"limit beyond the count": {Limit: 100},
		"producer side":          {ProducerSide: true},
		"producer side+service":  {ProducerSide: true, Service: "orders", Limit: 1},
		"producer side+reason":   {ProducerSide: true, Reason: store.ReasonExhausted},
	}
}

func (h *harness) deadLetterFilter(t *testing.T) {
	s := h.open(t)
	all := h.addDeadLetterSet(t, s)
	fs := filters(all)
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		f := fs[name]
		got, err := s.DeadLetterList(context.Background(), f)
		if err != nil {
			t.Fatalf("%s: DeadLetters: %v", name, err)
		}
		if g, w := dlIDs(got), match(all, f); !slices.Equal(g, w) {
			t.Errorf("%s: DeadLetters(%+v) ids %v, want %v", name, f, g, w)
		}
	}
	// The listed dead letters are complete.
	got, err := s.DeadLetterList(context.Background(), store.DeadLetterFilter{IDs: []int64{all[3].ID}})
	if err != nil || len(got) != 1 {
		t.Fatalf("DeadLetters(one id) = %d, %v", len(got), err)
	}
	checkDeadLetter(t, all[3], got[0])
}

func (h *harness) deadLetterDelete(t *testing.T) {
	fs := filters(make([]store.DeadLetter, 8))
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			s := h.open(t)
			ctx := context.Background()
			all := h.addDeadLetterSet(t, s)
			f := filters(all)[name]
			gone := match(all, f)
			n, err := s.DeadLetterDeleteMany(ctx, f)
			if err != nil {
				t.Fatalf("DeleteDeadLetters: %v", err)
			}
			if n != int64(len(gone)) {
				t.Errorf("DeleteDeadLetters(%+v) = %d, want %d", f, n, len(gone))
			}
			left, err := s.DeadLetterList(ctx, store.DeadLetterFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			for _, d := range all {
				if !slices.Contains(gone, d.ID) {
					want = append(want, d.ID)
				}
			}
			if g := dlIDs(left); !slices.Equal(g, want) {
				t.Errorf("left after DeleteDeadLetters(%+v): %v, want %v", f, g, want)
			}
		})
	}
}

func (h *harness) deadLetterNotFound(t *testing.T) {
	s := h.open(t)
	if _, err := s.DeadLetterGet(context.Background(), 12345); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeadLetter(unknown): err = %v, want ErrNotFound", err)
	}
	id := addDeadLetter(t, s, nil, deadLetter("orders", "s", "t", store.ReasonExhausted, 1))
	if _, err := s.DeadLetterDeleteMany(context.Background(), store.DeadLetterFilter{IDs: []int64{id}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeadLetterGet(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeadLetter(deleted): err = %v, want ErrNotFound", err)
	}
}

// ---- leases ----

func acquire(t *testing.T, s *store.Store, name, holder string, ttl time.Duration, want bool) {
	eng := store.EngineOf(s)
	t.Helper()
	got, err := eng.LeaseAcquire(context.Background(), store.LeaseAcquireParams{Name: name, Holder: holder, TTL: ttl})
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", name, holder, err)
	}
	if got != want {
		t.Fatalf("AcquireLease(%s, %s) = %v, want %v", name, holder, got, want)
	}
}

func (h *harness) leaseExclusive(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	acquire(t, s, "relay.orders", "i1", time.Minute, true)
	acquire(t, s, "relay.orders", "i1", time.Minute, true) // renew
	acquire(t, s, "relay.orders", "i2", time.Minute, false)
	acquire(t, s, "relay.billing", "i2", time.Minute, true) // another lease
	acquire(t, s, "relay.billing", "i1", time.Minute, false)
	acquire(t, s, "relay.orders", "i1", time.Minute, true)

	// Concurrent candidates for a free lease: exactly one wins.
	var wins sync.Map
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			holder := fmt.Sprintf("c%d", i)
			ok, err := eng.LeaseAcquire(context.Background(), store.LeaseAcquireParams{Name: "relay.race", Holder: holder, TTL: time.Minute})
			if err != nil {
				errc <- err
			} else if ok {
				wins.Store(holder, true)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("AcquireLease: %v", err)
	}
	n := 0
	wins.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d concurrent candidates got the free lease, want 1", n)
	}
}

func (h *harness) leaseExpiry(t *testing.T) {
	s := h.open(t)
	// Only expiry is timed, with a wide margin: 50ms ttl, 300ms sleep.
	acquire(t, s, "relay.orders", "i1", 50*time.Millisecond, true)
	acquire(t, s, "relay.billing", "i1", 50*time.Millisecond, true)
	time.Sleep(300 * time.Millisecond)
	acquire(t, s, "relay.orders", "i2", time.Minute, true) // expired: taken over
	acquire(t, s, "relay.orders", "i1", time.Minute, false)
	acquire(t, s, "relay.billing", "i1", time.Minute, true) // expired but still its own: renewed
	acquire(t, s, "relay.billing", "i2", time.Minute, false)
}

func (h *harness) leaseRelease(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	acquire(t, s, "relay.orders", "i1", time.Hour, true)
	// Only the holder can release.
	if err := eng.LeaseRelease(ctx, "relay.orders", "i2"); err != nil {
		t.Fatalf("ReleaseLease by a non-holder: %v", err)
	}
	acquire(t, s, "relay.orders", "i2", time.Hour, false)
	if err := eng.LeaseRelease(ctx, "relay.orders", "i1"); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	acquire(t, s, "relay.orders", "i2", time.Hour, true) // at once, long before expiry
	acquire(t, s, "relay.orders", "i1", time.Hour, false)
	if err := eng.LeaseRelease(ctx, "no.such.lease", "i1"); err != nil {
		t.Fatalf("ReleaseLease of an unknown lease: %v", err)
	}
}

// ---- migrations ----

type migrationRow struct {
	Version int
	Name    string
}

func migrationRows(t *testing.T, s *store.Store) []migrationRow {
	t.Helper()
	rows, err := s.DB().Query("SELECT version, name FROM herald_migrations ORDER BY version")
	if err != nil {
		t.Fatalf("read herald_migrations: %v", err)
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var r migrationRow
		if err := rows.Scan(&r.Version, &r.Name); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkMigrations asserts that herald_migrations records each migration
// exactly once.
func (h *harness) checkMigrations(t *testing.T, s *store.Store) []migrationRow {
	t.Helper()
	got := migrationRows(t, s)
	if len(got) == 0 {
		t.Fatal("herald_migrations is empty")
	}
	for i, r := range got {
		if r.Version != i+1 {
			t.Fatalf("herald_migrations versions %v: want 1..%d, each once", got, len(got))
		}
	}
	if h.c.Migrations != nil {
		var want []migrationRow
		for _, m := range h.c.Migrations {
			want = append(want, migrationRow{m.Version, m.Name})
		}
		if !slices.Equal(got, want) {
			t.Fatalf("herald_migrations %v, want %v", got, want)
		}
	}
	return got
}

func (h *harness) migrateReopen(t *testing.T) {
	open := h.c.NewDB(t)
	s1 := mustOpen(t, open)
	before := h.checkMigrations(t, s1)
	e := event("orders", "shared", t0)
	commit(t, s1, func(tx *sql.Tx) { appendEventLog(t, s1, tx, e) })

	s2 := mustOpen(t, open)
	if after := h.checkMigrations(t, s2); !slices.Equal(after, before) {
		t.Fatalf("herald_migrations changed by a second open: %v, was %v", after, before)
	}
	// Same database: s2 sees s1's data, and the other way round.
	got, err := s2.EventLogGet(context.Background(), e.ID)
	if err != nil {
		t.Fatalf("second store: Event: %v", err)
	}
	checkEnvelope(t, "second store", e, got)
	acquire(t, s2, "l", "i2", time.Minute, true)
	acquire(t, s1, "l", "i1", time.Minute, false)
}

func (h *harness) migrateConcurrent(t *testing.T) {
	const n = 6
	open := h.c.NewDB(t)
	for _, round := range []string{"fresh", "migrated"} {
		stores := make([]*store.Store, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				stores[i], errs[i] = open()
			})
		}
		close(start)
		wg.Wait()
		for i, s := range stores {
			if s != nil {
				t.Cleanup(func() { s.Close() })
			}
			if errs[i] != nil {
				t.Errorf("%s database: concurrent open %d: %v", round, i, errs[i])
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		h.checkMigrations(t, stores[0])
		// Every store works on the shared schema.
		for i, s := range stores {
			acquire(t, s, fmt.Sprintf("%s-%d", round, i), "me", time.Minute, true)
		}
	}
}

func (h *harness) migrateNewer(t *testing.T) {
	open := h.c.NewDB(t)
	s := mustOpen(t, open)
	next := len(h.checkMigrations(t, s)) + 1
	if _, err := s.DB().Exec(s.Rebind("INSERT INTO herald_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
		next, "from_the_future", time.Now().UnixNano()); err != nil {
		t.Fatalf("fake a newer schema: %v", err)
	}
	s2, err := open()
	if err == nil {
		s2.Close()
		t.Fatal("opening a database with a newer schema succeeded; want an error")
	}
	if !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), fmt.Sprint(next)) {
		t.Fatalf("error %q should say the schema version %d is newer", err, next)
	}
	// Nothing was changed by the failed open.
	if got := migrationRows(t, s); len(got) != next {
		t.Fatalf("herald_migrations has %d rows after the failed open, want %d", len(got), next)
	}
}

func loadMigrationErrors(t *testing.T) {
	file := func(body string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(body)} }
	for _, tc := range []struct {
		name    string
		files   fstest.MapFS
		wantErr string // "" for success
		want    []store.Migration
	}{
		{
			name: "ok, unsorted, other files ignored",
			files: fstest.MapFS{
				"m/0002_leases.sql":    file("CREATE TABLE b (x INT);"),
				"m/0001_init.sql":      file("CREATE TABLE a (x INT);"),
				"m/README.md":          file("not a migration"),
				"m/sub/0003_x.sql":     file("in a sub directory"),
				"other/0003_later.sql": file("another dir"),
			},
			want: []store.Migration{
				{Version: 1, Name: "init", SQL: "CREATE TABLE a (x INT);"},
				{Version: 2, Name: "leases", SQL: "CREATE TABLE b (x INT);"},
			},
		},
		{name: "gap", files: fstest.MapFS{"m/0001_a.sql": file("a"), "m/0003_c.sql": file("c")}, wantErr: "expected version 2"},
		{name: "not from 1", files: fstest.MapFS{"m/0002_b.sql": file("b")}, wantErr: "expected version 1"},
		{name: "zero", files: fstest.MapFS{"m/0000_z.sql": file("z"), "m/0001_a.sql": file("a")}, wantErr: "expected version 1"},
		{name: "duplicate", files: fstest.MapFS{"m/0001_a.sql": file("a"), "m/0001_b.sql": file("b")}, wantErr: "expected version 2"},
		{name: "no number", files: fstest.MapFS{"m/init.sql": file("x")}, wantErr: "NNNN_name.sql"},
		{name: "no underscore", files: fstest.MapFS{"m/0001.sql": file("x")}, wantErr: "NNNN_name.sql"},
		{name: "not a number", files: fstest.MapFS{"m/00x1_init.sql": file("x")}, wantErr: "NNNN_name.sql"},
		{name: "missing dir", files: fstest.MapFS{"other/0001_a.sql": file("a")}, wantErr: "m"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			got, err := store.LoadMigrations(tc.files, "m")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadMigrations: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("LoadMigrations = %+v, want %+v", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadMigrations = %+v, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadMigrations error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

// ---- closed ----

func (h *harness) closed(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	tx, err := eng.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	calls := map[string]func() error{
		// The engine's side.
		"Begin":          func() error { _, err := eng.Begin(ctx); return err },
		"EventLogAppend": func() error { return eng.EventLogAppend(ctx, tx, events("o", "x", 1)) },
		"OutboxAppend":   func() error { return eng.OutboxAppend(ctx, tx, events("o", "x", 1)) },
		"OutboxPendingList": func() error {
			_, err := eng.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "o", Limit: 1})
			return err
		},
		"OutboxMarkPublished":  func() error { return eng.OutboxMarkPublished(ctx, []int64{1}, t0) },
		"OutboxRepublishSince": func() error { _, err := eng.OutboxRepublishSince(ctx, "o", t0); return err },
		"OutboxPrune":          func() error { _, err := eng.OutboxPrune(ctx, t0); return err },
		"OutboxMarkUpTo": func() error {
			return eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "o", From: 0, UpTo: 1, At: t0})
		},
		"OutboxCursor":       func() error { _, err := eng.OutboxCursor(ctx, "o"); return err },
		"Engine.OutboxStats": func() error { _, _, err := eng.OutboxStats(ctx, "o"); return err },
		"InboxClaim":         func() error { _, err := eng.InboxClaim(ctx, tx, "s", "e"); return err },
		"InboxClaimMany":     func() error { _, err := eng.InboxClaimMany(ctx, tx, "s", []string{"e"}); return err },
		"InboxPrune":         func() error { _, err := eng.InboxPrune(ctx, t0); return err },
		"EventLogPrune":      func() error { _, err := eng.EventLogPrune(ctx, t0); return err },
		"DeadLetterInsert":   func() error { _, err := eng.DeadLetterInsert(ctx, nil, store.DeadLetter{}); return err },
		"LeaseAcquire": func() error {
			_, err := eng.LeaseAcquire(ctx, store.LeaseAcquireParams{Name: "l", Holder: "h", TTL: time.Minute})
			return err
		},
		"LeaseRelease": func() error { return eng.LeaseRelease(ctx, "l", "h") },
		"EventAppend": func() error {
			return eng.EventAppend(ctx, tx, store.EventAppendParams{Log: events("o", "x", 1), Outbox: events("o", "y", 1)})
		},
		"InboxRelease":        func() error { return eng.InboxRelease(ctx, "s", "e") },
		"OutboxLastPublished": func() error { _, err := eng.OutboxLastPublished(ctx, "o"); return err },
		"OutboxListen":        func() error { return eng.OutboxListen(ctx, func(string) {}) },
		"OutboxPark":          func() error { _, err := eng.OutboxPark(ctx, "o", nil); return err },
		"OutboxParkedKeys":    func() error { _, err := eng.OutboxParkedKeys(ctx, "o"); return err },
		"OutboxReplayParked":  func() error { _, err := eng.OutboxReplayParked(ctx, "o", store.DeadLetterFilter{}); return err },
		// The users' side, with the deprecated names.
		"OutboxStats":               func() error { _, _, err := s.OutboxStats(ctx, "o"); return err },
		"EventLogGet":               func() error { _, err := s.EventLogGet(ctx, "x"); return err },
		"EventLogListByCorrelation": func() error { _, err := s.EventLogListByCorrelation(ctx, "x"); return err },
		"DeadLetterGet":             func() error { _, err := s.DeadLetterGet(ctx, 1); return err },
		"DeadLetterList":            func() error { _, err := s.DeadLetterList(ctx, store.DeadLetterFilter{}); return err },
		"DeadLetterDeleteMany":      func() error { _, err := s.DeadLetterDeleteMany(ctx, store.DeadLetterFilter{}); return err },
		"Event":                     func() error { _, err := s.Event(ctx, "x"); return err },
		"EventsByCorrelation":       func() error { _, err := s.EventsByCorrelation(ctx, "x"); return err },
		"DeadLetter":                func() error { _, err := s.DeadLetter(ctx, 1); return err },
		"DeadLetters":               func() error { _, err := s.DeadLetters(ctx, store.DeadLetterFilter{}); return err },
		"DeleteDeadLetters":         func() error { _, err := s.DeleteDeadLetters(ctx, store.DeadLetterFilter{}); return err },
	}
	for _, name := range slices.Sorted(maps.Keys(calls)) {
		if err := calls[name](); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
}

// ---- producer-side dead letters ----

// keyed returns n events of service with key key, ids prefix-0000….
func keyed(service, prefix, key string, n int) []*envelope.Envelope {
	out := events(service, prefix, n)
	for _, e := range out {
		e.Key = key
	}
	return out
}

// parkRows parks rows with reason and checks that each became a dead
// letter; it returns their ids.
func parkRows(t *testing.T, s *store.Store, service, reason string, rows ...store.OutboxRow) []int64 {
	eng := store.EngineOf(s)
	t.Helper()
	ps := make([]store.Park, len(rows))
	for i, r := range rows {
		ps[i] = store.Park{Row: r, Reason: reason, LastError: "refused: " + r.Event.ID, Attempts: i + 1}
	}
	res, err := eng.OutboxPark(context.Background(), service, ps)
	if err != nil {
		t.Fatalf("ParkOutbox: %v", err)
	}
	ids := make([]int64, len(res))
	for i, r := range res {
		if r.DeadLetter == 0 || r.Gone {
			t.Fatalf("ParkOutbox(%s) = %+v, want a dead letter", rows[i].Event.ID, r)
		}
		ids[i] = r.DeadLetter
	}
	return ids
}

func parkedKeys(t *testing.T, s *store.Store, service string) map[string]string {
	eng := store.EngineOf(s)
	t.Helper()
	keys, err := eng.OutboxParkedKeys(context.Background(), service)
	if err != nil {
		t.Fatalf("ParkedKeys: %v", err)
	}
	return keys
}

func producerSide(t *testing.T, s *store.Store, service string) []store.DeadLetter {
	t.Helper()
	dls, err := s.DeadLetterList(context.Background(), store.DeadLetterFilter{Service: service, ProducerSide: true})
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	return dls
}

// parkOutbox: a parked row leaves the outbox and becomes a producer-side
// dead letter carrying the whole event; its key is held, a keyless one
// holds nothing, other services are untouched.
func (h *harness) parkOutbox(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	b := keyed("orders", "b", "k-b", 1)
	none := keyed("orders", "n", "", 1)
	other := keyed("billing", "o", "k-a", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], b[0], none[0], a[1], other[0]) })
	rows := pending(t, s, "orders", 100)
	ids := parkRows(t, s, "orders", store.ReasonRefused, rows[0], rows[2])
	checkPending(t, "after parking a[0] and the keyless event", pending(t, s, "orders", 100), []*envelope.Envelope{b[0], a[1]})
	checkPending(t, "other service", pending(t, s, "billing", 100), other)
	if got, want := parkedKeys(t, s, "orders"), map[string]string{"k-a": a[0].ID}; !maps.Equal(got, want) {
		t.Errorf("ParkedKeys = %v, want %v (a keyless event holds nothing)", got, want)
	}
	if got := parkedKeys(t, s, "billing"); len(got) != 0 {
		t.Errorf("ParkedKeys(billing) = %v, want none", got)
	}
	dls := producerSide(t, s, "orders")
	if got := dlIDs(dls); !slices.Equal(got, ids) {
		t.Fatalf("producer-side dead letters %v, want %v", got, ids)
	}
	for i, want := range []*envelope.Envelope{a[0], none[0]} {
		d := dls[i]
		if !d.ProducerSide() || d.Service != "orders" || d.EventID != want.ID || d.Type != want.Type || d.Version != want.Version ||
			d.Key != want.Key || d.Reason != store.ReasonRefused || d.LastError != "refused: "+want.ID || d.Attempts != i+1 {
			t.Errorf("dead letter %d = %+v, not the parked %s", d.ID, d, want.ID)
		}
		e, err := envelope.FromBinary(d.Header, d.Data)
		if err != nil {
			t.Fatalf("dead letter %d: FromBinary: %v", d.ID, err)
		}
		checkEnvelope(t, "parked event", want, e)
	}
	// The subscriber side does not see them as its own.
	if got, err := s.DeadLetterList(ctx, store.DeadLetterFilter{Subscription: "a"}); err != nil || len(got) != 0 {
		t.Errorf("DeadLetters(subscription a) = %v, %v; want none", got, err)
	}
}

// parkHeldOnlyWhileParked: a held row is parked only while its key has
// producer-side dead letters, including one parked earlier in the same call.
func (h *harness) parkHeldOnlyWhileParked(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 3)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	rows := pending(t, s, "orders", 100)
	res, err := eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[1], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0] != (store.ParkResult{}) {
		t.Fatalf("held row of a key with nothing parked: %+v, want it left in the outbox", res[0])
	}
	checkPending(t, "nothing parked", pending(t, s, "orders", 100), a)
	res, err = eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[0], Reason: store.ReasonRefused}, {Row: rows[1], Reason: store.ReasonHeld},
		{Row: rows[2], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.DeadLetter == 0 {
			t.Errorf("row %d: %+v, want parked", i, r)
		}
	}
	checkPending(t, "all parked", pending(t, s, "orders", 100), nil)
	dls := producerSide(t, s, "orders")
	if len(dls) != 3 || dls[0].Reason != store.ReasonRefused || dls[1].Reason != store.ReasonHeld || dls[2].EventID != a[2].ID {
		t.Fatalf("dead letters %+v, want a[0] refused, a[1] and a[2] held, in order", dls)
	}
	if got := parkedKeys(t, s, "orders"); got["k-a"] != a[0].ID {
		t.Errorf("ParkedKeys = %v, want k-a held by %s, the oldest", got, a[0].ID)
	}
	// Purging the key's dead letters frees it.
	if _, err := s.DeadLetterDeleteMany(ctx, store.DeadLetterFilter{Service: "orders", ProducerSide: true}); err != nil {
		t.Fatal(err)
	}
	if got := parkedKeys(t, s, "orders"); len(got) != 0 {
		t.Errorf("ParkedKeys after purge = %v, want none", got)
	}
}

// parkGone: a row no longer in the outbox is reported gone, not parked.
func (h *harness) parkGone(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	rows := pending(t, s, "orders", 100)
	parkRows(t, s, "orders", store.ReasonRefused, rows[0])
	res, err := eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[0], Reason: store.ReasonRefused}, {Row: rows[1], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Gone || res[0].DeadLetter != 0 || res[1].DeadLetter == 0 {
		t.Fatalf("ParkOutbox = %+v, want the parked row gone and the next one held", res)
	}
	if n := len(producerSide(t, s, "orders")); n != 2 {
		t.Errorf("%d dead letters, want 2", n)
	}
}

// parkReplay: replay puts the parked events back into the outbox in the
// order they were parked, moves the key's rows still waiting in the outbox
// behind them, deletes the dead letters and frees the key.
func (h *harness) parkReplay(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 4)
	b := keyed("orders", "b", "k-b", 2)
	none := keyed("orders", "n", "", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], b[0], a[1], none[0]) })
	rows := pending(t, s, "orders", 100)
	parkRows(t, s, "orders", store.ReasonRefused, rows[0], rows[3])
	parkRows(t, s, "orders", store.ReasonHeld, rows[2])
	// a[2] arrives and waits in the outbox (the relay has not parked it yet).
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[2], b[1]) })
	got, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{})
	if err != nil {
		t.Fatalf("ReplayParked: %v", err)
	}
	if ids := dlEventIDs(got); !slices.Equal(ids, envIDs([]*envelope.Envelope{a[0], none[0], a[1]})) {
		t.Fatalf("ReplayParked returned %v", ids)
	}
	checkPending(t, "after replay", pending(t, s, "orders", 100), []*envelope.Envelope{b[0], b[1], a[0], none[0], a[1], a[2]})
	if n := len(producerSide(t, s, "orders")); n != 0 {
		t.Errorf("%d producer-side dead letters left, want 0", n)
	}
	if got := parkedKeys(t, s, "orders"); len(got) != 0 {
		t.Errorf("ParkedKeys after replay = %v, want none", got)
	}
	if got, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{}); err != nil || len(got) != 0 {
		t.Errorf("second ReplayParked = %v, %v; want nothing", got, err)
	}
}

func dlEventIDs(ds []store.DeadLetter) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.EventID
	}
	return out
}

// parkReplayPart: replay takes a key's parked events together, whatever
// part of them the filter selects — putting back only the held one would
// let the refused one, parked again behind it, come out after it — and
// nothing of other services or of subscriptions.
func (h *harness) parkReplayPart(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	c := keyed("orders", "c", "k-c", 1)
	other := keyed("billing", "o", "k-a", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], a[1], c[0], other[0]) })
	rows := pending(t, s, "orders", 100)
	first := parkRows(t, s, "orders", store.ReasonRefused, rows[0])[0]
	held := parkRows(t, s, "orders", store.ReasonHeld, rows[1])[0]
	otherKey := parkRows(t, s, "orders", store.ReasonRefused, rows[2])[0]
	parkRows(t, s, "billing", store.ReasonRefused, pending(t, s, "billing", 100)...)
	sub := addDeadLetter(t, s, nil, deadLetter("orders", "track", "t", store.ReasonExhausted, 1))
	got, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{IDs: []int64{held, sub}})
	if err != nil || !slices.Equal(dlIDs(got), []int64{first, held}) {
		t.Fatalf("ReplayParked(held, subscriber's) = %v, %v; want k-a's chain %v", dlIDs(got), err, []int64{first, held})
	}
	checkPending(t, "after replaying k-a", pending(t, s, "orders", 100), a)
	if got := parkedKeys(t, s, "orders"); len(got) != 1 || got["k-c"] != c[0].ID {
		t.Errorf("ParkedKeys = %v, want only k-c held", got)
	}
	left, err := s.DeadLetterList(ctx, store.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 3 || left[0].ID != otherKey || left[2].ID != sub {
		t.Errorf("dead letters left %v, want orders' k-c, billing's and the subscriber's", dlIDs(left))
	}
}

// parkHeldAfterReplay: a held row the relay read before a replay moved it
// behind the replayed events is reported gone, so the relay does not
// publish that stale copy ahead of them.
func (h *harness) parkHeldAfterReplay(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	rows := pending(t, s, "orders", 100)
	parkRows(t, s, "orders", store.ReasonRefused, rows[0])
	if _, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{}); err != nil {
		t.Fatal(err)
	}
	res, err := eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[1], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Gone || res[0].DeadLetter != 0 {
		t.Fatalf("ParkOutbox(the stale held row) = %+v, want it gone", res[0])
	}
	checkPending(t, "after replay", pending(t, s, "orders", 100), a)
}

// parkRangeMarks: parking and replay work with the relay's range marks:
// a mark past parked rows covers only what is left, and replay moves only
// the rows after the newest mark (those before it were published).
func (h *harness) parkRangeMarks(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 4)
	b := keyed("orders", "b", "k-b", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], b[0], a[1], b[1], a[2]) })
	rows := pending(t, s, "orders", 100)
	// a[0] was published (range mark up to it); a[1] refused, a[2] held; b
	// published past them.
	if err := eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: 0, UpTo: rows[1].Seq, At: t0}); err != nil {
		t.Fatal(err)
	}
	parkRows(t, s, "orders", store.ReasonRefused, rows[2])
	parkRows(t, s, "orders", store.ReasonHeld, rows[4])
	if err := eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: rows[1].Seq, UpTo: rows[4].Seq, At: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	checkPending(t, "after the mark past the parked rows", pending(t, s, "orders", 100), nil)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[3]) })
	if _, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{}); err != nil {
		t.Fatal(err)
	}
	checkPending(t, "after replay", pending(t, s, "orders", 100), a[1:])
	if n, _, err := s.OutboxStats(ctx, "orders"); err != nil || n != 3 {
		t.Errorf("OutboxStats backlog = %d, %v; want 3", n, err)
	}
}

// parkReopen: the held keys are in the database: another store on it (a
// restarted relay) knows them.
func (h *harness) parkReopen(t *testing.T) {
	open := h.c.NewDB(t)
	s := mustOpen(t, open)
	a := keyed("orders", "a", "k-a", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	parkRows(t, s, "orders", store.ReasonRefused, pending(t, s, "orders", 100)...)
	s.Close()
	s2 := mustOpen(t, open)
	if got := parkedKeys(t, s2, "orders"); got["k-a"] != a[0].ID {
		t.Errorf("ParkedKeys after reopening = %v, want k-a held by %s", got, a[0].ID)
	}
}
