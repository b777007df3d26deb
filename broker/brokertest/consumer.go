package brokertest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// The cases in this file cover what herald's consumer relies on beyond the
// Broker interface: the optional broker.PendingCounter, broker.PendingStater
// and broker.Resumer. Each case skips when the broker lacks the interface.

// Disconnecter is implemented by brokers that can drop their connection on
// purpose, so that the ResumeAfterReconnect case can watch them come back. A
// transport's test usually gives it with a wrapper over its broker; the
// wrapper must keep the broker's optional interfaces (embed it).
type Disconnecter interface {
	// Disconnect drops the connection; the broker reconnects by itself.
	Disconnect(ctx context.Context) error
}

// holdAll starts a consumer that leaves every delivery unsettled and waits
// for the n events published, returning their deliveries in order.
func holdAll(t *testing.T, b broker.Broker, sub broker.Subscription, es []*envelope.Envelope) []received {
	t.Helper()
	publish(t, b, es...)
	c := startConsume(t, b, sub, len(es), func(context.Context, broker.Delivery, received) {})
	waitFor(t, "every delivery", func() bool { return len(c.snapshot()) >= len(es) })
	got := c.snapshot()
	equalIDs(t, c.ids(), ids(es))
	return got
}

// pendingCount checks broker.PendingCounter as the deliveries of a
// subscription are settled one way or another: held, in progress, acked,
// terminated.
func (s *suite) pendingCount(t *testing.T) {
	b := s.newBroker(t)
	pc, ok := b.(broker.PendingCounter)
	if !ok {
		t.Skip("transport does not implement broker.PendingCounter")
	}
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 30*time.Second) // no redelivery during the test
	provision(t, b, sub)
	count := func(want int, when string) {
		t.Helper()
		n, err := pc.Pending(ctxT(t), sub)
		if err != nil {
			t.Fatalf("Pending %s: %v", when, err)
		}
		if n != want {
			t.Fatalf("Pending %s: %d, want %d", when, n, want)
		}
	}
	count(0, "before any event")
	got := holdAll(t, b, sub, newEvents(typ, envelope.KindIntegration, 5))
	count(5, "with 5 deliveries held")
	for _, r := range got[:2] {
		if err := r.d.Ack(ctxT(t)); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	count(3, "after acking 2 of 5")
	if err := got[2].d.InProgress(); err != nil {
		t.Fatalf("InProgress: %v", err)
	}
	count(3, "after InProgress on one (it is still out)")
	if err := got[3].d.Term(); err != nil {
		t.Fatalf("Term: %v", err)
	}
	waitFor(t, "the Term to count", func() bool {
		n, err := pc.Pending(ctxT(t), sub)
		return err == nil && n == 2
	})
	for _, r := range got[2:3] {
		if err := r.d.Ack(ctxT(t)); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if err := got[4].d.Ack(ctxT(t)); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	count(0, "after settling every delivery")
}

// pendingStateFloor checks that broker.PendingStater's AckFloor and
// Delivered follow the acks: the floor rises to the last of a run of acked
// events, stops below the first unacknowledged one, and Delivered covers
// every delivery.
func (s *suite) pendingStateFloor(t *testing.T) {
	b := s.newBroker(t)
	ps, ok := b.(broker.PendingStater)
	if !ok {
		t.Skip("transport does not implement broker.PendingStater")
	}
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 30*time.Second)
	provision(t, b, sub)
	got := holdAll(t, b, sub, newEvents(typ, envelope.KindIntegration, 4))
	seq := func(i int) uint64 { return got[i].d.Sequence() }
	state := func(when string) broker.PendingState {
		t.Helper()
		st, err := ps.PendingState(ctxT(t), sub)
		if err != nil {
			t.Fatalf("PendingState %s: %v", when, err)
		}
		if st.Delivered < seq(3) {
			t.Fatalf("PendingState %s: Delivered %d, below the last delivery's sequence %d", when, st.Delivered, seq(3))
		}
		if st.AckFloor > st.Delivered {
			t.Fatalf("PendingState %s: AckFloor %d above Delivered %d", when, st.AckFloor, st.Delivered)
		}
		return st
	}
	if st := state("with every delivery held"); st.Pending != 4 || st.AckFloor >= seq(0) {
		t.Fatalf("with every delivery held: Pending %d, AckFloor %d; want 4 and below %d", st.Pending, st.AckFloor, seq(0))
	}
	for _, r := range got[:2] {
		if err := r.d.Ack(ctxT(t)); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if st := state("after acking the first 2"); st.Pending != 2 || st.AckFloor < seq(1) || st.AckFloor >= seq(2) {
		t.Fatalf("after acking the first 2: Pending %d, AckFloor %d; want 2 and in [%d, %d)", st.Pending, st.AckFloor, seq(1), seq(2))
	}
	if err := got[3].d.Ack(ctxT(t)); err != nil { // a gap: the 3rd is still out
		t.Fatalf("Ack: %v", err)
	}
	if st := state("after acking the 4th"); st.Pending != 1 || st.AckFloor >= seq(2) {
		t.Fatalf("after acking the 4th, not the 3rd: Pending %d, AckFloor %d; want 1 and below %d", st.Pending, st.AckFloor, seq(2))
	}
	if err := got[2].d.Ack(ctxT(t)); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if st := state("after acking every event"); st.Pending != 0 || st.AckFloor < seq(3) {
		t.Fatalf("after acking every event: Pending %d, AckFloor %d; want 0 and at least %d", st.Pending, st.AckFloor, seq(3))
	}
}

// nakRedeliversInPlace checks that a Nak'd event comes back as a
// redelivery of the same message (same stream sequence, NumDelivered 2,
// the same headers and data), and that it stays pending until then.
func (s *suite) nakRedeliversInPlace(t *testing.T) {
	b := s.newBroker(t)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 30*time.Second) // redelivery must come from the Nak
	provision(t, b, sub)
	e := fullEvent(typ, envelope.KindIntegration)
	publish(t, b, e)
	c := startConsumeAll(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, r received) {
		if r.num == 1 {
			if err := d.Nak(0); err != nil {
				t.Errorf("Nak: %v", err)
			}
			return
		}
		_ = d.Ack(ctx)
	})
	waitFor(t, "the redelivery", func() bool { return len(c.snapshot()) >= 2 })
	got := c.snapshot()
	if got[1].id != e.ID || got[1].num != 2 {
		t.Fatalf("second delivery: %s NumDelivered %d, want %s and 2", got[1].id, got[1].num, e.ID)
	}
	if s1, s2 := got[0].d.Sequence(), got[1].d.Sequence(); s1 != s2 {
		t.Fatalf("redelivery has Sequence %d, the first delivery %d: want the same", s2, s1)
	}
	back, err := envelope.FromBinary(got[1].d.Header(), got[1].d.Data())
	if err != nil {
		t.Fatalf("FromBinary of the redelivery: %v", err)
	}
	if err := sameEnvelope(back, e); err != nil {
		t.Fatalf("redelivery differs: %v", err)
	}
}

