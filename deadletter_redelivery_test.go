package herald_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
)

// ackDropper is a broker whose consumers' acks are lost: every delivery
// comes back after its ack wait, as on a machine so loaded that deliveries
// wait in the consumer longer than the ack wait.
type ackDropper struct {
	*natsjs.Broker
	maxDelivered atomic.Uint64
}

func (a *ackDropper) Consume(ctx context.Context, sub broker.Subscription, batch int, h broker.Handler) error {
	return a.Broker.Consume(ctx, sub, batch, func(ctx context.Context, ds []broker.Delivery) {
		out := make([]broker.Delivery, len(ds))
		for i, d := range ds {
			for n := d.NumDelivered(); ; {
				old := a.maxDelivered.Load()
				if n <= old || a.maxDelivered.CompareAndSwap(old, n) {
					break
				}
			}
			out[i] = lostAck{d}
		}
		h(ctx, out)
	})
}

type lostAck struct{ broker.Delivery }

func (lostAck) AckNoWait() error              { return nil }
func (lostAck) Ack(ctx context.Context) error { return nil }

// TestRedeliveredGarbageIsDeadLetteredOnce: a dead letter's inbox row makes
// its redeliveries acknowledged without a second dead letter — for an event
// with an id (an unknown type) and for bytes without one, keyed by stream
// sequence and digest. (Under the race detector, CI once counted 1,134
// dead letters for 1,000 garbage messages: ack waits ran out while they
// waited in the consumer.)
func TestRedeliveredGarbageIsDeadLetteredOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := "r" + randHex(4)
	nb, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithPrefix(prefix), natsjs.WithLogger(quiet))
	must(t, err)
	defer nb.Close()
	b := &ackDropper{Broker: nb}
	svc, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(quiet))
	must(t, err)
	must(t, herald.Subscribe(svc, fuzzPlaced, "track", func(context.Context, herald.Tx, fuzzed) error { return nil },
		herald.AckWait(time.Second)))
	must(t, svc.Start(ctx))
	defer svc.Close()
	nc, err := nats.Connect(nb.URL())
	must(t, err)
	defer nc.Close()
	js, err := nc.JetStream()
	must(t, err)
	subject := prefix + ".int." + fuzzPlaced.Name()
	raw := nats.NewMsg(subject)
	raw.Data = []byte("\x00\x01 not an event")
	e := &envelope.Envelope{ID: envelope.NewID(time.Now()), Type: "shop.made.up", Version: 1, Kind: envelope.KindIntegration,
		Source: "intruder", Time: time.Now(), Data: []byte(`{}`)}
	h, body := envelope.ToBinary(e)
	unknown := nats.NewMsg(subject)
	for k, v := range h {
		unknown.Header.Set(k, v)
	}
	unknown.Data = body
	for _, m := range []*nats.Msg{raw, unknown} {
		_, err := js.PublishMsg(m)
		must(t, err)
	}
	testwait.UntilReport(t, 30*time.Second, func() bool { return b.maxDelivered.Load() >= 3 },
		func() string {
			return fmt.Sprintf("deliveries reached %d, want 3 (redelivered twice)", b.maxDelivered.Load())
		})
	dls, err := svc.DeadLetters(ctx, herald.DeadLetterFilter{})
	must(t, err)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters after redeliveries of 2 garbage messages, want 2", len(dls))
	}
}
