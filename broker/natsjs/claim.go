package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// Claims. Every durable consumer of an integration subscription (each
// partition's, also with one partition) is pinned_client with priority group
// "herald" (ADR-42): the server delivers to one pull at a time, the pinned
// one, stamping its pin id on each message (Nats-Pin-Id); the pulls of the
// other Consume calls wait as standbys. The pin ends when its pulls stop for
// the pinned TTL (a dead instance), at an unpin (a release), or when the
// consumer changes leader; the server then pins the next waiting pull.
//
// The old holder's unacknowledged deliveries stay pending and would come
// back only after their ack wait, behind newer events of their keys. So a
// Consume that sees a pin id it does not hold checks with the server that
// the pin is the consumer's and resets the consumer (ResetConsumer: delivery
// restarts at the ack floor + 1, pending cleared, the pin kept, deliveries
// numbered from 1 again); it drops what its pull buffered from before the
// reset, and from then on admits only the claim's deliveries numbered
// 1, 2, 3… in turn (inOrder): a missing one went astray and the claim
// restarts again. It does the same when its connection came back while it
// held the pin. Order per key then holds across takeovers without waiting
// out an ack wait: the events the old holder handled but did not
// acknowledge come again first.

// priorityGroup is the priority group of herald's pinned consumers.
const priorityGroup = "herald"

// hdrPinID is the header with which the server stamps each message of a
// pinned consumer.
const hdrPinID = "Nats-Pin-Id"

var _ broker.Claimer = (*Broker)(nil)

// ClaimsInOrder reports whether sub is consumed by claims: true for
// integration subscriptions (every partition is held by one Consume at a
// time and restarts at its first unacknowledged event when it changes
// hands or the connection comes back), false for notification
// subscriptions, whose Consume calls compete for events. It implements
// broker.Claimer.
func (b *Broker) ClaimsInOrder(sub broker.Subscription) bool {
	return sub.Kind == envelope.KindIntegration
}

// pinnedClient returns the pin id of the consumer's herald group, "" when
// no client is pinned.
func pinnedClient(ci *jetstream.ConsumerInfo) string {
	for _, g := range ci.PriorityGroups {
		if g.Group == priorityGroup {
			return g.PinnedClientID
		}
	}
	return ""
}

// fits reports whether m may join the batch being built: it is of the claim
// held, on the same connection, and the next delivery of the claim (which
// it then counts, see inOrder).
func (c *consumption) fits(m jetstream.Msg) bool {
	if !c.pinned {
		return true
	}
	pid := m.Headers().Get(hdrPinID)
	if pid == "" {
		return true
	}
	if pid != c.pin || c.reconnected() || c.first {
		return false
	}
	if c.b.cfg.hasFlaw(flawNoReset) {
		return true
	}
	seq, _, ok := deliverySeqs(m)
	if ok && seq != c.dseq+1 {
		return false
	}
	c.dseq = seq
	return true
}

// reconnected reports whether the connection came back since the claim was
// (re)started.
func (c *consumption) reconnected() bool {
	return c.b.nc.Stats().Reconnects != c.seen && !c.b.cfg.hasFlaw(flawNoResetOnReconnect)
}

// admit decides whether m goes to h. A message of a pin this Consume lost is
// dropped; one of a pin it does not hold, or the first after a reconnect,
// restarts the partition (and is dropped: the restart delivers it again).
func (c *consumption) admit(ctx context.Context, m jetstream.Msg) (bool, error) {
	if !c.pinned {
		return true, nil
	}
	pid := m.Headers().Get(hdrPinID)
	switch {
	case pid == "":
		return true, nil // not stamped: the consumer is not (yet) pinned
	case pid == c.stale:
		return false, nil
	case pid != c.pin && c.b.cfg.hasFlaw(flawNoReset):
		c.setPin(pid) // takes the claim as it comes
		c.seen = c.b.nc.Stats().Reconnects
		return true, nil
	case pid != c.pin:
		return false, c.restart(ctx, pid, "gained", false)
	case c.reconnected():
		return false, c.restart(ctx, pid, "reconnected", false)
	case c.b.cfg.hasFlaw(flawNoReset):
		return true, nil
	}
	return c.inOrder(ctx, m)
}

