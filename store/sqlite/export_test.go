package sqlite

import (
	"database/sql/driver"
	"time"
)

// MigrationsFS exposes the embedded migrations to the external tests.
var MigrationsFS = migrationsFS

// NewConnector exposes the gated connector Open uses, so that a test can
// wrap it (flaws_test.go).
func NewConnector(dsn string, wait time.Duration) driver.Connector { return newConnector(dsn, wait) }
