package herald_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
)

type hopLog struct {
	mu   sync.Mutex
	hops map[string][]string // correlation id → "service:hop:outcome"
}

func (h *hopLog) Observe(_ context.Context, o herald.Observation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hops[o.Event.CorrelationID] = append(h.hops[o.Event.CorrelationID], o.Service+":"+string(o.Hop)+":"+o.Outcome)
}

func TestObserversSeeEveryHop(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	log := &hopLog{hops: map[string][]string{}}
	obs := herald.WithObserver(log)
	prod, err := herald.New("orders", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), obs, herald.WithLogger(quiet))
	must(t, err)
	must(t, herald.Translate(prod, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
	cons, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), obs, herald.WithLogger(quiet),
		herald.WithRetry(herald.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}))
	must(t, err)
	must(t, herald.Subscribe(cons, orderStepped, "track", func(ctx context.Context, tx herald.Tx, s stepped) error {
		if s.OrderID == "bad" {
			return errors.New("nope")
		}
		return nil
	}))
	must(t, prod.Start(ctx))
	defer prod.Close()
	must(t, cons.Start(ctx))
	defer cons.Close()
	for _, id := range []string{"good", "bad"} {
		must(t, prod.Do(herald.WithCorrelationID(ctx, id), func(tx herald.Tx) error {
			return herald.Record(tx, stepRecorded, step{OrderID: id, N: 1})
		}))
	}
	want := map[string][]string{
		"good": {"orders:record:ok", "orders:translate:ok", "orders:publish:ok", "shipping:consume:ok", "shipping:handle:ok"},
		"bad": {"orders:record:ok", "orders:translate:ok", "orders:publish:ok", "shipping:consume:ok", "shipping:handle:retry",
			"shipping:dead-letter:error"},
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		log.mu.Lock()
		done := len(log.hops["good"]) >= len(want["good"]) && len(log.hops["bad"]) >= len(want["bad"])
		log.mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for corr, hops := range want {
		// The relay reports a publish when the batch's acks are in; the
		// consumer may have the event, and even have handled it, before
		// that. Every hop once; the publish after the translate, the others
		// in order.
		const publish = "orders:publish:ok"
		got := log.hops[corr]
		at := slices.Index(got, publish)
		if at < 0 || slices.Index(got[at+1:], publish) >= 0 || at < slices.Index(got, "orders:translate:ok") {
			t.Errorf("%s: hops %v: want one %s after the translate", corr, got, publish)
		}
		without := func(hs []string) []string {
			return slices.DeleteFunc(slices.Clone(hs), func(h string) bool { return h == publish })
		}
		if !slices.Equal(without(got), without(hops)) {
			t.Errorf("%s: hops\n got %v\nwant %v (the publish anywhere after the translate)", corr, got, hops)
		}
	}
}
