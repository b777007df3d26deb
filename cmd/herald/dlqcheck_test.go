package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
)

// fillDeadLetterStore gives st two dead letters of shipping and an inbox
// row of reviews, which has no dead letters.
func fillDeadLetterStore(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	for _, reason := range []string{store.ReasonExhausted, store.ReasonMalformed} {
		if _, err := store.EngineOf(st).DeadLetterInsert(ctx, nil, store.DeadLetter{Service: "shipping", Subscription: "schedule", Reason: reason,
			LastError: "boom", Header: map[string]string{}, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.DB().ExecContext(ctx, st.Rebind("INSERT INTO herald_inbox (subscription, event_id, processed_at) VALUES (?, ?, ?)"),
		"reviews/verify-buyer", "01J0000000000000000000000", 1); err != nil {
		t.Fatal(err)
	}
}

func deadLetterDB(t *testing.T) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "shop.db")
	st, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fillDeadLetterStore(t, st)
	return db
}

// checkDLQErrors runs the checks of unknown services, bogus reasons and
// empty results against the database flags db.
func checkDLQErrors(t *testing.T, db []string, where string) {
	t.Helper()
	for _, c := range []struct {
		args       []string
		code       int
		out, err   string
		notOut     string
		checkPurge bool
	}{
		{args: []string{"list", "--service", "nosuch"}, code: exitFailure,
			err: `no service "nosuch" in ` + where + `: it has no dead letters, events, outbox or inbox rows of it (services with dead letters or published events there: shipping)`},
		{args: []string{"show", "1", "--service", "nosuch"}, code: exitFailure, err: `no service "nosuch"`},
		{args: []string{"purge", "--all", "--service", "nosuch"}, code: exitFailure, err: `no service "nosuch"`, checkPurge: true},
		{args: []string{"replay", "--all", "--dry-run", "--service", "nosuch"}, code: exitFailure, err: `no service "nosuch"`},
		{args: []string{"list", "--service", "reviews"}, code: exitOK, out: "no dead letters for service reviews\n", notOut: "ID"},
		{args: []string{"list", "--service", "shipping", "--reason", "permanent"}, code: exitOK,
			out: "no dead letters for service shipping matching --reason permanent\n"},
		{args: []string{"list", "--service", "shipping", "--reason", "exhausted"}, code: exitOK, out: "exhausted", notOut: "malformed"},
		{args: []string{"list", "--service", "shipping", "--reason", "bogus"}, code: exitUsage,
			err: `--reason "bogus": want one of malformed, unknown-type, version, exhausted, permanent, refused, held`},
		{args: []string{"list", "--service", "shipping", "--producer"}, code: exitOK,
			out: "no dead letters for service shipping matching --producer\n"},
		{args: []string{"purge", "--service", "shipping", "--reason", "bogus"}, code: exitUsage, err: `--reason "bogus"`},
		{args: []string{"replay", "--service", "shipping", "--reason", "bogus", "--dry-run"}, code: exitUsage, err: `--reason "bogus"`},
		{args: []string{"list", "--service", "shipping", "--limit", "-1"}, code: exitUsage, err: "--limit -1"},
		{args: []string{"list"}, code: exitUsage, err: "which service?"},
	} {
		args := append(append([]string{"dlq"}, c.args...), db...)
		code, out, stderr := runExit(t, args...)
		name := "herald " + strings.Join(args, " ")
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(stderr, c.err) || (c.notOut != "" && strings.Contains(out, c.notOut)) {
			t.Errorf("%s: exit %d (want %d)\nstdout: %s\nstderr: %s", name, code, c.code, out, stderr)
		}
		if c.checkPurge {
			if _, out, _ := runExit(t, append([]string{"dlq", "list", "--service", "shipping"}, db...)...); !strings.Contains(out, "malformed") {
				t.Errorf("%s purged shipping's dead letters:\n%s", name, out)
			}
		}
	}
}

// TestDLQUnknownServiceAndBogusReason: herald dlq printed "(no dead
// letters)" and exited 0 for a service that is not there and for a reason
// no dead letter has.
func TestDLQUnknownServiceAndBogusReason(t *testing.T) {
	db := deadLetterDB(t)
	checkDLQErrors(t, []string{"--db", db}, db)
}

func TestDLQUnknownServiceAndBogusReasonPostgres(t *testing.T) {
	url := testdb.PostgresURL(t)
	st, err := postgres.Open(context.Background(), url, postgres.WithMaxOpenConns(2))
	if err != nil {
		t.Fatal(err)
	}
	fillDeadLetterStore(t, st)
	st.Close()
	checkDLQErrors(t, []string{"--postgres", url}, "the --postgres database")

	// A database without herald's tables is refused, and left so.
	empty := testdb.PostgresURL(t)
	code, _, stderr := runExit(t, "dlq", "list", "--service", "shipping", "--postgres", empty)
	if code != exitFailure || !strings.Contains(stderr, "--postgres is not a herald service's database: it has no herald tables (no tables at all)") {
		t.Errorf("an empty database: exit %d: %s", code, stderr)
	}
	db, err := sql.Open("pgx", empty)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&n); err != nil || n != 0 {
		t.Errorf("herald dlq created %d tables in the wrong database (%v)", n, err)
	}
}

// TestDLQWrongDatabase: a file that is not the service's database is
// refused — and not turned into one, as opening it as a store would.
func TestDLQWrongDatabase(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "crm.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	text := filepath.Join(dir, "notes.txt")
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(text, []byte("not a database, but long enough to be read as one............................................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ db, err string }{
		{other, other + " is not a herald service's database: it has no herald tables (only customers); pass the service's database"},
		{empty, empty + " is not a herald service's database: it has no herald tables (no tables at all)"},
		{text, "--db " + text + ": not an SQLite database?"},
		{filepath.Join(dir, "missing.db"), "missing.db: no such file or directory"},
	} {
		code, out, stderr := runExit(t, "dlq", "list", "--service", "shipping", "--db", c.db)
		if code != exitFailure || !strings.Contains(stderr, c.err) || out != "" {
			t.Errorf("--db %s: exit %d, stdout %q, stderr:\n%s", c.db, code, out, stderr)
		}
	}
	db, err = sql.Open("sqlite", "file:"+other+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name LIKE 'herald%'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("herald dlq created %d herald objects in %s (%v)", n, other, err)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
		t.Errorf("herald dlq wrote to the empty file: %v %v", fi.Size(), err)
	}
}

// TestDLQListJSON: --json prints one JSON object per dead letter, with
// the fields of dlq show, and nothing for none.
func TestDLQListJSON(t *testing.T) {
	db := deadLetterDB(t)
	code, out, stderr := runExit(t, "dlq", "list", "--json", "--service", "shipping", "--db", db)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines:\n%s", out)
	}
	for i, reason := range []string{store.ReasonExhausted, store.ReasonMalformed} {
		var d map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &d); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, lines[i])
		}
		if d["reason"] != reason || d["service"] != "shipping" || d["subscription"] != "schedule" || d["last_error"] != "boom" || d["id"] != float64(i+1) {
			t.Errorf("line %d: %v", i, d)
		}
	}
	code, out, stderr = runExit(t, "dlq", "list", "--json", "--service", "reviews", "--db", db)
	if code != exitOK || out != "" {
		t.Errorf("--json of none: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
