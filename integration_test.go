package herald_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
	"github.com/nats-io/nats.go"
)

// step is a domain event of the producer: the n-th step of one order.
type step struct {
	OrderID string `json:"order_id"`
	N       int    `json:"n"`
}

// stepped is its integration event, keyed by order.
type stepped struct {
	OrderID string `json:"order_id"`
	N       int    `json:"n"`
}

var (
	stepRecorded = herald.Domain[step]("orders.step")
	orderStepped = herald.Integration[stepped]("shop.order.stepped", herald.Version(2),
		herald.KeyBy(func(s stepped) string { return s.OrderID }))
	// the old version, still published by not-yet-upgraded producers
	orderSteppedV1 = herald.Integration[steppedV1]("shop.order.stepped", herald.Version(1))
)

type steppedV1 struct {
	Order string `json:"order"`
	Step  int    `json:"step"`
}

// world is a producer and a consumer service on one embedded JetStream,
// followed by a heraldtest system (sys) so that a test can wait for what
// it produced to settle (run).
type world struct {
	b        *natsjs.Broker
	sys      *heraldtest.System
	orders   *herald.Service
	shipping *herald.Service
	ost, sst *store.Store
	prefix   string

	mu       sync.Mutex
	fail     func(stepped, int) error // injected handler failure by attempt
	swallow  func(stepped) bool       // the handler hides a failed statement and returns nil
	attempts map[string]int
	orderErr []string
}

func newWorld(t *testing.T, dialect string, opts ...herald.SubscribeOption) *world {
	t.Helper()
	ctx := context.Background()
	prefix := "t" + randHex(4)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	w := &world{b: b, sys: heraldtest.New(t), prefix: prefix, attempts: map[string]int{}}
	w.ost, w.sst = testdb.For(t, dialect), testdb.For(t, dialect)
	if _, err := w.sst.DB().Exec(`CREATE TABLE effects (order_id TEXT NOT NULL, n INTEGER NOT NULL, event_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := w.sst.DB().Exec(`CREATE TABLE progress (order_id TEXT PRIMARY KEY, n INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	fast := herald.Retry(herald.RetryPolicy{MaxAttempts: 4, BaseDelay: 5 * time.Millisecond, MaxDelay: 50 * time.Millisecond})
	w.orders, err = herald.New("orders", herald.WithStore(w.ost), herald.WithBroker(b),
		herald.WithRelay(herald.RelayConfig{PollInterval: 50 * time.Millisecond}), w.sys.Observe())
	must(t, err)
	w.shipping, err = herald.New("shipping", herald.WithStore(w.sst), herald.WithBroker(b), fast, w.sys.Observe())
	must(t, err)
	must(t, herald.Translate(w.orders, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) {
		return stepped(s), nil
	}))
	must(t, herald.Upcast(w.shipping, orderSteppedV1, orderStepped, func(o steppedV1) (stepped, error) {
		return stepped{OrderID: o.Order, N: o.Step}, nil
	}))
	must(t, herald.Subscribe(w.shipping, orderStepped, "track", w.handle, append([]herald.SubscribeOption{herald.AckWait(2 * time.Second)}, opts...)...))
	must(t, w.orders.Start(ctx))
	must(t, w.shipping.Start(ctx))
	t.Cleanup(func() { w.orders.Close(); w.shipping.Close() })
	w.sys.Add(w.orders, w.shipping)
	return w
}

// handle is the consumer's handler: it checks per-key order against its own
// table and writes one effect row per event.
func (w *world) handle(ctx context.Context, tx herald.Tx, s stepped) error {
	ev, _ := herald.EventFrom(ctx)
	w.mu.Lock()
	w.attempts[ev.ID]++
	attempt := w.attempts[ev.ID]
	fail := w.fail
	w.mu.Unlock()
	if fail != nil {
		if err := fail(s, attempt); err != nil {
			return err
		}
	}
	if w.swallow != nil && w.swallow(s) {
		_, _ = tx.SQL().ExecContext(ctx, "SELECT 1/0") // the error is swallowed
		return nil
	}
	q := tx.SQL()
	var last int
	err := q.QueryRowContext(ctx, w.sst.Rebind(`SELECT n FROM progress WHERE order_id = ?`), s.OrderID).Scan(&last)
	if err != nil && !strings.Contains(err.Error(), "no rows") {
		return err
	}
	if s.N != last+1 {
		w.mu.Lock()
		w.orderErr = append(w.orderErr, fmt.Sprintf("%s: got step %d after %d", s.OrderID, s.N, last))
		w.mu.Unlock()
	}
	if _, err := q.ExecContext(ctx, w.sst.Rebind(`INSERT INTO progress (order_id, n) VALUES (?, ?) ON CONFLICT (order_id) DO UPDATE SET n = excluded.n`), s.OrderID, s.N); err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, w.sst.Rebind(`INSERT INTO effects (order_id, n, event_id) VALUES (?, ?, ?)`), s.OrderID, s.N, ev.ID)
	return err
}

