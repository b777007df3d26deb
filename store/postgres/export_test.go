package postgres

// MigrationsFS exposes the embedded migrations to the external tests.
var MigrationsFS = migrationsFS
