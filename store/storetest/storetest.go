// Package storetest is the conformance suite of herald's store: every
// dialect (store/sqlite, store/postgres, and any future one) runs the same
// subtests through Run, so the Store and Engine methods behave the same on
// every SQL engine.
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
// The suite only uses the Store and Engine API, except where a behaviour can
// only be arranged or observed in SQL: it backdates inbox rows, fakes a newer
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
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
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
	t.Run("Streams", func(t *testing.T) {
		t.Run("Versions", h.streamVersions)
		t.Run("Snapshots", h.streamSnapshots)
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
// commit order, so that OutboxPendingList returns every committed row. On
// PostgreSQL OutboxPendingList holds back rows committed after a
// transaction that is still running anywhere on the server (that is the
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
	var n int
	testwait.UntilReport(t, time.Minute, func() bool {
		if err := s.DB().QueryRow(q).Scan(&n); err != nil {
			t.Fatalf("storetest.Settle: %v", err)
		}
		return n == 0
	}, func() string {
		return fmt.Sprintf("storetest.Settle: %d committed outbox rows still held back by transactions in flight", n)
	})
}

// pending settles, then returns OutboxPendingList of service, up to limit rows.
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
		"InboxRelease": func() error { return eng.InboxRelease(ctx, "s", "e") },
		"StreamRead": func() error {
			return eng.StreamRead(ctx, tx, store.StreamReadParams{}, func(store.StreamEvent) error { return nil })
		},
		"SnapshotGet":         func() error { _, err := eng.SnapshotGet(ctx, tx, "o", "a", "s"); return err },
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
