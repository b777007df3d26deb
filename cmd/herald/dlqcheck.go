package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/store"
)

// The reasons a dead letter has (the store.Reason constants): a
// subscription's, and the outbox relay's (producer side).
var (
	subscriberReasons = []string{store.ReasonMalformed, store.ReasonUnknownType, store.ReasonVersion, store.ReasonExhausted, store.ReasonPermanent}
	producerReasons   = []string{store.ReasonRefused, store.ReasonHeld}
	dlqReasons        = append(slices.Clip(subscriberReasons), producerReasons...)
)

// checkReason fails on a --reason no dead letter can have.
func checkReason(reason string) error {
	if reason == "" || slices.Contains(dlqReasons, reason) {
		return nil
	}
	return usageErrorf("--reason %q: want one of %s", reason, strings.Join(dlqReasons, ", "))
}

// checkDatabase fails unless the database the flags name exists and has
// herald's tables. It only reads: opening a store would migrate a wrong file
// into a herald database.
func (f *storeFlags) checkDatabase(ctx context.Context) error {
	var (
		db    *sql.DB
		err   error
		what  string
		query string
	)
	if f.postgres != "" {
		what = "--postgres"
		db, err = sql.Open("pgx", f.postgres)
		query = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name`
	} else {
		what = "--db " + f.db
		db, err = sql.Open("sqlite", "file:"+sqliteURIPath(f.db)+"?mode=ro")
		query = `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		if f.postgres == "" {
			return fmt.Errorf("%s: not an SQLite database? %w", what, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		tables = append(tables, t)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if slices.Contains(tables, "herald_dead_letters") {
		return nil
	}
	has := "no tables at all"
	if len(tables) > 0 {
		has = "only " + clip(strings.Join(tables, ", "), 120)
	}
	return fmt.Errorf("%s is not a herald service's database: it has no herald tables (%s); pass the service's database", what, has)
}

// sqliteURIPath is path as the path of an SQLite URI filename (as
// store/sqlite writes it).
func sqliteURIPath(path string) string {
	path = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	if strings.HasPrefix(path, "/") {
		return "//" + path
	}
	return path
}

// checkService fails when service has left no trace in st: no dead letters,
// events, outbox rows or marks, relay lease or inbox rows — a misspelt
// --service, or the database of another service.
func checkService(ctx context.Context, st *store.Store, where, service string) error {
	prefix := service + "/" // the inbox keys rows by service/subscription
	for _, q := range []struct {
		sql string
		arg any
	}{
		{"SELECT 1 FROM herald_dead_letters WHERE service = ? LIMIT 1", service},
		{"SELECT 1 FROM herald_outbox_marks WHERE service = ? LIMIT 1", service},
		{"SELECT 1 FROM herald_leases WHERE name = ? LIMIT 1", "relay/" + service},
		{"SELECT 1 FROM herald_outbox WHERE service = ? LIMIT 1", service},
		{"SELECT 1 FROM herald_inbox WHERE substr(subscription, 1, " + strconv.Itoa(len(prefix)) + ") = ? LIMIT 1", prefix},
		{"SELECT 1 FROM herald_event_log WHERE service = ? LIMIT 1", service},
	} {
		var one int
		err := st.DB().QueryRowContext(ctx, st.Rebind(q.sql), q.arg).Scan(&one)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("look for service %q in %s: %w", service, where, err)
		}
	}
	msg := fmt.Sprintf("no service %q in %s: it has no dead letters, events, outbox or inbox rows of it", service, where)
	if known := knownServices(ctx, st); len(known) > 0 {
		msg += " (services with dead letters or published events there: " + strings.Join(known, ", ") + ")"
	}
	return errors.New(msg)
}

// knownServices names the services with dead letters or outbox marks in st,
// for the error message of checkService; both queries are cheap.
func knownServices(ctx context.Context, st *store.Store) []string {
	rows, err := st.DB().QueryContext(ctx, "SELECT service FROM herald_dead_letters GROUP BY service UNION SELECT service FROM herald_outbox_marks GROUP BY service")
	if err != nil {
		return nil
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var s string
		if rows.Scan(&s) == nil {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// noDeadLetters says that service has no dead letters matching f.
func noDeadLetters(service string, f herald.DeadLetterFilter) string {
	var by []string
	if f.Subscription != "" {
		by = append(by, "--subscription "+f.Subscription)
	}
	if f.Type != "" {
		by = append(by, "--type "+f.Type)
	}
	if f.Reason != "" {
		by = append(by, "--reason "+f.Reason)
	}
	for _, id := range f.IDs {
		by = append(by, "--id "+strconv.FormatInt(id, 10))
	}
	if f.ProducerSide {
		by = append(by, "--producer")
	}
	msg := "no dead letters for service " + service
	if len(by) > 0 {
		msg += " matching " + strings.Join(by, " ")
	}
	return msg
}

// where names the database the flags point at, for messages.
func (f *storeFlags) where() string {
	if f.postgres != "" {
		return "the --postgres database"
	}
	return f.db
}
