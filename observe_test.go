package herald_test

import (
	"context"
	"errors"
	"slices"
	"strings"
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
		// Hops are reported by three goroutines: the producer's Do (after
		// its commit), the relay (when a batch's acks are in) and the
		// consumer. Each reports in order; across them there is no order (a
		// busy relay may read and publish the rows before Do reports them,
		// and the consumer may handle an event before its publish is
		// reported). Every hop once, each goroutine's hops in order.
		got := log.hops[corr]
		if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(hops))) {
			t.Errorf("%s: hops\n got %v\nwant %v in any interleaving", corr, got, hops)
			continue
		}
		for _, side := range []string{"orders:", "shipping:"} {
			only := func(hs []string) []string {
				return slices.DeleteFunc(slices.Clone(hs), func(h string) bool {
					return !strings.HasPrefix(h, side) || h == "orders:publish:ok"
				})
			}
			if !slices.Equal(only(got), only(hops)) {
				t.Errorf("%s: %s hops %v, want %v in this order", corr, side, only(got), only(hops))
			}
		}
	}
}
