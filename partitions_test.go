package herald_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testlog"
	"github.com/heraldhq/herald/internal/testwait"
)

// partitionsShim gives a real broker n partitions at the seam
// (broker.Partitioner): it records each Consume call's partition, passes
// partition 0 to the broker and parks the others until their context ends
// (partition n-1 fails its first call, so that the engine logs), and
// reports a lag of its own per partition.
type partitionsShim struct {
	*natsjs.Broker
	n int

	mu      sync.Mutex
	calls   map[string][]int // subscription → partitions consumed, in call order
	running int              // Consume calls not yet returned
	failed  bool
}

func (b *partitionsShim) Partitions() int          { return b.n }
func (b *partitionsShim) Partition(key string) int { return 0 }

func (b *partitionsShim) Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error {
	b.mu.Lock()
	if b.calls == nil {
		b.calls = map[string][]int{}
	}
	b.calls[sub.Name] = append(b.calls[sub.Name], sub.Partition)
	fail := sub.Partition == b.n-1 && sub.Kind == herald.KindIntegration && !b.failed
	b.failed = b.failed || fail
	b.running++
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.running--
		b.mu.Unlock()
	}()
	switch {
	case fail:
		return errors.New("partition shim: first consume fails")
	case sub.Partition == 0:
		return b.Broker.Consume(ctx, sub, batch, h)
	}
	<-ctx.Done()
	return ctx.Err()
}

// Lag is 10×partition+1 pending and partition+1 unacknowledged.
func (b *partitionsShim) Lag(_ context.Context, sub broker.Subscription) (broker.Lag, error) {
	return broker.Lag{Pending: 10*sub.Partition + 1, AckPending: sub.Partition + 1}, nil
}

func (b *partitionsShim) partitionsOf(name string) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	ps := slices.Clone(b.calls[name])
	slices.Sort(ps)
	return slices.Compact(ps)
}

type partNote struct {
	To string `json:"to"`
}

// TestOneEnginePerPartition: on a broker of 4 partitions a subscription of
// integration events runs 4 engines, one per partition, whose logs carry
// the partition; a notification subscription runs one; Lags sums the
// partitions; Close stops them all.
func TestOneEnginePerPartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nb, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"),
		natsjs.WithPrefix("p"+randHex(4)), natsjs.WithLogger(quiet))
	must(t, err)
	defer nb.Close()
	const n = 4
	b := &partitionsShim{Broker: nb, n: n}
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	svc, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(log))
	must(t, err)
	must(t, herald.Subscribe(svc, clusterOrderConfirmed, "ship", func(context.Context, herald.Tx, clusterEvent) error { return nil }))
	note := herald.Notification[partNote]("shop.partitions.note")
	must(t, herald.Receive(svc, note, "mail", func(context.Context, herald.Tx, partNote) error { return nil }))
	must(t, svc.Start(ctx))
	closed := false
	defer func() {
		if !closed {
			svc.Close()
		}
	}()

	testwait.Until(t, 10*time.Second, "a Consume call per partition", func() bool {
		return len(b.partitionsOf("ship")) == n && len(b.partitionsOf("mail")) == 1
	})
	if got := b.partitionsOf("ship"); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("integration subscription consumed partitions %v, want 0..3", got)
	}
	if got := b.partitionsOf("mail"); !slices.Equal(got, []int{0}) {
		t.Errorf("notification subscription consumed partitions %v, want only 0", got)
	}
	// The failed Consume of the last partition is logged with it, and
	// tried again.
	testwait.Until(t, 10*time.Second, "the failed partition's second Consume call", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		k := 0
		for _, p := range b.calls["ship"] {
			if p == n-1 {
				k++
			}
		}
		return k >= 2
	})
	var warn string
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "msg=consume") {
			warn = line
		}
	}
	if want := fmt.Sprintf("partition=%d", n-1); !strings.Contains(warn, want) || !strings.Contains(warn, "subscription=ship") {
		t.Errorf("the consume warning %q lacks %s and the subscription", warn, want)
	}

	lags, err := svc.Lags(ctx)
	must(t, err)
	want := map[string]broker.Lag{
		"ship": {Pending: 1 + 11 + 21 + 31, AckPending: 1 + 2 + 3 + 4},
		"mail": {Pending: 1, AckPending: 1},
	}
	if len(lags) != len(want) {
		t.Errorf("lags %+v, want one per subscription", lags)
	}
	for _, l := range lags {
		if l.Lag != want[l.Subscription] {
			t.Errorf("lag of %s = %+v, want %+v (the sum of its partitions)", l.Subscription, l.Lag, want[l.Subscription])
		}
	}

	must(t, svc.Close())
	closed = true
	b.mu.Lock()
	running := b.running
	b.mu.Unlock()
	if running != 0 {
		t.Errorf("%d Consume calls still running after Close", running)
	}
}
