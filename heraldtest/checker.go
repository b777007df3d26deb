package heraldtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/internal/faulthook"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/store"
)

// Instance is one running instance of the service under a guarantee check,
// as the constructor of Check.Service returns it: a *herald.Service, or a
// type of the user's that embeds one (its Start and Close are called, so
// that what it runs beside herald starts and stops with it).
type Instance interface {
	Start(ctx context.Context) error
	Close() error
	Manifest() (catalog.Manifest, error)
}

// Check describes the guarantee check of one subscription's handler:
// CheckHandler and Examine run it. T is the event the subscription takes.
type Check[T any] struct {
	// Event is the contract the subscription takes: a
	// *herald.IntegrationEvent[T] or a *herald.NotificationEvent[T].
	Event herald.Contract
	// Subscription is the name of the subscription under check.
	Subscription string
	// Service builds one instance of the service under check on st, with
	// opts among its options (the check's broker, observer, logger and
	// faults — pass them to herald.New, after WithStore(st)): it registers
	// the subscription, and creates its tables. It is called at the start
	// of every run, on a new store, and again on the same store for the new
	// instance that takes over after a simulated crash, so it must accept
	// tables that exist (CREATE TABLE IF NOT EXISTS). The check starts and
	// closes the instance.
	Service func(ctx context.Context, st *store.Store, opts ...herald.Option) (Instance, error)
	// Seed, if set, writes what the handler expects to find — the rows its
	// events refer to — into st, once per run, after the first instance was
	// built and before any event is delivered.
	Seed func(ctx context.Context, st *store.Store) error
	// Events are the events the check delivers: in this order in the clean
	// run, and in orders that keep the order of the events of each key
	// (Event's KeyBy) in the others; events without a key (notifications,
	// an integration event whose key is "") keep none.
	Events []T
	// Effect reads what the handler did — the rows of its tables, what an
	// external system it called received — as a value that the check
	// compares, with reflect.DeepEqual, to the clean run's. A run makes new
	// event ids and times, so Effect must not return them; nor rows in the
	// order they were inserted (sort them: ORDER BY), nor row ids, or the
	// order events of different keys were handled in is taken for the
	// handler's.
	Effect func(ctx context.Context, st *store.Store) (any, error)
	// Orders bounds how many orders of the events, besides the given one,
	// a check tries (default DefaultOrders): all of them when they are
	// fewer, else an even spread of them.
	Orders int
	// Timeout bounds each run (default DefaultSettleTimeout).
	Timeout time.Duration
}

// noKey begins the key the checker gives an event without one: its own,
// for the consumer keeps no order among keyless events.
const noKey = "\x00"

// DefaultOrders is how many orders of the events a check tries unless
// Check.Orders says otherwise.
const DefaultOrders = 12

// Fault is what a run of a check injects.
type Fault string

// The faults a check injects, each in runs of its own.
const (
	// FaultNone: the events delivered once each, in an order the per-key
	// guarantee allows.
	FaultNone Fault = "none"
	// FaultDeliveredTwice: every event delivered a second time after its
	// effect committed, as when an ack is lost.
	FaultDeliveredTwice Fault = "delivered twice"
	// FaultCrashAfterCommit: the instance dies after one event's
	// transaction committed and before its ack; a new instance, on the
	// same store, gets the event again.
	FaultCrashAfterCommit Fault = "crash between commit and ack"
	// FaultCrashInHandler: the instance dies once one event's handler ran
	// to its end and before its transaction committed, which is rolled
	// back; a new instance gets the event again and runs the handler again.
	FaultCrashInHandler Fault = "crash inside the handler"
	// FaultTransient: one event's handler runs, then its run fails with a
	// transient error (its work rolled back), twice — or as often as the
	// subscription's retry policy allows without a dead letter, if fewer —
	// and the next attempt commits.
	FaultTransient Fault = "transient errors"
	// FaultBlocked: a handler's run took longer than its subscription's ack
	// wait (herald.AckWait): the broker would redeliver the event, to
	// another instance, while the handler still runs.
	FaultBlocked Fault = "blocked past its ack wait"
)

