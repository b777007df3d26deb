// Package postgres opens herald's store on PostgreSQL through pgx/v5. The
// outbox uses the transaction id of each row so the relay publishes in a
// gap-free commit order, and a trigger sends NOTIFY herald_outbox so relays
// wake as soon as a transaction commits.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// ErrInvalidOption wraps every error about a bad option or URL.
var ErrInvalidOption = errors.New("herald/store/postgres: invalid option")

// migrationLock is the advisory-lock key that serialises migrations.
const migrationLock int64 = 0x6865_7261_6c64 // "herald"

// Option configures Open.
type Option func(*options) error

type options struct {
	maxOpen int
}

// WithMaxOpenConns bounds the store's connection pool (default 16). Every
// pool of every process counts against the server's max_connections; the
// relay's LISTEN connection comes on top.
func WithMaxOpenConns(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max open conns %d < 1", ErrInvalidOption, n)
		}
		o.maxOpen = n
		return nil
	}
}

// Open connects to the PostgreSQL database at url (a postgres:// URL or a
// key=value DSN), applies herald's migrations and returns the store.
func Open(ctx context.Context, url string, opts ...Option) (*store.Store, error) {
	if url == "" {
		return nil, fmt.Errorf("%w: empty database URL", ErrInvalidOption)
	}
	o := options{maxOpen: 16}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidOption, err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(o.maxOpen)
	db.SetMaxIdleConns(o.maxOpen)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("herald/store/postgres: connect %s@%s:%d/%s: %w", cfg.User, cfg.Host, cfg.Port, cfg.Database, err)
	}
	s, err := store.New(ctx, db, dialect{cfg: cfg})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Dialect returns the PostgreSQL dialect, for store.New on your own *sql.DB
// (opened with the pgx stdlib driver).
func Dialect() store.Dialect { return dialect{} }

// dialect is PostgreSQL's store.Dialect. cfg, set by Open, lets Listen open
// its own connection.
type dialect struct{ cfg *pgx.ConnConfig }

func (dialect) Name() string { return "postgres" }

// Rebind turns ? placeholders into $1, $2, … (herald's queries have no ? in
// string literals).
func (dialect) Rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

func (dialect) PendingCondition() string {
	return "txid < pg_snapshot_xmin(pg_current_snapshot())"
}

// UniqueViolation: SQLSTATE 23505, unique_violation.
func (dialect) UniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func (d dialect) Migrate(ctx context.Context, db *sql.DB) error {
	ms, err := store.LoadMigrations(migrationsFS, "migrations")
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Held until commit: concurrent migrators wait here, then find the
	// schema current.
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	if err := store.ApplyMigrations(ctx, tx, ms, d.Rebind); err != nil {
		return err
	}
	return tx.Commit()
}