// produce records steps 1..perOrder of each order, one transaction per step.
func (w *world) produce(ctx context.Context, orders, perOrder int) error {
	for n := 1; n <= perOrder; n++ {
		for o := range orders {
			err := w.orders.Do(ctx, func(tx herald.Tx) error {
				return herald.Record(tx, stepRecorded, step{OrderID: fmt.Sprintf("o%03d", o), N: n})
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// run produces as produce does and returns once everything settled: every
// event handled, or dead-lettered, by the consumer.
func (w *world) run(t *testing.T, orders, perOrder int) *heraldtest.Flow {
	t.Helper()
	return w.sys.Run(t, func(ctx context.Context) error { return w.produce(ctx, orders, perOrder) })
}

// effects counts the consumer's effect rows.
func (w *world) effects(t *testing.T) int { return testdb.Count(t, w.sst, "effects", "") }

// waitEffects waits until the consumer's own table has want rows, for what
// a settled flow cannot follow: a replayed dead letter.
func (w *world) waitEffects(t *testing.T, want int) {
	t.Helper()
	var n int
	testwait.UntilReport(t, 60*time.Second, func() bool {
		n = testdb.Count(t, w.sst, "effects", "")
		return n >= want
	}, func() string {
		dls, _ := w.shipping.DeadLetters(context.Background(), herald.DeadLetterFilter{})
		return fmt.Sprintf("effects = %d, want %d (dead letters: %d)", n, want, len(dls))
	})
}

func (w *world) checkExactlyOnce(t *testing.T, want int) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // let any duplicate arrive
	total := testdb.Count(t, w.sst, "effects", "")
	var distinct int
	if err := w.sst.DB().QueryRow(`SELECT COUNT(*) FROM (SELECT DISTINCT order_id, n FROM effects) d`).Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if total != want || distinct != want {
		t.Fatalf("effects: %d rows, %d distinct, want %d of each", total, distinct, want)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.orderErr) > 0 {
		t.Fatalf("%d ordering violations, first: %s", len(w.orderErr), w.orderErr[0])
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func TestIntegrationFlow(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		w := newWorld(t, dialect)
		w.run(t, 20, 10)
		w.checkExactlyOnce(t, 200)
		backlog, _, err := w.orders.OutboxStats(context.Background())
		must(t, err)
		if backlog != 0 {
			t.Fatalf("outbox backlog %d after delivery", backlog)
		}
	})
}

func TestRetryHoldsBackOnlyItsKey(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		w := newWorld(t, dialect)
		var failures atomic.Int64
		w.fail = func(s stepped, attempt int) error {
			// every third step fails twice before it succeeds
			if s.N%3 == 0 && attempt <= 2 {
				failures.Add(1)
				return errors.New("flaky downstream")
			}
			return nil
		}
		w.run(t, 10, 9)
		w.checkExactlyOnce(t, 90)
		if failures.Load() < 30*2 {
			t.Fatalf("only %d injected failures: the retry path did not run", failures.Load())
		}
		if dls, _ := w.shipping.DeadLetters(context.Background(), herald.DeadLetterFilter{}); len(dls) != 0 {
			t.Fatalf("%d dead letters, want 0", len(dls))
		}
	})
}

func TestExhaustedAndPermanentGoToDeadLetters(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "sqlite")
	var broken atomic.Bool
	broken.Store(true)
	w.fail = func(s stepped, attempt int) error {
		switch {
		case s.OrderID == "o000" && broken.Load():
			return errors.New("always failing")
		case s.OrderID == "o001" && broken.Load():
			return herald.Permanent(errors.New("bad order"))
		}
		return nil
	}
	flow := w.run(t, 4, 1)
	if n := w.effects(t); n != 2 || len(flow.DeadLetters) != 2 {
		t.Fatalf("the flow settled with %d effects and %d dead letters, want 2 and 2:\n%s", n, len(flow.DeadLetters), flow)
	}
	ctx := context.Background()
	dls, err := w.shipping.DeadLetters(ctx, herald.DeadLetterFilter{})
	must(t, err)
	if len(dls) != 2 {
		t.Fatalf("dead letters = %d, want 2", len(dls))
	}
	byReason := map[string]herald.DeadLetter{}
	for _, d := range dls {
		byReason[d.Reason] = d
	}
	ex, perm := byReason[store.ReasonExhausted], byReason[store.ReasonPermanent]
	if ex.Attempts != 4 || ex.LastError != "always failing" || ex.Subscription != "track" || ex.Type != "shop.order.stepped" {
		t.Fatalf("exhausted dead letter = %+v", ex)
	}
	if perm.Attempts != 1 || !strings.Contains(perm.LastError, "bad order") {
		t.Fatalf("permanent dead letter = %+v", perm)
	}
	// Dry run shows, replay re-delivers to the same subscription only.
	would, err := w.shipping.ReplayDeadLetters(ctx, herald.DeadLetterFilter{}, herald.DryRun())
	must(t, err)
	if len(would) != 2 {
		t.Fatalf("dry run would replay %d", len(would))
	}
	broken.Store(false)
	done, err := w.shipping.ReplayDeadLetters(ctx, herald.DeadLetterFilter{Reason: store.ReasonExhausted})
	must(t, err)
	if len(done) != 1 {
		t.Fatalf("replayed %d", len(done))
	}
	w.waitEffects(t, 3)
	n, err := w.shipping.PurgeDeadLetters(ctx, herald.DeadLetterFilter{Reason: store.ReasonPermanent})
	must(t, err)
	if n != 1 {
		t.Fatalf("purged %d", n)
	}
	w.checkExactlyOnce(t, 3)
}

func TestGarbageIsDeadLetteredAndValidEventsKeepFlowing(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "sqlite")
	nc, err := nats.Connect(w.b.URL())
	must(t, err)
	defer nc.Close()
	subject := w.subject(t)
	valid := func(typ string, version int, data string) *nats.Msg {
		e := &envelope.Envelope{ID: envelope.NewID(time.Now()), Type: typ, Version: version, Kind: envelope.KindIntegration,
			Source: "intruder", Time: time.Now(), DataContentType: "application/json", Data: []byte(data)}
		h, body := envelope.ToBinary(e)
		m := nats.NewMsg(subject)
		for k, v := range h {
			m.Header.Set(k, v)
		}
		m.Data = body
		return m
	}
	type garbage struct {
		msg    *nats.Msg
		reason string
	}
	var sent []garbage
	for i := range 200 { // 5 kinds × 200 = 1,000 garbage messages
		m := nats.NewMsg(subject)
		m.Data = make([]byte, 1+i)
		_, _ = rand.Read(m.Data)
		sent = append(sent, garbage{m, store.ReasonMalformed})
		wrong := valid("shop.order.stepped", 2, `{"order_id":"x","n":1}`)
		wrong.Header.Set(envelope.HeaderSpecVersion, "0.3")
		sent = append(sent, garbage{wrong, store.ReasonMalformed})
		sent = append(sent, garbage{valid("shop.other.thing", 1, `{}`), store.ReasonUnknownType})
		sent = append(sent, garbage{valid("shop.order.stepped", 9, `{"order_id":"x","n":1}`), store.ReasonVersion})
		sent = append(sent, garbage{valid("shop.order.stepped", 2, `{"order_id":5}`), store.ReasonMalformed})
	}
	js, err := nc.JetStream()
	must(t, err)
	for i, g := range sent {
		if _, err := js.PublishMsg(g.msg); err != nil {
			t.Fatalf("publish garbage %d: %v", i, err)
		}
		if i == len(sent)/2 {
			must(t, w.produce(context.Background(), 5, 2)) // valid events in the middle of the garbage
		}
	}
	// v1 events from an old producer are upcast, not dead-lettered.
	m := valid("shop.order.stepped", 1, `{"order":"old","step":1}`)
	_, err = js.PublishMsg(m)
	must(t, err)
	w.waitEffects(t, 11)
	ctx := context.Background()
	var dls []herald.DeadLetter
	_ = testwait.For(30*time.Second, "a dead letter for each invalid message", func() bool {
		dls, err = w.shipping.DeadLetters(ctx, herald.DeadLetterFilter{})
		must(t, err)
		return len(dls) >= len(sent)
	})
	if len(dls) != len(sent) {
		t.Fatalf("dead letters = %d, want %d", len(dls), len(sent))
	}
	want := map[string]int{}
	for _, g := range sent {
		want[g.reason]++
	}
	got := map[string]int{}
	for _, d := range dls {
		got[d.Reason]++
		if d.LastError == "" {
			t.Fatalf("dead letter %d without a reason text: %+v", d.ID, d)
		}
	}
	for r, n := range want {
		if got[r] != n {
			t.Fatalf("reason %s: %d dead letters, want %d (all: %v)", r, got[r], n, got)
		}
	}
	w.checkExactlyOnce(t, 11)
	// Malformed messages keep their bytes but cannot be replayed.
	_, err = w.shipping.ReplayDeadLetters(ctx, herald.DeadLetterFilter{IDs: []int64{dls[0].ID}})
	if !errors.Is(err, herald.ErrNotReplayable) {
		t.Fatalf("replay of random bytes: %v", err)
	}
}

