package natsjs

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// pullExpiry is how long one pull request of a subscription lasts.
const pullExpiry = 5 * time.Second

// watchEvery is how long a Consume waits without a message before it asks
// the server whether its pull was lost.
const watchEvery = 500 * time.Millisecond

// pullLost reports whether the server holds events for cons while no pull
// request of cons is waiting and none of its events is out: then nothing is
// on its way, and pulling again loses nothing (an event still buffered in
// the client would count as out, and a restarted pull could drop it, to
// come back only after the ack wait, behind newer events of its key).
func pullLost(ctx context.Context, cons jetstream.Consumer) bool {
	ictx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ci, err := cons.Info(ictx)
	if err != nil {
		return false
	}
	return ci.NumPending > 0 && ci.NumWaiting == 0 && ci.NumAckPending == 0
}

// Consume pulls the events of sub's durable consumer and calls h with
// batches of at most batch deliveries, in stream order: what is immediately
// available is grouped, a lone event is not held back waiting for more. It
// blocks until ctx ends (nil), the broker closes (an error wrapping
// broker.ErrClosed) or the consumer disappears (broker.ErrNotProvisioned).
// The consumer must exist: Provision creates it; Consume does not. Several
// Consume calls on the same subscription share its events. h's context ends
// when ctx ends or the broker closes. Events pulled but not yet handed to h
// when Consume returns are nak'ed, so that another consumer gets them at once.
func (b *Broker) Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	if h == nil {
		return errors.New("herald/natsjs: consume: nil handler")
	}
	if batch < 1 {
		return fmt.Errorf("herald/natsjs: consume: batch %d < 1", batch)
	}
	spec, err := b.consumerConfig(sub)
	if err != nil {
		return fmt.Errorf("herald/natsjs: consume: %w", err)
	}
	durable := spec.cfg.Durable
	// Without a reconnect buffer nothing can be sent while the connection is
	// down; wait for it rather than fail a lookup.
	if err := waitConnected(ctx, b.nc); err != nil {
		return fmt.Errorf("herald/natsjs: consume %s/%s: %w", sub.Service, sub.Name, err)
	}
	cons, err := b.consumer(ctx, spec.stream, durable)
	if err != nil {
		return fmt.Errorf("herald/natsjs: consume %s/%s: %w", sub.Service, sub.Name, err)
	}
	info := cons.CachedInfo()
	if have, want := slices.Sorted(slices.Values(info.Config.FilterSubjects)), slices.Sorted(slices.Values(spec.cfg.FilterSubjects)); !slices.Equal(have, want) {
		b.log.Warn("herald/natsjs: consumer subjects differ from the subscription's types; run Provision",
			"consumer", durable, "provisioned", have, "subscription", want)
	}

	hctx, stop := b.bind(ctx)
	defer stop()
	acks := b.ackLog(durable, ackLogSize(info.Config.MaxAckPending))

	msgs := make(chan jetstream.Msg, batch)
	quit := make(chan struct{})
	fatal := make(chan error, 1)
	pull := func() (jetstream.ConsumeContext, error) {
		return cons.Consume(func(m jetstream.Msg) {
			select {
			case msgs <- m:
			case <-quit:
			}
		},
			jetstream.PullMaxMessages(pullSize(batch, info.Config.MaxAckPending)),
			// A pull the server no longer serves is noticed by its missing
			// heartbeats (half the expiry) and replaced after two of them;
			// the watchdog below usually notices sooner.
			jetstream.PullExpiry(pullExpiry),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrBadRequest) ||
					errors.Is(err, jetstream.ErrConnectionClosed) {
					select {
					case fatal <- err:
					default:
					}
					return
				}
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					b.log.Info("herald/natsjs: consume: no heartbeat from the server; pulling again", "consumer", durable, "err", err)
					return
				}
				b.log.Debug("herald/natsjs: consume", "consumer", durable, "err", err)
			}),
		)
	}
	// A consumer of a replicated stream is served by its leader only. When
	// the leader dies, the pull it served is gone with it; the cluster's
	// advisory of the next election tells to pull again from the new leader
	// at once, rather than after two missed heartbeats or the watchdog's
	// look. Deliveries on the wire when the leader died come back only after
	// their ack wait, as after a reconnect: Epoch counts the election so
	// that herald holds newer events back meanwhile.
	moved := make(chan struct{}, 1)
	asub, err := b.nc.Subscribe(server.JSAdvisoryConsumerLeaderElectedPre+"."+spec.stream+"."+durable, func(*nats.Msg) {
		b.leaderMoves.Add(1)
		select {
		case moved <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("herald/natsjs: consume %s/%s: subscribe to the consumer's leader elections: %w", sub.Service, sub.Name, err)
	}
	defer func() { _ = asub.Unsubscribe() }()

	cc, err := pull()
	if err != nil {
		return fmt.Errorf("herald/natsjs: consume %s/%s: %w", sub.Service, sub.Name, err)
	}
	stopped := cc.Closed()
	defer func() {
		close(quit)
		cc.Stop()
		// Hand back what was pulled but not handled, so another consumer
		// gets it now rather than after AckWait.
	drain:
		for {
			select {
			case m := <-msgs:
				_ = m.Nak()
			default:
				break drain
			}
		}
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			b.log.Warn("herald/natsjs: consume: pull subscription slow to stop", "consumer", durable)
		}
	}()

	// The watchdog: nats.go's pull sometimes believes a request is open
	// that the server no longer has (seen under load: the server reports
	// no waiting request and events pending, the client waits for them), and
	// only the missing heartbeats end that. When nothing arrived for a
	// while, ask the server; if it holds events for this consumer, none out
	// and no pull waiting, pull again.
	watch := time.NewTicker(watchEvery)
	defer watch.Stop()
	last := time.Now()
	// deliver hands m and what else is already waiting to h, as one batch.
	deliver := func(m jetstream.Msg) {
		ds := make([]broker.Delivery, 1, min(batch, 1+len(msgs)))
		ds[0] = b.newDelivery(m, acks)
		for len(ds) < batch {
			select {
			case m := <-msgs:
				ds = append(ds, b.newDelivery(m, acks))
			default:
				h(hctx, ds)
				return
			}
		}
		h(hctx, ds)
	}
	// handOver delivers what a draining pull still passes on until it has
	// stopped; false when ctx ended first.
	handOver := func(ctx context.Context, stopped <-chan struct{}) bool {
		limit := time.NewTimer(5 * time.Second)
		defer limit.Stop()
		for {
			select {
			case m := <-msgs:
				deliver(m)
			case <-stopped:
				for len(msgs) > 0 {
					deliver(<-msgs)
				}
				return true
			case <-limit.C:
				b.log.Warn("herald/natsjs: consume: pull slow to drain; pulling again anyway", "consumer", durable)
				return true
			case <-ctx.Done():
				return false
			}
		}
	}

	// repull replaces the pull cc (closed by stopped) with a new one; a nil
	// pull with a nil error means ctx ended.
	repull := func(cc jetstream.ConsumeContext, stopped <-chan struct{}) (jetstream.ConsumeContext, <-chan struct{}, error) {
		// Drain, not Stop: what reaches the old pull before the server
		// drops it (a pull nats.go sent meanwhile) is still handed to h,
		// in order, before the new pull starts.
		cc.Drain()
		if !handOver(ctx, stopped) {
			return nil, nil, nil
		}
		ncc, err := pull()
		if err != nil {
			return nil, nil, fmt.Errorf("herald/natsjs: consume %s/%s: pull again: %w", sub.Service, sub.Name, err)
		}
		return ncc, ncc.Closed(), nil
	}

	for {
		if ctx.Err() != nil {
			return nil
		}
		if b.isClosed.Load() {
			return errClosed
		}
		select {
		case <-ctx.Done():
			return nil
		case <-b.closed:
			return errClosed
		case err := <-fatal:
			if errors.Is(err, jetstream.ErrConsumerDeleted) {
				return fmt.Errorf("herald/natsjs: consume %s/%s: %w: %w", sub.Service, sub.Name, broker.ErrNotProvisioned, err)
			}
			if b.isClosed.Load() {
				return errClosed
			}
			return fmt.Errorf("herald/natsjs: consume %s/%s: %w", sub.Service, sub.Name, err)
		case <-stopped:
			if b.isClosed.Load() {
				return errClosed
			}
			return fmt.Errorf("herald/natsjs: consume %s/%s: pull subscription stopped", sub.Service, sub.Name)
		case <-watch.C:
			if time.Since(last) < watchEvery || !pullLost(ctx, cons) {
				continue
			}
			b.log.Info("herald/natsjs: consume: the server has events and no pull of this consumer; pulling again", "consumer", durable)
			ncc, nstopped, err := repull(cc, stopped)
			if err != nil || ncc == nil {
				return err
			}
			cc, stopped, last = ncc, nstopped, time.Now()
		case <-moved:
			b.log.Info("herald/natsjs: consume: the consumer elected a leader; pulling again", "consumer", durable)
			ncc, nstopped, err := repull(cc, stopped)
			if err != nil || ncc == nil {
				return err
			}
			cc, stopped, last = ncc, nstopped, time.Now()
		case m := <-msgs:
			last = time.Now()
			deliver(m)
		}
	}
}

