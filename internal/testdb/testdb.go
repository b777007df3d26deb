// Package testdb opens throw-away herald stores for tests: an SQLite file in
// the test's temp dir, and a fresh schema on the PostgreSQL server named by
// HERALD_TEST_POSTGRES_URL (the test is skipped, with a message, when it is
// not set).
package testdb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// EnvPostgres names the variable holding the test server's URL.
const EnvPostgres = "HERALD_TEST_POSTGRES_URL"

// Dialects are the names For accepts.
var Dialects = []string{"sqlite", "postgres"}

// For opens a store of the named dialect, or skips the test.
func For(t testing.TB, dialect string) *store.Store {
	t.Helper()
	if dialect == "postgres" {
		return Postgres(t)
	}
	return SQLite(t)
}

// SQLite opens a store on a new file in t's temp dir.
func SQLite(t testing.TB, opts ...sqlite.Option) *store.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herald.db"), opts...)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// PostgresURL returns a URL of a fresh, empty schema (dropped when the test
// ends), or skips the test when HERALD_TEST_POSTGRES_URL is not set.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("PostgreSQL tests skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test)", EnvPostgres)
	}
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgres, err)
	}
	schema := fmt.Sprintf("herald_t_%d", rand.Uint64())
	admin := stdlib.OpenDB(*cfg)
	defer admin.Close()
	// Parallel test packages share the server: wait out a moment when its
	// connection slots are all taken (SQLSTATE 53300) rather than fail.
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := admin.Exec("CREATE SCHEMA " + schema)
		if err == nil {
			break
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "53300" || time.Now().After(deadline) {
			t.Fatalf("create schema on %s: %v", EnvPostgres, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() {
		db := stdlib.OpenDB(*cfg)
		defer db.Close()
		if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	u := base
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "search_path=" + schema
}

// Postgres opens a store on a fresh schema, or skips the test.
func Postgres(t testing.TB) *store.Store {
	t.Helper()
	url := PostgresURL(t)
	// Tests run in parallel packages against one server: small pools keep
	// them under its max_connections.
	s, err := postgres.Open(context.Background(), url, postgres.WithMaxOpenConns(6))
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Count returns SELECT COUNT(*) FROM table [WHERE where] on s; where may use
// ? placeholders.
func Count(t testing.TB, s *store.Store, table, where string, args ...any) int {
	t.Helper()
	q := "SELECT COUNT(*) FROM " + table
	if where != "" {
		q += " WHERE " + where
	}
	var n int
	if err := s.DB().QueryRow(s.Rebind(q), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// PostgresEnabled reports whether HERALD_TEST_POSTGRES_URL is set.
func PostgresEnabled() bool { return os.Getenv(EnvPostgres) != "" }
