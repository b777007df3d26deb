package brokertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// The cases in this file cover broker.Claimer: each partition of a claimed
// subscription is consumed by one Consume call at a time, and restarts at
// its first unacknowledged event, in stream order, when it changes hands or
// the holder's connection comes back. They need a second instance
// (Instancer) on the same server, and skip without it.

// Instancer is implemented by brokers (usually a test's wrapper) that can
// open another broker on the same server and system, with the same
// settings: another instance of the services.
type Instancer interface {
	NewInstance(t *testing.T) broker.Broker
}

// Killer is implemented by brokers whose connection a test can cut for
// good, as when the process is killed: nothing is settled, released or
// drained. The broker is unusable after Kill; Close must still succeed or
// fail quietly.
type Killer interface {
	Kill()
}

// claimSetup returns b's Claimer and a second instance, skipping t unless
// b claims integration subscriptions and can make one.
func claimSetup(t *testing.T, b broker.Broker) broker.Broker {
	t.Helper()
	claims(t, b)
	inst, ok := b.(Instancer)
	if !ok {
		t.Skip("broker does not implement brokertest.Instancer")
	}
	peer := inst.NewInstance(t)
	if peer == nil {
		t.Fatal("NewInstance returned nil")
	}
	t.Cleanup(func() { _ = peer.Close() })
	return peer
}

// claims skips t unless b claims integration subscriptions.
func claims(t *testing.T, b broker.Broker) {
	t.Helper()
	if c, ok := b.(broker.Claimer); !ok || !c.ClaimsInOrder(broker.Subscription{Kind: envelope.KindIntegration}) {
		t.Skip("transport does not claim integration subscriptions (broker.Claimer)")
	}
}

// claimAckWait is the ack wait of the claim cases' subscriptions: longer
// than every wait, so that only a restart can bring an unacknowledged event
// back in time.
const claimAckWait = 3 * wait

// indexOf maps event ids to their position in es.
func indexOf(es []*envelope.Envelope) map[string]int {
	m := make(map[string]int, len(es))
	for i, e := range es {
		m[e.ID] = i
	}
	return m
}

// takeClaim starts a Consume on b that settles with fn and waits until it
// receives a warm-up event (acked), so that it holds the partition.
func takeClaim(t *testing.T, b, publisher broker.Broker, sub broker.Subscription, fn settle) (*consumer, *envelope.Envelope) {
	t.Helper()
	warm := newEvent(sub.Types[0], sub.Kind, -1)
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		if r.id == warm.ID {
			if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("Ack: %v", err)
			}
			return
		}
		fn(ctx, d, r)
	})
	publish(t, publisher, warm)
	waitFor(t, "the first instance to take the claim", func() bool { return c.count(warm.ID) >= 1 })
	return c, warm
}

// claimMovesOnDeath: while its holder lives, a standby gets nothing; when
// the holder dies (Killer) holding unacknowledged events, the standby
// takes the partition over and receives those events first, in stream
// order, then the newer ones — long before their ack wait.
func (s *suite) claimMovesOnDeath(t *testing.T) {
	a := s.newBroker(t)
	b := claimSetup(t, a)
	k, ok := a.(Killer)
	if !ok {
		t.Skip("broker does not implement brokertest.Killer")
	}
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, claimAckWait)
	provision(t, b, sub)
	es := newEvents(typ, envelope.KindIntegration, 10)
	idx := indexOf(es)
	var mu sync.Mutex
	acked := map[string]bool{}
	ca, _ := takeClaim(t, a, b, sub, func(ctx context.Context, d broker.Delivery, r received) {
		if i, ok := idx[r.id]; ok && i < 3 {
			if err := d.Ack(ctx); err != nil {
				t.Errorf("Ack: %v", err)
				return
			}
			mu.Lock()
			acked[r.id] = true
			mu.Unlock()
		} // the others stay unacknowledged
	})
	cb := startConsume(t, b, sub, 10, nil)
	publish(t, b, es...)
	waitFor(t, "the holder to receive every event", func() bool { return len(ca.snapshot()) >= 1+len(es) })
	waitFor(t, "the holder to acknowledge the first 3 events", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) == 3 })
	time.Sleep(200 * time.Millisecond) // room for a wrong delivery to the standby
	if n := len(cb.snapshot()); n != 0 {
		t.Fatalf("the standby received %d events while the holder lived: two consumers hold one partition", n)
	}
	k.Kill()
	later := newEvents(typ, envelope.KindIntegration, 5)
	publish(t, b, later...)
	want := append(ids(es[3:]), ids(later)...)
	waitFor(t, "the standby to receive the dead holder's unacknowledged events and the newer ones", func() bool {
		return len(cb.snapshot()) >= len(want)
	})
	equalIDs(t, cb.ids()[:len(want)], want)
}