// Violation is a way the handler broke a guarantee: the smallest sequence
// of the events and the fault that show it.
type Violation struct {
	Fault Fault
	// Events are the events of the run, as 1-based positions in
	// Check.Events, in the order they were delivered.
	Events []int
	// Target is the event the fault hit (a position in Check.Events), 0
	// when it hit every event or none.
	Target int
	// Want is the effect of one clean delivery, in order, of the events;
	// Got the effect of the run.
	Want, Got any
	// Reason says what broke, in words.
	Reason string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s\n  events, in the order delivered: %v (of Check.Events)\n  one clean delivery in order gives: %+v\n  this run gave:                    %+v",
		v.Reason, v.Events, v.Want, v.Got)
}

// Report is what a check found.
type Report struct {
	// Subscription is the service and subscription checked: "shipping/schedule".
	Subscription string
	// Runs counts the runs of the check, each on a new store and broker.
	Runs int
	// Faults are the faults the runs injected, each once at least.
	Faults []Fault
	// Effect is the effect of the clean run — one delivery of each event,
	// in order — which every other run was compared with: assert on it to
	// check the handler does what it should, besides keeping it.
	Effect any
	// Violations are the guarantees the handler broke, one per fault at
	// most; none when it passed.
	Violations []Violation
}

// OK reports whether the handler kept every guarantee.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// CheckHandler checks that a subscription's handler keeps herald's
// guarantees in the faults production has, and fails t, in words, for each
// one it breaks: see Examine.
func CheckHandler[T any](t testing.TB, c Check[T]) *Report {
	t.Helper()
	r := Examine(t, c)
	for _, v := range r.Violations {
		t.Errorf("heraldtest: %s: %s", r.Subscription, v)
	}
	return r
}

// Examine runs the guarantee check c of a subscription's handler and
// returns what it found; it fails t only when the check cannot run (a
// Service or Effect error, a run that does not settle).
//
// Each run starts an embedded NATS JetStream and a new store, builds the
// service with c.Service, and delivers c.Events through the real path: a
// producer service records each event in a transaction of its own, its
// relay publishes it, and the subscription's consumer handles it in a
// transaction with its inbox row. The first run delivers the events once,
// in order: its effect is the one every other run must give. The others
// inject, one at a time, what production does — every event delivered
// twice; one event redelivered to a new instance after a crash between its
// commit and its ack, for each event; a crash inside the handler, after it
// ran, for each event; two transient errors after the handler ran, for
// each event — and deliver the events in other orders the per-key
// guarantee allows (events of different keys interleaved). A handler that
// runs longer than its subscription's ack wait is reported too.
//
// When a run's effect differs, Examine looks for the smallest sequence of
// the events that still breaks with that fault, and reports it with the
// reason in words.
func Examine[T any](t testing.TB, c Check[T]) *Report {
	t.Helper()
	ck, err := newChecker(t, c)
	if err != nil {
		t.Fatalf("heraldtest: check: %v", err)
	}
	return ck.examine()
}

// checker runs the runs of one check.
type checker[T any] struct {
	t       testing.TB
	c       Check[T]
	keys    []string // the key of each event
	service string   // the service's name, from its manifest
	log     *slog.Logger
	report  *Report
	clean   map[string]any // the clean effect of a sequence (its positions, sorted)
}

