package herald_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
)

// refuser wraps the broker and refuses, while refusing is set, every event
// whose key is in keys, with err (as a transport would: the batch stops at
// the first failure, the rest is not sent).
type refuser struct {
	*natsjs.Broker
	keys     map[string]bool
	refusing atomic.Bool
	err      error
}

func (r *refuser) Publish(ctx context.Context, events []*envelope.Envelope) []error {
	if r.refusing.Load() {
		for i, e := range events {
			if r.keys[e.Key] {
				errs := make([]error, len(events))
				copy(errs, r.Broker.Publish(ctx, events[:i]))
				errs[i] = r.err
				for j := i + 1; j < len(events); j++ {
					errs[j] = fmt.Errorf("not sent after an earlier failure: %w", r.err)
				}
				return errs
			}
		}
	}
	return r.Broker.Publish(ctx, events)
}

// poisonWorld is a producer, "orders", whose relay meets a poisoned event,
// and a consumer, "shipping", that records what it receives, by key, in
// order. A heraldtest system follows both, so that a test can wait for
// what it records to settle: consumed, or parked by the relay (settle).
type poisonWorld struct {
	t     *testing.T
	sys   *heraldtest.System
	b     broker.Broker
	st    *store.Store
	prod  *herald.Service
	cons  *herald.Service
	pubs  *publishCounter
	drops *dropLog

	mu  sync.Mutex
	got map[string][]int // order id → the steps received, in order
}

// dropLog records the relay's dead-letter observations.
type dropLog struct {
	mu  sync.Mutex
	obs []herald.Observation
}

func (d *dropLog) Observe(_ context.Context, o herald.Observation) {
	if o.Hop == herald.HopDeadLetter {
		d.mu.Lock()
		d.obs = append(d.obs, o)
		d.mu.Unlock()
	}
}

// newPoisonWorld starts the consumer and the producer on b (sys's broker,
// or one wrapping it) and st; sys follows them.
func newPoisonWorld(t *testing.T, sys *heraldtest.System, b broker.Broker, st *store.Store) *poisonWorld {
	w := &poisonWorld{t: t, sys: sys, b: b, st: st, pubs: &publishCounter{n: map[string]int{}}, drops: &dropLog{},
		got: map[string][]int{}}
	cons, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(quiet),
		w.sys.Observe())
	must(t, err)
	must(t, herald.Subscribe(cons, orderStepped, "track", func(_ context.Context, _ herald.Tx, s stepped) error {
		w.mu.Lock()
		w.got[s.OrderID] = append(w.got[s.OrderID], s.N)
		w.mu.Unlock()
		return nil
	}))
	must(t, cons.Start(context.Background()))
	t.Cleanup(func() { cons.Close() })
	w.cons = cons
	w.sys.Add(cons) // the producer subscribes to nothing, and is started anew
	w.startProducer()
	return w
}

// startProducer starts (again) the producer's service on the same store.
func (w *poisonWorld) startProducer() {
	t := w.t
	prod, err := herald.New("orders", herald.WithStore(w.st), herald.WithBroker(w.b), herald.WithLogger(quiet),
		herald.WithObserver(w.pubs), herald.WithObserver(w.drops), herald.WithRelay(herald.RelayConfig{PollInterval: 20 * time.Millisecond}),
		w.sys.Observe())
	must(t, err)
	must(t, herald.Translate(prod, stepRecorded, orderStepped, func(_ context.Context, s step) (stepped, error) { return stepped(s), nil }))
	must(t, prod.Start(context.Background()))
	t.Cleanup(func() { prod.Close() })
	w.prod = prod
}

func (w *poisonWorld) record(order string, n int) {
	w.t.Helper()
	must(w.t, w.prod.Do(context.Background(), func(tx herald.Tx) error {
		return herald.Record(tx, stepRecorded, step{OrderID: order, N: n})
	}))
}

// settle runs record (calls of record and others) and returns once what it
// recorded settled: every event consumed, or parked by the relay.
func (w *poisonWorld) settle(record func()) {
	w.t.Helper()
	w.sys.Run(w.t, func(context.Context) error { record(); return nil })
}

// steps returns what the consumer received of order.
func (w *poisonWorld) steps(order string) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got[order])
}

// waitSteps waits until the consumer received want of order, exactly: for
// what a settled flow cannot follow, the events a replay puts back.
func (w *poisonWorld) waitSteps(order string, want ...int) {
	w.t.Helper()
	testwait.Until(w.t, 20*time.Second, fmt.Sprintf("steps %v of %s (got %v)", want, order, w.steps(order)), func() bool { return len(w.steps(order)) >= len(want) })
	w.checkSteps(order, want...)
}

// checkSteps checks that the consumer received want of order, exactly.
func (w *poisonWorld) checkSteps(order string, want ...int) {
	w.t.Helper()
	if got := w.steps(order); !slices.Equal(got, want) {
		w.t.Fatalf("%s: received steps %v, want %v in this order", order, got, want)
	}
}

