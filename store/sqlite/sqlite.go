// Package sqlite opens herald's store on an SQLite file through
// modernc.org/sqlite (pure Go, no cgo): WAL journal, a busy timeout,
// immediate transactions and synchronous=FULL, so a committed transaction
// survives a crash of the process or the machine.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/store"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// ErrInvalidOption wraps every error about a bad option.
var ErrInvalidOption = errors.New("herald/store/sqlite: invalid option")

type config struct {
	busyTimeout time.Duration
	synchronous string
	maxOpen     int
}

// Option configures Open.
type Option func(*config) error

// WithBusyTimeout sets how long a writer waits for the write lock (default 10s).
func WithBusyTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: busy timeout %v must be positive", ErrInvalidOption, d)
		}
		c.busyTimeout = d
		return nil
	}
}

// WithSynchronous sets PRAGMA synchronous: "FULL" (default: a commit is on
// disk before it returns) or "NORMAL" (faster; the last commits may be lost
// if the machine, not just the process, dies).
func WithSynchronous(mode string) Option {
	return func(c *config) error {
		switch mode {
		case "FULL", "NORMAL", "EXTRA", "OFF":
			c.synchronous = mode
			return nil
		}
		return fmt.Errorf("%w: synchronous %q (want FULL, NORMAL, EXTRA or OFF)", ErrInvalidOption, mode)
	}
}

// WithMaxOpenConns bounds the connection pool (default 64). Writers of this
// process queue for SQLite's single write lock holding a connection each,
// so keep it above the number of goroutines that write at once.
func WithMaxOpenConns(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: max open conns %d < 1", ErrInvalidOption, n)
		}
		c.maxOpen = n
		return nil
	}
}

// DSN returns the modernc.org/sqlite data source name herald uses for path.
func DSN(path string, opts ...Option) (string, error) {
	c, err := newConfig(opts)
	if err != nil {
		return "", err
	}
	return dsn(path, c), nil
}

func newConfig(opts []Option) (config, error) {
	c := config{busyTimeout: 10 * time.Second, synchronous: "FULL", maxOpen: 64}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

func dsn(path string, c config) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", c.busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+c.synchronous+")")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	return "file:" + uriPath(path) + "?" + q.Encode()
}

// uriPath turns a file path into the path of an SQLite URI filename. The
// driver cuts the DSN at the first '?', and SQLite decodes %HH escapes and
// stops at '#', so those three are escaped; an absolute path gets an empty
// authority ("file:///abs") so that one starting with "//" is not read as a
// host name.
func uriPath(path string) string {
	path = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	if strings.HasPrefix(path, "/") {
		return "//" + path
	}
	return path
}

// Open opens (creating if needed) the SQLite database at path, applies
// herald's migrations and returns the store. Use Store.DB for your own
// tables: they share the file and the transactions.
func Open(ctx context.Context, path string, opts ...Option) (*store.Store, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: empty database path", ErrInvalidOption)
	}
	if path == ":memory:" {
		// Every pooled connection would open its own, empty database.
		return nil, fmt.Errorf("%w: in-memory database %q is not supported: use a file (e.g. in a temp dir)", ErrInvalidOption, path)
	}
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(newConnector(dsn(path, c), c.busyTimeout))
	db.SetMaxOpenConns(c.maxOpen)
	db.SetMaxIdleConns(min(c.maxOpen, 8))
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("herald/store/sqlite: open %s: %w", path, err)
	}
	s, err := store.New(ctx, db, Dialect())
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Dialect returns the SQLite dialect, for store.New on a *sql.DB opened
// with DSN.
func Dialect() store.Dialect { return dialect{} }

type dialect struct{}

func (dialect) Name() string             { return "sqlite" }
func (dialect) Rebind(q string) string   { return q }
func (dialect) PendingCondition() string { return "" }

func (dialect) Migrate(ctx context.Context, db *sql.DB) error {
	ms, err := store.LoadMigrations(migrationsFS, "migrations")
	if err != nil {
		return err
	}
	// The DSN makes this an immediate transaction: concurrent migrators
	// queue on SQLite's write lock and the second one finds nothing to do.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := store.ApplyMigrations(ctx, tx, ms, func(q string) string { return q }); err != nil {
		return err
	}
	return tx.Commit()
}
