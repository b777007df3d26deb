package natsjs

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// held returns the partitions of sub that b's Consume calls hold.
func held(b *Broker, sub broker.Subscription) []int {
	b.balMu.Lock()
	bl := b.balancers[ConsumerName(sub.Service, sub.Name)]
	b.balMu.Unlock()
	if bl == nil {
		return nil
	}
	bl.mu.Lock()
	defer bl.mu.Unlock()
	var ps []int
	for c := range bl.members {
		if c.holding.Load() {
			ps = append(ps, c.sub.Partition)
		}
	}
	return ps
}

// keyOrder checks order per key on the receiving side: the first delivery
// of event n of a key must come after the first of n-1 (redeliveries of
// handled events are allowed; the inbox absorbs them).
type keyOrder struct {
	mu       sync.Mutex
	next     map[string]int // key -> the next n never received yet
	received int
	dups     int
	bad      []string
}

func (o *keyOrder) see(key string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch want := o.next[key]; {
	case n < want:
		o.dups++
	case n == want:
		o.next[key] = n + 1
		o.received++
	default:
		o.bad = append(o.bad, fmt.Sprintf("%s/%d before %s/%d", key, n, key, want))
	}
}

// consumeAll runs Consume of every partition of sub on b.
func consumeAll(t *testing.T, b *Broker, sub broker.Subscription, o *keyOrder) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p := range b.Partitions() {
		ps := sub
		ps.Partition = p
		wg.Go(func() {
			_ = b.Consume(ctx, ps, 16, func(ctx context.Context, ds []broker.Delivery) {
				for _, d := range ds {
					k, n := seqOf(t, d.Data())
					o.see(k, n)
					_ = d.AckNoWait()
				}
			})
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return cancel
}

// TestBalanceAcrossInstances: two instances share four partitions two and
// two; one dies and the other holds all four within PinnedTTL + 2 s; a
// third joins (the dead one's heartbeat gone) and the partitions spread
// again. Order per key holds throughout, under a steady flow of events.
func TestBalanceAcrossInstances(t *testing.T) {
	srv := embedded(t, WithEphemeral(), WithListen("127.0.0.1:0"))
	ctx := testCtx(t, 120*time.Second)
	const n = 4
	opts := []Option{WithPartitions(n)}
	a, b, pub := connect(t, srv.URL(), opts...), connect(t, srv.URL(), opts...), connect(t, srv.URL(), opts...)
	const typ = "balance.event"
	sub := broker.Subscription{Service: "bal", Name: "sub", Types: []string{typ}, Kind: envelope.KindIntegration, AckWait: time.Minute}
	if err := a.Provision(ctx, broker.Topology{Service: "bal", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	beat := func(br *Broker, inst string) {
		if err := br.Heartbeat(ctx, "bal", inst, nil); err != nil {
			t.Fatal(err)
		}
	}
	beat(a, "a")
	beat(b, "b")
	o := &keyOrder{next: map[string]int{}}
	consumeAll(t, a, sub, o)
	consumeAll(t, b, sub, o)

	// A steady flow: 20 keys, one event each every 20 ms.
	pctx, stopPub := context.WithCancel(ctx)
	published := make(chan int, 1)
	go func() {
		i := 0
		defer func() { published <- i }()
		for pctx.Err() == nil {
			var es []*envelope.Envelope
			for k := range 20 {
				es = append(es, keyed(typ, "key-"+strconv.Itoa(k), i))
			}
			for _, err := range pub.Publish(pctx, es) {
				if err != nil && pctx.Err() == nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
			i++
			time.Sleep(20 * time.Millisecond)
		}
	}()
	counts := func(bs ...*Broker) string {
		s := ""
		for _, br := range bs {
			s += fmt.Sprint(len(held(br, sub)), " ")
		}
		return s
	}
	start := time.Now()
	waitUntil(t, 30*time.Second, "2 and 2 partitions", func() bool { return len(held(a, sub)) == 2 && len(held(b, sub)) == 2 })
	t.Logf("2/2 after %v", time.Since(start).Round(time.Millisecond))

	killed := time.Now()
	b.nc.Close() // its heartbeat stays for the instance TTL
	waitUntil(t, 30*time.Second, "A to hold all 4", func() bool { return len(held(a, sub)) == n })
	took := time.Since(killed)
	t.Logf("A holds 4 %v after B died (%s)", took.Round(time.Millisecond), counts(a))
	if took > DefaultPinnedTTL+2*time.Second {
		t.Errorf("A took %v to hold B's partitions, want within PinnedTTL + 2 s = %v", took, DefaultPinnedTTL+2*time.Second)
	}
	time.Sleep(2 * time.Second)
	if got := len(held(a, sub)); got != n {
		t.Fatalf("A released a partition nobody else pulls: holds %d", got)
	}

	// B's heartbeat expires; C joins.
	if err := a.Withdraw(ctx, "bal", "b"); err != nil {
		t.Fatal(err)
	}
	c := connect(t, srv.URL(), opts...)
	beat(c, "c")
	consumeAll(t, c, sub, o)
	joined := time.Now()
	waitUntil(t, 60*time.Second, "A and C to hold 2 each", func() bool { return len(held(a, sub)) == 2 && len(held(c, sub)) == 2 })
	t.Logf("2/2 again %v after C joined", time.Since(joined).Round(time.Millisecond))

	stopPub()
	total := <-published * 20
	waitUntil(t, 30*time.Second, "every event", func() bool { o.mu.Lock(); defer o.mu.Unlock(); return o.received >= total })
	o.mu.Lock()
	defer o.mu.Unlock()
	t.Logf("%d events over 20 keys, %d redelivered after takeovers, %d out of order", o.received, o.dups, len(o.bad))
	if len(o.bad) > 0 {
		t.Fatalf("%d events out of order per key, e.g. %v", len(o.bad), o.bad[:min(len(o.bad), 5)])
	}
}
