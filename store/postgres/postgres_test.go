package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/storetest"
	"github.com/jackc/pgx/v5"
)

func needServer(t *testing.T) {
	t.Helper()
	if os.Getenv(testdb.EnvPostgres) == "" {
		t.Skipf("PostgreSQL tests skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", testdb.EnvPostgres)
	}
}

func TestConformance(t *testing.T) {
	needServer(t)
	ms, err := store.LoadMigrations(postgres.MigrationsFS, "migrations")
	if err != nil {
		t.Fatalf("load migrations: %v", err)
	}
	storetest.Run(t, storetest.Config{
		NewDB: func(t *testing.T) func() (*store.Store, error) {
			url := testdb.PostgresURL(t) // a fresh schema, dropped when t ends
			return func() (*store.Store, error) { return postgres.Open(context.Background(), url) }
		},
		Migrations: ms,
	})
}

func TestOpenInvalidURL(t *testing.T) {
	for _, url := range []string{
		"",
		"postgres://postgres@127.0.0.1:notaport/test",
		"postgres://postgres@127.0.0.1:5432/test?sslmode=sometimes",
		"host=127.0.0.1 port=abc",
		"postgres://%zz@127.0.0.1/test",
		"not a url = at all =",
	} {
		t.Run(url, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := postgres.Open(ctx, url)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded, want an error", url)
			}
			if !errors.Is(err, postgres.ErrInvalidOption) {
				t.Fatalf("Open(%q): %v, want ErrInvalidOption", url, err)
			}
		})
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5")
	if err == nil {
		s.Close()
		t.Fatal("Open of a server that is not there succeeded")
	}
	if errors.Is(err, postgres.ErrInvalidOption) {
		t.Errorf("Open: %v: a valid URL is not an invalid option", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Open error %q does not name the host and port 127.0.0.1:1", err)
	}
}

// TestNotify listens on herald_outbox, as a relay in another process does,
// and checks that a commit of outbox rows notifies each service it wrote to
// once, with the service name as payload, and that a rollback notifies no
// one.
func TestNotify(t *testing.T) {
	needServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testdb.PostgresURL(t)
	s, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN herald_outbox"); err != nil {
		t.Fatal(err)
	}

	// The channel is database-wide: other tests may notify on it too, so
	// the services get unique names and other payloads are ignored.
	tag := fmt.Sprintf("%x", rand.Uint64())
	orders, billing, rolledBack, marker := "orders-"+tag, "billing-"+tag, "rolledback-"+tag, "marker-"+tag
	ours := map[string]bool{orders: true, billing: true, rolledBack: true, marker: true}
	evs := func(service string, n int) []*envelope.Envelope {
		out := make([]*envelope.Envelope, n)
		for i := range out {
			now := time.Now()
			out[i] = &envelope.Envelope{ID: envelope.NewID(now), Type: "t", Version: 1, Kind: envelope.KindIntegration,
				Source: service, Time: now, Data: []byte("{}")}
		}
		return out
	}
	eng := store.EngineOf(s)
	inTx := func(fn func(tx *sql.Tx) error, commit bool) {
		t.Helper()
		tx, err := eng.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := fn(tx); err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}

	inTx(func(tx *sql.Tx) error { return eng.OutboxAppend(ctx, tx, evs(rolledBack, 2)) }, false)
	inTx(func(tx *sql.Tx) error {
		// Several statements (and a multi-chunk insert) in one transaction…
		if err := eng.OutboxAppend(ctx, tx, evs(orders, 1)); err != nil {
			return err
		}
		if err := eng.OutboxAppend(ctx, tx, evs(billing, 1)); err != nil {
			return err
		}
		return eng.OutboxAppend(ctx, tx, evs(orders, 1100))
	}, true)
	// …then a notification committed afterwards: notifications arrive in
	// commit order, so everything the outbox commit sent arrives before it.
	if _, err := s.DB().ExecContext(ctx, "SELECT pg_notify('herald_outbox', $1)", marker); err != nil {
		t.Fatal(err)
	}

	got := map[string]int{}
	for got[marker] == 0 {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("waiting for notifications (got %v): %v", got, err)
		}
		if n.Channel != "herald_outbox" {
			t.Fatalf("notification on channel %q", n.Channel)
		}
		if ours[n.Payload] {
			got[n.Payload]++
		}
	}
	if got[orders] != 1 || got[billing] != 1 {
		t.Errorf("notifications %v: want one each for %s and %s", got, orders, billing)
	}
	if got[rolledBack] != 0 {
		t.Errorf("a rolled-back transaction notified: %v", got)
	}
}
