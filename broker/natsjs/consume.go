package natsjs

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// pullExpiry is how long one pull request of an unpinned subscription
// lasts; a pinned one's lasts half the pinned TTL (pullExpiryOf).
const pullExpiry = 5 * time.Second

// watchEvery is how long a Consume waits without a message before it asks
// the server whether its pull was lost.
const watchEvery = 500 * time.Millisecond

// pullLost reports whether the server holds events for cons while none of
// them is out and no pull request that could take them waits: then nothing
// is on its way, and pulling again loses nothing (an event still buffered in
// the client would count as out, and a restarted pull could drop it, to
// come back only after the ack wait, behind newer events of its key). For
// a pinned consumer (pinned), the pulls of other instances wait as
// standbys whatever happens, so NumWaiting says nothing: the pull is lost
// when pin, this Consume's pin, is the consumer's, or when no client is
// pinned and no pull waits.
func pullLost(ctx context.Context, cons jetstream.Consumer, pinned bool, pin string) bool {
	ci := consumerInfo(ctx, cons)
	return ci != nil && pullLostIn(ci, pinned, pin)
}

// consumerInfo asks the server for cons's info, waiting at most a second;
// nil when it does not answer.
func consumerInfo(ctx context.Context, cons jetstream.Consumer) *jetstream.ConsumerInfo {
	ictx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ci, err := cons.Info(ictx)
	if err != nil {
		return nil
	}
	return ci
}

// pullLostIn is pullLost on info the server gave.
func pullLostIn(ci *jetstream.ConsumerInfo, pinned bool, pin string) bool {
	if ci.NumPending == 0 || ci.NumAckPending > 0 {
		return false
	}
	if !pinned {
		return ci.NumWaiting == 0
	}
	if holder := pinnedClient(ci); holder != "" {
		return holder == pin
	}
	return ci.NumWaiting == 0
}

