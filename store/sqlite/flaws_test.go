package sqlite_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/flawtest"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/store/storetest"
)

// A flaw breaks the SQLite store in one way, either in its dialect or in
// the database/sql driver under it.
const (
	flawNoInboxKey       = "no-inbox-key"      // the inbox table lacks its primary key: a claim succeeds twice
	flawRebindFirst      = "rebind-first"      // Rebind numbers every placeholder ?1
	flawPendingCondition = "pending-condition" // PendingCondition lacks parentheses: published rows are pending again
	flawDropsDeletes     = "drops-deletes"     // the driver ignores DELETE statements
	flawDropsRollbackTo  = "drops-rollback-to" // the driver ignores ROLLBACK TO (savepoints)
	flawReordersRows     = "reorders-rows"     // the driver returns rows in reverse order
	flawTruncatesTimes   = "truncates-times"   // the driver stores times (unix nanoseconds) to the second
)

// storeFlaws maps each flaw to the suite cases expected to catch it; the
// first one named must fail.
var storeFlaws = map[string][]string{
	flawNoInboxKey:       {"Inbox/Claim"},
	flawRebindFirst:      {"Outbox/CommitOrder"},
	flawPendingCondition: {"Outbox/MarkPublished"},
	flawDropsDeletes:     {"Outbox/Prune"},
	flawDropsRollbackTo:  {"Append/Savepoints"},
	flawReordersRows:     {"Outbox/CommitOrder"},
	flawTruncatesTimes:   {"EventLog/RoundTrip"},
}

// flawedDialect is SQLite's dialect with one flaw.
type flawedDialect struct {
	store.Dialect
	flaw string
}

func (d flawedDialect) Rebind(q string) string {
	if d.flaw == flawRebindFirst {
		return strings.ReplaceAll(d.Dialect.Rebind(q), "?", "?1")
	}
	return d.Dialect.Rebind(q)
}

func (d flawedDialect) PendingCondition() string {
	if d.flaw == flawPendingCondition {
		return "seq > 0 OR published_at IS NOT NULL"
	}
	return d.Dialect.PendingCondition()
}

func (d flawedDialect) Migrate(ctx context.Context, db *sql.DB) error {
	if d.flaw != flawNoInboxKey {
		return d.Dialect.Migrate(ctx, db)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := store.ApplyMigrations(ctx, tx, flawedMigrations(d.flaw), func(q string) string { return q }); err != nil {
		return err
	}
	return tx.Commit()
}

// flawedMigrations are SQLite's migrations, with the inbox primary key cut
// out for flawNoInboxKey.
func flawedMigrations(flaw string) []store.Migration {
	ms, err := store.LoadMigrations(sqlite.MigrationsFS, "migrations")
	if err != nil {
		panic(err)
	}
	if flaw == flawNoInboxKey {
		const key = ",\n    PRIMARY KEY (subscription, event_id)\n) WITHOUT ROWID;"
		if !strings.Contains(ms[0].SQL, key) {
			panic("the inbox key is not where the flaw expects it")
		}
		ms[0].SQL = strings.Replace(ms[0].SQL, key, "\n);", 1)
	}
	return ms
}

// flawedConnector wraps the connector sqlite.Open uses.
type flawedConnector struct {
	driver.Connector
	flaw string
}

func (c flawedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &flawedConn{Conn: conn, flaw: c.flaw}, nil
}

type flawedConn struct {
	driver.Conn
	flaw string
}

// dropped reports whether the flaw makes the driver ignore q.
func dropped(flaw, q string) bool {
	q = strings.ToUpper(strings.TrimSpace(q))
	return flaw == flawDropsDeletes && strings.HasPrefix(q, "DELETE") ||
		flaw == flawDropsRollbackTo && strings.HasPrefix(q, "ROLLBACK TO")
}

// args applies the flaw to the statement's arguments.
func args(flaw string, nv []driver.NamedValue) []driver.NamedValue {
	if flaw != flawTruncatesTimes {
		return nv
	}
	nv = slices.Clone(nv)
	for i, a := range nv {
		if n, ok := a.Value.(int64); ok && n > 1e17 { // a time in unix nanoseconds
			nv[i].Value = n - n%int64(time.Second)
		}
	}
	return nv
}

func (c *flawedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *flawedConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return &flawedStmt{Stmt: st, flaw: c.flaw, q: q}, nil
}

func (c *flawedConn) ExecContext(ctx context.Context, q string, nv []driver.NamedValue) (driver.Result, error) {
	if dropped(c.flaw, q) {
		return driver.RowsAffected(0), nil
	}
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args(c.flaw, nv))
}

