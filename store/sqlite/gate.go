package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
	"time"

	msqlite "modernc.org/sqlite"
)

// SQLite allows one writer at a time. Left to itself, each waiting writer
// polls the lock with growing sleeps (the busy handler), which is unfair:
// under a burst of writers from many goroutines one of them can starve past
// any busy timeout and fail with SQLITE_BUSY. herald's writers all live in
// the process that opened the store, so they queue on a Go channel instead:
// BEGIN takes the gate, COMMIT or ROLLBACK gives it back, in FIFO-ish order,
// honouring the caller's context. Writers in other processes still meet
// SQLite's own lock and busy timeout.

// connector opens gated connections to one database.
type connector struct {
	dsn  string
	drv  *msqlite.Driver
	gate chan struct{} // capacity 1: the write lock of this process
	wait time.Duration // the busy timeout: the longest wait for the gate
}

func newConnector(dsn string, wait time.Duration) *connector {
	return &connector{dsn: dsn, drv: &msqlite.Driver{}, gate: make(chan struct{}, 1), wait: wait}
}

// Connect opens a connection. Opening runs the DSN's pragmas, and
// switching a new database to WAL needs an exclusive lock that SQLite
// refuses at once (SQLITE_BUSY, without its busy handler) while another
// process holds any lock on the file; so a busy open is retried with a
// growing pause, for at most the busy timeout.
func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	deadline := time.Now().Add(c.wait)
	pause := time.Millisecond
	for {
		conn, err := c.drv.Open(c.dsn)
		if err == nil {
			return &gatedConn{Conn: conn, gate: c.gate, wait: c.wait}, nil
		}
		if !isBusy(err) || time.Now().Add(pause).After(deadline) {
			return nil, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errors.Join(err, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED,
// extended codes included.
func isBusy(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqliteBusy, sqliteLocked:
		return true
	}
	return false
}

// UniqueViolation: SQLITE_CONSTRAINT_UNIQUE (an extended result code).
func (dialect) UniqueViolation(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code() == sqliteConstraintUnique
}

// The primary result codes of https://sqlite.org/rescode.html.
const (
	sqliteBusy   = 5
	sqliteLocked = 6

	sqliteConstraintUnique = 2067 // SQLITE_CONSTRAINT | 8<<8
)

// ErrBusy is returned when a writer waited for the write lock longer than
// the busy timeout, as SQLite's SQLITE_BUSY would be: it is worth retrying.
var ErrBusy = errors.New("herald/store/sqlite: database busy: waited for the write lock longer than the busy timeout")

// acquire takes the gate, waiting at most c.wait. A waiting writer holds a
// pooled connection; the bound turns a pool exhausted by waiters into an
// error instead of a deadlock.
func (c *gatedConn) acquire(ctx context.Context) error {
	select {
	case c.gate <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(c.wait)
	defer t.Stop()
	select {
	case c.gate <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return ErrBusy
	}
}

func (c *connector) Driver() driver.Driver { return c.drv }

// gatedConn forwards everything to the driver's connection. BeginTx waits
// for the gate; so does a statement executed outside a transaction (an
// autocommit write), since it takes SQLite's write lock too. Reads do not:
// in WAL mode they never wait for the writer.
type gatedConn struct {
	driver.Conn
	gate chan struct{}
	wait time.Duration
	inTx bool // a database/sql connection is used by one goroutine at a time
}

// enter takes the gate for an autocommit statement; the returned func
// gives it back. Inside a transaction the gate is already held.
func (c *gatedConn) enter(ctx context.Context) (func(), error) {
	if c.inTx {
		return func() {}, nil
	}
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	return func() { <-c.gate }, nil
}

var (
	_ driver.ConnBeginTx        = (*gatedConn)(nil)
	_ driver.ConnPrepareContext = (*gatedConn)(nil)
	_ driver.ExecerContext      = (*gatedConn)(nil)
	_ driver.QueryerContext     = (*gatedConn)(nil)
	_ driver.Pinger             = (*gatedConn)(nil)
	_ driver.SessionResetter    = (*gatedConn)(nil)
	_ driver.Validator          = (*gatedConn)(nil)
)

func (c *gatedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.ReadOnly {
		return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	}
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	tx, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		<-c.gate
		return nil, err
	}
	c.inTx = true
	return &gatedTx{Tx: tx, conn: c}, nil
}

func (c *gatedConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return &gatedStmt{Stmt: st, conn: c}, nil
}

func (c *gatedConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	leave, err := c.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

// gatedStmt takes the gate when it executes outside a transaction.
type gatedStmt struct {
	driver.Stmt
	conn *gatedConn
}

var (
	_ driver.StmtExecContext  = (*gatedStmt)(nil)
	_ driver.StmtQueryContext = (*gatedStmt)(nil)
)

func (s *gatedStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	leave, err := s.conn.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *gatedStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

func (c *gatedConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

func (c *gatedConn) Ping(ctx context.Context) error { return c.Conn.(driver.Pinger).Ping(ctx) }

func (c *gatedConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *gatedConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// gatedTx gives the gate back when the transaction ends, once.
type gatedTx struct {
	driver.Tx
	conn *gatedConn
	once sync.Once
}

func (t *gatedTx) release() {
	t.once.Do(func() {
		t.conn.inTx = false
		<-t.conn.gate
	})
}

func (t *gatedTx) Commit() error {
	defer t.release()
	return t.Tx.Commit()
}

func (t *gatedTx) Rollback() error {
	defer t.release()
	return t.Tx.Rollback()
}
