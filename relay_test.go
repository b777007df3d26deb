package herald_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
)

// publishCounter counts the relay's successful publishes per event id.
type publishCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (p *publishCounter) Observe(_ context.Context, o herald.Observation) {
	if o.Hop != herald.HopPublish || o.Outcome != herald.OutcomeOK {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n[o.Event.ID]++
}

// waitAll waits until every one of ids was published at least times times.
func (p *publishCounter) waitAll(t *testing.T, ids []string, times int) {
	t.Helper()
	short := 0
	testwait.UntilReport(t, 20*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		short = 0
		for _, id := range ids {
			if p.n[id] < times {
				short++
			}
		}
		return short == 0
	}, func() string { return fmt.Sprintf("%d of %d events not published %d times", short, len(ids), times) })
}

// waitIDs waits until at least n events were published and returns their ids.
func (p *publishCounter) waitIDs(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	testwait.UntilReport(t, 20*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		ids = make([]string, 0, len(p.n))
		for id := range p.n {
			ids = append(ids, id)
		}
		return len(ids) >= n
	}, func() string { return fmt.Sprintf("%d of %d events published", len(ids), n) })
	return ids
}

// stepsService starts the "orders" service of the relay tests on st and b:
// stepRecorded translated to orderStepped, reported to pubs.
func stepsService(t *testing.T, st *store.Store, b *natsjs.Broker, pubs *publishCounter, rc herald.RelayConfig) *herald.Service {
	t.Helper()
	s, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(quiet),
		herald.WithObserver(pubs), herald.WithRelay(rc))
	must(t, err)
	must(t, herald.Translate(s, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
	must(t, s.Start(context.Background()))
	return s
}

// recordSteps records steps from to from+n-1 of order "o", one per Do.
func recordSteps(t *testing.T, s *herald.Service, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		must(t, s.Do(context.Background(), func(tx herald.Tx) error { return herald.Record(tx, stepRecorded, step{OrderID: "o", N: i}) }))
	}
}

// TestRepublishWhileRunning: the relay reads the outbox after the last row
// it published, so Republish must send it back to the rows it reset — on a
// running relay, not only at start.
func TestRepublishWhileRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	pubs := &publishCounter{n: map[string]int{}}
	prod := stepsService(t, testdb.SQLite(t), b, pubs, herald.RelayConfig{BatchSize: 7, PollInterval: 20 * time.Millisecond})
	defer prod.Close()

	recordSteps(t, prod, 0, 30)
	// The ids are the outbox events'; learn them from the publishes.
	ids := pubs.waitIDs(t, 30)
	// Wait until the outbox says they are all published, then send them
	// again: every one must go out a second time.
	var backlog int64
	testwait.UntilReport(t, 20*time.Second, func() bool {
		var err error
		backlog, _, err = prod.OutboxStats(ctx)
		must(t, err)
		return backlog == 0
	}, func() string { return fmt.Sprintf("outbox backlog %d", backlog) })
	n, err := prod.Republish(ctx, time.Hour)
	must(t, err)
	if n != 30 {
		t.Fatalf("Republish reset %d rows, want 30", n)
	}
	pubs.waitAll(t, ids, 2)
	// New events still flow after the rewind.
	recordSteps(t, prod, 30, 5)
	pubs.waitIDs(t, 35)
}

// attemptLog records the attempt and outcome of every handler run a
// subscription reports, by partition key (the order id).
type attemptLog struct {
	mu  sync.Mutex
	got map[string][]string // order id → "outcome/attempt"
}