// Consume pulls the events of sub's durable consumer (of its partition
// sub.Partition) and calls h with batches of at most batch deliveries, in
// stream order: what is immediately available is grouped, a lone event is
// not held back waiting for more. It blocks until ctx ends (nil), the broker
// closes (an error wrapping broker.ErrClosed) or the consumer disappears
// (broker.ErrNotProvisioned). The consumer must exist: Provision creates it;
// Consume does not. h's context ends when ctx ends or the broker closes.
//
// Several Consume calls on a notification subscription share its events;
// events pulled but not yet handed to h when Consume returns are nak'ed, so
// that another consumer gets them at once. An integration subscription's
// partition is claimed (see ClaimsInOrder and the package documentation,
// Claims): one Consume call at a time, among all processes, receives its
// events; the others wait as standbys. A Consume that gains the claim
// restarts the partition at its first unacknowledged event; one that
// returns releases the claim once what it handed to h is settled (at most
// 2 s), so that a standby takes over at once.
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
	pinned := spec.cfg.PriorityPolicy == jetstream.PriorityPolicyPinned
	if pinned && info.Config.PriorityPolicy != jetstream.PriorityPolicyPinned {
		b.log.Warn("herald/natsjs: consumer is not pinned (provisioned by an older herald); consuming it unpinned, without claims; run Provision",
			"consumer", durable)
		pinned = false
	}

	hctx, stop := b.bind(ctx)
	defer stop()
	c := &consumption{
		b: b, sub: sub, stream: spec.stream, durable: durable, cons: cons, batch: batch, h: h, hctx: hctx,
		acks:    b.ackLog(durable, ackLogSize(info.Config.MaxAckPending)),
		pinned:  pinned,
		pullMax: pullSize(batch, info.Config.MaxAckPending),
		fatal:   make(chan error, 1),
		lost:    make(chan struct{}, 1),
	}
	c.bufSize, c.expiry = batch, pullExpiry
	if pinned {
		// The callback must never block: while it does, nats.go sends no
		// pull, and a pin whose pulls stop ends after the pinned TTL though
		// its holder is busy. The server sends at most MaxAckPending.
		c.bufSize = max(batch, c.pullMax, min(info.Config.MaxAckPending, 1<<14))
		c.expiry = pullExpiryOf(b.cfg.pinnedTTL)
	}

	// A consumer of a replicated stream is served by its leader only. When
	// the leader dies, the pull it served is gone with it; the cluster's
	// advisory of the next election tells to pull again from the new leader
	// at once, rather than after two missed heartbeats or the watchdog's
	// look. Deliveries on the wire when the leader died come back only after
	// their ack wait, as after a reconnect: Epoch counts the election so
	// that herald holds newer events back meanwhile. (A pinned consumer
	// loses its pin at the election; the next pin restarts the partition.)
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

	if c.g, err = c.pull(); err != nil {
		return fmt.Errorf("herald/natsjs: consume %s/%s: %w", sub.Service, sub.Name, err)
	}
	defer c.finish()
	if c.pinned && b.names.partitioned() {
		c.ctl = make(chan command, 4)
		defer b.join(c).remove(c)
	}

	// The watchdog: nats.go's pull sometimes believes a request is open
	// that the server no longer has (seen under load: the server reports
	// no waiting request and events pending, the client waits for them), and
	// only the missing heartbeats end that. When nothing arrived for a
	// while, ask the server; if it holds events for this consumer, none out
	// and no pull waiting, pull again.
	watch := time.NewTicker(watchEvery)
	defer watch.Stop()
	c.last = time.Now()

	for {
		if ctx.Err() != nil {
			return nil
		}
		if b.isClosed.Load() {
			return errClosed
		}
		if m := c.next; m != nil {
			c.next = nil
			if err := c.receive(ctx, m); err != nil {
				return err
			}
			continue
		}
		var msgs <-chan jetstream.Msg
		var stopped <-chan struct{}
		if c.g != nil { // nil while the balancer keeps this Consume off its partition
			msgs, stopped = c.g.msgs, c.g.stopped
		}
		select {
		case <-ctx.Done():
			return nil
		case <-b.closed:
			return errClosed
		case cmd := <-c.ctl:
			if err := c.command(ctx, cmd); err != nil {
				return err
			}
		case err := <-c.fatal:
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
			if err := c.strayCheck(ctx); err != nil {
				return err
			}
			if c.g == nil || time.Since(c.last) < watchEvery {
				continue
			}
			ci := consumerInfo(ctx, cons)
			if ci == nil {
				continue
			}
			if !pullLostIn(ci, c.pinned, c.pin) {
				if err := c.astrayCheck(ctx, ci); err != nil {
					return err
				}
				continue
			}
			b.log.Info("herald/natsjs: consume: the server has events and no pull of this consumer; pulling again", "consumer", durable)
			if err := c.repull(ctx, "pull lost"); err != nil {
				return err
			}
		case <-moved:
			if c.g == nil {
				continue
			}
			b.log.Info("herald/natsjs: consume: the consumer elected a leader; pulling again", "consumer", durable)
			if err := c.repull(ctx, "consumer leader elected"); err != nil {
				return err
			}
		case <-c.lost:
			// A 423 names no pin: it may be for an older pull's, the
			// claim just gained being fine. Ask the server.
			if err := c.checkClaim(ctx); err != nil {
				return err
			}
		case m := <-msgs:
			if err := c.receive(ctx, m); err != nil {
				return err
			}
		}
	}
}

// pullExpiryOf is the expiry of a pinned consumer's pulls: half the pinned
// TTL, so that an idle holder renews its pin in time, and at least the 1 s
// nats.go allows.
func pullExpiryOf(ttl time.Duration) time.Duration { return max(ttl/2, time.Second) }

// consumption is the state of one Consume call.
type consumption struct {
	b               *Broker
	sub             broker.Subscription
	stream, durable string
	cons            jetstream.Consumer
	batch           int
	h               broker.Handler
	hctx            context.Context
	acks            *ackLog
	pinned          bool // the consumer is pinned_client: claims (claim.go)
	pullMax         int
	bufSize         int
	expiry          time.Duration
	fatal           chan error    // from the pull's error handler: Consume ends
	lost            chan struct{} // the server refused this Consume's pin
	ctl             chan command  // from the balancer (balance.go); nil without one

	g    *pullGen
	next jetstream.Msg // a message taken from g.msgs but not yet received
	last time.Time     // when the last message arrived

	// Claims (pinned only). pin is the pin id of the claim this Consume
	// holds, "" when none; it is set only once the partition was restarted
	// for it. stale is a pin id this Consume lost: its messages are
	// dropped. seen is the connection's reconnect count when the claim was
	// (re)started.
	pin, stale string
	seen       uint64
	// first: the claim was restarted and its delivery 1 has not arrived
	// yet; dseq is the consumer sequence of the claim's last delivery
	// admitted; restarted is when the claim was restarted (see inOrder).
	// resetSeq is the stream sequence the claim's reset restarted at;
	// gen counts the resets, so that deliveries handed out before one no
	// longer count in out; resetFails counts failed restarts in a row.
	first      bool
	dseq       uint64
	restarted  time.Time
	resetSeq   uint64
	gen        atomic.Uint64
	resetFails int
	out        atomic.Int64 // deliveries handed to h and not yet settled
	// delayedUntil (unix nanoseconds) is when the latest redelivery asked
	// for by a Nak with a delay is due: until then, deliveries pending at
	// the server with none arriving is no sign of loss (astrayCheck).
	delayedUntil atomic.Int64
	// clientPin is the pin id stamped on the last message that reached any
	// of this Consume's pulls, "" after the server refused a pin (423):
	// the pin nats.go's consumer sends with its pull requests.
	clientPin atomic.Pointer[string]
	holding   atomic.Bool  // pin != "", for the balancer
	offUntil  atomic.Int64 // unix nanoseconds: released, stays off the partition until then
	releasing atomic.Bool  // a release by the balancer is under way
}

