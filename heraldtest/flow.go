package heraldtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/trace"
)

// Flow is what one action caused, transitively, once it settled (or when
// Run gave up waiting): every hop of every event of its business flow.
type Flow struct {
	// Correlations are the flows (correlation ids) the action's events
	// belong to: one, unless the action started several (say, two Do calls
	// outside the context Run passed it).
	Correlations []string
	// Records are the hops in the order the system's observer saw them.
	Records []trace.Record
	// Tree arranges the records by causation: the action's events at the
	// roots, what each caused below it.
	Tree *trace.Tree
	// DeadLetters are the dead-letter hops: events a subscription gave up
	// on (Subscription set), or a relay could not publish.
	DeadLetters []trace.Record
	// Settled reports whether Run saw the flow settle: false when it gave
	// up waiting, or the action failed.
	Settled bool
	// Unfinished describes the hops still outstanding when Run gave up, one
	// line each; empty when Settled.
	Unfinished []string

	deliveries []Delivery
}

// Delivery is one notification delivery of a flow: a recipient on a
// channel, as a notifier (package notify) decided it for a notification
// event of the flow, and how it ended.
type Delivery struct {
	ID        string // the delivery's id in the notifier's log
	Service   string // the notifier's service
	EventID   string // the notification event it delivers
	Type      string // the event's type
	Recipient string
	Channel   string
	// Outcome is the delivery's last known state: "sent" or "delivered";
	// "failed", "suppressed" or "throttled" (by the decision or the
	// sender); "deferred" (quiet hours, a fallback waiting on its primary)
	// or "digested", which a settled flow does not wait for. "queued" or
	// "retry" only in a flow that did not settle.
	Outcome herald.Outcome
	// Err says why a delivery did not end sent or delivered (a
	// *notify.DeliveryError's text); empty when it did.
	Err string
}

// Deliveries returns the flow's notification deliveries, in the order the
// notifiers decided them. A settled flow has every delivery its
// notification events decided, each finished: sent, delivered, failed,
// suppressed or throttled, or deferred or digested for later.
func (f *Flow) Deliveries() []Delivery { return slices.Clone(f.deliveries) }

// Sent returns the deliveries of the flow on channel (every channel with
// "") that ended sent or delivered.
func (f *Flow) Sent(channel string) []Delivery {
	var out []Delivery
	for _, d := range f.deliveries {
		if (channel == "" || d.Channel == channel) && (d.Outcome == "sent" || d.Outcome == "delivered") {
			out = append(out, d)
		}
	}
	return out
}

// Events returns the flow's events of type typ (every event with typ ""),
// parents before children.
func (f *Flow) Events(typ string) []*trace.Node {
	var out []*trace.Node
	f.Tree.Walk(func(n *trace.Node, _ int) {
		if typ == "" || n.Type == typ {
			out = append(out, n)
		}
	})
	return out
}

// Handled returns the hops where the subscription sub of service handled
// an event of the flow and committed its effect (outcome ok), in the order
// they happened.
func (f *Flow) Handled(service, sub string) []trace.Record {
	var out []trace.Record
	for _, r := range f.Records {
		if r.Hop == herald.HopHandle && r.Outcome == herald.OutcomeOK && r.Service == service && r.Subscription == sub {
			out = append(out, r)
		}
	}
	return out
}

// String formats the flow's tree (trace.Tree.Format).
func (f *Flow) String() string {
	var b strings.Builder
	_ = f.Tree.Format(&b)
	return b.String()
}

