package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/store/storetest"
)

func TestConformance(t *testing.T) {
	ms, err := store.LoadMigrations(sqlite.MigrationsFS, "migrations")
	if err != nil {
		t.Fatalf("load migrations: %v", err)
	}
	storetest.Run(t, storetest.Config{
		NewDB: func(t *testing.T) func() (*store.Store, error) {
			path := filepath.Join(t.TempDir(), "herald.db")
			return func() (*store.Store, error) { return sqlite.Open(context.Background(), path) }
		},
		Migrations: ms,
	})
}

func open(t *testing.T, path string, opts ...sqlite.Option) *store.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, opts...)
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOptionValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		path string
		opts []sqlite.Option
		ok   bool
	}{
		{name: "defaults", ok: true},
		{name: "all valid", ok: true, opts: []sqlite.Option{sqlite.WithBusyTimeout(time.Second), sqlite.WithSynchronous("NORMAL"), sqlite.WithMaxOpenConns(1)}},
		{name: "synchronous EXTRA", ok: true, opts: []sqlite.Option{sqlite.WithSynchronous("EXTRA")}},
		{name: "synchronous OFF", ok: true, opts: []sqlite.Option{sqlite.WithSynchronous("OFF")}},
		{name: "zero busy timeout", opts: []sqlite.Option{sqlite.WithBusyTimeout(0)}},
		{name: "negative busy timeout", opts: []sqlite.Option{sqlite.WithBusyTimeout(-time.Second)}},
		{name: "unknown synchronous", opts: []sqlite.Option{sqlite.WithSynchronous("SOMETIMES")}},
		{name: "empty synchronous", opts: []sqlite.Option{sqlite.WithSynchronous("")}},
		{name: "synchronous injection", opts: []sqlite.Option{sqlite.WithSynchronous("FULL); DROP TABLE x; --")}},
		{name: "zero max open conns", opts: []sqlite.Option{sqlite.WithMaxOpenConns(0)}},
		{name: "negative max open conns", opts: []sqlite.Option{sqlite.WithMaxOpenConns(-1)}},
		{name: "bad option after good ones", opts: []sqlite.Option{sqlite.WithMaxOpenConns(2), sqlite.WithBusyTimeout(0)}},
		{name: "empty path", path: "-"},
		{name: "in-memory database", path: ":memory:"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "herald.db")
			switch tc.path {
			case "":
			case "-":
				path = ""
			default:
				path = tc.path
			}
			s, err := sqlite.Open(context.Background(), path, tc.opts...)
			if tc.ok {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				s.Close()
			} else {
				if err == nil {
					s.Close()
					t.Fatal("Open succeeded, want an error")
				}
				if !errors.Is(err, sqlite.ErrInvalidOption) {
					t.Fatalf("Open error %v does not wrap ErrInvalidOption", err)
				}
			}
			if tc.path != "" {
				return // DSN takes no such path check
			}
			_, err = sqlite.DSN(path, tc.opts...)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, sqlite.ErrInvalidOption)) {
				t.Fatalf("DSN: err = %v, want ok=%v or ErrInvalidOption", err, tc.ok)
			}
		})
	}
}

func pragma(t *testing.T, c *sql.Conn, name string) string {
	t.Helper()
	var v string
	if err := c.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestPragmas(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		opts        []sqlite.Option
		sync, busy  string
		connections int
	}{
		{name: "defaults", sync: "2", busy: "10000", connections: 8},
		{name: "options", opts: []sqlite.Option{sqlite.WithSynchronous("NORMAL"), sqlite.WithBusyTimeout(1500 * time.Millisecond), sqlite.WithMaxOpenConns(3)},
			sync: "1", busy: "1500", connections: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "herald.db"), tc.opts...)
			// Every connection of the pool, not just the first, is set up.
			var conns []*sql.Conn
			for range tc.connections {
				c, err := s.DB().Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns = append(conns, c)
			}
			if got := s.DB().Stats().OpenConnections; got != tc.connections {
				t.Fatalf("%d open connections, want %d", got, tc.connections)
			}
			for i, c := range conns {
				if got := pragma(t, c, "journal_mode"); got != "wal" {
					t.Errorf("conn %d: journal_mode %q, want wal", i, got)
				}
				if got := pragma(t, c, "synchronous"); got != tc.sync {
					t.Errorf("conn %d: synchronous %s, want %s", i, got, tc.sync)
				}
				if got := pragma(t, c, "busy_timeout"); got != tc.busy {
					t.Errorf("conn %d: busy_timeout %s, want %s", i, got, tc.busy)
				}
				if got := pragma(t, c, "foreign_keys"); got != "1" {
					t.Errorf("conn %d: foreign_keys %s, want 1", i, got)
				}
			}
		})
	}
	dsn, err := sqlite.DSN("/tmp/x.db")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"_txlock=immediate", "journal_mode%28WAL%29", "synchronous%28FULL%29", "busy_timeout%2810000%29"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN %s lacks %s", dsn, want)
		}
	}
}

