package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testwait"
)

// logRecords is a slog.Handler that keeps every record.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// noAddress returns "recipient/channel" of each no-address log line, in
// the order they were logged.
func (h *logRecords) noAddress() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if !strings.Contains(r.Message, "has no address on the channel") {
			continue
		}
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		if r.Level != slog.LevelWarn || !strings.HasPrefix(attrs["reason"], ReasonNoAddress+": ") {
			out = append(out, fmt.Sprintf("bad record: %s %s %v", r.Level, r.Message, attrs))
			continue
		}
		out = append(out, attrs["recipient"]+"/"+attrs["channel"])
	}
	return out
}

// deliverObs keeps the service's deliver observations.
type deliverObs struct {
	mu  sync.Mutex
	obs []herald.Observation
}

func (o *deliverObs) Observe(_ context.Context, ob herald.Observation) {
	if ob.Hop != herald.HopDeliver {
		return
	}
	o.mu.Lock()
	o.obs = append(o.obs, ob)
	o.mu.Unlock()
}

// withReason returns the observations whose Err is a *DeliveryError with
// reason code code.
func (o *deliverObs) withReason(code string) []herald.Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []herald.Observation
	for _, ob := range o.obs {
		var de *DeliveryError
		if errors.As(ob.Err, &de) && de.Reason == code {
			out = append(out, ob)
		}
	}
	return out
}

// TestNoAddressLoggedOnceAndObserved: a delivery that fails because the
// recipient has no address on the channel is logged once per recipient and
// channel — not again for the same pair's next event, again for another
// recipient — and every one is reported as a deliver hop, outcome failed,
// with the reason code no-address (what metrics count).
func TestNoAddressLoggedOnceAndObserved(t *testing.T) {
	t.Parallel()
	logs := &logRecords{}
	obs := &deliverObs{}
	spec := defaultSpec()
	spec.Channels = []string{Email, SMS}
	e := newEnv(t, "sqlite", setup{spec: spec, opts: []Option{WithLogger(slog.New(logs))},
		svcOpts: []herald.Option{herald.WithObserver(obs)}})
	// alice has an SMS number; bob and dave have none.
	e.emit("one", order{ID: "o1", To: []string{"alice", "bob"}})
	e.emit("two", order{ID: "o2", To: []string{"bob"}})
	e.emit("three", order{ID: "o3", To: []string{"dave"}})
	var failed []Delivery
	for corr, n := range map[string]int{"one": 4, "two": 2, "three": 2} {
		m := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: corr}, n))
		for key, d := range m {
			if strings.HasSuffix(key, "/sms") && key != "alice/sms" {
				expect(t, m, key, Failed, ReasonNoAddress)
				failed = append(failed, d)
			}
		}
	}
	if len(failed) != 3 {
		t.Fatalf("%d no-address deliveries, want 3 (bob twice, dave)", len(failed))
	}
	testwait.UntilReport(t, 10*time.Second, func() bool { return len(obs.withReason(ReasonNoAddress)) >= 3 },
		func() string { return fmt.Sprintf("no-address observations: %+v", obs.withReason(ReasonNoAddress)) })
	got := obs.withReason(ReasonNoAddress)
	if len(got) != 3 {
		t.Errorf("%d no-address observations, want 3: %+v", len(got), got)
	}
	for _, d := range failed {
		i := slices.IndexFunc(got, func(ob herald.Observation) bool { return ob.Event.ID == d.ID })
		if i < 0 {
			t.Errorf("delivery %s (%s/%s) not observed", d.ID, d.Recipient, d.Channel)
			continue
		}
		ob := got[i]
		if ob.Outcome != herald.Outcome(Failed) || ob.Reason != SMS || ob.Service != "shop" || ob.Event.CausationID != d.EventID ||
			ob.Event.Type != orderShipped.Name() || !strings.Contains(ob.Err.Error(), "has no sms address") {
			t.Errorf("observation of %s: %+v", d.ID, ob)
		}
	}
	// The log line comes before the observation: every line is there now.
	lines := logs.noAddress()
	slices.Sort(lines)
	if want := []string{"bob/sms", "dave/sms"}; !slices.Equal(lines, want) {
		t.Errorf("no-address log lines %q, want %q (once per recipient and channel)", lines, want)
	}
}

// TestEndedDecisionReportedOnceCommitted: a decision whose transaction
// rolls back (the Directory fails for a later recipient of the same event)
// is not reported; its retry, which commits, is reported once.
func TestEndedDecisionReportedOnceCommitted(t *testing.T) {
	t.Parallel()
	logs := &logRecords{}
	obs := &deliverObs{}
	spec := defaultSpec()
	spec.Channels = []string{SMS}
	e := newEnv(t, "sqlite", setup{spec: spec, noStart: true, opts: []Option{WithLogger(slog.New(logs))},
		svcOpts: []herald.Option{herald.WithObserver(obs)}})
	calls := failAliceOnce(e)
	must(t, e.n.Start(e.ctx))
	e.emit("rb", order{ID: "o1", To: []string{"bob", "alice"}})
	m := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "rb"}, 2))
	expect(t, m, "bob/sms", Failed, ReasonNoAddress)
	expect(t, m, "alice/sms", Sent, "")
	if calls.Load() < 2 {
		t.Fatalf("directory asked for alice %d times: the event did not roll back", calls.Load())
	}
	testwait.UntilReport(t, 10*time.Second, func() bool { return len(obs.withReason(ReasonNoAddress)) >= 1 },
		func() string { return "no no-address observation" })
	got := obs.withReason(ReasonNoAddress)
	if len(got) != 1 || got[0].Event.ID != m["bob/sms"].ID {
		t.Errorf("no-address observations %+v, want one, of delivery %s", got, m["bob/sms"].ID)
	}
	// The rolled-back decision was looked up with the committed one, not
	// found, and is still waiting (until decidedTTL), unreported.
	left := e.n.ended.some(decidedBatch)
	if len(left) != 1 || left[0].d.ID == m["bob/sms"].ID || left[0].d.Recipient != "bob" {
		t.Errorf("decisions waiting to be seen committed: %+v, want bob's rolled-back one", left)
	}
	if lines := logs.noAddress(); !slices.Equal(lines, []string{"bob/sms"}) {
		t.Errorf("no-address log lines %q, want one for bob/sms", lines)
	}
}

