package natsjs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
)

func TestAckLogRing(t *testing.T) {
	l := &ackLog{size: 3}
	for seq := uint64(1); seq <= 5; seq++ {
		l.add(seq, fmt.Sprint("r", seq))
	}
	l.add(6, "") // no ack subject: nothing to send again
	seqs := func(es []ackEntry) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.seq)
		}
		slices.Sort(out)
		return out
	}
	if got := seqs(l.within(0, 100)); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("a ring of 3 after 5 acks holds %v, want [3 4 5]", got)
	}
	if got := seqs(l.within(3, 4)); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("within (3, 4]: %v, want [4]", got)
	}
	// Growing keeps what it has and overwrites the oldest only when full again.
	b := &Broker{}
	b.acks.Store("d", l)
	if b.ackLog("d", 5) != l {
		t.Fatal("ackLog made a new log for a known consumer")
	}
	l.add(7, "r7")
	l.add(8, "r8")
	if got := seqs(l.within(0, 100)); !slices.Equal(got, []uint64{3, 4, 5, 7, 8}) {
		t.Fatalf("after growing to 5 and 2 more acks: %v, want [3 4 5 7 8]", got)
	}
	l.add(9, "r9")
	if got := seqs(l.within(0, 100)); !slices.Equal(got, []uint64{4, 5, 7, 8, 9}) {
		t.Fatalf("full again: %v, want [4 5 7 8 9]", got)
	}
	if b.ackLog("d", 2); l.size != 5 {
		t.Fatalf("a smaller size shrank the log to %d", l.size)
	}
}

// TestExternalRestartSendsLostAcksAgain acks deliveries while the server is
// down (the acks fail: no reconnect buffer), restarts it, and checks that
// the server counts them as pending until PendingState, which sends them
// again, reports none.
func TestExternalRestartSendsLostAcksAgain(t *testing.T) {
	srv := startExternal(t)
	b := connect(t, srv.url())
	sub := broker.Subscription{Service: "reack", Name: "all", Types: []string{"test.reack.done"},
		Kind: envelope.KindIntegration, AckWait: 30 * time.Second} // no redelivery during the test
	if err := b.Provision(testCtx(t, 30*time.Second), broker.Topology{Service: "reack", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	mustPublish(t, b, bulk("test.reack.done", n))

	var mu sync.Mutex
	var held []broker.Delivery
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(ctx, sub, 100, func(_ context.Context, ds []broker.Delivery) {
			mu.Lock()
			held = append(held, ds...)
			mu.Unlock()
		})
	}()
	stopOnCleanup(t, cancel, done)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(held) }
	deadline := time.Now().Add(30 * time.Second)
	testwait.UntilReport(t, time.Until(deadline), func() bool { return count() >= n },
		func() string { return fmt.Sprintf("%d of %d delivered", count(), n) })
	st, err := b.PendingState(testCtx(t, 10*time.Second), sub)
	if err != nil || st.Pending != n {
		t.Fatalf("PendingState before the restart: %+v, %v; want %d pending", st, err, n)
	}
	time.Sleep(500 * time.Millisecond) // the server writes its consumer state at most every 100ms

	srv.kill()
	epoch := b.Epoch()
	// Acks written before the client noticed the server died go into the
	// socket and fail only asynchronously (broken pipe): wait until the
	// connection knows it is down, so that the acks below fail.
	testwait.Until(t, time.Until(deadline.Add(30*time.Second)), "the connection to notice the server died",
		func() bool { return !b.nc.IsConnected() })
	mu.Lock()
	failed := 0
	for _, d := range held {
		if d.AckNoWait() != nil {
			failed++
		}
	}
	mu.Unlock()
	if failed == 0 {
		t.Fatal("no ack failed with the server down: the test does not lose acks")
	}
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, time.Until(deadline.Add(30*time.Second)), "the broker to reconnect", func() bool { return b.Epoch() != epoch })

	// The server's own count, from another connection: the lost acks.
	nc, err := nats.Connect(srv.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.consumerConfig(sub)
	if err != nil {
		t.Fatal(err)
	}
	var ci *jetstream.ConsumerInfo
	testwait.UntilReport(t, time.Until(deadline.Add(30*time.Second)), func() bool {
		var c jetstream.Consumer
		if c, err = js.Consumer(testCtx(t, 5*time.Second), spec.stream, spec.cfg.Durable); err != nil {
			return false
		}
		ci = c.CachedInfo()
		return true
	}, func() string { return fmt.Sprintf("consumer info after the restart: %v", err) })
	if ci.NumAckPending != n {
		t.Fatalf("after the restart the server counts %d pending, want %d (%d acks failed while it was down)", ci.NumAckPending, n, failed)
	}
	st, err = b.PendingState(testCtx(t, 10*time.Second), sub)
	if err != nil {
		t.Fatalf("PendingState after the restart: %v", err)
	}
	if st.Pending != 0 {
		t.Fatalf("PendingState after the restart: %d pending, want 0: the %d acks lost while the server was down were not sent again", st.Pending, failed)
	}
	t.Logf("%d acks failed while the server was down; it counted %d pending after its restart, PendingState (having sent them again) %d",
		failed, ci.NumAckPending, st.Pending)
}