func (a *attemptLog) Observe(_ context.Context, o herald.Observation) {
	if o.Hop != herald.HopHandle && o.Hop != herald.HopDeadLetter {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got[o.Event.Key] = append(a.got[o.Event.Key], fmt.Sprintf("%s/%d", o.Outcome, o.Attempt))
}

// Inline: registered before a heraldtest system's observer, the log holds
// every hop of a flow once the flow settled.
func (a *attemptLog) Inline() {}

// TestFailingHandlerCostsOthersNoAttempt: a batch runs without savepoints
// until a handler fails; then it is rolled back and run again without the
// failing event. The others' first runs were undone, so they must count one
// attempt each, and the failing event exactly one per failure.
func TestFailingHandlerCostsOthersNoAttempt(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		sys := heraldtest.New(t)
		b := sys.Broker()
		prod, err := herald.New("orders", herald.WithStore(testdb.For(t, dialect)), herald.WithBroker(b), herald.WithLogger(quiet),
			sys.Observe())
		must(t, err)
		must(t, herald.Translate(prod, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
		log := &attemptLog{got: map[string][]string{}}
		cst := testdb.For(t, dialect)
		_, err = cst.DB().Exec(`CREATE TABLE seen (order_id TEXT PRIMARY KEY)`)
		must(t, err)
		cons, err := herald.New("shipping", herald.WithStore(cst), herald.WithBroker(b), herald.WithLogger(quiet),
			herald.WithObserver(log), sys.Observe())
		must(t, err)
		var mu sync.Mutex
		runs := map[string]int{}
		must(t, herald.Subscribe(cons, orderStepped, "track", func(ctx context.Context, tx herald.Tx, s stepped) error {
			mu.Lock()
			runs[s.OrderID]++
			n := runs[s.OrderID]
			mu.Unlock()
			if _, err := tx.SQL().ExecContext(ctx, cst.Rebind(`INSERT INTO seen (order_id) VALUES (?)`), s.OrderID); err != nil {
				return err
			}
			if s.OrderID == "flaky" && n <= 2 {
				return fmt.Errorf("flaky run %d", n)
			}
			if s.OrderID == "broken" {
				return herald.Permanent(fmt.Errorf("broken"))
			}
			return nil
		}, herald.BatchSize(64), herald.Retry(herald.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})))
		must(t, cons.Start(ctx))
		defer cons.Close()
		must(t, prod.Start(ctx))
		defer prod.Close()
		sys.Add(prod, cons)
		// One transaction, one relay batch: the events arrive together, so
		// the failing ones sit among good ones in the consumer's batches.
		// The flow settles once each is handled or dead-lettered.
		orders := []string{"a", "b", "flaky", "c", "broken", "d", "e"}
		sys.Run(t, func(ctx context.Context) error {
			return prod.Do(ctx, func(tx herald.Tx) error {
				for _, id := range orders {
					if err := herald.Record(tx, stepRecorded, step{OrderID: id, N: 1}); err != nil {
						return err
					}
				}
				return nil
			})
		})
		want := map[string]string{
			"a": "ok/1", "b": "ok/1", "c": "ok/1", "d": "ok/1", "e": "ok/1",
			"flaky":  "retry/1 retry/2 ok/3",
			"broken": "error/1",
		}
		time.Sleep(100 * time.Millisecond) // anything extra would show now
		log.mu.Lock()
		defer log.mu.Unlock()
		for id, w := range want {
			if got := strings.Join(log.got[id], " "); got != w {
				t.Errorf("%s: handler outcomes %q, want %q", id, got, w)
			}
		}
		var seen int
		must(t, cst.DB().QueryRow(`SELECT COUNT(*) FROM seen`).Scan(&seen))
		if seen != len(orders)-1 { // broken's row was rolled back
			t.Errorf("%d rows committed by handlers, want %d", seen, len(orders)-1)
		}
		dls, err := cons.DeadLetters(ctx, herald.DeadLetterFilter{})
		must(t, err)
		if len(dls) != 1 || dls[0].Reason != "permanent" || dls[0].Attempts != 1 {
			t.Errorf("dead letters %+v, want broken's, permanent, after 1 attempt", dls)
		}
	})
}

// TestRelayLooksAgainForRowsAnOlderTransactionHid: on PostgreSQL a committed
// outbox row is readable by the relay only once every older transaction has
// ended, so the commit's NOTIFY may find nothing. The relay must look again
// soon, not at its next poll (an hour here).
func TestRelayLooksAgainForRowsAnOlderTransactionHid(t *testing.T) {
	t.Parallel()
	url := testdb.PostgresURL(t)
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	pubs := &publishCounter{n: map[string]int{}}
	newOrders := func() (*herald.Service, *store.Store) {
		st, err := postgres.Open(ctx, url)
		must(t, err)
		t.Cleanup(func() { st.Close() })
		svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(quiet),
			herald.WithObserver(pubs), herald.WithRelay(herald.RelayConfig{PollInterval: time.Hour}))
		must(t, err)
		must(t, herald.Translate(svc, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
		t.Cleanup(func() { svc.Close() })
		return svc, st
	}
	running, st := newOrders()
	must(t, running.Start(ctx))
	time.Sleep(200 * time.Millisecond) // the relay takes its lease and goes idle
	other, _ := newOrders()            // never started: its commits reach the relay by NOTIFY only

	// An older transaction, still open when the event commits, hides it.
	older, err := st.DB().BeginTx(ctx, nil)
	must(t, err)
	var xid int64
	must(t, older.QueryRowContext(ctx, `SELECT txid_current()`).Scan(&xid))
	must(t, other.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, stepRecorded, step{OrderID: "x", N: 1}) }))
	time.Sleep(300 * time.Millisecond) // the NOTIFY came and the relay found nothing
	pubs.mu.Lock()
	early := len(pubs.n)
	pubs.mu.Unlock()
	if early != 0 {
		t.Fatal("the relay published a row an older transaction should hide; the test shows nothing")
	}
	must(t, older.Rollback())
	testwait.Until(t, 10*time.Second, "the event hidden by an older transaction to be published after it ended", func() bool {
		pubs.mu.Lock()
		defer pubs.mu.Unlock()
		return len(pubs.n) == 1
	})
}