// pullSize is how many messages a Consume keeps requested from the server:
// enough to fill the next batches without a round trip, bounded by the
// consumer's MaxAckPending.
func pullSize(batch, maxAckPending int) int {
	n := min(max(2*batch, 64), 1024)
	if maxAckPending > 0 {
		n = min(n, maxAckPending)
	}
	return max(n, 1)
}

// delivery is a broker.Delivery over a JetStream message.
type delivery struct {
	b    *Broker
	m    jetstream.Msg
	num  uint64
	seq  uint64
	acks *ackLog // where its ack is kept, to be sent again after a reconnect

	hdrOnce sync.Once
	hdr     map[string]string // built by the first Header call
}

func (b *Broker) newDelivery(m jetstream.Msg, acks *ackLog) *delivery {
	d := &delivery{b: b, m: m, num: 1, acks: acks}
	if md, err := m.Metadata(); err == nil {
		d.num = md.NumDelivered
		d.seq = md.Sequence.Stream
	}
	return d
}

// lowerKey returns header key k in lower case, without allocating for the
// keys an event message carries.
func lowerKey(k string) string {
	if k == jetstream.MsgIDHeader {
		return "nats-msg-id"
	}
	return strings.ToLower(k) // returns k itself when it has no upper case
}

// Header returns the message headers with lower-case keys (first value of
// each; of keys that differ only in case, one). The map is the delivery's
// own, built at the first call; do not modify it.
func (d *delivery) Header() map[string]string {
	d.hdrOnce.Do(func() {
		nh := d.m.Headers()
		d.hdr = make(map[string]string, len(nh))
		for k, v := range nh {
			if len(v) > 0 {
				d.hdr[lowerKey(k)] = v[0]
			}
		}
	})
	return d.hdr
}