// parked checks that the producer has n producer-side dead letters and
// returns them.
func (w *poisonWorld) parked(n int) []herald.DeadLetter {
	w.t.Helper()
	dls, err := w.prod.DeadLetters(context.Background(), herald.DeadLetterFilter{ProducerSide: true})
	must(w.t, err)
	if len(dls) != n {
		w.t.Fatalf("%d producer-side dead letters, want %d", len(dls), n)
	}
	return dls
}

// waitParked is parked once the producer has n producer-side dead letters:
// for what a settled flow cannot follow, a replay that parks them again.
func (w *poisonWorld) waitParked(n int) []herald.DeadLetter {
	w.t.Helper()
	testwait.Until(w.t, 20*time.Second, fmt.Sprintf("%d producer-side dead letters", n), func() bool {
		dls, err := w.prod.DeadLetters(context.Background(), herald.DeadLetterFilter{ProducerSide: true})
		must(w.t, err)
		return len(dls) >= n
	})
	return w.parked(n)
}

// others records one step of each of n other orders.
func (w *poisonWorld) others(prefix string, n int) {
	w.t.Helper()
	for i := range n {
		w.record(fmt.Sprintf("%s-%d", prefix, i), 1)
	}
}

// checkOthers checks that the consumer received the step of each of the n
// orders others recorded.
func (w *poisonWorld) checkOthers(prefix string, n int) {
	w.t.Helper()
	for i := range n {
		w.checkSteps(fmt.Sprintf("%s-%d", prefix, i), 1)
	}
}

// checkHeld checks that the dead letters are the refused event of key
// "poison" and then its held ones, steps in order.
func checkHeld(t *testing.T, dls []herald.DeadLetter, refusedErr string, attempts int, held ...int) {
	t.Helper()
	if d := dls[0]; !d.ProducerSide() || d.Reason != store.ReasonRefused || d.Key != "poison" || d.Attempts != attempts ||
		!strings.Contains(d.LastError, refusedErr) {
		t.Errorf("first dead letter %+v, want the refused poison event (%q, %d attempts)", d, refusedErr, attempts)
	}
	for i, n := range held {
		d := dls[1+i]
		e, err := envelope.FromBinary(d.Header, d.Data)
		must(t, err)
		if !d.ProducerSide() || d.Reason != store.ReasonHeld || d.Key != "poison" || !strings.Contains(d.LastError, dls[0].EventID) ||
			!strings.Contains(string(e.Data), `"n":`+strconv.Itoa(n)) {
			t.Errorf("dead letter %d = %+v %s, want step %d of poison held behind %s", 1+i, d, e.Data, n, dls[0].EventID)
		}
	}
}

// TestRelayParksEventTheBrokerRefuses: an outbox row over the server's max
// payload (written past Record's check, as with a limit lowered later) is
// parked as a producer-side dead letter with the broker's reason; the 50
// orders behind it are published and consumed; later events of its key are
// held, also across a restart of the producer; purging the refused one and
// replaying the held ones publishes them in order, and the key flows again.
func TestRelayParksEventTheBrokerRefuses(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		sys := heraldtest.New(t)
		st := testdb.For(t, dialect)
		w := newPoisonWorld(t, sys, sys.Broker(), st)

		// The poisoned row: a 1.1 MB event for the broker's 1 MiB.
		now := time.Now().UTC()
		poison := &envelope.Envelope{ID: envelope.NewID(now), Type: orderStepped.Name(), Version: orderStepped.Version(),
			Kind: envelope.KindIntegration, Source: "orders", Key: "poison", Time: now, CorrelationID: "c",
			DataContentType: "application/json",
			Data:            []byte(`{"order_id":"poison","n":0,"pad":"` + strings.Repeat(`\u003c`, 190_000) + `"}`)}
		tx, err := store.EngineOf(st).Begin(ctx)
		must(t, err)
		must(t, store.EngineOf(st).OutboxAppend(ctx, tx, []*envelope.Envelope{poison}))
		must(t, tx.Commit())
		w.settle(func() {
			w.record("poison", 1)
			w.others("o", 50)
			w.record("poison", 2)
		})
		w.checkOthers("o", 50)

		dls := w.parked(3)
		checkHeld(t, dls, "maximum payload exceeded", 1, 1, 2)
		if dls[0].EventID != poison.ID {
			t.Errorf("refused dead letter is %s, want %s", dls[0].EventID, poison.ID)
		}
		// Observers heard of each, as producer-side dead letters.
		w.drops.mu.Lock()
		var reasons []string
		for _, o := range w.drops.obs {
			if o.Subscription == "" && o.Service == "orders" {
				reasons = append(reasons, o.Reason)
			}
		}
		w.drops.mu.Unlock()
		if want := []string{"refused", "held", "held"}; !slices.Equal(reasons, want) {
			t.Errorf("dead-letter observations %v, want %v", reasons, want)
		}

		// The key stays held across a restart: the parked keys are in the
		// database.
		must(t, w.prod.Close())
		w.startProducer()
		w.settle(func() {
			w.record("poison", 3)
			w.others("after-restart", 1)
		})
		w.checkOthers("after-restart", 1)
		dls = w.parked(4)
		checkHeld(t, dls, "maximum payload exceeded", 1, 1, 2, 3)
		if got := w.steps("poison"); len(got) != 0 {
			t.Fatalf("poison events consumed while its first event is parked: %v", got)
		}
		w.pubs.mu.Lock()
		for _, d := range dls {
			if w.pubs.n[d.EventID] != 0 {
				t.Errorf("parked event %s was published", d.EventID)
			}
		}
		w.pubs.mu.Unlock()

		// The refused event cannot be fixed: purge it; the held ones,
		// replayed, go out in order, and so does what comes after.
		if n, err := w.prod.PurgeDeadLetters(ctx, herald.DeadLetterFilter{Reason: store.ReasonRefused}); err != nil || n != 1 {
			t.Fatalf("purge the refused event: %d, %v", n, err)
		}
		done, err := w.prod.ReplayDeadLetters(ctx, herald.DeadLetterFilter{ProducerSide: true})
		if err != nil || len(done) != 3 {
			t.Fatalf("ReplayDeadLetters = %d, %v; want the 3 held events", len(done), err)
		}
		w.waitSteps("poison", 1, 2, 3)
		w.settle(func() { w.record("poison", 4) })
		w.checkSteps("poison", 1, 2, 3, 4)
		if dls, err := w.prod.DeadLetters(ctx, herald.DeadLetterFilter{}); err != nil || len(dls) != 0 {
			t.Errorf("dead letters after the replay: %v, %v; want none", dls, err)
		}
	})
}

