package janitor

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/internal/testlog"
)

// The janitor's tests run in synctest bubbles over an in-memory store that
// records each prune's cutoff: the passes' schedule takes no wall time.

type prune struct {
	table  string
	before time.Time
}

type fakeStore struct {
	mu     sync.Mutex
	prunes []prune
	fail   map[string]error // per table
}

func (s *fakeStore) record(table string, before time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prunes = append(s.prunes, prune{table, before})
	return 1, s.fail[table]
}

func (s *fakeStore) EventLogPrune(_ context.Context, before time.Time) (int64, error) {
	return s.record("eventlog", before)
}
func (s *fakeStore) OutboxPrune(_ context.Context, before time.Time) (int64, error) {
	return s.record("outbox", before)
}
func (s *fakeStore) InboxPrune(_ context.Context, before time.Time) (int64, error) {
	return s.record("inbox", before)
}

func (s *fakeStore) got() []prune {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.prunes)
}

type testBundle struct {
	store *fakeStore
	logs  *testlog.Buffer
}

// setup returns a started janitor (retentions: event log 30 days, outbox
// 1h, inbox 7 days) over a fresh fake; tune adjusts its config.
func setup(t *testing.T, tune func(*Config)) (*Janitor, *testBundle) {
	t.Helper()
	tb := &testBundle{store: &fakeStore{fail: map[string]error{}}, logs: &testlog.Buffer{}}
	cfg := Config{EventLogRetention: 30 * 24 * time.Hour, OutboxRetention: time.Hour, InboxRetention: 7 * 24 * time.Hour,
		Store: tb.store, Logger: slog.New(slog.NewTextHandler(tb.logs, nil))}
	if tune != nil {
		tune(&cfg)
	}
	j, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Stop)
	return j, tb
}

func TestConfig(t *testing.T) {
	j, err := New(Config{Store: &fakeStore{}})
	if err != nil || j.cfg.Interval != DefaultInterval {
		t.Fatalf("New = %v, interval %v; want the default %v", err, j.cfg.Interval, DefaultInterval)
	}
	for _, c := range []Config{
		{},
		{Store: &fakeStore{}, Interval: -time.Second},
		{Store: &fakeStore{}, OutboxRetention: -time.Second},
	} {
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", c, err)
		}
	}
}

// Every Interval, a pass prunes each table with its own retention, as of
// the pass's time.
func TestPassesEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		begin := time.Now()
		_, tb := setup(t, nil)
		time.Sleep(DefaultInterval - time.Nanosecond)
		synctest.Wait()
		if got := tb.store.got(); len(got) != 0 {
			t.Fatalf("pruned %v before the first interval", got)
		}
		time.Sleep(2*DefaultInterval + time.Nanosecond)
		synctest.Wait()
		var want []prune
		for i := 1; i <= 3; i++ {
			now := begin.Add(time.Duration(i) * DefaultInterval)
			want = append(want, prune{"eventlog", now.Add(-30 * 24 * time.Hour)}, prune{"outbox", now.Add(-time.Hour)},
				prune{"inbox", now.Add(-7 * 24 * time.Hour)})
		}
		if got := tb.store.got(); !slices.Equal(got, want) {
			t.Errorf("prunes\n%v\nwant\n%v", got, want)
		}
	})
}

// An event-log retention of 0 keeps the event log; the other tables are
// still pruned.
func TestEventLogKeptForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, tb := setup(t, func(c *Config) { c.EventLogRetention = 0; c.Interval = time.Second })
		time.Sleep(time.Second)
		synctest.Wait()
		var tables []string
		for _, p := range tb.store.got() {
			tables = append(tables, p.table)
		}
		if !slices.Equal(tables, []string{"outbox", "inbox"}) {
			t.Errorf("pruned %v, want outbox and inbox", tables)
		}
	})
}

// A failing prune is logged and the other tables are still pruned; Stop
// ends the janitor.
func TestFailureLoggedOthersPruned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j, tb := setup(t, func(c *Config) { c.Interval = time.Second })
		tb.store.mu.Lock()
		tb.store.fail["outbox"] = errors.New("disk full")
		tb.store.mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if n := len(tb.store.got()); n != 3 {
			t.Errorf("%d prunes, want 3", n)
		}
		if logs := tb.logs.String(); !strings.Contains(logs, `msg="prune outbox" err="disk full"`) {
			t.Errorf("logged %q, want the outbox failure", logs)
		}
		j.Stop()
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(tb.store.got()); n != 3 {
			t.Errorf("%d prunes after Stop, want 3", n)
		}
	})
}