func (c *flawedConn) QueryContext(ctx context.Context, q string, nv []driver.NamedValue) (driver.Rows, error) {
	rows, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args(c.flaw, nv))
	return reorder(c.flaw, rows, err)
}

func (c *flawedConn) Ping(ctx context.Context) error { return c.Conn.(driver.Pinger).Ping(ctx) }

func (c *flawedConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *flawedConn) IsValid() bool { return c.Conn.(driver.Validator).IsValid() }

type flawedStmt struct {
	driver.Stmt
	flaw string
	q    string
}

func (s *flawedStmt) ExecContext(ctx context.Context, nv []driver.NamedValue) (driver.Result, error) {
	if dropped(s.flaw, s.q) {
		return driver.RowsAffected(0), nil
	}
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args(s.flaw, nv))
}

func (s *flawedStmt) QueryContext(ctx context.Context, nv []driver.NamedValue) (driver.Rows, error) {
	rows, err := s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args(s.flaw, nv))
	return reorder(s.flaw, rows, err)
}

// reorder reads every row and hands them back in reverse, for
// flawReordersRows.
func reorder(flaw string, rows driver.Rows, err error) (driver.Rows, error) {
	if err != nil || flaw != flawReordersRows {
		return rows, err
	}
	defer rows.Close()
	r := &reversedRows{cols: rows.Columns()}
	for {
		row := make([]driver.Value, len(r.cols))
		if err := rows.Next(row); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		for i, v := range row {
			if b, ok := v.([]byte); ok {
				row[i] = slices.Clone(b)
			}
		}
		r.rows = append(r.rows, row)
	}
	slices.Reverse(r.rows)
	return r, nil
}

type reversedRows struct {
	cols []string
	rows [][]driver.Value
}

func (r *reversedRows) Columns() []string { return r.cols }
func (r *reversedRows) Close() error      { return nil }
func (r *reversedRows) Next(dest []driver.Value) error {
	if len(r.rows) == 0 {
		return io.EOF
	}
	copy(dest, r.rows[0])
	r.rows = r.rows[1:]
	return nil
}

// openFlawed opens a store on path as sqlite.Open does, with flaw.
func openFlawed(ctx context.Context, path, flaw string) (*store.Store, error) {
	dsn, err := sqlite.DSN(path)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(flawedConnector{Connector: sqlite.NewConnector(dsn, 10*time.Second), flaw: flaw})
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(8)
	s, err := store.New(ctx, db, flawedDialect{Dialect: sqlite.Dialect(), flaw: flaw})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// TestStoreSuiteCatchesFlaws runs the store suite against deliberately
// broken SQLite stores, each in a child process (a failing subtest cannot
// be contained in this test) with only the cases expected to catch the
// flaw, and expects the run to fail naming the first of them. The same
// cases must pass through the unbroken wrappers.
func TestStoreSuiteCatchesFlaws(t *testing.T) {
	flawtest.Run(t, flawtest.Config{Child: "TestFlawedStore", Env: "STORETEST_FLAW", Flaws: storeFlaws})
}

// TestFlawedStore is the child process of TestStoreSuiteCatchesFlaws.
func TestFlawedStore(t *testing.T) {
	flaw := flawtest.Flaw(t, "STORETEST_FLAW", "TestStoreSuiteCatchesFlaws")
	storetest.Run(t, storetest.Config{
		NewDB: func(t *testing.T) func() (*store.Store, error) {
			path := filepath.Join(t.TempDir(), "herald.db")
			return func() (*store.Store, error) { return openFlawed(context.Background(), path, flaw) }
		},
		Migrations: flawedMigrations(flaw),
	})
}
