package relay

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// The engine's tests run in synctest bubbles over the fakes of
// fakes_test.go: no NATS, no SQL, and the waits (polls, mark intervals,
// backoff, lease renewal, the drain timeout) take no wall time.

// start starts r, stops it when the test ends, and waits until it idles.
func start(t *testing.T, r *Relay) {
	t.Helper()
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	synctest.Wait()
}

func wantStored(t *testing.T, tb *testBundle, want []string) {
	t.Helper()
	if got := tb.broker.storedIDs(); !slices.Equal(got, want) {
		t.Errorf("broker stored %v, want %v", got, want)
	}
}

func TestConfig(t *testing.T) {
	ok := func() Config {
		return Config{Service: "shop", Holder: "me", Store: &fakeStore{}, Broker: &fakeBroker{}}
	}
	r, err := New(ok())
	if err != nil {
		t.Fatal(err)
	}
	want := Config{BatchSize: DefaultBatchSize, PollInterval: DefaultPollInterval, LeaseTTL: DefaultLeaseTTL,
		MaxBackoff: DefaultMaxBackoff, MarkInterval: DefaultMarkInterval, DrainTimeout: DefaultDrainTimeout}
	got := r.cfg
	if got.BatchSize != want.BatchSize || got.PollInterval != want.PollInterval || got.LeaseTTL != want.LeaseTTL ||
		got.MaxBackoff != want.MaxBackoff || got.MarkInterval != want.MarkInterval || got.DrainTimeout != want.DrainTimeout {
		t.Errorf("defaults: got %+v", got)
	}
	for _, tc := range []struct {
		name   string
		break_ func(*Config)
	}{
		{"no service", func(c *Config) { c.Service = "" }},
		{"no holder", func(c *Config) { c.Holder = "" }},
		{"negative batch", func(c *Config) { c.BatchSize = -1 }},
		{"negative poll", func(c *Config) { c.PollInterval = -time.Second }},
		{"negative drain timeout", func(c *Config) { c.DrainTimeout = -time.Second }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no broker", func(c *Config) { c.Broker = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.break_(&c)
			if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// Batches go out in commit order; while the broker stores a full batch the
// relay reads the next one after it, and one range mark covers them all.
func TestCommitOrderAcrossBatchesWithReadAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		tb.store.addN(25)
		start(t, r)
		wantStored(t, tb, ids(1, 25))
		if got := get(&tb.store.mu, func() []int64 { return slices.Clone(tb.store.afters) }); !slices.Equal(got, []int64{0, 7, 14, 21}) {
			t.Errorf("reads after %v, want 0 7 14 21 (read ahead)", got)
		}
		if get(&tb.broker.mu, func() int { return tb.broker.calls }) != 4 {
			t.Errorf("%d publish calls, want 4", get(&tb.broker.mu, func() int { return tb.broker.calls }))
		}
		time.Sleep(DefaultMarkInterval)
		synctest.Wait()
		if marks, _ := tb.store.markCalls(); !slices.Equal(marks, []int64{25}) {
			t.Errorf("marks up to %v, want one up to 25", marks)
		}
		if get(&tb.observer.mu, func() int { return tb.observer.published }) != 25 {
			t.Errorf("observer heard %d publishes, want 25", get(&tb.observer.mu, func() int { return tb.observer.published }))
		}
	})
}

