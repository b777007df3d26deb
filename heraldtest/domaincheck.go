package heraldtest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/store"
)

// DomainInstance is one instance of the service under a domain check: an
// Instance that runs transactions (a *herald.Service, or a type that
// embeds one).
type DomainInstance interface {
	Instance
	Do(ctx context.Context, fn func(tx herald.Tx) error, opts ...herald.DoOption) error
}

// DomainCheck describes the guarantee check of the domain handlers of one
// domain event: CheckDomain and ExamineDomain run it. Domain handlers run
// in the transaction that records their event, so they are never
// redelivered; what they must survive is that transaction rolling back
// after they ran — a later step of the same Do failed, the commit failed,
// the process died before it — and the caller trying the Do again.
type DomainCheck[T any] struct {
	// Event is the domain event.
	Event *herald.DomainEvent[T]
	// Handler is the name of the domain handler under check (herald.Handle);
	// every handler of Event runs, in the order registered.
	Handler string
	// Service builds the service on st, as for Check.Service.
	Service func(ctx context.Context, st *store.Store, opts ...herald.Option) (DomainInstance, error)
	// Seed, if set, writes what the handler expects to find into st, once
	// per run, before the first event.
	Seed func(ctx context.Context, st *store.Store) error
	// Events are recorded in this order, each in a Do of its own.
	Events []T
	// Effect reads what the handlers did, as for Check.Effect.
	Effect func(ctx context.Context, st *store.Store) (any, error)
}

// FaultRolledBack: one event's transaction rolled back after its domain
// handlers ran, and the caller ran the Do again.
const FaultRolledBack Fault = "rolled back after the handlers ran"

// errRolledBack is the failure a domain check injects after the handlers
// ran.
var errRolledBack = errors.New("heraldtest: injected failure after the domain handlers ran: the transaction rolls back")

// CheckDomain checks that the domain handlers of an event keep their
// effects in the transaction that records it, and fails t, in words, when
// they do not: see ExamineDomain.
func CheckDomain[T any](t testing.TB, c DomainCheck[T]) *Report {
	t.Helper()
	r := ExamineDomain(t, c)
	for _, v := range r.Violations {
		t.Errorf("heraldtest: %s: %s", r.Subscription, v)
	}
	return r
}

// ExamineDomain runs the domain check c and returns what it found; it
// fails t only when the check cannot run. The first run records each event
// in a Do of its own; each other run makes one event's Do fail after
// herald.Record returned (its domain handlers ran) and runs it again, as a
// caller that retries a failed transaction does. Every run's effect must
// equal the first's. Report.Subscription is "service/handler".
func ExamineDomain[T any](t testing.TB, c DomainCheck[T]) *Report {
	t.Helper()
	switch {
	case c.Event == nil || c.Service == nil || c.Effect == nil:
		t.Fatalf("heraldtest: domain check: Event, Service and Effect are required")
	case c.Handler == "":
		t.Fatalf("heraldtest: domain check: DomainCheck.Handler is empty")
	case len(c.Events) == 0:
		t.Fatalf("heraldtest: domain check: DomainCheck.Events is empty")
	}
	dc := &domainChecker[T]{t: t, c: c, report: &Report{}}
	want := dc.runOnce(-1)
	dc.report.Effect = want
	for i := range c.Events {
		got := dc.runOnce(i)
		if reflect.DeepEqual(got, want) {
			continue
		}
		all := make([]int, len(c.Events))
		for j := range all {
			all[j] = j + 1
		}
		dc.report.Violations = append(dc.report.Violations, Violation{
			Fault: FaultRolledBack, Events: all, Target: i + 1, Want: want, Got: got,
			Reason: fmt.Sprintf("the domain handlers' effect ran twice when the transaction of event %d (%s) rolled back after they ran, "+
				"and the Do ran again: a handler wrote outside tx — through its own connection, by an external call without an "+
				"idempotency key, or into memory; do that after the commit (a translation or a subscription), not in a domain handler",
				i+1, c.Event.Name()),
		})
		break // one violation: the first event that shows it
	}
	return dc.report
}

// domainChecker runs the runs of one domain check.
type domainChecker[T any] struct {
	t      testing.TB
	c      DomainCheck[T]
	report *Report
}

// runOnce records the events on a new store, failing the Do of the event
// at target once after its handlers ran (none when target < 0), and
// returns the effect.
func (dc *domainChecker[T]) runOnce(target int) any {
	t := dc.t
	t.Helper()
	dc.report.Runs++
	fault := FaultNone
	if target >= 0 {
		fault = FaultRolledBack
	}
	if !slices.Contains(dc.report.Faults, fault) {
		dc.report.Faults = append(dc.report.Faults, fault)
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultSettleTimeout)
	defer cancel()
	log := newTestLogger(t)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(log))
	if err != nil {
		t.Fatalf("heraldtest: domain check: embedded NATS: %v", err)
	}
	defer b.Close()
	st := newStore(t)
	defer st.Close()
	inst, err := dc.c.Service(ctx, st, herald.WithBroker(b), herald.WithLogger(log))
	if err != nil {
		t.Fatalf("heraldtest: domain check: DomainCheck.Service: %v", err)
	}
	defer func() { _ = inst.Close() }()
	m, err := inst.Manifest()
	if err != nil {
		t.Fatalf("heraldtest: domain check: %v", err)
	}
	dc.report.Subscription = m.Service + "/" + dc.c.Handler
	if !slices.ContainsFunc(m.Handlers, func(h catalog.Handler) bool {
		return h.Name == dc.c.Handler && h.Event.Name == dc.c.Event.Name()
	}) {
		t.Fatalf("heraldtest: domain check: service %s has no domain handler %q of %s (DomainCheck.Service must register it)",
			m.Service, dc.c.Handler, dc.c.Event.Name())
	}
	if err := inst.Start(ctx); err != nil {
		t.Fatalf("heraldtest: domain check: start the service: %v", err)
	}
	if dc.c.Seed != nil {
		if err := dc.c.Seed(ctx, st); err != nil {
			t.Fatalf("heraldtest: domain check: DomainCheck.Seed: %v", err)
		}
	}
	for i, e := range dc.c.Events {
		fail := i == target
		for attempt := 1; ; attempt++ {
			err := inst.Do(ctx, func(tx herald.Tx) error {
				if err := herald.Record(tx, dc.c.Event, e); err != nil {
					return err
				}
				if fail {
					return errRolledBack
				}
				return nil
			})
			if fail && errors.Is(err, errRolledBack) {
				fail = false // the caller tries again
				continue
			}
			if err != nil {
				t.Fatalf("heraldtest: domain check: record event %d (attempt %d): %v", i+1, attempt, err)
			}
			break
		}
	}
	got, err := dc.c.Effect(ctx, st)
	if err != nil {
		t.Fatalf("heraldtest: domain check: DomainCheck.Effect: %v", err)
	}
	return got
}