// claimRestartsAtAckFloor: when the holder's connection drops and comes
// back (Disconnecter), the partition restarts at its first unacknowledged
// event: the events out when it dropped come again first, in order, before
// newer ones, long before their ack wait; acknowledged ones below them do
// not.
func (s *suite) claimRestartsAtAckFloor(t *testing.T) {
	b := s.newBroker(t)
	claims(t, b)
	dc, ok := b.(Disconnecter)
	if !ok {
		t.Skip("broker does not implement brokertest.Disconnecter")
	}
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, claimAckWait)
	provision(t, b, sub)
	es := newEvents(typ, envelope.KindIntegration, 6)
	idx := indexOf(es)
	var mu sync.Mutex
	acked := 0
	seen := map[string]bool{}
	cons := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		mu.Lock()
		first := !seen[r.id]
		seen[r.id] = true
		mu.Unlock()
		if i, ok := idx[r.id]; ok && i >= 2 && first {
			return // out when the connection drops
		}
		if err := d.Ack(ctx); err != nil {
			if ctx.Err() == nil {
				t.Logf("Ack of %s: %v", r.id, err)
			}
			return
		}
		mu.Lock()
		acked++
		mu.Unlock()
	})
	publish(t, b, es...)
	waitFor(t, "6 deliveries, 2 of them acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(cons.snapshot()) >= len(es) && acked >= 2
	})
	if err := dc.Disconnect(ctxT(t)); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	later := newEvents(typ, envelope.KindIntegration, 2)
	waitFor(t, "a publish after the reconnect", func() bool {
		errs := b.Publish(ctxT(t), later)
		return errs[0] == nil && errs[1] == nil
	})
	want := append(ids(es[2:]), ids(later)...)
	waitFor(t, "the unacknowledged events again, then the newer ones", func() bool {
		return len(cons.snapshot()) >= len(es)+len(want)
	})
	equalIDs(t, cons.ids()[len(es):len(es)+len(want)], want)
	if err := cons.stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
}

// releaseHandsOver: a holder whose Consume returns (a clean stop) releases
// the partition at once: a standby receives the next events sooner than a
// dead holder's partition would move (Capabilities.ClaimTTL).
func (s *suite) releaseHandsOver(t *testing.T) {
	a := s.newBroker(t)
	b := claimSetup(t, a)
	if s.caps.ClaimTTL <= 0 {
		t.Skip("Capabilities.ClaimTTL not given")
	}
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, claimAckWait)
	provision(t, b, sub)
	ca, _ := takeClaim(t, a, b, sub, ack(t))
	cb := startConsume(t, b, sub, 10, nil)
	es := newEvents(typ, envelope.KindIntegration, 3)
	publish(t, b, es...)
	waitFor(t, "the holder to receive the events", func() bool { return len(ca.snapshot()) >= 1+len(es) })
	if err := ca.stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	released := time.Now()
	later := newEvent(typ, envelope.KindIntegration, 9)
	publish(t, b, later)
	waitFor(t, "the standby to receive the next event", func() bool { return cb.count(later.ID) >= 1 })
	took := time.Since(released)
	if bound := s.caps.ClaimTTL / 2; took > bound {
		t.Fatalf("the standby received the next event %v after the release, want under %v (half the claim TTL): the release did not hand over", took, bound)
	}
	if n := len(cb.snapshot()); n != 1 {
		t.Fatalf("the standby received %d events, want 1 (the holder had acknowledged the others): %v", n, cb.ids())
	}
	t.Logf("handed over in %v", took)
}
