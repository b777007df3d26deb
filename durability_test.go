package herald_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestBrokerLostTailIsRefilledFromOutbox: the embedded default fsyncs the
// broker once a second, so if the machine dies the broker may lose the
// events it acknowledged within its last loss window. The test makes the
// broker lose every event it stored in that window (deleting them, then
// restarting it so its state is rebuilt from disk, as after a crash; the
// last 300 of 1000 events are recorded in a burst so the window holds many),
// restarts the producer service, and expects a consumer to receive all 1000
// exactly once: the outbox kept the published rows and re-published the
// recent ones at start.
func TestBrokerLostTailIsRefilledFromOutbox(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const prefix = "durable"
	openBroker := func() *natsjs.Broker {
		b, err := natsjs.Embedded(ctx, natsjs.WithDataDir(filepath.Join(dir, "nats")), natsjs.WithListen("127.0.0.1:0"),
			natsjs.WithPrefix(prefix), natsjs.WithLogger(quiet))
		must(t, err)
		if b.LossWindow() != time.Second {
			t.Fatalf("embedded default loss window = %v, want 1s", b.LossWindow())
		}
		return b
	}
	ost := testdb.SQLite(t)
	newOrders := func(b *natsjs.Broker) *herald.Service {
		svc, err := herald.New("orders", herald.WithStore(ost), herald.WithBroker(b), herald.WithLogger(quiet))
		must(t, err)
		must(t, herald.Translate(svc, stepRecorded, orderStepped, func(ctx context.Context, s step) (stepped, error) { return stepped(s), nil }))
		return svc
	}

	b := openBroker()
	orders := newOrders(b)
	must(t, orders.Start(ctx))
	record := func(from, to int) {
		must(t, orders.Do(ctx, func(tx herald.Tx) error {
			for i := from; i < to; i++ {
				if err := herald.Record(tx, stepRecorded, step{OrderID: "k" + string(rune('a'+i%20)), N: i}); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	for i := range 700 {
		record(i, i+1)
	}
	waitBacklog(t, orders, 0)
	record(700, 1000)
	waitBacklog(t, orders, 0)
	must(t, orders.Close())

	// Lose the tail, as a machine crash before the broker's fsync would.
	nc, err := nats.Connect(b.URL())
	must(t, err)
	js, err := jetstream.New(nc)
	must(t, err)
	stream, err := js.Stream(ctx, strings.ToUpper(prefix)+"_INT")
	must(t, err)
	info, err := stream.Info(ctx)
	must(t, err)
	if info.State.Msgs != 1000 {
		t.Fatalf("stream has %d events, want 1000", info.State.Msgs)
	}
	// What the broker stored within its loss window before its last write
	// is what a machine crash may take.
	last, err := stream.GetMsg(ctx, info.State.LastSeq)
	must(t, err)
	lost := 0
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq; seq-- {
		m, err := stream.GetMsg(ctx, seq)
		must(t, err)
		if m.Time.Before(last.Time.Add(-b.LossWindow())) {
			break
		}
		must(t, stream.DeleteMsg(ctx, seq))
		lost++
	}
	if lost < 300 {
		t.Fatalf("the loss window held only %d events; the burst of 300 should all be in it", lost)
	}
	t.Logf("the broker lost its last %d events", lost)
	nc.Close()
	must(t, b.Close())

	b = openBroker()
	defer b.Close()
	orders = newOrders(b)
	must(t, orders.Start(ctx)) // re-publishes the recent rows
	defer orders.Close()

	cst := testdb.SQLite(t)
	consumer, err := herald.New("audit", herald.WithStore(cst), herald.WithBroker(b), herald.WithLogger(quiet))
	must(t, err)
	if _, err := cst.DB().Exec(`CREATE TABLE seen (n INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	must(t, herald.Subscribe(consumer, orderStepped, "count", func(ctx context.Context, tx herald.Tx, s stepped) error {
		got.Add(1)
		_, err := tx.SQL().ExecContext(ctx, `INSERT INTO seen (n) VALUES (?)`, s.N)
		return err
	}))
	must(t, consumer.Start(ctx))
	defer consumer.Close()
	_ = testwait.For(30*time.Second, "1000 events seen", func() bool { return testdb.Count(t, cst, "seen", "") >= 1000 })
	time.Sleep(300 * time.Millisecond) // a duplicate would show now
	var rows, distinct int
	must(t, cst.DB().QueryRow(`SELECT COUNT(*), COUNT(DISTINCT n) FROM seen`).Scan(&rows, &distinct))
	if rows != 1000 || distinct != 1000 {
		t.Fatalf("consumer saw %d events (%d distinct), want 1000 exactly once", rows, distinct)
	}
}

func waitBacklog(t *testing.T, svc *herald.Service, want int64) {
	t.Helper()
	var n int64
	testwait.UntilReport(t, 30*time.Second, func() bool {
		var err error
		n, _, err = svc.OutboxStats(context.Background())
		must(t, err)
		return n == want
	}, func() string { return fmt.Sprintf("outbox backlog %d, want %d", n, want) })
}