// After a failed publish only the acknowledged prefix is marked; the rest
// is published again, in order, after a backoff, until it goes through.
func TestOnlyAcknowledgedPrefixMarked(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, tb := setup(t, serial, func(c *Config) { c.BatchSize = 10 })
				tb.store.addN(10)
				tb.broker.setFail(func(e *envelope.Envelope) error {
					if e.ID == "e4" {
						return fmt.Errorf("flaky: %w", broker.ErrTransient)
					}
					return nil
				})
				start(t, r)
				time.Sleep(time.Second) // several backoffs
				synctest.Wait()
				got := tb.broker.attemptIDs()
				if len(got) < 3*7 || !slices.Equal(got[:10], ids(1, 10)) {
					t.Fatalf("publish attempts %v, want 1..10 then 4..10 again and again", got)
				}
				for rest := got[10:]; len(rest) > 0; rest = rest[7:] {
					if !slices.Equal(rest[:7], ids(4, 10)) {
						t.Fatalf("a retry published %v, want 4..10", rest[:7])
					}
				}
				r.Stop()
				marks, published := tb.store.markCalls()
				if serial {
					if want := [][]int64{{1, 2, 3}}; !slices.EqualFunc(published, want, slices.Equal) {
						t.Errorf("serial marks %v, want %v", published, want)
					}
				} else if !slices.Equal(marks, []int64{3}) {
					t.Errorf("marks up to %v, want 3", marks)
				}
				if n := tb.store.pending(); n != 7 {
					t.Errorf("%d rows left unpublished, want 7", n)
				}
				if tb.failed.Load() == 0 {
					t.Error("PublishFailed never called")
				}
				if !strings.Contains(tb.logs.String(), "outbox relay") {
					t.Errorf("the failure was not logged:\n%s", tb.logs)
				}
				tb.broker.setFail(nil)
				start(t, r)
				time.Sleep(time.Second)
				synctest.Wait()
				wantStored(t, tb, ids(1, 10))
				if n := tb.store.pending(); n != 0 {
					t.Errorf("%d rows left unpublished", n)
				}
			})
		})
	}
}

// Acknowledged rows are marked in one range mark every MarkInterval,
// however many rounds published them.
func TestMarksBatchedEveryMarkInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		start(t, r)
		for range 5 {
			tb.store.addN(3)
			r.Wake()
			time.Sleep(10 * time.Millisecond)
			synctest.Wait()
		}
		if marks, _ := tb.store.markCalls(); len(marks) != 0 {
			t.Errorf("marks up to %v before the mark interval, want none", marks)
		}
		wantStored(t, tb, ids(1, 15))
		time.Sleep(DefaultMarkInterval)
		synctest.Wait()
		if marks, _ := tb.store.markCalls(); !slices.Equal(marks, []int64{15}) {
			t.Errorf("marks up to %v, want one up to 15", marks)
		}
	})
}

// However long the mark interval, at most maxUnmarked rows wait for their
// mark.
func TestMarksAtMostMaxUnmarked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, func(c *Config) { c.BatchSize = 1024; c.MarkInterval = time.Hour })
		tb.store.addN(20000)
		start(t, r)
		if n := len(tb.broker.storedIDs()); n != 20000 {
			t.Fatalf("%d published, want 20000", n)
		}
		if marks, _ := tb.store.markCalls(); !slices.Equal(marks, []int64{16 * 1024}) {
			t.Errorf("marks up to %v, want one at %d rows", marks, 16*1024)
		}
	})
}

// In serial mode (PostgreSQL) every batch is marked before the next read,
// and a row that becomes readable after a later one was published still
// goes out.
func TestSerialModeNeverSkipsLateRow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, true, nil)
		tb.store.addN(3)
		tb.store.setHidden(2, true) // its transaction has not ended yet
		start(t, r)
		wantStored(t, tb, []string{"e1", "e3"})
		tb.store.setHidden(2, false)
		r.Wake()
		synctest.Wait()
		// A wake whose commit is not readable yet: the relay looks again
		// soon by itself, without another wake or the poll.
		tb.store.addN(1)
		tb.store.setHidden(4, true)
		r.Wake()
		synctest.Wait()
		tb.store.setHidden(4, false)
		time.Sleep(time.Second)
		synctest.Wait()
		wantStored(t, tb, []string{"e1", "e3", "e2", "e4"})
		_, published := tb.store.markCalls()
		if want := [][]int64{{1, 3}, {2}, {4}}; !slices.EqualFunc(published, want, slices.Equal) {
			t.Errorf("serial marks %v, want %v", published, want)
		}
		if marks, _ := tb.store.markCalls(); len(marks) != 0 || get(&tb.store.mu, func() int { return tb.store.cursors }) != 0 {
			t.Errorf("serial mode used range marks %v or the cursor (%d reads)", marks, get(&tb.store.mu, func() int { return tb.store.cursors }))
		}
	})
}

