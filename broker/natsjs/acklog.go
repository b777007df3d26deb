package natsjs

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// An acknowledgement can be lost across a reconnect: AckNoWait fails while
// the connection is down (no reconnect buffer), and a server that is killed
// loses the acks it had not yet written to its consumer state (it writes
// that state at most ten times a second). The server then counts those
// events as unacknowledged and redelivers them after the ack wait — and a
// consumer that holds new events until the unacknowledged ones are back
// (herald after a reconnect) would wait for them in vain. So each consumer
// keeps the ack subjects of its last settled deliveries, and PendingState
// sends those acks again once after each reconnect, before it counts.
// Sending an ack again is harmless: the server ignores an ack for an event
// that is not pending.

// ackLog is the ack subjects of one durable consumer's last acknowledged
// deliveries, oldest overwritten first.
type ackLog struct {
	mu   sync.Mutex
	ring []ackEntry
	next int // where the next entry goes once the ring is full
	size int // capacity

	resendMu sync.Mutex // one resend at a time
	resent   uint64     // the connection epoch whose lost acks were sent again
}

type ackEntry struct {
	seq   uint64 // stream sequence
	reply string // the delivery's ack subject
}

// ackLogSize is how many acks a consumer keeps to send again: twice its
// MaxAckPending (no more events than that can be pending, but acks of
// events the restarted server never counted are interleaved with them),
// within bounds.
func ackLogSize(maxAckPending int) int {
	return min(max(2*maxAckPending, 1024), 16384)
}

// ackLog returns durable's log, created or grown to hold size entries.
func (b *Broker) ackLog(durable string, size int) *ackLog {
	v, _ := b.acks.LoadOrStore(durable, &ackLog{size: size})
	l := v.(*ackLog)
	l.mu.Lock()
	if size > l.size {
		// Unroll the ring so that it grows from its oldest entry on.
		if len(l.ring) == l.size {
			l.ring = append(l.ring[l.next:len(l.ring):len(l.ring)], l.ring[:l.next]...)
			l.next = 0
		}
		l.size = size
	}
	l.mu.Unlock()
	return l
}

// add records the ack subject of the delivery of stream sequence seq.
func (l *ackLog) add(seq uint64, reply string) {
	if reply == "" {
		return
	}
	l.mu.Lock()
	if len(l.ring) < l.size {
		l.ring = append(l.ring, ackEntry{seq, reply})
	} else {
		l.ring[l.next] = ackEntry{seq, reply}
		l.next = (l.next + 1) % l.size
	}
	l.mu.Unlock()
}

// within returns the entries whose sequence lies in (floor, top]: the only
// ones the server may still count as pending.
func (l *ackLog) within(floor, top uint64) []ackEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ackEntry
	for _, e := range l.ring {
		if e.seq > floor && e.seq <= top {
			out = append(out, e)
		}
	}
	return out
}

// ackBody is what an ack sends (jetstream's +ACK).
var ackBody = []byte("+ACK")

// reack sends the acks of es again, each as a request, and waits until the
// server confirmed each one (it confirms an ack of any event at or below
// its delivered sequence, pending or not) or ctx ends.
func (b *Broker) reack(ctx context.Context, es []ackEntry) error {
	inbox := b.nc.NewInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, e := range es {
		if err := b.nc.PublishRequest(e.reply, inbox, ackBody); err != nil {
			return err
		}
	}
	for range es {
		if _, err := sub.NextMsgWithContext(ctx); err != nil {
			return err
		}
	}
	return nil
}

// PendingState returns how many events of sub are delivered and not yet
// acknowledged, and the consumer's delivered and ack-floor stream sequences.
// Once after each reconnect it first sends again the acks this broker's
// deliveries of sub sent within the range the server may still count as
// pending (see ackLog), and waits for their confirmation, so that the count
// does not hold events whose ack was lost. It implements
// broker.PendingStater.
func (b *Broker) PendingState(ctx context.Context, sub broker.Subscription) (broker.PendingState, error) {
	if err := b.enter(); err != nil {
		return broker.PendingState{}, err
	}
	defer b.active.Done()
	spec, err := b.consumerConfig(sub)
	if err != nil {
		return broker.PendingState{}, fmt.Errorf("herald/natsjs: pending state: %w", err)
	}
	info := func() (*jetstream.ConsumerInfo, error) {
		cons, err := b.consumer(ctx, spec.stream, spec.cfg.Durable)
		if err != nil {
			return nil, err
		}
		return cons.CachedInfo(), nil // fetched by the lookup
	}
	ci, err := info()
	if err != nil {
		return broker.PendingState{}, fmt.Errorf("herald/natsjs: pending state %s/%s: %w", sub.Service, sub.Name, err)
	}
	if v, ok := b.acks.Load(spec.cfg.Durable); ok {
		l := v.(*ackLog)
		l.resendMu.Lock()
		if epoch := b.Epoch(); l.resent != epoch {
			es := l.within(ci.AckFloor.Stream, ci.Delivered.Stream)
			err := b.reack(ctx, es)
			if err == nil {
				l.resent = epoch
			}
			if len(es) > 0 {
				b.log.Info("herald/natsjs: sent acks again after a reconnect", "consumer", spec.cfg.Durable,
					"acks", len(es), "pending_before", ci.NumAckPending, "err", err)
				if nci, err := info(); err == nil {
					ci = nci
				}
			}
		}
		l.resendMu.Unlock()
	}
	return broker.PendingState{Pending: ci.NumAckPending, Delivered: ci.Delivered.Stream, AckFloor: ci.AckFloor.Stream}, nil
}