// Headers yields the message headers as they came, keys in their own case,
// the first value of each, without building Header's map: for
// envelope.FromBinaryHeaders.
func (d *delivery) Headers() iter.Seq2[string, string] {
	return func(yield func(k, v string) bool) {
		for k, v := range d.m.Headers() {
			if len(v) > 0 && !yield(k, v[0]) {
				return
			}
		}
	}
}

// Data returns the message body.
func (d *delivery) Data() []byte { return d.m.Data() }

// Subject returns the subject the message was stored on: the event's subject,
// or the subscription's replay subject for a replay.
func (d *delivery) Subject() string { return d.m.Subject() }

// NumDelivered counts deliveries of this message, starting at 1.
func (d *delivery) NumDelivered() uint64 { return d.num }

// Sequence is the message's stream sequence.
func (d *delivery) Sequence() uint64 { return d.seq }

// Pending returns how many events of sub are delivered and not yet
// acknowledged. It implements broker.PendingCounter.
func (b *Broker) Pending(ctx context.Context, sub broker.Subscription) (int, error) {
	if err := b.enter(); err != nil {
		return 0, err
	}
	defer b.active.Done()
	spec, err := b.consumerConfig(sub)
	if err != nil {
		return 0, fmt.Errorf("herald/natsjs: pending: %w", err)
	}
	cons, err := b.consumer(ctx, spec.stream, spec.cfg.Durable)
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if reconnecting(err) {
		err = fmt.Errorf("%w: %w", broker.ErrTransient, unreachable(err))
	}
	if err != nil {
		return 0, fmt.Errorf("herald/natsjs: pending %s/%s: %w", sub.Service, sub.Name, err)
	}
	return info.NumAckPending, nil
}

// Ack acknowledges the message and waits for the server to confirm it.
func (d *delivery) Ack(ctx context.Context) error {
	if d.b.isClosed.Load() {
		return errClosed
	}
	if ctx == nil {
		ctx = context.Background()
	}
	d.keepAck()
	return d.settleErr("ack", d.m.DoubleAck(ctx))
}

// AckNoWait acknowledges the message without waiting for the server: a lost
// ack means one more delivery, which herald's inbox absorbs.
func (d *delivery) AckNoWait() error {
	if d.b.isClosed.Load() {
		return errClosed
	}
	d.keepAck()
	return d.settleErr("ack", d.m.Ack())
}

// keepAck records the ack subject, so that an ack lost across a reconnect
// can be sent again (see ackLog). Even a confirmed ack can be lost: by a
// server killed before it stored it.
func (d *delivery) keepAck() {
	if d.acks != nil {
		d.acks.add(d.seq, d.m.Reply())
	}
}

// Nak asks for redelivery after at least delay (at once when delay <= 0).
func (d *delivery) Nak(delay time.Duration) error {
	if d.b.isClosed.Load() {
		return errClosed
	}
	if delay <= 0 {
		return d.settleErr("nak", d.m.Nak())
	}
	return d.settleErr("nak", d.m.NakWithDelay(delay))
}

// InProgress resets the server's ack timer of the message.
func (d *delivery) InProgress() error {
	if d.b.isClosed.Load() {
		return errClosed
	}
	return d.settleErr("in-progress", d.m.InProgress())
}

// Term settles the message as never to be redelivered.
func (d *delivery) Term() error {
	if d.b.isClosed.Load() {
		return errClosed
	}
	return d.settleErr("term", d.m.Term())
}

func (d *delivery) settleErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case d.b.isClosed.Load():
		return fmt.Errorf("herald/natsjs: %s: %w: %w", op, broker.ErrClosed, err)
	case transient(d.b.nc, err):
		return fmt.Errorf("herald/natsjs: %s: %w: %w", op, broker.ErrTransient, err)
	default:
		return fmt.Errorf("herald/natsjs: %s: %w", op, err)
	}
}