func newChecker[T any](t testing.TB, c Check[T]) (*checker[T], error) {
	switch {
	case c.Event == nil:
		return nil, errors.New("Check.Event is nil")
	case c.Service == nil:
		return nil, errors.New("Check.Service is nil")
	case c.Effect == nil:
		return nil, errors.New("Check.Effect is nil")
	case c.Subscription == "":
		return nil, errors.New("Check.Subscription is empty")
	case len(c.Events) == 0:
		return nil, errors.New("Check.Events is empty")
	case c.Orders < 0:
		return nil, fmt.Errorf("Check.Orders %d: want ≥ 0", c.Orders)
	}
	if c.Orders == 0 {
		c.Orders = DefaultOrders
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultSettleTimeout
	}
	keys := make([]string, len(c.Events))
	switch ev := c.Event.(type) {
	case *herald.IntegrationEvent[T]:
		for i, e := range c.Events {
			keys[i] = ev.Key(e)
		}
	case *herald.NotificationEvent[T]:
		// Notifications have no keys.
	default:
		return nil, fmt.Errorf("Check.Event %s: want a *herald.IntegrationEvent or *herald.NotificationEvent of the events' type %T", c.Event, *new(T))
	}
	for i, k := range keys {
		if k == "" {
			// The consumer keeps no order among events without a key:
			// each is a key of its own for the orders a check tries.
			keys[i] = noKey + strconv.Itoa(i)
		}
	}
	return &checker[T]{t: t, c: c, keys: keys, log: newTestLogger(t), clean: map[string]any{},
		report: &Report{}}, nil
}

// examine runs the check.
func (ck *checker[T]) examine() *Report {
	n := len(ck.c.Events)
	inOrder := make([]int, n)
	for i := range inOrder {
		inOrder[i] = i
	}
	want, info := ck.cleanEffect(inOrder)
	ck.report.Subscription = ck.service + "/" + ck.c.Subscription
	ck.report.Effect = want
	if info.blocked != "" {
		ck.report.Violations = append(ck.report.Violations, Violation{Fault: FaultBlocked, Events: positions(inOrder),
			Want: want, Got: want, Reason: info.blocked})
	}
	var runs []run
	runs = append(runs, run{order: inOrder, fault: FaultDeliveredTwice, target: -1})
	for _, f := range []Fault{FaultCrashAfterCommit, FaultCrashInHandler, FaultTransient} {
		for i := range n {
			runs = append(runs, run{order: inOrder, fault: f, target: i})
		}
	}
	for _, o := range orders(ck.keys, ck.c.Orders) {
		runs = append(runs, run{order: o, fault: FaultNone, target: -1})
	}
	failed := map[Fault]bool{}
	for _, r := range runs {
		if failed[r.fault] {
			continue // one violation per fault: the smallest is found below
		}
		got, info := ck.runOnce(r)
		if reflect.DeepEqual(got, want) {
			continue
		}
		failed[r.fault] = true
		ck.report.Violations = append(ck.report.Violations, ck.smallest(r, want, got, info))
	}
	return ck.report
}

// run is one run of a check: the events, as indexes in Check.Events, in
// the order delivered, and the fault, which hits the event at index target
// (-1: all of them, or none).
type run struct {
	order  []int
	fault  Fault
	target int
}

// cleanEffect returns the effect of one clean delivery of the events of
// order in the order of Check.Events.
func (ck *checker[T]) cleanEffect(order []int) (any, runInfo) {
	return ck.effectOf(slices.Sorted(slices.Values(order)))
}

// effectOf returns the effect of one clean delivery of the events of
// order, in that order.
func (ck *checker[T]) effectOf(order []int) (any, runInfo) {
	key := fmt.Sprint(order)
	if e, ok := ck.clean[key]; ok {
		return e, runInfo{}
	}
	e, info := ck.runOnce(run{order: order, fault: FaultNone, target: -1})
	ck.clean[key] = e
	return e, info
}