// maxResetFails is how many restarts of a claim in a row may fail (each
// followed by a 250ms pause) before Consume gives up with an error.
const maxResetFails = 20

// strayAfter is how long after a restart a Consume waits for the restart's
// first delivery before it restarts again: longer than any pull request of
// before the restart can live (the server may serve one for up to 2 s after
// its subscriber went, see inOrder).
func (c *consumption) strayAfter() time.Duration { return 2*c.expiry + 2*time.Second }

// inOrder reports whether m, of the claim held, is the claim's next
// delivery. The server numbers a consumer's deliveries (the consumer
// sequence) one by one, and a reset numbers them from 1 again; while a
// claim is held, its deliveries all go to this Consume's pull, so they must
// arrive numbered 1, 2, 3… from the restart on. What arrives before the
// restart's delivery 1 was sent before the reset: dropped (it comes again).
// A missing number is a delivery that went elsewhere — to a pull request of
// before the restart that the server still served (with leaf nodes it keeps
// serving a request up to 2 s after its subscriber went), or lost on the
// wire — and would come back only after its ack wait, behind newer events of
// its key: the claim restarts again, in place.
func (c *consumption) inOrder(ctx context.Context, m jetstream.Msg) (bool, error) {
	seq, sseq, ok := deliverySeqs(m)
	switch {
	case !ok:
		return true, nil
	case c.first && seq == 1 && sseq >= c.resetSeq:
		c.first, c.dseq = false, 1
		return true, nil
	case c.first:
		if time.Since(c.restarted) > c.strayAfter() {
			return false, c.restart(ctx, c.pin, "the restart's first delivery went astray", false)
		}
		return false, nil // sent before the reset
	case seq != c.dseq+1:
		return false, c.restart(ctx, c.pin, fmt.Sprintf("delivery %d of the claim went astray (got %d)", c.dseq+1, seq), false)
	}
	c.dseq = seq
	return true, nil
}

// deliverySeqs returns m's consumer (delivery) and stream sequences.
func deliverySeqs(m jetstream.Msg) (consumer, stream uint64, ok bool) {
	md, err := m.Metadata()
	if err != nil {
		return 0, 0, false
	}
	return md.Sequence.Consumer, md.Sequence.Stream, true
}

// strayCheck restarts a claim whose restart's first delivery has not come
// within strayAfter while nothing else arrives to notice (the watchdog's
// tick): delivery 1 went astray, and would come back only after its ack
// wait.
func (c *consumption) strayCheck(ctx context.Context) error {
	if !c.pinned || c.pin == "" || !c.first || c.g == nil || time.Since(c.restarted) <= c.strayAfter() {
		return nil
	}
	return c.restart(ctx, c.pin, "the restart's first delivery went astray", false)
}

// ownPin returns the pin id nats.go's consumer sends with this Consume's
// pull requests, as far as this Consume saw it (clientPin).
func (c *consumption) ownPin() string {
	if p := c.clientPin.Load(); p != nil {
		return *p
	}
	return ""
}