// setPin records the claim held ("" for none).
func (c *consumption) setPin(pin string) {
	c.pin = pin
	c.holding.Store(pin != "")
}

// pullGen is one pull subscription of a Consume; each has its own buffer,
// so that nothing of one can reach h once it is replaced.
type pullGen struct {
	cc      jetstream.ConsumeContext
	msgs    chan jetstream.Msg
	quit    chan struct{}
	stopped <-chan struct{}
	pin     atomic.Pointer[string] // the pin id of the last message that reached it
}

// seenPin returns the pin id the server stamped on the last message that
// reached g's pull ("" for none, or g nil): the pin of this pull, unless
// the pin moved on since.
func (g *pullGen) seenPin() string {
	if g == nil {
		return ""
	}
	if p := g.pin.Load(); p != nil {
		return *p
	}
	return ""
}

// pull starts a pull subscription.
func (c *consumption) pull() (*pullGen, error) {
	g := &pullGen{msgs: make(chan jetstream.Msg, c.bufSize), quit: make(chan struct{})}
	opts := []jetstream.PullConsumeOpt{
		jetstream.PullMaxMessages(c.pullMax),
		// A pull the server no longer serves is noticed by its missing
		// heartbeats (half the expiry) and replaced after two of them;
		// the watchdog usually notices sooner.
		jetstream.PullExpiry(c.expiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			switch {
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrBadRequest),
				errors.Is(err, jetstream.ErrConnectionClosed):
				select {
				case c.fatal <- err:
				default:
				}
			case errors.Is(err, jetstream.ErrPinIDMismatch):
				// nats.go forgets the pin and pulls on as a standby.
				c.clientPin.Store(nil)
				select {
				case c.lost <- struct{}{}:
				default:
				}
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				c.b.log.Info("herald/natsjs: consume: no heartbeat from the server; pulling again", "consumer", c.durable, "err", err)
			default:
				c.b.log.Debug("herald/natsjs: consume", "consumer", c.durable, "err", err)
			}
		}),
	}
	if c.pinned {
		opts = append(opts, jetstream.PullPriorityGroup(priorityGroup))
	}
	lose := c.b.cfg.lose
	cc, err := c.cons.Consume(func(m jetstream.Msg) {
		if lose != nil && lose(m) {
			return
		}
		if pid := m.Headers().Get(hdrPinID); pid != "" && g.seenPin() != pid {
			g.pin.Store(&pid)
			c.clientPin.Store(&pid)
		}
		select {
		case g.msgs <- m:
		case <-g.quit:
		}
	}, opts...)
	if err != nil {
		return nil, err
	}
	g.cc, g.stopped = cc, cc.Closed()
	return g, nil
}

// stopGen stops g and empties its buffer: the messages are nak'ed (nak) so
// that another consumer gets them at once, or dropped.
func (c *consumption) stopGen(g *pullGen, nak bool) {
	if g == nil {
		return
	}
	close(g.quit)
	g.cc.Stop()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-g.stopped:
	case <-t.C:
		c.b.log.Warn("herald/natsjs: consume: pull subscription slow to stop", "consumer", c.durable)
	}
	for {
		select {
		case m := <-g.msgs:
			if nak {
				_ = m.Nak()
			}
		default:
			return
		}
	}
}

// finish ends the Consume: its pull stops; a claim it holds is released.
func (c *consumption) finish() {
	if c.g != nil {
		c.stopGen(c.g, !c.pinned)
		c.g = nil
	}
	if c.next != nil && !c.pinned {
		_ = c.next.Nak()
	}
	c.next = nil
	if c.pinned && c.pin != "" {
		c.release("consume ended")
	}
}

