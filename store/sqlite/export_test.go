package sqlite

// MigrationsFS exposes the embedded migrations to the external tests.
var MigrationsFS = migrationsFS