// A relay that loses its lease stops publishing; when it has it again it
// reads what the table says.
func TestLeaseLostStopsAndResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		tb.store.addN(3)
		start(t, r)
		wantStored(t, tb, ids(1, 3))
		tb.store.setOther("them")
		time.Sleep(4 * time.Second) // past a renewal (TTL/3)
		tb.store.addN(3)
		r.Wake()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		wantStored(t, tb, ids(1, 3))
		cursors := get(&tb.store.mu, func() int { return tb.store.cursors })
		tb.store.setOther("")
		time.Sleep(3 * time.Second)
		synctest.Wait()
		wantStored(t, tb, ids(1, 6))
		if get(&tb.store.mu, func() int { return tb.store.cursors }) != cursors+1 {
			t.Errorf("cursor read %d times after the lease came back, want once", get(&tb.store.mu, func() int { return tb.store.cursors })-cursors)
		}
	})
}

// A relay whose lease another instance holds publishes nothing; drained, it
// says the holder publishes what the outbox holds.
func TestLeaseHeldByAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		tb.store.setOther("them")
		tb.store.addN(4)
		start(t, r)
		time.Sleep(time.Minute)
		synctest.Wait()
		wantStored(t, tb, nil)
		r.Drain()
		logs := tb.logs.String()
		if !strings.Contains(logs, "closed without the relay lease") || !strings.Contains(logs, "unpublished=4") {
			t.Errorf("drain without the lease logged:\n%s", logs)
		}
		if strings.Contains(logs, "closed with committed events not published") || get(&tb.store.mu, func() int { return tb.store.releases }) != 0 {
			t.Errorf("a relay without the lease warned or released it:\n%s", logs)
		}
	})
}

// A row the broker rejects is parked; the later rows of its key are held
// behind it while keyless rows and other keys go on.
func TestRejectedRowParkedAndItsKeyHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		tb.store.add("k1", "k1", "", "k2", "k1")
		tb.broker.setFail(func(e *envelope.Envelope) error {
			if e.ID == "e1" {
				return fmt.Errorf("too large: %w", broker.ErrRejected)
			}
			return nil
		})
		start(t, r)
		wantStored(t, tb, []string{"e3", "e4"})
		var got []string
		for _, p := range tb.store.parked() {
			got = append(got, p.Reason+":"+p.Row.Event.ID)
		}
		want := []string{store.ReasonRefused + ":e1", store.ReasonHeld + ":e2", store.ReasonHeld + ":e5"}
		if !slices.Equal(got, want) {
			t.Errorf("parked %v, want %v", got, want)
		}
		if !slices.Equal(get(&tb.observer.mu, func() []string { return slices.Clone(tb.observer.parked) }), want) {
			t.Errorf("observer heard %v parked, want %v", get(&tb.observer.mu, func() []string { return slices.Clone(tb.observer.parked) }), want)
		}
		// A later row of the held key is held too.
		tb.store.add("k1", "k2")
		r.Wake()
		synctest.Wait()
		wantStored(t, tb, []string{"e3", "e4", "e7"})
		if ps := tb.store.parked(); len(ps) != 4 || ps[3].Row.Event.ID != "e6" {
			t.Errorf("after e6, parked %v", ps)
		}
	})
}

// A row whose publish fails with an error no sentinel classifies is parked
// after unclassifiedAttempts rounds; the rows behind it go on.
func TestUnclassifiedErrorParkedAfterThreeRounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		tb.store.add("", "")
		tb.broker.setFail(func(e *envelope.Envelope) error {
			if e.ID == "e1" {
				return errWeird
			}
			return nil
		})
		start(t, r)
		time.Sleep(time.Minute) // the backoffs between the rounds
		synctest.Wait()
		if n := slices.Index(tb.broker.attemptIDs(), "e2"); n < 0 {
			t.Fatal("e2 never published")
		}
		attempts := 0
		for _, id := range tb.broker.attemptIDs() {
			if id == "e1" {
				attempts++
			}
		}
		if attempts != unclassifiedAttempts {
			t.Errorf("e1 tried %d times, want %d", attempts, unclassifiedAttempts)
		}
		wantStored(t, tb, []string{"e2"})
		if ps := tb.store.parked(); len(ps) != 1 || ps[0].Reason != store.ReasonRefused || ps[0].Attempts != unclassifiedAttempts {
			t.Errorf("parked %+v, want e1 refused after %d attempts", ps, unclassifiedAttempts)
		}
	})
}