// resumeAfterReconnect checks broker.Resumer on a broker that can be
// disconnected (Disconnecter): Epoch changes when the connection comes
// back, consumption continues without a new Consume call, and an event
// that was held unsettled across the drop comes back after its ack wait
// while the acknowledged ones do not. On a broker.Claimer it uses a
// notification subscription (a claimed one restarts at its ack floor
// instead, see claimRestartsAtAckFloor).
func (s *suite) resumeAfterReconnect(t *testing.T) {
	b := s.newBroker(t)
	r, ok := b.(broker.Resumer)
	if !ok {
		t.Skip("transport does not implement broker.Resumer")
	}
	dc, ok := b.(Disconnecter)
	if !ok {
		t.Skip("broker does not implement brokertest.Disconnecter")
	}
	svc, name, typ := names(t)
	const ackWait = 2 * time.Second
	kind := competingKind(b) // a claimed subscription restarts instead (ClaimRestartsAtAckFloor)
	sub := subscription(svc, name, typ, kind, ackWait)
	provision(t, b, sub)
	es := newEvents(typ, kind, 3)
	publish(t, b, es...)
	held := es[1].ID
	var acked atomic.Int32
	c := startConsume(t, b, sub, 10, func(ctx context.Context, d broker.Delivery, rc received) {
		if rc.id == held && rc.num == 1 {
			return // out when the connection drops
		}
		if err := d.Ack(ctx); err != nil {
			if ctx.Err() == nil {
				t.Logf("Ack of %s (delivery %d): %v", rc.id, rc.num, err)
			}
			return
		}
		acked.Add(1)
	})
	waitFor(t, "3 deliveries, 2 of them acked", func() bool { return len(c.snapshot()) >= 3 && acked.Load() >= 2 })
	before := r.Epoch()
	if err := dc.Disconnect(ctxT(t)); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	waitFor(t, "Epoch to change after the reconnect", func() bool { return r.Epoch() != before })
	after := r.Epoch()
	later := newEvents(typ, kind, 2)
	waitFor(t, "a publish after the reconnect", func() bool {
		errs := b.Publish(ctxT(t), later)
		return errs[0] == nil && errs[1] == nil
	})
	waitFor(t, "the events published after the reconnect, on the same Consume", func() bool {
		return c.count(later[0].ID) >= 1 && c.count(later[1].ID) >= 1
	})
	waitFor(t, "the held event to come back", func() bool { return c.count(held) >= 2 })
	var back received
	for _, rc := range c.snapshot() {
		if rc.id == held && rc.num >= 2 {
			back = rc
			break
		}
	}
	if back.d == nil {
		t.Fatalf("the held event came back with NumDelivered 1, want at least 2")
	}
	for _, e := range []*envelope.Envelope{es[0], es[2]} {
		if n := c.count(e.ID); n != 1 {
			t.Errorf("event acked before the drop delivered %d times, want 1", n)
		}
	}
	if e := r.Epoch(); e < after {
		t.Errorf("Epoch went back from %d to %d", after, e)
	}
	if err := c.stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
}
