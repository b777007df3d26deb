package herald_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
)

type hopLog struct {
	mu   sync.Mutex
	hops map[string][]string // correlation id → "service:hop:outcome"
}

func (h *hopLog) Observe(_ context.Context, o herald.Observation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hops[o.Event.CorrelationID] = append(h.hops[o.Event.CorrelationID], o.Service+":"+string(o.Hop)+":"+o.Outcome.String())
}

func TestObserversSeeEveryHop(t *testing.T) {
	t.Parallel()
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
		herald.Retry(herald.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}))
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
	// On a timeout the comparison below says which hops are missing.
	_ = testwait.For(20*time.Second, "the hops of both events", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.hops["good"]) >= len(want["good"]) && len(log.hops["bad"]) >= len(want["bad"])
	})
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

// TestObserversCannotStopTheFlow: an observer that blocks forever and
// one that panics on every call slow down neither the producer nor the
// consumer; what they lose is counted, each kind of failure is logged once,
// and Close does not wait for the stuck observer. A heraldtest system
// follows the flow, its observer beside the broken ones.
func TestObserversCannotStopTheFlow(t *testing.T) {
	ctx := context.Background()
	sys := heraldtest.New(t, heraldtest.SettleTimeout(60*time.Second))
	b := sys.Broker()
	release := make(chan struct{})
	defer close(release)
	stuck := herald.ObserverFunc(func(context.Context, herald.Observation) { <-release })
	boom := herald.ObserverFunc(func(context.Context, herald.Observation) { panic("observer bug") })
	var logs testlog.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	// boom twice: two observers of one type are two observers, logged apart.
	opts := []herald.Option{herald.WithBroker(b), herald.WithObserver(stuck), herald.WithObserver(boom), herald.WithObserver(boom),
		herald.WithLogger(logger), sys.Observe()}
	prod, err := herald.New("orders", append(opts, herald.WithStore(testdb.SQLite(t)))...)
	must(t, err)
	must(t, herald.Translate(prod, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
	cst := testdb.SQLite(t)
	_, err = cst.DB().Exec(`CREATE TABLE effects (event_id TEXT PRIMARY KEY)`)
	must(t, err)
	cons, err := herald.New("shipping", append(opts, herald.WithStore(cst))...)
	must(t, err)
	must(t, herald.Subscribe(cons, orderStepped, "track", func(ctx context.Context, tx herald.Tx, s stepped) error {
		ev, _ := herald.EventFrom(ctx)
		_, err := tx.SQL().ExecContext(ctx, `INSERT INTO effects (event_id) VALUES (?)`, ev.ID)
		return err
	}))
	must(t, prod.Start(ctx))
	must(t, cons.Start(ctx))
	sys.Add(prod, cons)
	const n = 2500 // 3 hops each on the producer, 2 on the consumer: more than a queue holds
	sys.Run(t, func(ctx context.Context) error {
		for i := range n / 100 {
			err := prod.Do(ctx, func(tx herald.Tx) error {
				for j := range 100 {
					if err := herald.Record(tx, stepRecorded, step{OrderID: fmt.Sprintf("o%d", (i*100+j)%50), N: i*100 + j}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if got := testdb.Count(t, cst, "effects", ""); got != n {
		t.Fatalf("%d of %d events took effect", got, n)
	}
	for _, s := range []*herald.Service{prod, cons} {
		st := s.ObserverStats()
		if st.Panics == 0 || st.Dropped == 0 {
			t.Errorf("%s: observer stats %+v: want panics and drops counted", s.Name(), st)
		}
	}
	start := time.Now()
	must(t, prod.Close())
	must(t, cons.Close())
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Close took %v with a stuck observer", d)
	}
	out := logs.String()
	// Each service logs once per hop each panicking observer saw.
	for _, want := range []string{"hop=record", "hop=translate", "hop=publish", "hop=consume", "hop=handle"} {
		lines := 0
		for line := range strings.SplitSeq(out, "\n") {
			if strings.Contains(line, "observer panicked") && strings.Contains(line, want) {
				lines++
			}
		}
		if lines != 2 {
			t.Errorf("%d log lines of a panic at %s, want 2 (one per panicking observer)", lines, want)
		}
	}
	if c := strings.Count(out, "observer too slow"); c != 2 {
		t.Errorf("%d log lines of a slow observer, want one per service", c)
	}
}
