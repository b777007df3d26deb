package heraldtest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
)

// obs builds the observations of the tracking tests: a domain event d in
// orders translated to an integration event i that shipping/schedule
// receives.
func obs(hop herald.Hop, service, sub, id, cause, corr string, outcome herald.Outcome) herald.Observation {
	return herald.Observation{Hop: hop, Service: service, Subscription: sub, Outcome: outcome,
		Event: envelope.Envelope{ID: id, Type: "t-" + id, CausationID: cause, CorrelationID: corr}}
}

var (
	record    = obs(herald.HopRecord, "orders", "", "d", "", "c", herald.OutcomeOK)
	translate = obs(herald.HopTranslate, "orders", "", "i", "d", "c", herald.OutcomeOK)
	publish   = obs(herald.HopPublish, "orders", "", "i", "d", "c", herald.OutcomeOK)
	pubFailed = func() herald.Observation {
		o := obs(herald.HopPublish, "orders", "", "i", "d", "c", herald.OutcomeError)
		o.Err = errors.New("no responders")
		return o
	}()
	handled = obs(herald.HopHandle, "shipping", "schedule", "i", "d", "c", herald.OutcomeOK)
	retried = func() herald.Observation {
		o := obs(herald.HopHandle, "shipping", "schedule", "i", "d", "c", herald.OutcomeRetry)
		o.Attempt, o.Err = 1, errors.New("busy")
		return o
	}()
	deadLettered = obs(herald.HopDeadLetter, "shipping", "schedule", "i", "d", "c", herald.OutcomeError)
	other        = obs(herald.HopRecord, "orders", "", "x", "", "elsewhere", herald.OutcomeOK)

	// The notification flow: d also causes a notification event n that the
	// notifier's subscription notes/route receives and decides one
	// delivery m of (alice by e-mail).
	notified         = obs(herald.HopNotify, "orders", "", "n", "d", "c", herald.OutcomeOK)
	notePub          = obs(herald.HopPublish, "orders", "", "n", "d", "c", herald.OutcomeOK)
	noteHandled      = obs(herald.HopHandle, "notes", "route", "n", "d", "c", herald.OutcomeOK)
	decideQueued     = delivery(herald.HopDecide, "queued")
	decideDeferred   = delivery(herald.HopDecide, "deferred")
	decideSuppressed = delivery(herald.HopDecide, "suppressed")
	sent             = delivery(herald.HopDeliver, "sent")
	sendRetry        = delivery(herald.HopDeliver, herald.OutcomeRetry)
)

// delivery is an observation of delivery m of notification event n.
func delivery(hop herald.Hop, outcome herald.Outcome) herald.Observation {
	o := obs(hop, "notes", "", "m", "n", "c", outcome)
	o.Recipient, o.Reason = "alice", "email"
	return o
}

// trackingSubs are the subscriptions of the tracking tests.
var trackingSubs = map[string][]subscriber{"t-i": {{service: "shipping", name: "schedule"}}, "t-n": {{service: "notes", name: "route"}}}

// TestTracking feeds a flow's observations in the orders herald can report
// them in — across services and goroutines there is no order — and checks
// what is left owed.
func TestTracking(t *testing.T) {
	cases := []struct {
		name    string
		known   bool // the flow's correlation is known from the start (else adopted)
		after   bool // the action returned: no flow is adopted any more
		seq     []herald.Observation
		open    []string // hopKey.String of what is owed
		records int
	}{
		{"in order", true, false, []herald.Observation{record, translate, publish, handled}, nil, 4},
		{"handled before published", true, false, []herald.Observation{record, translate, handled, publish}, nil, 4},
		{"published before translated", true, false, []herald.Observation{record, publish, handled, translate}, nil, 4},
		{"published, not handled", true, false, []herald.Observation{record, translate, publish}, []string{"handle i shipping/schedule"}, 3},
		{"translated, not published", true, false, []herald.Observation{record, translate}, []string{"publish i orders"}, 2},
		{"publish failed", true, false, []herald.Observation{record, translate, pubFailed}, []string{"publish i orders"}, 3},
		{"retrying", true, false, []herald.Observation{record, translate, publish, retried}, []string{"handle i shipping/schedule"}, 4},
		{"retried then handled", true, false, []herald.Observation{record, translate, publish, retried, handled}, nil, 5},
		{"dead-lettered", true, false, []herald.Observation{record, translate, publish, retried, deadLettered}, nil, 5},
		{"adopted in order", false, false, []herald.Observation{record, translate, publish, handled}, nil, 4},
		{"adopted, early hops kept", false, false, []herald.Observation{publish, handled, record, translate}, nil, 4},
		{"adopted, early publish only", false, false, []herald.Observation{publish, record, translate}, []string{"handle i shipping/schedule"}, 3},
		{"another flow ignored after the action", true, true, []herald.Observation{other, record, translate, publish, handled}, nil, 4},
		{"a flow the action starts joins", true, false, []herald.Observation{other, record, translate, publish, handled}, nil, 5},
		{"delivered in order", true, false, []herald.Observation{record, notified, notePub, decideQueued, noteHandled, sent}, nil, 6},
		{"delivered before the decision's report", true, false, []herald.Observation{record, notified, notePub, sent, decideQueued, noteHandled}, nil, 6},
		{"decided, not delivered", true, false, []herald.Observation{record, notified, notePub, decideQueued, noteHandled}, []string{"deliver m notes"}, 5},
		{"delivery retrying", true, false, []herald.Observation{record, notified, notePub, decideQueued, noteHandled, sendRetry}, []string{"deliver m notes"}, 6},
		{"delivery retried then sent", true, false, []herald.Observation{record, notified, notePub, decideQueued, noteHandled, sendRetry, sent}, nil, 7},
		{"delivery deferred", true, false, []herald.Observation{record, notified, notePub, decideDeferred, noteHandled}, nil, 5},
		{"delivery suppressed by the decision", true, false, []herald.Observation{record, notified, notePub, decideSuppressed, noteHandled}, nil, 5},
		{"notification not handled", true, false, []herald.Observation{record, notified, notePub}, []string{"handle n notes/route"}, 3},
		{"adopted, delivered first", false, false, []herald.Observation{sent, decideQueued, noteHandled, notePub, record, notified}, nil, 6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFlowState(trackingSubs)
			if c.known {
				f.corr["c"] = true
			}
			if c.after {
				f.adopting, f.early = false, nil
			}
			for _, o := range c.seq {
				f.observe(o)
			}
			var open []string
			for _, h := range f.outstanding() {
				open = append(open, h.key.String())
			}
			if fmt.Sprint(open) != fmt.Sprint(c.open) || len(f.records) != c.records {
				t.Fatalf("open %q, %d records; want %q, %d", open, len(f.records), c.open, c.records)
			}
		})
	}
}