// TestImmediateTransactions checks that Begin takes the write lock at once,
// before the transaction writes anything: another connection that does not
// wait for locks cannot write while it is open.
func TestImmediateTransactions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herald.db")
	s := open(t, path)
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	write := func() error {
		_, err := other.ExecContext(ctx, "INSERT INTO herald_leases (name, holder, expires_at) VALUES ('l', 'other', 0) ON CONFLICT DO NOTHING")
		return err
	}

	tx, err := store.EngineOf(s).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := write(); err == nil {
		t.Fatal("another connection wrote while a store transaction that has not written yet was open: Begin is not immediate")
	} else if !strings.Contains(err.Error(), "locked") && !strings.Contains(err.Error(), "BUSY") {
		t.Fatalf("write during a store transaction: %v, want SQLITE_BUSY", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := write(); err != nil {
		t.Fatalf("write after the transaction ended: %v", err)
	}
}

// TestConcurrentWriteTransactions runs read-then-write transactions from
// many goroutines. With deferred transactions two of them would both read,
// and the second to write would fail with SQLITE_BUSY at once (its snapshot
// is stale); immediate transactions and the busy timeout make them queue.
func TestConcurrentWriteTransactions(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "herald.db"))

	// Two transactions, the second starting while the first holds the lock.
	first := make(chan struct{})
	errc := make(chan error, 128)
	var wg sync.WaitGroup
	readThenWrite := func(name string, hold func()) error {
		tx, err := store.EngineOf(s).Begin(ctx)
		if err != nil {
			return fmt.Errorf("%s: begin: %w", name, err)
		}
		defer tx.Rollback()
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM herald_outbox").Scan(&n); err != nil {
			return fmt.Errorf("%s: read: %w", name, err)
		}
		if err := store.EngineOf(s).OutboxAppend(ctx, tx, []*envelope.Envelope{{ID: name, Source: "orders", Time: time.Now()}}); err != nil {
			return fmt.Errorf("%s: write: %w", name, err)
		}
		if hold != nil {
			hold()
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("%s: commit: %w", name, err)
		}
		return nil
	}
	wg.Go(func() {
		errc <- readThenWrite("first", func() {
			close(first)
			time.Sleep(100 * time.Millisecond) // let the second one contend
		})
	})
	wg.Go(func() {
		<-first
		errc <- readThenWrite("second", nil)
	})
	wg.Wait()

	// And many at once.
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				errc <- readThenWrite(fmt.Sprintf("g%d-%d", g, i), nil)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	if n, _, err := s.OutboxStats(ctx, "orders"); err != nil || n != 82 {
		t.Fatalf("OutboxStats = %d, %v; want 82 rows", n, err)
	}
}

// TestPathSpecialCharacters opens databases whose paths contain characters
// that are special in SQLite URIs or in the driver's DSN.
func TestPathSpecialCharacters(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"a#b.db", "100%41.db", "q?_pragma=x.db", "sp ace&amp;=.db", "ünï.db"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "dir #1 %20?")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			s := open(t, path)
			ok, err := store.EngineOf(s).LeaseAcquire(ctx, store.LeaseAcquireParams{Name: "l", Holder: "me", TTL: time.Minute})
			if err != nil || !ok {
				t.Fatalf("LeaseAcquire = %v, %v", ok, err)
			}
			c, err := s.DB().Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := pragma(t, c, "busy_timeout"); got != "10000" {
				t.Errorf("busy_timeout %s, want 10000: the DSN's parameters were lost", got)
			}
			c.Close()
			s.Close()
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("database not created at its path: %v", err)
			}
			// The same file again.
			s2 := open(t, path)
			if ok, err := store.EngineOf(s2).LeaseAcquire(ctx, store.LeaseAcquireParams{Name: "l", Holder: "other", TTL: time.Minute}); err != nil || ok {
				t.Fatalf("LeaseAcquire on the reopened database = %v, %v; want false (lease kept)", ok, err)
			}
		})
	}
}

// TestSharedDB: Close closes the database New was given, unless SharedDB
// says the caller owns it.
func TestSharedDB(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []store.NewOption
		openLeft bool
	}{
		{"owned", nil, false},
		{"shared", []store.NewOption{store.SharedDB()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "h.db")
			db := sql.OpenDB(sqlite.NewConnector("file:"+path+"?_pragma=journal_mode(WAL)", time.Second))
			t.Cleanup(func() { db.Close() })
			s, err := store.New(ctx, db, sqlite.Dialect(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			err = db.PingContext(ctx)
			if tc.openLeft && err != nil {
				t.Fatalf("Close closed a shared database: ping: %v", err)
			}
			if !tc.openLeft && err == nil {
				t.Fatal("Close left the database it owns open")
			}
		})
	}
}

// TestUpgradeToStreams opens a database made before aggregates' streams
// (migrations 1–5) with an event in its log: the event reads back after the
// upgrade, is no stream's, and retention still prunes it.
func TestUpgradeToStreams(t *testing.T) {
	ctx := context.Background()
	ms, err := store.LoadMigrations(sqlite.MigrationsFS, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "old.db")
	dsn, err := sqlite.DSN(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.ApplyMigrations(ctx, tx, ms[:5], func(q string) string { return q }); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	id := envelope.NewID(old)
	if _, err := tx.Exec(`INSERT INTO herald_event_log (id, service, type, version, kind, partition_key, event_time,
		correlation_id, causation_id, traceparent, tracestate, content_type, data) VALUES (?, 'inv', 'inv.x', 1, 'domain', '', ?, ?, '', '', '', 'application/json', X'7b7d')`,
		id, old.UnixNano(), id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := open(t, path)
	e, err := s.EventLogGet(ctx, id)
	if err != nil || e.Type != "inv.x" || string(e.Data) != "{}" {
		t.Fatalf("old event after the upgrade: %+v, %v", e, err)
	}
	var streams int
	if err := s.DB().QueryRow(`SELECT COUNT(*) FROM herald_event_log WHERE aggregate_type IS NOT NULL`).Scan(&streams); err != nil || streams != 0 {
		t.Fatalf("events in streams after the upgrade: %d, %v", streams, err)
	}
	if n, err := store.EngineOf(s).EventLogPrune(ctx, time.Now()); err != nil || n != 1 {
		t.Fatalf("EventLogPrune after the upgrade = %d, %v; want the old event pruned", n, err)
	}
}