// astrayCheck restarts a claim whose deliveries went astray: the consumer
// is pinned to this Consume's pull (the claim it holds, or the pin its pull
// carries though this Consume had given it up), deliveries are pending at
// the server, and for strayAfter none arrived while nothing was buffered
// or with h. They went to a pull this Consume replaced, or were lost on the
// wire (a reconnect, a new consumer leader), and would come back only after
// their ack wait; when they fill MaxAckPending nothing else comes either,
// while the pin, renewed by this Consume's pulls, keeps every standby off.
// A Nak with a delay leaves its delivery pending on purpose: not before it
// is due. ci is the consumer's info of the watchdog's tick.
func (c *consumption) astrayCheck(ctx context.Context, ci *jetstream.ConsumerInfo) error {
	if !c.pinned || c.g == nil || (c.first && c.pin != "") || c.next != nil || len(c.g.msgs) > 0 || c.out.Load() > 0 {
		return nil // a restart's first delivery is strayCheck's
	}
	// As long as strayCheck waits: under load, a reset's redeliveries can
	// take seconds, and a shorter wait would reset again and again.
	quiet := min(time.Since(c.last), time.Since(c.restarted))
	if quiet < c.strayAfter() || time.Now().UnixNano() < c.delayedUntil.Load() {
		return nil
	}
	own := c.ownPin()
	if c.pin == "" && own == "" {
		return nil
	}
	if ci.NumAckPending == 0 {
		return nil
	}
	pin := pinnedClient(ci)
	if pin == "" || (pin != c.pin && pin != own) {
		return nil // another instance's claim, or none yet
	}
	return c.restart(ctx, pin, fmt.Sprintf("%d deliveries pending at the server and none arrived for %v", ci.NumAckPending, quiet.Round(time.Millisecond)), false)
}

