package natsjs

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
)

// TestPullLost checks the watchdog's test against a real server: a consumer
// with events and neither a pull waiting nor an event out has lost its pull;
// one with an event out (perhaps still in the client's buffer) or with
// nothing pending has not. (An unpinned consumer: a notification
// subscription's.)
func TestPullLost(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	b := embedded(t, WithEphemeral())
	typ := "watch.event"
	cons, _ := watched(t, b, broker.Subscription{Service: "watch", Name: "dog", Types: []string{typ}, Kind: envelope.KindNotification, AckWait: time.Minute})
	if pullLost(ctx, cons, false, "") {
		t.Fatal("pullLost with nothing pending = true")
	}
	es := bulk(typ, 3)
	for _, e := range es {
		e.Kind = envelope.KindNotification
	}
	mustPublish(t, b, es)
	// The publishes are acknowledged once stored; the consumer counts them
	// a moment later.
	waitConsumer(t, cons, "3 pending", func(ci *jetstream.ConsumerInfo) bool { return ci.NumPending == 3 })
	if !pullLost(ctx, cons, false, "") {
		t.Fatal("pullLost with 3 pending, no pull and nothing out = false")
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	if len(out) != 1 {
		t.Fatalf("fetched %d, want 1", len(out))
	}
	if pullLost(ctx, cons, false, "") {
		t.Fatal("pullLost with an event out = true: a new pull could drop it")
	}
	if err := out[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	waitConsumer(t, cons, "2 pending, none out, no pull waiting", func(ci *jetstream.ConsumerInfo) bool {
		return ci.NumPending == 2 && ci.NumAckPending == 0 && ci.NumWaiting == 0
	})
	if !pullLost(ctx, cons, false, "") {
		t.Fatal("pullLost with 2 pending after the ack = false")
	}
}

// TestPullLostPinned: a pinned consumer's standby pulls always wait, so
// waiting pulls do not mean the holder's pull is there; the pull is lost
// when events are pending, none is out, and this Consume holds the pin.
func TestPullLostPinned(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	b := embedded(t, WithEphemeral())
	typ := "watch.event"
	cons, spec := watched(t, b, broker.Subscription{Service: "watch", Name: "pin", Types: []string{typ}, Kind: envelope.KindIntegration, AckWait: time.Minute})
	mustPublish(t, b, bulk(typ, 3))
	waitConsumer(t, cons, "3 pending", func(ci *jetstream.ConsumerInfo) bool { return ci.NumPending == 3 })
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(priorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	m := <-batch.Messages()
	if m == nil {
		t.Fatal("no message")
	}
	pin := m.Headers().Get(hdrPinID)
	if pin == "" {
		t.Fatal("no pin id on a pinned consumer's message")
	}
	if pullLost(ctx, cons, true, pin) {
		t.Fatal("pullLost with an event out = true")
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	// A standby's pull (no pin id) waits, as other instances' do.
	standby, err := b.js.Consumer(ctx, spec.stream, spec.cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := standby.Messages(jetstream.PullPriorityGroup(priorityGroup), jetstream.PullExpiry(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Stop()
	go func() { _, _ = sb.Next() }()
	waitConsumer(t, cons, "2 pending, none out, a standby waiting", func(ci *jetstream.ConsumerInfo) bool {
		return ci.NumPending == 2 && ci.NumAckPending == 0 && ci.NumWaiting > 0
	})
	if !pullLost(ctx, cons, true, pin) {
		t.Fatal("pullLost of the pin holder with 2 pending, none out = false (the standby's pull hid it)")
	}
	if pullLost(ctx, cons, true, "") || pullLost(ctx, cons, true, "another") {
		t.Fatal("pullLost of a standby = true while another holds the pin")
	}
}

// watched provisions sub and returns its consumer.
func watched(t *testing.T, b *Broker, sub broker.Subscription) (jetstream.Consumer, consumerSpec) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	if err := b.Provision(ctx, broker.Topology{Service: sub.Service, Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	spec, err := b.consumerConfig(sub)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := b.consumer(ctx, spec.stream, spec.cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	return cons, spec
}

// waitConsumer waits until the server's info of cons satisfies ok.
func waitConsumer(t *testing.T, cons jetstream.Consumer, what string, ok func(*jetstream.ConsumerInfo) bool) {
	t.Helper()
	var ci *jetstream.ConsumerInfo
	var err error
	testwait.UntilReport(t, 10*time.Second, func() bool {
		ci, err = cons.Info(t.Context())
		return err == nil && ok(ci)
	}, func() string { return fmt.Sprintf("consumer never reached %s: %+v (%v)", what, ci, err) })
}