// Run runs action and waits until everything it caused has finished:
// every integration and notification event it (or a handler it caused)
// wrote to an outbox is published, and handled or dead-lettered by every
// subscription of the system's services that receives its type; what those
// handlers record is followed the same way. It returns what happened.
//
// action gets a context that carries a new correlation id and the
// system's settle timeout; events recorded under it belong to the flow.
// Events recorded while action runs that start a flow of their own (a Do
// inside an HTTP handler the action calls, whose context does not come
// from action's) join it too, so Run also follows what a request into a
// service causes; a test that runs flows concurrently should use the
// context it is given.
//
// An action that returns an error fails the test (t.Fatalf). A flow that
// has not settled within the settle timeout fails it too, listing each
// unfinished hop — the event, and the relay or subscription it waits on —
// and the tree so far. Run waits on the system's observer, never by
// polling. The notification deliveries a notifier decides for the flow's
// events are waited for too, until sent, failed or suppressed, or put off
// (deferred, digested): see Flow.Deliveries.
func (s *System) Run(t testing.TB, action func(ctx context.Context) error) *Flow {
	t.Helper()
	f := newFlowState(s.subscribers(t))
	id := herald.NewID()
	f.corr[id] = true
	s.tracker.add(f)
	defer s.tracker.remove(f)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.settle)
	defer cancel()
	err := action(herald.WithCorrelationID(ctx, id))
	s.tracker.mu.Lock()
	f.adopting, f.early = false, nil
	s.tracker.mu.Unlock()
	if err != nil {
		t.Fatalf("heraldtest: the flow's action failed: %v", err)
		fl := s.tracker.result(f, nil)
		fl.Settled = false
		return fl
	}
	for {
		s.tracker.mu.Lock()
		open := f.outstanding()
		s.tracker.mu.Unlock()
		if len(open) == 0 {
			return s.tracker.result(f, nil)
		}
		select {
		case <-f.wake:
		case <-ctx.Done():
			s.tracker.mu.Lock()
			open = f.outstanding()
			s.tracker.mu.Unlock()
			if len(open) == 0 {
				return s.tracker.result(f, nil)
			}
			fl := s.tracker.result(f, s.describe(open))
			t.Fatalf("heraldtest: flow did not settle within %v: %d hop(s) unfinished:\n  %s\nthe flow so far:\n%s",
				s.cfg.settle, len(fl.Unfinished), strings.Join(fl.Unfinished, "\n  "), fl)
			return fl
		}
	}
}

// describe says, one line each, what the open hops wait for.
func (s *System) describe(open []openHop) []string {
	s.mu.Lock()
	stopped := map[string]bool{}
	for _, e := range s.services {
		stopped[e.svc.Name()] = !e.started
	}
	s.mu.Unlock()
	return describeOpen(open, stopped)
}

// describeOpen says, one line each, what the open hops wait for; stopped
// names the services not started.
func describeOpen(open []openHop, stopped map[string]bool) []string {
	out := make([]string, 0, len(open))
	for _, o := range open {
		var b strings.Builder
		switch o.key.stage {
		case stagePublish:
			fmt.Fprintf(&b, "%s: not published by the relay of %s", o.describeEvent(), o.key.service)
		case stageHandle:
			fmt.Fprintf(&b, "%s: not handled by %s/%s", o.describeEvent(), o.key.service, o.key.sub)
		case stageDeliver:
			fmt.Fprintf(&b, "delivery %s of %s to %s on %s: not delivered by the notifier of %s",
				o.key.event, o.describeEvent(), o.recipient, o.channel, o.key.service)
		}
		if stopped[o.key.service] {
			fmt.Fprintf(&b, " (service %s is not started)", o.key.service)
		}
		if o.attempt > 0 {
			fmt.Fprintf(&b, "; attempt %d", o.attempt)
		}
		if o.lastErr != "" {
			fmt.Fprintf(&b, ", last error: %s", o.lastErr)
		}
		out = append(out, b.String())
	}
	return out
}

// subscriber is one subscription of one of the system's services.
type subscriber struct{ service, name string }

// stage is what a hop of an event waits for.
type stage int

const (
	stagePublish stage = iota // the producer's relay publishes the event
	stageHandle               // a subscription handles or dead-letters it
	stageDeliver              // a notifier sends a delivery it decided (event: the delivery id)
)

// hopKey names one hop of one event: its publish by a service's relay, its
// handling by one subscription, or the sending of one of its notification
// deliveries by a notifier (event is then the delivery's id).
type hopKey struct {
	event   string
	stage   stage
	service string
	sub     string // stageHandle
}

// hopState is what the observer learnt of one hop. A hop can be seen done
// before it is seen expected: the consumer of another service may report a
// handled event before the producer's relay reports its publish.
type hopState struct {
	typ   string // the event's type (a delivery's: its notification event's)
	cause string // stageDeliver: the notification event's id
	// recipient and channel of a stageDeliver hop
	recipient, channel string
	expected           bool // something the flow did makes it owed
	done               bool // handled, published, or dead-lettered
	attempt            int
	lastErr            string
}

// openHop is an unfinished hop, for the report.
type openHop struct {
	key hopKey
	hopState
}

func (o openHop) describeEvent() string {
	if o.key.stage == stageDeliver {
		return o.typ + " " + o.cause
	}
	return o.typ + " " + o.key.event
}

