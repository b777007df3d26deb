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
// Consume that sees a pin id it does not hold stops its pull (dropping what
// it buffered, unhandled), checks with the server that the pin is the
// consumer's, resets the consumer (ResetConsumer: delivery restarts at the
// ack floor + 1, pending cleared, the pin kept) and pulls again with a new
// pull subscription — nothing sent to the old one can reach h. It does the
// same when its connection came back while it held the pin. Order per key
// then holds across takeovers without waiting out an ack wait: the events
// the old holder handled but did not acknowledge come again first.

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
// held, on the same connection.
func (c *consumption) fits(m jetstream.Msg) bool {
	if !c.pinned {
		return true
	}
	pid := m.Headers().Get(hdrPinID)
	return pid == "" || pid == c.pin && !c.reconnected()
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
		return false, c.restart(ctx, pid, "gained")
	case c.reconnected():
		return false, c.restart(ctx, pid, "reconnected")
	}
	return true, nil
}

// restart stops the pull (dropping what it buffered), and, if the consumer's
// pin is pid, resets the consumer to its ack floor and holds the claim;
// then it pulls again with a new pull subscription (nats.go's consumer keeps
// the pin id, so the new pull carries it).
func (c *consumption) restart(ctx context.Context, pid, why string) error {
	c.stopGen(c.g, false)
	c.g, c.next = nil, nil
	held := c.pin
	c.setPin("")
	seen := c.b.nc.Stats().Reconnects
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ci, err := c.cons.Info(rctx)
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
			c.seen = seen
			c.b.log.Info("herald/natsjs: claim gained", "consumer", c.durable, "partition", c.sub.Partition,
				"reason", why, "restart_at", r.ResetSeq)
		}
	}
	cancel()
	if err != nil {
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
	return c.startPull()
}

// checkClaim drops the claim this Consume holds if the consumer's pin is no
// longer its own (after the server refused a pull's pin).
func (c *consumption) checkClaim(ctx context.Context) {
	if c.pin == "" {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if ci, err := c.cons.Info(ictx); err == nil && pinnedClient(ci) != c.pin {
		c.loseClaim("the server refused this instance's pin (423) and holds another")
	}
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
	for c.out.Load() > 0 && time.Now().Before(deadline) {
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