// repull replaces the pull with a new one, after the watchdog found it lost
// or the consumer elected a leader. An unpinned pull is drained first: what
// reaches it before the server drops it is still handed to h, in order. A
// claimed partition restarts instead (what was on the wire comes again).
func (c *consumption) repull(ctx context.Context, why string) error {
	if c.pinned {
		if c.pin != "" {
			return c.restart(ctx, c.pin, why, true)
		}
		g := c.g
		c.stopGen(g, false)
		c.g, c.next = nil, nil
		own := g.seenPin() // after the stop: what reached the pull till then counts
		if own != "" && own != c.stale {
			// The new leader may have pinned this very pull already and
			// delivered to it (what the stop just dropped would come back
			// only after the ack wait): take the claim if the pin is the
			// pull's, restarting the partition.
			return c.restart(ctx, own, why+"; the consumer pinned this instance's pull", false)
		}
		return c.startPull()
	}
	g := c.g
	// Drain, not Stop: what reaches the old pull before the server drops
	// it (a pull nats.go sent meanwhile) is still handed to h, in order,
	// before the new pull starts.
	g.cc.Drain()
	limit := time.NewTimer(5 * time.Second)
	defer limit.Stop()
drain:
	for {
		select {
		case m := <-g.msgs:
			c.deliver(m)
		case <-g.stopped:
			for len(g.msgs) > 0 {
				c.deliver(<-g.msgs)
			}
			break drain
		case <-limit.C:
			c.b.log.Warn("herald/natsjs: consume: pull slow to drain; pulling again anyway", "consumer", c.durable)
			break drain
		case <-ctx.Done():
			return nil
		}
	}
	return c.startPull()
}

// startPull starts a new pull as c.g.
func (c *consumption) startPull() error {
	g, err := c.pull()
	if err != nil {
		return fmt.Errorf("herald/natsjs: consume %s/%s: pull again: %w", c.sub.Service, c.sub.Name, err)
	}
	c.g, c.last = g, time.Now()
	return nil
}

// receive hands m, and what else is already waiting, to h as one batch —
// once m passes the claim's checks (admit).
func (c *consumption) receive(ctx context.Context, m jetstream.Msg) error {
	ok, err := c.admit(ctx, m)
	if err != nil || !ok {
		return err
	}
	// Only what is admitted counts as arrived: deliveries dropped as
	// stale, or as sent before a restart, are no progress (astrayCheck).
	c.last = time.Now()
	c.deliver(m)
	return nil
}

// deliver hands m and what else is already waiting (and admitted) to h, as
// one batch.
func (c *consumption) deliver(m jetstream.Msg) {
	ds := make([]broker.Delivery, 1, min(c.batch, 1+len(c.g.msgs)))
	ds[0] = c.newDelivery(m)
	for len(ds) < c.batch {
		select {
		case m := <-c.g.msgs:
			if !c.fits(m) {
				c.next = m // received on its own, after this batch
				c.h(c.hctx, ds)
				return
			}
			ds = append(ds, c.newDelivery(m))
		default:
			c.h(c.hctx, ds)
			return
		}
	}
	c.h(c.hctx, ds)
}

func (c *consumption) newDelivery(m jetstream.Msg) *delivery {
	d := c.b.newDelivery(m, c.acks)
	if c.pinned {
		d.claim, d.gen = c, c.gen.Load()
		c.out.Add(1)
	}
	return d
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
	b     *Broker
	m     jetstream.Msg
	num   uint64
	seq   uint64
	acks  *ackLog      // where its ack is kept, to be sent again after a reconnect
	claim *consumption // the claimed partition's Consume it counts as out in, or nil
	gen   uint64       // claim.gen when it was handed out
	done  atomic.Bool  // settled (for claim)

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
	d.settled()
	return d.settleErr("ack", d.m.DoubleAck(ctx))
}

// AckNoWait acknowledges the message without waiting for the server: a lost
// ack means one more delivery, which herald's inbox absorbs.
func (d *delivery) AckNoWait() error {
	if d.b.isClosed.Load() {
		return errClosed
	}
	d.keepAck()
	d.settled()
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
	d.settled()
	if delay <= 0 {
		return d.settleErr("nak", d.m.Nak())
	}
	if c := d.claim; c != nil {
		due := time.Now().Add(delay).UnixNano()
		for {
			was := c.delayedUntil.Load()
			if was >= due || c.delayedUntil.CompareAndSwap(was, due) {
				break
			}
		}
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
	d.settled()
	return d.settleErr("term", d.m.Term())
}

// settled records the first settlement of a delivery of a claimed
// partition: it no longer counts as out (see consumption.release).
func (d *delivery) settled() {
	if d.claim != nil && d.done.CompareAndSwap(false, true) && d.gen == d.claim.gen.Load() {
		d.claim.out.Add(-1)
	}
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
