package faultrig

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// SlowBroker delays every Publish by up to delay before the broker call and
// up to delay after it, like a slow network: commits wait in the outbox, and
// stored events wait for the relay to mark them.
//
// The hooks embed the concrete broker, so that the optional interfaces it
// implements (broker.PendingCounter, broker.LossWindower...) reach herald
// unchanged.
type SlowBroker struct {
	*natsjs.Broker
	delay      time.Duration
	publishing func(n int) // called as each Publish of n events starts, if set
}

func (b *SlowBroker) Publish(ctx context.Context, events []*envelope.Envelope) []error {
	if b.publishing != nil {
		b.publishing(len(events))
	}
	time.Sleep(rand.N(b.delay + 1))
	errs := b.Broker.Publish(ctx, events)
	time.Sleep(rand.N(b.delay + 1))
	return errs
}

// Probe wraps the consumer's broker: acks reach the broker ackDelay
// late, and, with report set, every redelivered event is looked up in the
// consumer's effects table before herald sees it. One whose effect an
// earlier run committed is an event committed but not acknowledged when
// that run was killed: the probe prints "fault-probe: absorbed" for it (the
// test then checks that it took effect only once).
type Probe struct {
	*natsjs.Broker
	st       *store.Store
	gen      int
	report   bool
	ackDelay time.Duration
	received func(Event) // called as each event arrives, if set
	arrivals *Arrivals   // records each delivery, if set
	mu       sync.Mutex  // serialises output lines
}

// Arrivals records the deliveries a consumer received, to tell when a
// redelivery brought back an event it had never received: one the broker
// delivered while it died (say from its outbound buffer), which comes back
// only after the ack wait, and which the consumer must wait for to keep its
// key in order.
type Arrivals struct {
	mu   sync.Mutex
	seen map[uint64]bool
	lost []time.Time // arrivals of never-received events as redeliveries
}

func (a *Arrivals) add(seq, num uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[uint64]bool{}
	}
	if num > 1 && !a.seen[seq] {
		a.lost = append(a.lost, time.Now())
	}
	a.seen[seq] = true
}

// LostBetween counts the never-received events that came back in [from,
// to], and tells when the last of them did.
func (a *Arrivals) LostBetween(from, to time.Time) (n int, last time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, at := range a.lost {
		if !at.Before(from) && !at.After(to) {
			n++
			last = at
		}
	}
	return n, last
}

func (p *Probe) Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error {
	// A claimed subscription (broker.Claimer) restarts at its ack floor when
	// this run gains it, and a reset restarts the delivery count: what the
	// killed run had delivered comes again with NumDelivered 1. So every
	// event up to what the broker had delivered before this run is a
	// redelivery.
	var before uint64
	if p.report && p.Broker.ClaimsInOrder(sub) {
		if st, err := p.Broker.PendingState(ctx, sub); err == nil {
			before = st.Delivered
		}
	}
	return p.Broker.Consume(ctx, sub, batch, func(ctx context.Context, ds []broker.Delivery) {
		out := make([]broker.Delivery, len(ds))
		for i, d := range ds {
			if p.arrivals != nil {
				p.arrivals.add(d.Sequence(), d.NumDelivered())
			}
			if p.received != nil {
				var e Event
				if json.Unmarshal(d.Data(), &e) == nil {
					p.received(e)
				}
			}
			if p.report && (d.NumDelivered() > 1 || d.Sequence() <= before) {
				p.inspect(ctx, d)
			}
			out[i] = d
			if p.ackDelay > 0 {
				out[i] = &lateAck{Delivery: d, delay: p.ackDelay}
			}
		}
		h(ctx, out)
	})
}

func (p *Probe) inspect(ctx context.Context, d broker.Delivery) {
	id := d.Header()[envelope.HeaderID]
	var gens []int
	rows, err := p.st.DB().QueryContext(ctx, p.st.Rebind(`SELECT gen FROM effects WHERE event_id = ?`), id)
	if err == nil {
		for rows.Next() {
			var g int
			if rows.Scan(&g) == nil {
				gens = append(gens, g)
			}
		}
		err = rows.Err()
		rows.Close()
	}
	what := "uncommitted" // its earlier delivery never took effect
	switch {
	case err != nil && ctx.Err() != nil:
		return // shutting down
	case err != nil:
		what = "error " + err.Error()
	case len(gens) > 0 && gens[0] < p.gen:
		what = "absorbed" // committed by a killed run, not acked
	case len(gens) > 0:
		what = "same-run" // committed by this run; the ack is late or lost
	}
	p.mu.Lock()
	var e Event
	_ = json.Unmarshal(d.Data(), &e)
	fmt.Printf("fault-probe: %s event=%s key=%s seq=%d delivery=%d committed-by=%v\n", what, id, e.Key, e.Seq, d.NumDelivered(), gens)
	p.mu.Unlock()
}

// lateAck sends its ack after delay, without blocking the consumer.
type lateAck struct {
	broker.Delivery
	delay time.Duration
}

func (d *lateAck) AckNoWait() error {
	time.AfterFunc(d.delay, func() { _ = d.Delivery.AckNoWait() })
	return nil
}

func (d *lateAck) Ack(ctx context.Context) error {
	time.AfterFunc(d.delay, func() { _ = d.Delivery.AckNoWait() })
	return nil
}
