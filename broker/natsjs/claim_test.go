package natsjs

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// TestClaimProvisionUpdatesInPlace: a consumer provisioned before claims
// existed (no priority policy) becomes pinned by Provision, keeping its
// ack floor; the server updates the policy in place.
func TestClaimProvisionUpdatesInPlace(t *testing.T) {
	b := embedded(t, WithEphemeral())
	ctx := testCtx(t, 30*time.Second)
	sub := broker.Subscription{Service: "billing", Name: "old", Types: []string{"a.b"}, Kind: envelope.KindIntegration}
	if err := b.Provision(ctx, broker.Topology{Service: "billing"}); err != nil {
		t.Fatal(err)
	}
	spec, err := b.consumerConfig(sub)
	if err != nil {
		t.Fatal(err)
	}
	old := spec.cfg
	old.PriorityGroups, old.PriorityPolicy, old.PinnedTTL = nil, jetstream.PriorityPolicyNone, 0
	if _, err := b.js.CreateOrUpdateConsumer(ctx, spec.stream, old); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, b, bulk("a.b", 3))
	consumeIDs(t, b, broker.Subscription{Service: "billing", Name: "old", Types: []string{"a.b"}, Kind: envelope.KindIntegration}, true,
		func(ids []string) bool { return len(ids) >= 3 })
	if err := b.Provision(ctx, broker.Topology{Service: "billing", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatalf("Provision over an unpinned consumer: %v", err)
	}
	c, err := b.js.Consumer(ctx, spec.stream, spec.cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	ci := c.CachedInfo()
	if ci.Config.PriorityPolicy != jetstream.PriorityPolicyPinned || ci.Config.PinnedTTL != DefaultPinnedTTL ||
		len(ci.Config.PriorityGroups) != 1 || ci.Config.PriorityGroups[0] != priorityGroup {
		t.Fatalf("consumer after Provision: policy %v, TTL %v, groups %v", ci.Config.PriorityPolicy, ci.Config.PinnedTTL, ci.Config.PriorityGroups)
	}
	if ci.AckFloor.Stream != 3 {
		t.Fatalf("ack floor %d after the update, want 3", ci.AckFloor.Stream)
	}
}

// instance is one Consume of a claimed partition in a test, recording
// what it received.
type instance struct {
	b      *Broker
	cancel context.CancelFunc
	done   chan error

	mu  sync.Mutex
	got []got
}

type got struct {
	id  string
	seq uint64
	at  time.Time
}

// consumeAs runs Consume of sub on b; hold decides which deliveries stay
// unacknowledged.
func consumeAs(t *testing.T, b *Broker, sub broker.Subscription, hold func(id string) bool) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{b: b, cancel: cancel, done: make(chan error, 1)}
	go func() {
		in.done <- b.Consume(ctx, sub, 16, func(ctx context.Context, ds []broker.Delivery) {
			for _, d := range ds {
				id := d.Header()[envelope.HeaderID]
				in.mu.Lock()
				in.got = append(in.got, got{id: id, seq: d.Sequence(), at: time.Now()})
				in.mu.Unlock()
				if hold == nil || !hold(id) {
					_ = d.AckNoWait()
				}
			}
		})
	}()
	stopOnCleanup(t, cancel, in.done)
	return in
}

// stopOnCleanup ends a Consume when the test ends (cancel) and waits for
// it to return (done), failing the test if it does not within 20 s.
func stopOnCleanup(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Consume did not return after its context ended")
		}
	})
}

func (in *instance) snapshot() []got {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]got(nil), in.got...)
}

