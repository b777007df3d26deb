package heraldtest

import (
	"errors"
	"fmt"
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
)

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
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFlowState(map[string][]subscriber{"t-i": {{service: "shipping", name: "schedule"}}})
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