// restart resets the consumer to its ack floor and holds the claim, if the
// consumer's pin is pid. With fresh it first replaces the pull (dropping
// what it buffered) by a new pull subscription — nats.go's consumer keeps
// the pin id, so the new pull carries it —, for a pull the server no longer
// serves; otherwise the pull goes on, and inOrder drops what it buffered
// from before the reset. Replacing a pull that the server still serves
// would leave its request behind, which the server may go on serving for a
// while: the deliveries it takes would be lost to this Consume.
func (c *consumption) restart(ctx context.Context, pid, why string, fresh bool) error {
	g := c.g
	if fresh {
		c.stopGen(g, false)
		c.g = nil
	}
	own := g.seenPin() // after the stop: what reached the pull till then counts
	c.next = nil
	held := c.pin
	c.setPin("")
	seen := c.b.nc.Stats().Reconnects
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ci, err := c.cons.Info(rctx)
	if err == nil && pid != own && own != "" && own != c.stale && pinnedClient(ci) == own {
		// The pin moved on, to this Consume's own pull (a new consumer
		// leader pinned it before this Consume noticed the election): the
		// claim is this Consume's under the new pin.
		pid, why = own, why+"; the consumer pinned this instance's pull"
	}
	switch {
	case err != nil:
	case pinnedClient(ci) != pid:
		// Not (or no longer) the consumer's pin: this Consume is a standby.
		c.stale = pid
		if held != "" {
			c.b.log.Info("herald/natsjs: claim released", "consumer", c.durable, "partition", c.sub.Partition, "reason", why+"; the pin moved on")
		}
	default:
		var r *jetstream.ConsumerResetResponse
		if r, err = c.b.js.ResetConsumer(rctx, c.stream, c.durable); err == nil {
			c.setPin(pid)
			if c.stale == pid {
				c.stale = "" // given up too early: the pin was this Consume's pull's
			}
			c.delayedUntil.Store(0) // the reset redelivers those at once
			c.seen = seen
			c.first, c.dseq, c.restarted, c.resetSeq = true, 0, time.Now(), r.ResetSeq
			// What was handed out before is redelivered; its settling no
			// longer counts (queued deliveries may be replaced unsettled).
			c.gen.Add(1)
			c.out.Store(0)
			c.resetFails = 0
			c.b.log.Info("herald/natsjs: claim gained", "consumer", c.durable, "partition", c.sub.Partition,
				"reason", why, "restart_at", r.ResetSeq)
		}
	}
	cancel()
	if err != nil {
		c.resetFails++
		if c.resetFails >= maxResetFails {
			// Without a reset the claim cannot be held in order; a pull that
			// goes on would renew the pin and keep the partition from every
			// other instance. The engine runs Consume again after a pause.
			return fmt.Errorf("herald/natsjs: consume %s/%s: partition %d: cannot restart the claim on consumer %s "+
				"(it needs nats-server 2.15 or later and permission to publish $JS.API.CONSUMER.RESET.%s.%s and $JS.API.CONSUMER.INFO.%s.%s): %w",
				c.sub.Service, c.sub.Name, c.sub.Partition, c.durable, c.stream, c.durable, c.stream, c.durable, err)
		}
		// The next message of the pin comes here again.
		c.b.log.Warn("herald/natsjs: claim: restarting the partition failed; trying again", "consumer", c.durable,
			"partition", c.sub.Partition, "reason", why, "err", err)
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
	if c.g != nil {
		return nil
	}
	return c.startPull()
}

// checkClaim drops the claim this Consume holds if the consumer's pin is no
// longer its own (after the server refused a pull's pin) — or, when the
// consumer pinned this Consume's pull anew (a new leader, which refuses the
// old pin), restarts the claim under the new pin: what the pull buffered
// under it was delivered before the reset, and comes again.
func (c *consumption) checkClaim(ctx context.Context) error {
	if c.pin == "" {
		return nil
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ci, err := c.cons.Info(ictx)
	if own := c.g.seenPin(); err == nil && own != "" && own != c.pin && pinnedClient(ci) == own {
		return c.restart(ctx, own, "the consumer pinned this instance's pull anew", false)
	}
	if err == nil && pinnedClient(ci) != c.pin {
		c.loseClaim("the server refused this instance's pin (423) and holds another")
	}
	return nil
}

// loseClaim records that the server refused this Consume's pin: what it
// buffered is dropped (the next holder restarts from the ack floor), and
// later messages of the pin too.
func (c *consumption) loseClaim(why string) {
	if c.pin == "" {
		return
	}
	c.b.log.Info("herald/natsjs: claim released", "consumer", c.durable, "partition", c.sub.Partition, "reason", why)
	c.stale, c.next = c.pin, nil
	c.setPin("")
	if c.g == nil {
		return
	}
	for {
		select {
		case <-c.g.msgs:
		default:
			return
		}
	}
}

// releaseSettle bounds how long a release waits for the deliveries handed
// to h to be settled.
const releaseSettle = 2 * time.Second

// release gives the claim up, the pull stopped: once the deliveries handed
// to h are settled (at most releaseSettle), it unpins the consumer if the
// pin is still this Consume's, so that a standby takes over at once rather
// than after the pinned TTL.
func (c *consumption) release(why string) {
	pin := c.pin
	c.stale = pin
	c.setPin("")
	deadline := time.Now().Add(releaseSettle)
	// When the Consume's context ended (the engine stops), the engine
	// settles what it holds only after Consume returned: no use waiting.
	// What its handlers still finish comes again at the next holder, from
	// the ack floor, and its inbox absorbs it.
	for c.out.Load() > 0 && c.hctx.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.b.cfg.hasFlaw(flawNoUnpin) {
		return
	}
	// Not the Consume's context: it has ended. Close waits for Consume, so
	// the connection is still up.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.unpin(ctx, pin)
	if err != nil {
		c.b.log.Warn("herald/natsjs: claim: unpin failed; the claim moves after the pinned TTL", "consumer", c.durable,
			"partition", c.sub.Partition, "err", err)
		return
	}
	c.b.log.Info("herald/natsjs: claim released", "consumer", c.durable, "partition", c.sub.Partition, "reason", why,
		"unsettled", c.out.Load())
}

// unpin unpins the consumer if its pin is pin.
func (c *consumption) unpin(ctx context.Context, pin string) error {
	ci, err := c.cons.Info(ctx)
	if err != nil {
		return err
	}
	if pinnedClient(ci) != pin {
		return nil // moved on already: nothing of ours to release
	}
	s, err := c.b.js.Stream(ctx, c.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", c.stream, err)
	}
	return s.UnpinConsumer(ctx, c.durable, priorityGroup)
}

// Flaws a test can switch on (withFlaw) to check that the claim tests catch
// them.
const (
	flawNoReset            = "no-reset"
	flawNoResetOnReconnect = "no-reset-on-reconnect"
	flawNoUnpin            = "no-unpin"
)

func (c *config) hasFlaw(f string) bool { return c.flaw == f }