// TestReplayPublishesParkedEventsInOrderOnceFixed: a broker refuses every
// event of one key (for good, or with an error it does not classify, which
// the relay retries a few times first); the other orders go on; once the
// cause is fixed, replaying the key's dead letters publishes its events in
// order, before the ones recorded since.
func TestReplayPublishesParkedEventsInOrderOnceFixed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		err      error
		attempts int
	}{
		{"rejected", fmt.Errorf("test broker: %w: bad event", broker.ErrRejected), 1},
		{"unclassified", errors.New("test broker: something odd"), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachDialect(t, func(t *testing.T, dialect string) {
				ctx := context.Background()
				sys := heraldtest.New(t)
				b := &refuser{Broker: sys.Broker(), keys: map[string]bool{"poison": true}, err: tc.err}
				b.refusing.Store(true)
				w := newPoisonWorld(t, sys, b, testdb.For(t, dialect))

				w.settle(func() {
					w.record("poison", 1)
					w.others("o", 50)
					w.record("poison", 2)
				})
				w.checkOthers("o", 50)
				checkHeld(t, w.parked(2), "test broker", tc.attempts, 2)
				if got := w.steps("poison"); len(got) != 0 {
					t.Fatalf("poison events consumed while refused: %v", got)
				}

				// Fixed: replay. Only the two parked ones go out, in order;
				// a step recorded since the replay comes after them.
				b.refusing.Store(false)
				done, err := w.prod.ReplayDeadLetters(ctx, herald.DeadLetterFilter{ProducerSide: true})
				if err != nil || len(done) != 2 {
					t.Fatalf("ReplayDeadLetters = %d, %v; want 2", len(done), err)
				}
				w.settle(func() { w.record("poison", 3) })
				w.checkSteps("poison", 1, 2, 3)
			})
		})
	}
}

// TestReplayThatFailsAgainParksAgain: replaying a dead letter the broker
// still refuses parks it again, with the held ones behind it, in order.
func TestReplayThatFailsAgainParksAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sys := heraldtest.New(t)
	b := &refuser{Broker: sys.Broker(), keys: map[string]bool{"poison": true}, err: fmt.Errorf("%w: still bad", broker.ErrRejected)}
	b.refusing.Store(true)
	w := newPoisonWorld(t, sys, b, testdb.SQLite(t))
	w.settle(func() {
		w.record("poison", 1)
		w.record("poison", 2)
	})
	first := w.parked(2)
	if _, err := w.prod.ReplayDeadLetters(ctx, herald.DeadLetterFilter{ProducerSide: true}); err != nil {
		t.Fatal(err)
	}
	again := w.waitParked(2)
	checkHeld(t, again, "still bad", 1, 2)
	if again[0].EventID != first[0].EventID || again[1].EventID != first[1].EventID || again[0].ID <= first[1].ID {
		t.Fatalf("parked again: %v, want the same events, in order, as new dead letters after %v", dlSummary(again), dlSummary(first))
	}
	b.refusing.Store(false)
	if _, err := w.prod.ReplayDeadLetters(ctx, herald.DeadLetterFilter{ProducerSide: true}); err != nil {
		t.Fatal(err)
	}
	w.waitSteps("poison", 1, 2)
}

func dlSummary(dls []herald.DeadLetter) []string {
	out := make([]string, len(dls))
	for i, d := range dls {
		out[i] = fmt.Sprintf("%d:%s:%s", d.ID, d.Reason, d.EventID)
	}
	return out
}

// Inline: tests read the log right after the parked rows they wait for.
func (d *dropLog) Inline() {}