// smallest shrinks the failing run r, whose effect got (and info) differed
// from want: it drops events, one at a time, for as long as the run still
// breaks (its effect differs from the clean effect of the same events),
// and describes the smallest with the effect of its failing run — never of
// a run made again, which a fault that depends on timing may pass.
func (ck *checker[T]) smallest(r run, want, got any, info runInfo) Violation {
	const budget = 16 // runs spent shrinking at most
	spent := 0
	for shrunk := true; shrunk && len(r.order) > 1 && spent < budget; {
		shrunk = false
		for _, drop := range slices.Clone(r.order) {
			if drop == r.target || spent >= budget {
				continue
			}
			try := run{order: slices.DeleteFunc(slices.Clone(r.order), func(i int) bool { return i == drop }), fault: r.fault, target: r.target}
			if r.fault == FaultNone && slices.IsSorted(try.order) {
				continue // in order: a clean run
			}
			spent += 2
			tryWant, _ := ck.cleanEffect(try.order)
			if tryGot, tryInfo := ck.runOnce(try); !reflect.DeepEqual(tryGot, tryWant) {
				r, want, got, info, shrunk = try, tryWant, tryGot, tryInfo, true
				break
			}
		}
	}
	v := Violation{Fault: r.fault, Events: positions(r.order), Want: want, Got: got}
	if r.target >= 0 {
		v.Target = r.target + 1
	}
	// A fault that holds an event back lets later events of other keys go
	// first: if the effect is that of a clean delivery in the order the
	// effects committed, the order is what the handler depends on.
	reordered := false
	if c := info.committed; r.fault != FaultNone && len(c) == len(r.order) && !slices.Equal(c, r.order) {
		inOrder, _ := ck.effectOf(c)
		reordered = reflect.DeepEqual(inOrder, got)
		if reordered {
			v.Events = positions(c)
		}
	}
	v.Reason = ck.reason(r, info.committed, reordered)
	return v
}

// reason says, in words, what a failing run shows.
func (ck *checker[T]) reason(r run, committed []int, reordered bool) string {
	ev := ""
	if r.target >= 0 {
		ev = fmt.Sprintf("event %d (%s", r.target+1, ck.c.Event.Name())
		if k := ck.keys[r.target]; !strings.HasPrefix(k, noKey) {
			ev += " key " + k
		}
		ev += ")"
	}
	byKey := func(order []int) string {
		keys := make([]string, len(order))
		for i, o := range order {
			k := strconv.Quote(ck.keys[o])
			if strings.HasPrefix(ck.keys[o], noKey) {
				k = "no key"
			}
			keys[i] = fmt.Sprintf("%d:%s", o+1, k)
		}
		return strings.Join(keys, ", ")
	}
	const orderOnly = "herald keeps order only among the events of one key, and instances of the service handle different keys at once"
	if reordered {
		what := "when every event was delivered twice"
		if ev != "" {
			what = fmt.Sprintf("when %s met %s", ev, r.fault)
		}
		return fmt.Sprintf("the handler's effect depends on the order of events of different keys: %s, events of other keys went ahead "+
			"(effects committed in the order %s, event:key), which the per-key guarantee allows — %s", what, byKey(committed), orderOnly)
	}
	switch r.fault {
	case FaultDeliveredTwice:
		return "the handler's effect changed when every event was delivered a second time after its effect committed (an ack lost): " +
			"it depends on something herald's inbox does not cover — a write outside the transaction herald hands it"
	case FaultCrashAfterCommit:
		return fmt.Sprintf("the handler's effect changed when %s was redelivered to a new instance after a crash between its commit and its ack: "+
			"it keeps state outside its tables (in memory, say) that a crash loses", ev)
	case FaultCrashInHandler:
		return fmt.Sprintf("the handler's effect ran twice when %s was redelivered after a crash inside the handler (its transaction rolled back): "+
			"it wrote outside tx — through its own connection, or by an external call without an idempotency key — or into memory", ev)
	case FaultTransient:
		return fmt.Sprintf("the handler's effect ran again when %s was retried after transient errors (its transaction rolled back each time): "+
			"it wrote outside tx — through its own connection, or by an external call without an idempotency key — or into memory", ev)
	default:
		return fmt.Sprintf("the handler's effect depends on the order of events of different keys: delivered in the order %s (event:key), "+
			"which the per-key guarantee allows, it differed — %s", byKey(r.order), orderOnly)
	}
}

// positions turns indexes into 1-based positions.
func positions(order []int) []int {
	out := make([]int, len(order))
	for i, o := range order {
		out[i] = o + 1
	}
	return out
}

