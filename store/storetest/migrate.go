package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/heraldhq/herald/store"
)

type migrationRow struct {
	Version int
	Name    string
}

func migrationRows(t *testing.T, s *store.Store) []migrationRow {
	t.Helper()
	rows, err := s.DB().Query("SELECT version, name FROM herald_migrations ORDER BY version")
	if err != nil {
		t.Fatalf("read herald_migrations: %v", err)
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var r migrationRow
		if err := rows.Scan(&r.Version, &r.Name); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkMigrations asserts that herald_migrations records each migration
// exactly once.
func (h *harness) checkMigrations(t *testing.T, s *store.Store) []migrationRow {
	t.Helper()
	got := migrationRows(t, s)
	if len(got) == 0 {
		t.Fatal("herald_migrations is empty")
	}
	for i, r := range got {
		if r.Version != i+1 {
			t.Fatalf("herald_migrations versions %v: want 1..%d, each once", got, len(got))
		}
	}
	if h.c.Migrations != nil {
		var want []migrationRow
		for _, m := range h.c.Migrations {
			want = append(want, migrationRow{m.Version, m.Name})
		}
		if !slices.Equal(got, want) {
			t.Fatalf("herald_migrations %v, want %v", got, want)
		}
	}
	return got
}

func (h *harness) migrateReopen(t *testing.T) {
	open := h.c.NewDB(t)
	s1 := mustOpen(t, open)
	before := h.checkMigrations(t, s1)
	e := event("orders", "shared", t0)
	commit(t, s1, func(tx *sql.Tx) { appendEventLog(t, s1, tx, e) })

	s2 := mustOpen(t, open)
	if after := h.checkMigrations(t, s2); !slices.Equal(after, before) {
		t.Fatalf("herald_migrations changed by a second open: %v, was %v", after, before)
	}
	// Same database: s2 sees s1's data, and the other way round.
	got, err := s2.EventLogGet(context.Background(), e.ID)
	if err != nil {
		t.Fatalf("second store: Event: %v", err)
	}
	checkEnvelope(t, "second store", e, got)
	acquire(t, s2, "l", "i2", time.Minute, true)
	acquire(t, s1, "l", "i1", time.Minute, false)
}

func (h *harness) migrateConcurrent(t *testing.T) {
	const n = 6
	open := h.c.NewDB(t)
	for _, round := range []string{"fresh", "migrated"} {
		stores := make([]*store.Store, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				stores[i], errs[i] = open()
			})
		}
		close(start)
		wg.Wait()
		for i, s := range stores {
			if s != nil {
				t.Cleanup(func() { s.Close() })
			}
			if errs[i] != nil {
				t.Errorf("%s database: concurrent open %d: %v", round, i, errs[i])
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		h.checkMigrations(t, stores[0])
		// Every store works on the shared schema.
		for i, s := range stores {
			acquire(t, s, fmt.Sprintf("%s-%d", round, i), "me", time.Minute, true)
		}
	}
}

func (h *harness) migrateNewer(t *testing.T) {
	open := h.c.NewDB(t)
	s := mustOpen(t, open)
	next := len(h.checkMigrations(t, s)) + 1
	if _, err := s.DB().Exec(s.Rebind("INSERT INTO herald_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
		next, "from_the_future", time.Now().UnixNano()); err != nil {
		t.Fatalf("fake a newer schema: %v", err)
	}
	s2, err := open()
	if err == nil {
		s2.Close()
		t.Fatal("opening a database with a newer schema succeeded; want an error")
	}
	if !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), fmt.Sprint(next)) {
		t.Fatalf("error %q should say the schema version %d is newer", err, next)
	}
	// Nothing was changed by the failed open.
	if got := migrationRows(t, s); len(got) != next {
		t.Fatalf("herald_migrations has %d rows after the failed open, want %d", len(got), next)
	}
}

func loadMigrationErrors(t *testing.T) {
	file := func(body string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(body)} }
	for _, tc := range []struct {
		name    string
		files   fstest.MapFS
		wantErr string // "" for success
		want    []store.Migration
	}{
		{
			name: "ok, unsorted, other files ignored",
			files: fstest.MapFS{
				"m/0002_leases.sql":    file("CREATE TABLE b (x INT);"),
				"m/0001_init.sql":      file("CREATE TABLE a (x INT);"),
				"m/README.md":          file("not a migration"),
				"m/sub/0003_x.sql":     file("in a sub directory"),
				"other/0003_later.sql": file("another dir"),
			},
			want: []store.Migration{
				{Version: 1, Name: "init", SQL: "CREATE TABLE a (x INT);"},
				{Version: 2, Name: "leases", SQL: "CREATE TABLE b (x INT);"},
			},
		},
		{name: "gap", files: fstest.MapFS{"m/0001_a.sql": file("a"), "m/0003_c.sql": file("c")}, wantErr: "expected version 2"},
		{name: "not from 1", files: fstest.MapFS{"m/0002_b.sql": file("b")}, wantErr: "expected version 1"},
		{name: "zero", files: fstest.MapFS{"m/0000_z.sql": file("z"), "m/0001_a.sql": file("a")}, wantErr: "expected version 1"},
		{name: "duplicate", files: fstest.MapFS{"m/0001_a.sql": file("a"), "m/0001_b.sql": file("b")}, wantErr: "expected version 2"},
		{name: "no number", files: fstest.MapFS{"m/init.sql": file("x")}, wantErr: "NNNN_name.sql"},
		{name: "no underscore", files: fstest.MapFS{"m/0001.sql": file("x")}, wantErr: "NNNN_name.sql"},
		{name: "not a number", files: fstest.MapFS{"m/00x1_init.sql": file("x")}, wantErr: "NNNN_name.sql"},
		{name: "missing dir", files: fstest.MapFS{"other/0001_a.sql": file("a")}, wantErr: "m"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			got, err := store.LoadMigrations(tc.files, "m")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadMigrations: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("LoadMigrations = %+v, want %+v", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadMigrations = %+v, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadMigrations error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}