// TestClaimTakeoverBound: two instances of one subscription; only the
// holder receives; when its connection dies holding unacknowledged events,
// the other takes over within PinnedTTL + 1 s and receives them first, in
// stream order, then the newer ones.
func TestClaimTakeoverBound(t *testing.T) {
	srv := embedded(t, WithEphemeral(), WithListen("127.0.0.1:0"))
	ctx := testCtx(t, 60*time.Second)
	a := connect(t, srv.URL())
	bb := connect(t, srv.URL())
	const typ = "claim.bound"
	sub := broker.Subscription{Service: "svc", Name: "bound", Types: []string{typ}, Kind: envelope.KindIntegration, AckWait: time.Minute}
	if err := a.Provision(ctx, broker.Topology{Service: "svc", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	es := bulk(typ, 40)
	heldFrom := map[string]bool{}
	for _, e := range es[20:] {
		heldFrom[e.ID] = true
	}
	ia := consumeAs(t, a, sub, func(id string) bool { return heldFrom[id] })
	mustPublish(t, a, es[:1])
	waitUntil(t, 10*time.Second, "A to take the claim", func() bool { return len(ia.snapshot()) >= 1 })
	ib := consumeAs(t, bb, sub, nil)
	mustPublish(t, a, es[1:])
	waitUntil(t, 10*time.Second, "A to receive every event", func() bool { return len(ia.snapshot()) >= len(es) })
	time.Sleep(300 * time.Millisecond)
	if n := len(ib.snapshot()); n != 0 {
		t.Fatalf("B received %d events while A held the claim", n)
	}
	killed := time.Now()
	a.nc.Close()
	later := bulk(typ, 10)
	mustPublish(t, bb, later)
	waitUntil(t, 10*time.Second, "B to take over", func() bool { return len(ib.snapshot()) >= 20+len(later) })
	gb := ib.snapshot()
	if took := gb[0].at.Sub(killed); took > DefaultPinnedTTL+time.Second {
		t.Errorf("B took over %v after the kill, want within PinnedTTL + 1 s = %v", took, DefaultPinnedTTL+time.Second)
	} else {
		t.Logf("B took over %v after the kill (PinnedTTL %v)", took, DefaultPinnedTTL)
	}
	want := append(es[20:], later...)
	outOfOrder := 0
	for i, e := range want {
		if gb[i].id != e.ID {
			outOfOrder++
		}
	}
	for i := 1; i < len(gb); i++ {
		if gb[i].seq <= gb[i-1].seq {
			t.Errorf("B: sequence %d after %d", gb[i].seq, gb[i-1].seq)
		}
	}
	if outOfOrder != 0 {
		t.Fatalf("%d of B's first %d deliveries are not A's unacknowledged events then the newer ones in stream order", outOfOrder, len(want))
	}
}

// TestCloseReleasesClaims: Close of the holder's broker unpins what it
// holds, so a standby takes over at once rather than after the pinned TTL.
func TestCloseReleasesClaims(t *testing.T) {
	srv := embedded(t, WithEphemeral(), WithListen("127.0.0.1:0"))
	ctx := testCtx(t, 60*time.Second)
	const ttl = 6 * time.Second
	a, bb := connect(t, srv.URL(), WithPinnedTTL(ttl)), connect(t, srv.URL(), WithPinnedTTL(ttl))
	const typ = "claim.close"
	sub := broker.Subscription{Service: "svc", Name: "close", Types: []string{typ}, Kind: envelope.KindIntegration, AckWait: time.Minute}
	if err := a.Provision(ctx, broker.Topology{Service: "svc", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	es := bulk(typ, 2)
	ia := consumeAs(t, a, sub, nil)
	mustPublish(t, a, es[:1])
	waitUntil(t, 10*time.Second, "A to take the claim", func() bool { return len(ia.snapshot()) >= 1 })
	ib := consumeAs(t, bb, sub, nil)
	time.Sleep(200 * time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	mustPublish(t, bb, es[1:])
	waitUntil(t, 10*time.Second, "B to receive the next event", func() bool { return len(ib.snapshot()) >= 1 })
	if took := time.Since(closed); took > ttl/2 {
		t.Fatalf("B received the next event %v after A's Close, want under %v (half the pinned TTL): Close did not release", took, ttl/2)
	} else {
		t.Logf("handed over %v after Close", took)
	}
	if g := ib.snapshot(); g[0].id != es[1].ID {
		t.Fatalf("B received %s first, want %s", g[0].id, es[1].ID)
	}
}

// withLoss makes the broker's pulls drop the messages lose returns true
// for, as if lost on the wire.
func withLoss(lose func(jetstream.Msg) bool) Option {
	return func(c *config) error { c.lose = lose; return nil }
}

// TestClaimRecoversDeliveriesLostOnTheWire: the holder's last deliveries
// never reach it (lost on the wire, or sent to a pull it replaced) and
// nothing newer comes to reveal a gap: the holder restarts the partition
// within seconds rather than waiting out the ack wait (a minute here). A
// delivery its handler holds unsettled, or one nak'ed with a delay, is no
// loss: the partition is not restarted for it.
func TestClaimRecoversDeliveriesLostOnTheWire(t *testing.T) {
	const typ = "claim.astray"
	sub := broker.Subscription{Service: "svc", Name: "astray", Types: []string{typ}, Kind: envelope.KindIntegration, AckWait: time.Minute}
	setup := func(t *testing.T, lose func(jetstream.Msg) bool) *Broker {
		b := embedded(t, WithEphemeral(), withLoss(lose))
		if err := b.Provision(testCtx(t, 30*time.Second), broker.Topology{Service: "svc", Subscriptions: []broker.Subscription{sub}}); err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("lost", func(t *testing.T) {
		var drop atomic.Int64 // how many of the next stamped deliveries to lose
		b := setup(t, func(m jetstream.Msg) bool {
			if m.Headers().Get(hdrPinID) == "" {
				return false
			}
			for {
				n := drop.Load()
				if n <= 0 {
					return false
				}
				if drop.CompareAndSwap(n, n-1) {
					return true
				}
			}
		})
		in := consumeAs(t, b, sub, nil)
		es := bulk(typ, 6)
		mustPublish(t, b, es[:1])
		waitUntil(t, 10*time.Second, "the claim", func() bool { return len(in.snapshot()) >= 1 })
		drop.Store(5)
		lostAt := time.Now()
		mustPublish(t, b, es[1:])
		waitUntil(t, 15*time.Second, "the lost deliveries to come again", func() bool { return len(in.snapshot()) >= len(es) })
		got := in.snapshot()
		took := got[len(got)-1].at.Sub(lostAt)
		t.Logf("the lost deliveries came again %v after they were published (ack wait %v)", took.Round(time.Millisecond), sub.AckWait)
		for i, e := range es {
			if got[i].id != e.ID {
				t.Fatalf("delivery %d is %s, want %s: not in stream order", i, got[i].id, e.ID)
			}
		}
	})

	// Longer than strayAfter plus a watchdog tick, shorter than the
	// Nak's delay.
	const quiet = 5 * time.Second
	for _, tc := range []struct {
		name   string
		settle func(d broker.Delivery) // the second delivery's
	}{
		{"held by the handler", func(broker.Delivery) {}},
		{"nak'ed with a delay", func(d broker.Delivery) { _ = d.Nak(2 * quiet) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			var mu sync.Mutex
			var seen []string
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- b.Consume(ctx, sub, 16, func(ctx context.Context, ds []broker.Delivery) {
					mu.Lock()
					defer mu.Unlock()
					for _, d := range ds {
						seen = append(seen, d.Header()[envelope.HeaderID])
						if len(seen) == 1 {
							_ = d.AckNoWait()
						} else {
							tc.settle(d)
						}
					}
				})
			}()
			stopOnCleanup(t, cancel, done)
			count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
			es := bulk(typ, 2)
			mustPublish(t, b, es[:1])
			waitUntil(t, 10*time.Second, "the claim", func() bool { return count() >= 1 })
			mustPublish(t, b, es[1:])
			waitUntil(t, 10*time.Second, "the second delivery", func() bool { return count() >= 2 })
			time.Sleep(quiet) // what must not happen meanwhile: a restart
			if n := count(); n != 2 {
				t.Fatalf("%d deliveries, want 2: the partition was restarted for a delivery %s", n, tc.name)
			}
		})
	}
}