// tracker is the observer the system gives every service: it hands each
// observation to the flows Run is waiting on. It is an InlineObserver so
// that an event's producer-side observations (record, translate, notify)
// happen before the hop that caused them is reported done — herald reports
// a transaction's events before Do returns and before the consumer's
// handled hops — and so none is ever dropped.
type tracker struct {
	mu    sync.Mutex // guards flows and the state of every flow
	flows map[*flowState]struct{}
}

func newTracker() *tracker { return &tracker{flows: map[*flowState]struct{}{}} }

// Inline marks the tracker as an observer herald may call on its hot path:
// it only takes a mutex held for a few map operations.
func (tr *tracker) Inline() {}

// Observe hands o to every flow being waited on.
func (tr *tracker) Observe(_ context.Context, o herald.Observation) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for f := range tr.flows {
		f.observe(o)
	}
}

func (tr *tracker) add(f *flowState) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.flows[f] = struct{}{}
}

func (tr *tracker) remove(f *flowState) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	delete(tr.flows, f)
}

// result is the Flow of f so far; unfinished, if any, describe what is
// still open.
func (tr *tracker) result(f *flowState, unfinished []string) *Flow {
	tr.mu.Lock()
	recs := slices.Clone(f.records)
	dels := make([]Delivery, len(f.deliveries))
	for i, d := range f.deliveries {
		dels[i] = *d
	}
	tr.mu.Unlock()
	out := &Flow{Records: recs, Tree: trace.Build(recs), Settled: len(unfinished) == 0, Unfinished: unfinished, deliveries: dels}
	seen := map[string]bool{}
	for _, r := range recs {
		if !seen[r.CorrelationID] {
			seen[r.CorrelationID] = true
			out.Correlations = append(out.Correlations, r.CorrelationID)
		}
		if r.Hop == herald.HopDeadLetter {
			out.DeadLetters = append(out.DeadLetters, r)
		}
	}
	return out
}

// flowState is one flow Run waits on. The tracker's mutex guards it.
type flowState struct {
	subs     map[string][]subscriber // event type → the subscriptions receiving it
	corr     map[string]bool         // the flow's correlation ids
	adopting bool                    // the action runs: new flows it starts join this one
	// early holds, while the action runs, the observations of flows not
	// (yet) the flow's: those of a flow the action starts can come before
	// the report of its first event, which makes it the flow's.
	early   map[string][]herald.Observation
	records []trace.Record
	hops    map[hopKey]*hopState
	order   []hopKey      // the hops in the order first seen, for the report
	wake    chan struct{} // a token after each observation of the flow
	// deliveries are the notification deliveries, by id and in the order
	// first seen.
	deliveries []*Delivery
	delivery   map[string]*Delivery
}

// newFlowState returns the state of a flow whose action is about to run;
// subs maps event types to the subscriptions receiving them.
func newFlowState(subs map[string][]subscriber) *flowState {
	return &flowState{
		subs:     subs,
		corr:     map[string]bool{},
		hops:     map[hopKey]*hopState{},
		delivery: map[string]*Delivery{},
		wake:     make(chan struct{}, 1),
		adopting: true,
		early:    map[string][]herald.Observation{},
	}
}

// observe updates the flow with o, if o belongs to it.
func (f *flowState) observe(o herald.Observation) {
	e := o.Event
	if e.CorrelationID == "" {
		return // an undecodable message's dead letter: no flow to put it in
	}
	if !f.corr[e.CorrelationID] {
		if !f.adopting {
			return
		}
		// A replayed dead letter joins the flow whose action replayed it.
		root := e.CausationID == "" && (o.Hop == herald.HopRecord || o.Hop == herald.HopTranslate || o.Hop == herald.HopNotify) ||
			o.Hop == herald.HopReplay
		if !root {
			// Perhaps of a flow the action is starting: a relay may
			// publish a transaction's events, and a consumer handle them,
			// before the committing goroutine reports them.
			f.early[e.CorrelationID] = append(f.early[e.CorrelationID], o)
			return
		}
		f.corr[e.CorrelationID] = true
		for _, eo := range f.early[e.CorrelationID] {
			f.apply(eo)
		}
		delete(f.early, e.CorrelationID)
	}
	f.apply(o)
}