// failAliceOnce makes e's directory fail the first look-up of alice, so
// that a decision for bob then alice rolls back and is retried; it returns
// the count of alice's look-ups.
func failAliceOnce(e *env) *atomic.Int64 {
	var calls atomic.Int64
	dir := testDirectory()
	e.n.dir = DirectoryFunc(func(ctx context.Context, id string) (Recipient, error) {
		if id == "alice" && calls.Add(1) == 1 {
			return Recipient{}, errors.New("directory down") // after bob's row: the transaction rolls back
		}
		return dir.Lookup(ctx, id)
	})
	return &calls
}

// TestLRU: the memory of logged pairs is bounded and forgets the least
// recently seen first.
func TestLRU(t *testing.T) {
	l := newLRU(2)
	for _, step := range []struct {
		key   string
		first bool
	}{
		{"a", true}, {"b", true}, {"a", false}, // a is now the most recent
		{"c", true},  // evicts b
		{"a", false}, // kept
		{"b", true},  // forgotten, so first again; evicts c
		{"c", true},
	} {
		if got := l.first(step.key); got != step.first {
			t.Fatalf("first(%q) = %v, want %v", step.key, got, step.first)
		}
	}
	if l.ll.Len() != 2 || len(l.m) != 2 {
		t.Fatalf("memory holds %d/%d keys, want 2", l.ll.Len(), len(l.m))
	}
}

// TestReasonCode: the codes are a fixed set.
func TestReasonCode(t *testing.T) {
	for in, want := range map[string]string{
		"no-address: bob has no sms address": ReasonNoAddress,
		"no-address":                         ReasonNoAddress,
		"fallback-not-needed: delivered":     ReasonFallbackNotNeeded,
		"retrying: attempt 2 failed":         ReasonRetrying,
		"made-up: x":                         "",
		"":                                   "",
		"connection refused":                 "",
	} {
		if got := ReasonCode(in); got != want {
			t.Errorf("ReasonCode(%q) = %q, want %q", in, got, want)
		}
	}
}

// hopObs keeps every observation of the service, in the order seen.
type hopObs struct {
	mu  sync.Mutex
	obs []herald.Observation
}

func (o *hopObs) Observe(_ context.Context, ob herald.Observation) {
	o.mu.Lock()
	o.obs = append(o.obs, ob)
	o.mu.Unlock()
}

func (o *hopObs) all() []herald.Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.obs)
}

// TestDecisionsObservedOnCommit: every delivery a committed decision
// inserted is reported once as a decide hop — its recipient, channel and
// the state it was decided in — before the subscription's handle hop of
// the event; the deliveries of a decision that rolled back are not.
func TestDecisionsObservedOnCommit(t *testing.T) {
	t.Parallel()
	obs := &hopObs{}
	spec := defaultSpec()
	spec.Channels = []string{SMS}
	e := newEnv(t, "sqlite", setup{spec: spec, noStart: true, svcOpts: []herald.Option{herald.WithObserver(obs)}})
	calls := failAliceOnce(e)
	must(t, e.n.Start(e.ctx))
	e.emit("dec", order{ID: "o1", To: []string{"bob", "alice"}})
	m := byKey(e.waitDeliveries(DeliveryFilter{CorrelationID: "dec"}, 2))
	if calls.Load() < 2 {
		t.Fatalf("directory asked for alice %d times: the event did not roll back", calls.Load())
	}
	testwait.UntilReport(t, 10*time.Second, func() bool {
		return slices.ContainsFunc(obs.all(), func(ob herald.Observation) bool {
			return ob.Hop == herald.HopHandle && ob.Outcome == herald.OutcomeOK && ob.Event.CorrelationID == "dec"
		})
	}, func() string { return "the event was not handled" })
	var decided []string
	handled := false
	for _, ob := range obs.all() {
		switch {
		case ob.Event.CorrelationID != "dec":
		case ob.Hop == herald.HopHandle && ob.Outcome == herald.OutcomeOK:
			handled = true
		case ob.Hop == herald.HopDecide:
			if handled {
				t.Errorf("decide hop of %s after the handle hop", ob.Event.ID)
			}
			d := m[ob.Recipient+"/"+ob.Reason]
			if ob.Event.ID != d.ID || ob.Event.CausationID != d.EventID || ob.Service != "shop" {
				t.Errorf("decide observation %+v does not match delivery %+v", ob, d)
			}
			decided = append(decided, fmt.Sprintf("%s/%s %s", ob.Recipient, ob.Reason, ob.Outcome))
		}
	}
	if want := []string{"bob/sms failed", "alice/sms queued"}; !slices.Equal(decided, want) {
		t.Errorf("decide hops %q, want %q (once each, the rolled-back decision not)", decided, want)
	}
}