// TestTrackingDeliveriesInEveryOrder feeds the notification flow's
// observations in every order herald can report them in — any, except that
// a decision is reported before its event's handle hop — and checks that
// the flow is open exactly while a hop is owed: the notification's publish,
// its handling, or the sending of the delivery it decided. As the decision
// comes before the handle hop, a flow whose notification is handled is open
// until the delivery is sent. The delivery's record ends sent to alice by
// e-mail.
func TestTrackingDeliveriesInEveryOrder(t *testing.T) {
	all := []herald.Observation{record, notified, notePub, decideQueued, noteHandled, sent}
	const iNotified, iPub, iDecide, iHandled, iSent = 1, 2, 3, 4, 5
	orders := 0
	for _, seq := range permutations(len(all)) {
		if slices.Index(seq, iDecide) > slices.Index(seq, iHandled) {
			continue
		}
		orders++
		f := newFlowState(trackingSubs)
		f.corr["c"] = true
		for i, o := range seq {
			f.observe(all[o])
			have := func(o int) bool { return slices.Contains(seq[:i+1], o) }
			// What is seen owes what follows it: a notified event its
			// publish, a publish its handling, a queued decision its send.
			wantOpen := have(iNotified) && !have(iPub) || have(iPub) && !have(iHandled) || have(iDecide) && !have(iSent)
			if open := len(f.outstanding()) > 0; open != wantOpen {
				t.Fatalf("after %s: open %v, want %v (%v)", names(all, seq[:i+1]), open, wantOpen, f.outstanding())
			}
		}
		if len(f.deliveries) != 1 {
			t.Fatalf("after %s: deliveries %v, want 1", names(all, seq), f.deliveries)
		}
		want := Delivery{ID: "m", Service: "notes", EventID: "n", Type: "t-m", Recipient: "alice", Channel: "email", Outcome: "sent"}
		if got := *f.deliveries[0]; got != want {
			t.Fatalf("after %s: delivery %+v, want %+v", names(all, seq), got, want)
		}
	}
	if orders != 360 {
		t.Fatalf("%d orders tried, want 360", orders)
	}
}

// permutations returns every order of 0…n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			out = append(out, slices.Insert(slices.Clone(p), i, n-1))
		}
	}
	return out
}

// names names the observations all[seq…], for a failure's message.
func names(all []herald.Observation, seq []int) string {
	var b []string
	for _, i := range seq {
		b = append(b, string(all[i].Hop)+" "+all[i].Event.ID)
	}
	return strings.Join(b, ", ")
}

// TestUnsentDeliveryDescribed: a flow that gives up waiting on a delivery
// names it — its event, recipient, channel, notifier — and its last error.
func TestUnsentDeliveryDescribed(t *testing.T) {
	f := newFlowState(trackingSubs)
	f.corr["c"] = true
	retry := sendRetry
	retry.Attempt, retry.Err = 2, errors.New("421 try later")
	for _, o := range []herald.Observation{record, notified, notePub, decideQueued, noteHandled, retry} {
		f.observe(o)
	}
	got := (&System{}).describe(f.outstanding())
	want := "delivery m of t-m n to alice on email: not delivered by the notifier of notes; attempt 2, last error: 421 try later"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("described %q, want [%q]", got, want)
	}
	if d := f.deliveries; len(d) != 1 || d[0].Outcome != herald.OutcomeRetry || d[0].Err != "421 try later" {
		t.Fatalf("deliveries %+v, want m retrying", d)
	}
}
