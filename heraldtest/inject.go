package heraldtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
)

// The errors a check injects.
var (
	errCrashed   = errors.New("heraldtest: injected crash: this instance is dead")
	errTransient = errors.New("heraldtest: injected transient error, after the handler ran")
)

// deadRedelivery is how long the broker waits before it redelivers what a
// dead instance still got: the new instance restarts the subscription at
// its ack floor before then.
const deadRedelivery = 100 * time.Millisecond

// transientFailures is how many runs of the target's handler
// FaultTransient fails.
const transientFailures = 2

// injector injects one run's fault. It learns the ids of the events the
// producer records from its observations (it is an observer of the
// producer), hits the events it is told to (expect), and says when what it
// injected has played out: a redelivery handled, a new instance started.
//
// Each instance of the service under check gets its own view (instance),
// for its broker and its herald hooks: a crash kills one instance, whose
// transactions then fail, whose acks are lost, and which gets nothing more.
type injector struct {
	fault Fault
	sub   string        // the subscription under check
	wake  chan struct{} // a token after each change

	mu       sync.Mutex
	next     int                // the index of the event being recorded
	target   bool               // it is hit by the fault
	ids      map[string]int     // event id → its index in Check.Events
	targets  map[string]bool    // event id → hit by the fault
	owed     map[string]owedAck // target ids whose injected redelivery is still to be settled
	failures map[string]int     // FaultTransient: injected failures by event id
	fired    bool               // a crash was injected
	crashed  bool               // an instance died, and no new one replaced it yet
	gens     int                // instances started
	dead     map[int]bool       // instances that died
	ackWait  map[string]time.Duration
	blocked  string
}

// owedAck is the settle that ends an injected redelivery: on an instance
// of generation gen at least, of a delivery numbered delivered at least.
type owedAck struct {
	gen       int
	delivered uint64
}

func newInjector(fault Fault, sub string) *injector {
	return &injector{fault: fault, sub: sub, wake: make(chan struct{}, 1), targets: map[string]bool{}, ids: map[string]int{},
		owed: map[string]owedAck{}, failures: map[string]int{}, dead: map[int]bool{}, ackWait: map[string]time.Duration{}}
}

func (in *injector) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// expect says which event (its index in Check.Events) is recorded next,
// and whether the fault hits it.
func (in *injector) expect(i int, target bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.next, in.target = i, target
}

// index returns the index in Check.Events of the event id.
func (in *injector) index(id string) (int, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	i, ok := in.ids[id]
	return i, ok
}

// Inline: the injector only takes a mutex for a few map operations.
func (in *injector) Inline() {}

// Observe learns the id of each event the producer records.
func (in *injector) Observe(_ context.Context, o herald.Observation) {
	if o.Hop != herald.HopTranslate && o.Hop != herald.HopNotify {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.learn(o.Event.ID)
}

// learn notes id as the event being recorded, unless it is known already;
// in.mu is held. The producer reports an event after its transaction
// committed, and its relay and the consumer can be quicker, so the
// consumer's side learns an id it meets first too: the check's events are
// recorded one at a time, each reported before the next is recorded, so
// an id not known yet is the one being recorded.
func (in *injector) learn(id string) {
	if _, ok := in.ids[id]; ok {
		return
	}
	in.ids[id] = in.next
	if !in.target {
		return
	}
	in.targets[id] = true
	switch in.fault {
	case FaultDeliveredTwice:
		in.owed[id] = owedAck{delivered: 2}
	case FaultCrashAfterCommit, FaultCrashInHandler:
		in.owed[id] = owedAck{gen: 1}
	}
}

// state reports whether an instance died and waits to be replaced, and
// whether everything injected has played out.
func (in *injector) state() (crashed, done bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.crashed, len(in.owed) == 0 && !in.crashed
}

// restarted notes that a new instance replaced the dead one.
func (in *injector) restarted() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.crashed = false
}

// describe says what the injector still waits for, for a run that did not
// settle.
func (in *injector) describe() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.owed) == 0 {
		return ""
	}
	ids := make([]string, 0, len(in.owed))
	for id := range in.owed {
		ids = append(ids, id)
	}
	return fmt.Sprintf("the injected %s is still to play out for events %v", in.fault, ids)
}

func (in *injector) blockedText() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.blocked
}

// instance returns the view of the next instance of the service.
func (in *injector) instance() *instance {
	in.mu.Lock()
	defer in.mu.Unlock()
	g := &instance{in: in, gen: in.gens}
	in.gens++
	return g
}

// instance is the injector as one instance of the service sees it: its
// herald hooks (faulthook.Faults) and its broker.
type instance struct {
	in  *injector
	gen int
}

// isDead reports whether the instance died.
func (g *instance) isDead() bool {
	g.in.mu.Lock()
	defer g.in.mu.Unlock()
	return g.in.dead[g.gen]
}

// die kills the instance.
func (g *instance) die() {
	in := g.in
	in.mu.Lock()
	in.fired, in.crashed, in.dead[g.gen] = true, true, true
	in.mu.Unlock()
	in.signal()
}