// Drain publishes until the outbox is empty, without waiting for a poll.
func TestDrainPublishesUntilEmpty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		start(t, r)
		tb.store.addN(30) // no wake: only the drain reads them
		r.Drain()
		wantStored(t, tb, ids(1, 30))
		if n := tb.store.pending(); n != 0 {
			t.Errorf("%d rows left unmarked after the drain", n)
		}
		if get(&tb.store.mu, func() int { return tb.store.releases }) != 1 {
			t.Errorf("lease released %d times, want once", get(&tb.store.mu, func() int { return tb.store.releases }))
		}
		if logs := tb.logs.String(); strings.Contains(logs, "level=WARN") {
			t.Errorf("a clean drain warned:\n%s", logs)
		}
	})
}

// Drain gives up at the timeout while publishing fails, and at once when
// the broker or the store is closed, and says what it left.
func TestDrainStops(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  error // the broker's
		close bool  // the store closed
		took  time.Duration
		log   string
	}{
		{"timeout", fmt.Errorf("down: %w", broker.ErrTransient), false, 2 * time.Second, "unpublished=5"},
		{"broker closed", broker.ErrClosed, false, 0, "unpublished=5"},
		{"store closed", nil, true, 0, "cannot count what is left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, tb := setup(t, false, func(c *Config) { c.DrainTimeout = 2 * time.Second })
				start(t, r)
				tb.store.addN(5)
				if tc.fail != nil {
					tb.broker.setFail(func(*envelope.Envelope) error { return tc.fail })
				}
				tb.store.mu.Lock()
				tb.store.closed = tc.close
				tb.store.mu.Unlock()
				begin := time.Now()
				r.Drain()
				if took := time.Since(begin); took != tc.took {
					t.Errorf("Drain took %v, want %v", took, tc.took)
				}
				if logs := tb.logs.String(); !strings.Contains(logs, tc.log) {
					t.Errorf("drain logged %q, want %q in it", logs, tc.log)
				}
				if r.Running() {
					t.Error("still running after Drain")
				}
			})
		})
	}
}

// Rewind makes the relay read the outbox from its start: a Republish reset
// rows below its cursor.
func TestRewindRereadsFromStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, tb := setup(t, false, nil)
		tb.store.addN(5)
		start(t, r)
		time.Sleep(time.Second)
		synctest.Wait()
		tb.store.republish()
		r.Wake()
		synctest.Wait()
		if n := len(tb.broker.attemptIDs()); n != 5 {
			t.Errorf("a wake re-published: %d attempts, want 5", n)
		}
		r.Rewind()
		synctest.Wait()
		if got, want := tb.broker.attemptIDs(), append(ids(1, 5), ids(1, 5)...); !slices.Equal(got, want) {
			t.Errorf("publish attempts %v, want %v", got, want)
		}
	})
}

// A range mark that fails leaves its rows unpublished in the table: the
// relay forgets its cursor, publishes them again (the broker drops the
// copies by id) and marks them on a later round; nothing is lost or
// skipped. The same holds when a Republish dropped the marks the relay
// built on (store.ErrMarkMoved).
func TestFailedMarkRepublishes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(s *fakeStore)
		again  []string // published a second time: what no mark covers
	}{
		{"mark fails", func(s *fakeStore) { s.mu.Lock(); s.failMark = 1; s.mu.Unlock() }, ids(6, 7)},
		{"marks dropped", func(s *fakeStore) { s.republish() }, ids(1, 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, tb := setup(t, false, func(c *Config) { c.PollInterval = DefaultPollInterval })
				tb.store.addN(5)
				start(t, r)
				time.Sleep(2 * DefaultMarkInterval)
				synctest.Wait()
				if marks, _ := tb.store.markCalls(); !slices.Equal(marks, []int64{5}) {
					t.Fatalf("marks up to %v, want one up to 5", marks)
				}
				tc.break_(tb.store)
				tb.store.addN(2)
				r.Wake()
				synctest.Wait()
				time.Sleep(time.Minute) // the mark interval, the next poll, the failure's backoff, the next rounds
				synctest.Wait()
				if n := tb.store.pending(); n != 0 {
					t.Errorf("%d rows left unpublished in the table, want 0", n)
				}
				if got, want := tb.broker.storedIDs(), ids(1, 7); !slices.Equal(got, want) {
					t.Errorf("broker stored %v, want %v", got, want)
				}
				if got := tb.broker.attemptIDs(); !slices.Equal(got[7:], tc.again) {
					t.Errorf("published again %v, want %v (the rows no mark covers)", got[7:], tc.again)
				}
			})
		})
	}
}