// orders returns at most limit orders of the events with keys keys, other
// than the given one, that keep the order of each key's events: all of
// them when they are at most limit, else limit spread evenly over them.
func orders(keys []string, limit int) [][]int {
	var all [][]int
	const most = 10000 // orders enumerated at most, before the spread
	var walk func(prefix []int, next map[string][]int)
	byKey := map[string][]int{}
	var keyOrder []string
	for i, k := range keys {
		if _, ok := byKey[k]; !ok {
			keyOrder = append(keyOrder, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	walk = func(prefix []int, next map[string][]int) {
		if len(all) >= most {
			return
		}
		if len(prefix) == len(keys) {
			if !slices.IsSorted(prefix) {
				all = append(all, slices.Clone(prefix))
			}
			return
		}
		for _, k := range keyOrder {
			q := next[k]
			if len(q) == 0 {
				continue
			}
			next[k] = q[1:]
			walk(append(prefix, q[0]), next)
			next[k] = q
		}
	}
	walk(nil, byKey)
	if len(all) <= limit {
		return all
	}
	out := make([][]int, 0, limit)
	for i := range limit {
		out = append(out, all[i*len(all)/limit])
	}
	return out
}

// runInfo is what a run learnt besides the effect.
type runInfo struct {
	blocked   string // a handler run past its ack wait, in words
	committed []int  // the events, as indexes, in the order their effects committed
}

// runOnce runs r on a new broker and store and returns the effect. A run
// that cannot be made fails the test.
func (ck *checker[T]) runOnce(r run) (any, runInfo) {
	t := ck.t
	t.Helper()
	ck.report.Runs++
	if !slices.Contains(ck.report.Faults, r.fault) {
		ck.report.Faults = append(ck.report.Faults, r.fault)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ck.c.Timeout)
	defer cancel()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(ck.log))
	if err != nil {
		t.Fatalf("heraldtest: check: embedded NATS: %v", err)
	}
	defer b.Close()
	st := newStore(ck.t)
	defer st.Close()
	inj := newInjector(r.fault, ck.c.Subscription)
	tr := newTracker()

	// The producer: a translation from a domain event of its own, or a
	// notification emitted directly.
	// The producer's store is the checker's own, never the subject of the
	// check: an SQLite file, whatever EnvPostgres says; closed with the run.
	pst := testdb.SQLite(t)
	defer pst.Close()
	producer, record, err := ck.producer(pst, b, tr, inj)
	if err != nil {
		t.Fatalf("heraldtest: check: %v", err)
	}
	defer producer.Close()

	start := func() Instance {
		g := inj.instance()
		inst, err := ck.c.Service(ctx, st, herald.WithBroker(g.broker(b)), herald.WithObserver(tr),
			herald.WithLogger(ck.log), faulthook.With(g).(herald.Option))
		if err != nil {
			t.Fatalf("heraldtest: check: Check.Service: %v", err)
		}
		if err := inst.Start(ctx); err != nil {
			_ = inst.Close()
			t.Fatalf("heraldtest: check: start the service: %v", err)
		}
		return inst
	}
	inst := start()
	defer func() { _ = inst.Close() }()
	m, err := inst.Manifest()
	if err != nil {
		t.Fatalf("heraldtest: check: %v", err)
	}
	ck.service = m.Service
	if !slices.ContainsFunc(m.Subscriptions, func(s catalog.Subscription) bool {
		return s.Name == ck.c.Subscription && s.Event == ck.c.Event.Name()
	}) {
		t.Fatalf("heraldtest: check: service %s has no subscription %q to %s (Check.Service must register it)",
			m.Service, ck.c.Subscription, ck.c.Event.Name())
	}
	if ck.c.Seed != nil {
		if err := ck.c.Seed(ctx, st); err != nil {
			t.Fatalf("heraldtest: check: Check.Seed: %v", err)
		}
	}
	if err := producer.Start(ctx); err != nil {
		t.Fatalf("heraldtest: check: start the producer: %v", err)
	}

	subs := map[string][]subscriber{}
	for _, s := range m.Subscriptions {
		subs[s.Event] = append(subs[s.Event], subscriber{service: m.Service, name: s.Name})
	}
	f := newFlowState(subs)
	f.adopting = false
	corr := herald.NewID()
	f.corr[corr] = true
	tr.add(f)
	defer tr.remove(f)
	fctx := herald.WithCorrelationID(ctx, corr)

	// settle waits until everything recorded has settled, and what the
	// fault injected has played out; with restart, it returns as soon as a
	// new instance replaced one that died.
	settle := func(restart bool) {
		for {
			tr.mu.Lock()
			open := f.outstanding()
			tr.mu.Unlock()
			crashed, done := inj.state()
			if crashed {
				// The dead instance goes; a new one takes over on its store.
				_ = inst.Close()
				inj.restarted()
				inst = start()
				if restart {
					return
				}
				continue
			}
			if len(open) == 0 && done {
				return
			}
			select {
			case <-f.wake:
			case <-inj.wake:
			case <-ctx.Done():
				fl := tr.result(f, describeOpen(open, nil))
				var why []string
				if len(fl.Unfinished) > 0 {
					why = append(why, fmt.Sprintf("%d hop(s) unfinished:\n  %s", len(fl.Unfinished), strings.Join(fl.Unfinished, "\n  ")))
				}
				if d := inj.describe(); d != "" {
					why = append(why, d)
				}
				t.Fatalf("heraldtest: check: a run (%s, events %v) did not settle within %v: %s\n%s",
					r.fault, positions(r.order), ck.c.Timeout, strings.Join(why, "; "), fl)
			}
		}
	}
	crash := r.fault == FaultCrashAfterCommit || r.fault == FaultCrashInHandler
	for _, i := range r.order {
		inj.expect(i, r.target == i || r.target < 0)
		if err := record(fctx, ck.c.Events[i]); err != nil {
			t.Fatalf("heraldtest: check: record event %d: %v", i+1, err)
		}
		if crash && i == r.target {
			// The later events come after the crash, to the new instance:
			// what the dead one kept in memory is gone for them.
			settle(true)
		}
	}
	settle(false)

	info := runInfo{blocked: inj.blockedText()}
	tr.mu.Lock()
	for _, rec := range f.records {
		if rec.Hop == herald.HopHandle && rec.Outcome == herald.OutcomeOK && rec.Service == m.Service && rec.Subscription == ck.c.Subscription {
			if i, ok := inj.index(rec.EventID); ok {
				info.committed = append(info.committed, i)
			}
		}
	}
	tr.mu.Unlock()
	got, err := ck.c.Effect(ctx, st)
	if err != nil {
		t.Fatalf("heraldtest: check: Check.Effect: %v", err)
	}
	return got, info
}

// newStore opens a new store for a run: a new SQLite file, or a new schema
// on the PostgreSQL server of EnvPostgres; closed when the test ends.
func newStore(t testing.TB) *store.Store {
	if testdb.PostgresEnabled() {
		return testdb.Postgres(t)
	}
	return testdb.SQLite(t)
}

// producer builds the service that records the check's events, and the
// function that records one, in a transaction of its own.
func (ck *checker[T]) producer(st *store.Store, b *natsjs.Broker, tr *tracker, inj *injector) (*herald.Service, func(context.Context, T) error, error) {
	svc, err := herald.New("heraldtest-producer", herald.WithStore(st), herald.WithBroker(b),
		herald.WithObserver(tr), herald.WithObserver(inj), herald.WithLogger(ck.log))
	if err != nil {
		return nil, nil, err
	}
	switch ev := ck.c.Event.(type) {
	case *herald.IntegrationEvent[T]:
		dom := herald.Domain[T]("heraldtest.checked")
		if err := herald.Translate(svc, dom, ev, func(_ context.Context, e T) (T, error) { return e, nil }); err != nil {
			return nil, nil, err
		}
		return svc, func(ctx context.Context, e T) error {
			return svc.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, dom, e) })
		}, nil
	case *herald.NotificationEvent[T]:
		if err := svc.Register(ev); err != nil {
			return nil, nil, err
		}
		return svc, func(ctx context.Context, e T) error {
			return svc.Do(ctx, func(tx herald.Tx) error { return herald.Notify(tx, ev, e) })
		}, nil
	}
	return nil, nil, fmt.Errorf("Check.Event %s: not an integration or notification event", ck.c.Event)
}
