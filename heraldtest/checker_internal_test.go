package heraldtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/heraldhq/herald/envelope"
)

func TestOrdersKeepEachKeysOrder(t *testing.T) {
	cases := []struct {
		keys  []string
		limit int
		want  [][]int
	}{
		{keys: []string{"a", "a", "a"}, limit: 10, want: nil},
		{keys: []string{"a", "b", "a"}, limit: 10, want: [][]int{{0, 2, 1}, {1, 0, 2}}},
		{keys: []string{"a", "b"}, limit: 10, want: [][]int{{1, 0}}},
		{keys: []string{"", ""}, limit: 10, want: nil}, // notifications: no keys, one queue
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.keys), func(t *testing.T) {
			got := orders(c.keys, c.limit)
			slices.SortFunc(got, slices.Compare)
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("orders(%q) = %v, want %v", c.keys, got, c.want)
			}
		})
	}
	// a, b, c, a: 4!/2! = 12 orders keep a's two in order, 11 besides the
	// given one; a limit of 3 picks 3 of them.
	all := orders([]string{"a", "b", "c", "a"}, 1000)
	if len(all) != 11 {
		t.Fatalf("%d orders of a,b,c,a, want 11", len(all))
	}
	for _, o := range append(all, orders([]string{"a", "b", "c", "a"}, 3)...) {
		if slices.Index(o, 0) > slices.Index(o, 3) {
			t.Fatalf("order %v puts the second a before the first", o)
		}
	}
	if got := orders([]string{"a", "b", "c", "a"}, 3); len(got) != 3 {
		t.Fatalf("limit 3: %d orders", len(got))
	}
}

// The consumer can meet an event before the producer reports it (the
// report comes after the commit, the relay may publish first): the
// injector then learns it there, as the event being recorded, and the
// fault hits it all the same.
func TestInjectorLearnsAnEventTheConsumerMeetsFirst(t *testing.T) {
	in := newInjector(FaultTransient, "credit")
	in.expect(0, true)
	g := in.instance()
	e := &envelope.Envelope{ID: "not-reported-yet", Type: "test.credited"}
	ran := 0
	run := func() error { ran++; return nil }
	for want := range 3 {
		err := g.Handle(context.Background(), "credit", 5, e, run)
		if (want < transientFailures) != errors.Is(err, errTransient) {
			t.Fatalf("run %d: %v; want the injected error on the first %d runs only", want+1, err, transientFailures)
		}
	}
	if i, ok := in.index(e.ID); !ok || i != 0 || ran != 3 {
		t.Fatalf("index %d (%v), %d runs: want event 0 learnt, 3 runs", i, ok, ran)
	}
	// A policy of 2 attempts gets one injected failure, not a dead letter.
	in = newInjector(FaultTransient, "credit")
	in.expect(0, true)
	g = in.instance()
	if err := g.Handle(context.Background(), "credit", 2, e, run); !errors.Is(err, errTransient) {
		t.Fatalf("first run: %v", err)
	}
	if err := g.Handle(context.Background(), "credit", 2, e, run); err != nil {
		t.Fatalf("second of 2 attempts: %v, want it to commit", err)
	}
}