// subject is where the integration events of orderStepped travel.
func (w *world) subject(t *testing.T) string {
	return w.prefix + ".int.shop.order.stepped"
}

// TestNotifyWakesAnotherInstancesRelay: a commit in one instance of a
// service wakes the relay running in another instance through PostgreSQL
// NOTIFY — the relay's poll interval is an hour, so nothing else could.
// The three services are followed by a heraldtest system: its flow settles
// once the running relay published the event and audit handled it.
func TestNotifyWakesAnotherInstancesRelay(t *testing.T) {
	t.Parallel()
	url := testdb.PostgresURL(t)
	ctx := context.Background()
	sys := heraldtest.New(t)
	b := sys.Broker()
	open := func() *store.Store {
		st, err := postgres.Open(ctx, url)
		must(t, err)
		t.Cleanup(func() { st.Close() })
		return st
	}
	newOrders := func(st *store.Store) *herald.Service {
		svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b),
			herald.WithRelay(herald.RelayConfig{PollInterval: time.Hour}), sys.Observe())
		must(t, err)
		must(t, herald.Translate(svc, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
		t.Cleanup(func() { svc.Close() })
		return svc
	}
	running := newOrders(open())
	must(t, running.Start(ctx))
	time.Sleep(200 * time.Millisecond) // the relay takes its lease and goes idle
	other := newOrders(open())         // never started: no relay of its own
	cst := testdb.SQLite(t)
	consumer, err := herald.New("audit", herald.WithStore(cst), herald.WithBroker(b), sys.Observe())
	must(t, err)
	var got atomic.Int64
	must(t, herald.Subscribe(consumer, orderStepped, "count", func(ctx context.Context, tx herald.Tx, s stepped) error {
		got.Add(1)
		return nil
	}))
	must(t, consumer.Start(ctx))
	defer consumer.Close()
	sys.Add(consumer) // the orders instances subscribe to nothing
	sys.Run(t, func(ctx context.Context) error {
		return other.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, stepRecorded, step{OrderID: "x", N: 1}) })
	})
	if got.Load() != 1 {
		t.Fatal("the running relay was not woken by the other instance's commit")
	}
}

// TestSwallowedStatementErrorDoesNotStallTheSubscription: on PostgreSQL a
// handler that hides a failed statement leaves its transaction aborted; that
// event must end as a dead letter after its attempts, and the other events
// of the same batches must take effect.
func TestSwallowedStatementErrorDoesNotStallTheSubscription(t *testing.T) {
	t.Parallel()
	testdb.PostgresURL(t) // PostgreSQL only: SQLite keeps a transaction usable after an error
	w := newWorld(t, "postgres")
	w.swallow = func(s stepped) bool { return s.OrderID == "o003" }
	flow := w.run(t, 10, 3)
	if n := w.effects(t); n != 27 {
		t.Fatalf("the flow settled with %d effects, want 27:\n%s", n, flow)
	}
	dls, err := w.shipping.DeadLetters(context.Background(), herald.DeadLetterFilter{})
	must(t, err)
	if len(dls) != 3 {
		t.Fatalf("dead letters = %d, want the 3 events of o003", len(dls))
	}
	for _, d := range dls {
		if d.Reason != store.ReasonExhausted || !strings.Contains(d.LastError, "transaction failed") {
			t.Fatalf("dead letter %+v", d)
		}
	}
}