// TestRelayPublishesARowThatBecomesReadableBelowAPublishedOne: on
// PostgreSQL a transaction can take a lower outbox seq than another one and
// become readable after the other's row was published. The relay must still
// publish it (it reads every unpublished row there, never "after the last
// one it published").
func TestRelayPublishesARowThatBecomesReadableBelowAPublishedOne(t *testing.T) {
	t.Parallel()
	url := testdb.PostgresURL(t)
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	st, err := postgres.Open(ctx, url)
	must(t, err)
	defer st.Close()
	pubs := &publishCounter{n: map[string]int{}}
	svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(quiet),
		herald.WithObserver(pubs), herald.WithRelay(herald.RelayConfig{PollInterval: 20 * time.Millisecond}))
	must(t, err)
	must(t, herald.Translate(svc, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
	must(t, svc.Start(ctx))
	defer svc.Close()

	event := func(key string) *envelope.Envelope {
		now := time.Now().UTC()
		return &envelope.Envelope{ID: envelope.NewID(now), Type: orderStepped.Name(), Version: orderStepped.Version(),
			Kind: envelope.KindIntegration, Source: "orders", Key: key, Time: now, CorrelationID: "c",
			DataContentType: "application/json", Data: []byte(`{"order_id":"` + key + `","n":1}`)}
	}
	// a takes its transaction id first; b takes a later one but the lower
	// seq; a commits and is published while b still runs.
	eng := store.EngineOf(st)
	txA, err := eng.Begin(ctx)
	must(t, err)
	defer txA.Rollback()
	txB, err := eng.Begin(ctx)
	must(t, err)
	defer txB.Rollback()
	var xid int64
	must(t, txA.QueryRowContext(ctx, `SELECT txid_current()`).Scan(&xid))
	must(t, txB.QueryRowContext(ctx, `SELECT txid_current()`).Scan(&xid))
	evB, evA := event("b"), event("a")
	must(t, eng.OutboxAppend(ctx, txB, []*envelope.Envelope{evB}))
	must(t, eng.OutboxAppend(ctx, txA, []*envelope.Envelope{evA}))
	must(t, txA.Commit())
	pubs.waitAll(t, []string{evA.ID}, 1)
	must(t, txB.Commit())
	pubs.waitAll(t, []string{evB.ID}, 1)
}

// TestRelayMarksOnCloseWhatItPublished: on SQLite the relay marks what the
// broker acknowledged with one range mark now and then, not after every
// batch; closing the service writes the last mark, so a restarted relay
// publishes only what is new.
func TestRelayMarksOnCloseWhatItPublished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Syncing every write, the broker loses nothing, so a restart does not
	// refill it from the outbox: what a restarted relay sends is its own.
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithSyncAlways(true), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	st := testdb.SQLite(t)
	pubs := &publishCounter{n: map[string]int{}}
	rc := herald.RelayConfig{BatchSize: 7, MarkInterval: time.Hour}
	backlog := func() int64 {
		t.Helper()
		n, _, err := st.OutboxStats(ctx, "orders")
		must(t, err)
		return n
	}

	prod := stepsService(t, st, b, pubs, rc)
	recordSteps(t, prod, 0, 20)
	first := pubs.waitIDs(t, 20)
	if n := backlog(); n != 20 {
		t.Errorf("backlog while running = %d, want 20: no mark before the interval", n)
	}
	must(t, prod.Close())
	if n := backlog(); n != 0 {
		t.Fatalf("backlog after Close = %d, want 0: Close marks what was published", n)
	}

	prod = stepsService(t, st, b, pubs, rc)
	defer prod.Close()
	recordSteps(t, prod, 20, 1)
	pubs.waitIDs(t, 21)
	time.Sleep(100 * time.Millisecond) // a wrongly re-sent row would come before the new one anyway
	pubs.mu.Lock()
	defer pubs.mu.Unlock()
	for _, id := range first {
		if pubs.n[id] != 1 {
			t.Errorf("event %s published %d times, want once", id, pubs.n[id])
		}
	}
}

// TestRepublishResendsUnmarkedRows: rows the relay published but has not
// marked yet (the mark waits for MarkInterval) are published rows too, and
// Republish must send them again.
func TestRepublishResendsUnmarkedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	pubs := &publishCounter{n: map[string]int{}}
	prod := stepsService(t, testdb.SQLite(t), b, pubs, herald.RelayConfig{BatchSize: 7, MarkInterval: time.Hour})
	defer prod.Close()
	recordSteps(t, prod, 0, 10)
	ids := pubs.waitIDs(t, 10)
	if _, err := prod.Republish(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	pubs.waitAll(t, ids, 2)
}

// Inline: counting is quick, and tests read the counts right after what
// they wait for.
func (p *publishCounter) Inline() {}