// Handle runs one run of a handler with the fault: a dead instance runs
// nothing; the target's run is followed by a crash (FaultCrashInHandler)
// or a transient error (FaultTransient). It also notes a run longer than
// its subscription's ack wait.
func (g *instance) Handle(_ context.Context, sub string, maxAttempts int, e *envelope.Envelope, run func() error) error {
	if g.isDead() {
		return errCrashed
	}
	start := time.Now()
	err := run()
	took := time.Since(start)
	in := g.in
	in.mu.Lock()
	if sub == in.sub {
		in.learn(e.ID)
	}
	if w := in.ackWait[sub]; w > 0 && took > w && in.blocked == "" {
		in.blocked = fmt.Sprintf("the handler ran %v for event %d (%s), past its ack wait of %v: the broker redelivers an event "+
			"whose ack is that late, while the handler still runs, unless herald's heartbeat reaches it first; "+
			"keep handlers short, or raise herald.AckWait", took.Round(time.Millisecond), in.ids[e.ID]+1, e.Type, w)
	}
	target := sub == in.sub && in.targets[e.ID] && err == nil
	var inject error
	switch {
	case !target:
	case in.fault == FaultCrashInHandler && !in.fired:
		inject = errCrashed
	case in.fault == FaultTransient && in.failures[e.ID] < min(transientFailures, maxAttempts-1):
		// Fewer than the retry policy's attempts: the event must not be
		// dead-lettered by the faults alone.
		in.failures[e.ID]++
		inject = errTransient
	}
	in.mu.Unlock()
	if errors.Is(inject, errCrashed) {
		g.die()
	}
	if inject != nil {
		return inject
	}
	return err
}

// Commit fails every transaction of a dead instance.
func (g *instance) Commit(context.Context, string) error {
	if g.isDead() {
		return errCrashed
	}
	return nil
}

// crashAckWait bounds the ack wait of the subscriptions in a run with a
// crash. What was out to the dead instance — a delivery on its way as it
// closed — comes back only after the ack wait, as in production; a short
// one keeps the run short.
const crashAckWait = time.Second

// broker returns b as the instance sees it: its deliveries carry the fault.
func (g *instance) broker(b *natsjs.Broker) broker.Broker { return &faultyBroker{Broker: b, g: g} }

// faultyBroker is the broker of one instance. It embeds the concrete
// broker, so that the optional interfaces it implements (broker.Claimer,
// broker.PendingStater…) reach herald unchanged.
type faultyBroker struct {
	*natsjs.Broker
	g *instance
}

// Provision shortens the ack waits of a run with a crash (crashAckWait).
func (b *faultyBroker) Provision(ctx context.Context, t broker.Topology) error {
	if f := b.g.in.fault; f == FaultCrashAfterCommit || f == FaultCrashInHandler {
		t.Subscriptions = slices.Clone(t.Subscriptions)
		for i := range t.Subscriptions {
			t.Subscriptions[i].AckWait = min(t.Subscriptions[i].AckWait, crashAckWait)
		}
	}
	return b.Broker.Provision(ctx, t)
}

func (b *faultyBroker) Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error {
	in := b.g.in
	in.mu.Lock()
	in.ackWait[sub.Name] = sub.AckWait
	in.mu.Unlock()
	checked := sub.Name == in.sub
	return b.Broker.Consume(ctx, sub, batch, func(ctx context.Context, ds []broker.Delivery) {
		if b.g.isDead() {
			for _, d := range ds {
				_ = d.Nak(deadRedelivery) // a dead instance gets nothing
			}
			return
		}
		out := make([]broker.Delivery, len(ds))
		for i, d := range ds {
			out[i] = &faultyDelivery{Delivery: d, g: b.g, checked: checked}
		}
		h(ctx, out)
	})
}

// faultyDelivery is one delivery to an instance: its ack may be lost.
type faultyDelivery struct {
	broker.Delivery
	g       *instance
	checked bool // of the subscription under check
}

func (d *faultyDelivery) Ack(ctx context.Context) error {
	if d.lose() {
		return nil
	}
	err := d.Delivery.Ack(ctx)
	d.settled()
	return err
}

func (d *faultyDelivery) AckNoWait() error {
	if d.lose() {
		return nil
	}
	err := d.Delivery.AckNoWait()
	d.settled()
	return err
}

func (d *faultyDelivery) Term() error {
	err := d.Delivery.Term()
	d.settled()
	return err
}

// lose reports whether the ack is lost, and then asks for the redelivery
// the broker would make once the ack wait ran out: every ack of a dead
// instance, the target's first ack for FaultDeliveredTwice, and the
// target's ack that FaultCrashAfterCommit's crash comes before.
func (d *faultyDelivery) lose() bool {
	g, in := d.g, d.g.in
	if g.isDead() {
		_ = d.Delivery.Nak(deadRedelivery)
		return true
	}
	if !d.checked {
		return false
	}
	id := d.Header()["ce-id"]
	in.mu.Lock()
	in.learn(id)
	target := in.targets[id]
	var lost, crash bool
	switch {
	case !target:
	case in.fault == FaultDeliveredTwice && d.NumDelivered() == 1:
		lost = true
	case in.fault == FaultCrashAfterCommit && !in.fired:
		lost, crash = true, true
	}
	in.mu.Unlock()
	if !lost {
		return false
	}
	if crash {
		g.die()
		_ = d.Delivery.Nak(deadRedelivery)
		return true
	}
	_ = d.Delivery.Nak(0)
	return true
}

// settled notes that a delivery was settled, which may end an injected
// redelivery.
func (d *faultyDelivery) settled() {
	if !d.checked {
		return
	}
	in := d.g.in
	id := d.Header()["ce-id"]
	in.mu.Lock()
	in.learn(id)
	o, ok := in.owed[id]
	switch {
	case !ok:
	case d.g.gen >= o.gen && d.NumDelivered() >= o.delivered:
		delete(in.owed, id)
	case in.fault == FaultCrashInHandler && !in.fired:
		// Settled before its handler ever ran to its end (a dead letter):
		// there was no run to crash in.
		delete(in.owed, id)
	}
	in.mu.Unlock()
	if ok {
		in.signal()
	}
}