// apply updates the flow with o, which belongs to it.
func (f *flowState) apply(o herald.Observation) {
	e := o.Event
	f.records = append(f.records, trace.FromObservation(o))
	switch o.Hop {
	case herald.HopTranslate, herald.HopNotify:
		f.hop(hopKey{event: e.ID, stage: stagePublish, service: o.Service}, e.Type).expected = true
	case herald.HopPublish:
		h := f.hop(hopKey{event: e.ID, stage: stagePublish, service: o.Service}, e.Type)
		h.attempt++
		if o.Outcome != herald.OutcomeOK {
			h.lastErr = errText(o.Err)
			break
		}
		h.done = true
		for _, s := range f.subs[e.Type] {
			f.hop(hopKey{event: e.ID, stage: stageHandle, service: s.service, sub: s.name}, e.Type).expected = true
		}
	case herald.HopHandle:
		h := f.hop(hopKey{event: e.ID, stage: stageHandle, service: o.Service, sub: o.Subscription}, e.Type)
		h.attempt = o.Attempt
		switch o.Outcome {
		case herald.OutcomeOK, herald.OutcomeDuplicate:
			h.done = true
		default:
			h.lastErr = errText(o.Err)
		}
	case herald.HopReplay:
		// The replay owes the subscription's hop again, whatever the
		// event's first delivery did; a replay the broker refused ends it.
		h := f.hop(hopKey{event: e.ID, stage: stageHandle, service: o.Service, sub: o.Subscription}, e.Type)
		h.expected, h.done = true, o.Outcome != herald.OutcomeOK
		h.lastErr = errText(o.Err)
	case herald.HopDeadLetter:
		k := hopKey{event: e.ID, stage: stageHandle, service: o.Service, sub: o.Subscription}
		if o.Subscription == "" {
			k = hopKey{event: e.ID, stage: stagePublish, service: o.Service} // the relay parked it
		}
		h := f.hop(k, e.Type)
		h.done, h.attempt, h.lastErr = true, o.Attempt, errText(o.Err)
	case herald.HopDecide:
		// Decided queued, it is owed until the notifier reports it sent,
		// failed or suppressed; decided in any other state — ended
		// (failed, suppressed, throttled) or put off (deferred, digested)
		// — it is finished for the flow.
		h := f.deliveryHop(o)
		h.expected = true
		if o.Outcome != outcomeQueued {
			h.done = true
		}
		f.noteDelivery(o, false)
	case herald.HopDeliver:
		h := f.deliveryHop(o)
		if o.Outcome == herald.OutcomeRetry {
			h.attempt, h.lastErr = o.Attempt, errText(o.Err)
		} else {
			h.done = true
		}
		f.noteDelivery(o, true)
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// outcomeQueued is the outcome of a decide hop whose delivery is to be sent.
const outcomeQueued herald.Outcome = "queued"

// deliveryHop returns the state of the sending of o's delivery.
func (f *flowState) deliveryHop(o herald.Observation) *hopState {
	h := f.hop(hopKey{event: o.Event.ID, stage: stageDeliver, service: o.Service}, o.Event.Type)
	h.cause, h.recipient, h.channel = o.Event.CausationID, o.Recipient, o.Reason
	return h
}

// noteDelivery updates the record of o's delivery; a deliver hop (sent)
// overrides the decided state, a decide hop seen after it does not.
func (f *flowState) noteDelivery(o herald.Observation, sent bool) {
	d := f.delivery[o.Event.ID]
	if d == nil {
		d = &Delivery{ID: o.Event.ID, Service: o.Service, EventID: o.Event.CausationID, Type: o.Event.Type,
			Recipient: o.Recipient, Channel: o.Reason}
		f.delivery[o.Event.ID] = d
		f.deliveries = append(f.deliveries, d)
	} else if !sent && d.Outcome != "" {
		return // the notifier reported it before the decision's report
	}
	d.Outcome, d.Err = o.Outcome, errText(o.Err)
}

// hop returns the state of k, creating it.
func (f *flowState) hop(k hopKey, typ string) *hopState {
	h := f.hops[k]
	if h == nil {
		h = &hopState{typ: typ}
		f.hops[k] = h
		f.order = append(f.order, k)
	}
	return h
}

// outstanding returns the hops owed and not done, in the order first seen.
func (f *flowState) outstanding() []openHop {
	var out []openHop
	for _, k := range f.order {
		if h := f.hops[k]; h.expected && !h.done {
			out = append(out, openHop{key: k, hopState: *h})
		}
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// String names the hop in tests: "publish <event> <service>", "handle
// <event> <service>/<subscription>" or "deliver <delivery> <service>".
func (k hopKey) String() string {
	switch k.stage {
	case stagePublish:
		return "publish " + k.event + " " + k.service
	case stageDeliver:
		return "deliver " + k.event + " " + k.service
	}
	return "handle " + k.event + " " + k.service + "/" + k.sub
}
