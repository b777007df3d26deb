package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// payload512 is an event whose JSON data is about 512 bytes.
type payload512 struct {
	OrderID string `json:"order_id"`
	Blob    string `json:"blob"`
}

var busEvent = herald.Integration[payload512]("bench.bus.event", herald.KeyBy(func(p payload512) string { return p.OrderID }))
var busRecorded = herald.Domain[payload512]("bench.bus.recorded")

func blob() string {
	b := make([]byte, 230)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b) // 460 chars + keys ≈ 512 bytes of JSON
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// quiet drops the logs of benchmark runs.
var quiet = slog.New(slog.DiscardHandler)

// busResult is what one run measured.
type busResult struct {
	events  int
	elapsed time.Duration
	cpu     time.Duration
	lat     []time.Duration
}

func (r busResult) report(b *testing.B) {
	b.ReportMetric(float64(r.events)/r.elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.events), "cpu-µs/event")
	if len(r.lat) > 0 {
		slices.Sort(r.lat)
		b.ReportMetric(float64(r.lat[len(r.lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(r.lat[len(r.lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkBus measures the integration tier on the embedded defaults — the
// relay publishing 512-byte integration events from a filled outbox to
// JetStream, a subscriber handling each inside a transaction with its inbox
// row on SQLite — beside raw nats.go (async publish, pull consume, ack) on the
// same kind of server in the same run. Latency at a fixed rate is measured by
// BenchmarkLatency.
//
//	go test -run='^$' -bench=BenchmarkBus -benchtime=20000x .
func BenchmarkBus(b *testing.B) {
	b.Run("herald-sqlite/sync-always", func(b *testing.B) { benchHerald(b, "sqlite", natsjs.WithSyncAlways(true)) })
	b.Run("herald-sqlite/sync-1s", func(b *testing.B) {
		benchHerald(b, "sqlite", natsjs.WithSyncAlways(false), natsjs.WithSyncInterval(time.Second))
	})
	b.Run("raw-nats/sync-always", func(b *testing.B) { benchRawNATS(b, natsjs.WithSyncAlways(true)) })
	b.Run("raw-nats/sync-1s", func(b *testing.B) {
		benchRawNATS(b, natsjs.WithSyncAlways(false), natsjs.WithSyncInterval(time.Second))
	})
}

func benchHerald(b *testing.B, dialect string, opts ...natsjs.Option) {
	ctx := context.Background()
	br, err := natsjs.Embedded(ctx, append([]natsjs.Option{natsjs.WithEphemeral(), natsjs.WithLogger(quiet)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	prod, err := herald.New("producer", herald.WithStore(testdb.For(b, dialect)), herald.WithBroker(br), herald.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	if err := herald.Translate(prod, busRecorded, busEvent, func(ctx context.Context, p payload512) (payload512, error) { return p, nil }); err != nil {
		b.Fatal(err)
	}
	cons, err := herald.New("consumer", herald.WithStore(testdb.For(b, dialect)), herald.WithBroker(br), herald.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer cons.Close()
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	if err := herald.Subscribe(cons, busEvent, "sink", func(ctx context.Context, tx herald.Tx, p payload512) error {
		mu.Lock()
		lat = append(lat, 0)
		if len(lat) == b.N {
			close(done)
		}
		mu.Unlock()
		return nil
	}, herald.BatchSize(256)); err != nil {
		b.Fatal(err)
	}
	if err := cons.Start(ctx); err != nil {
		b.Fatal(err)
	}
	// The producer's transactions fill the outbox first (the outbox
	// scenario measures them); the clock runs from the relay's start to
	// the last handled event: publish → JetStream → handler with inbox.
	data := blob()
	const perTx = 256
	for i := 0; i < b.N; i += perTx {
		if err := prod.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+perTx, b.N); j++ {
				if err := herald.Record(tx, busRecorded, payload512{OrderID: fmt.Sprintf("o%d", j%1000), Blob: data}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	if err := prod.Start(ctx); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d events handled", len(lat), b.N)
	}
	r := busResult{events: b.N, elapsed: time.Since(t0), cpu: cpuTime() - cpu0}
	b.StopTimer()
	r.report(b)
}

// benchRawNATS is the baseline: what nats.go alone does with the same
// messages on an embedded server with the same storage settings.
func benchRawNATS(b *testing.B, opts ...natsjs.Option) {
	ctx := context.Background()
	br, err := natsjs.Embedded(ctx, append([]natsjs.Option{natsjs.WithEphemeral(), natsjs.WithLogger(quiet), natsjs.WithListen("127.0.0.1:0")}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	nc, err := nats.Connect(br.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "sink", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		b.Fatal(err)
	}
	data := []byte(fmt.Sprintf(`{"order_id":"o1","blob":%q}`, blob()))
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	cc, err := c.Consume(func(m jetstream.Msg) {
		sent, _ := time.Parse(time.RFC3339Nano, m.Headers().Get("sent"))
		_ = m.Ack()
		mu.Lock()
		lat = append(lat, time.Since(sent))
		if len(lat) == b.N {
			close(done)
		}
		mu.Unlock()
	}, jetstream.PullMaxMessages(512))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	for i := range b.N {
		m := nats.NewMsg(fmt.Sprintf("raw.o%d", i%1000))
		m.Header.Set("sent", time.Now().Format(time.RFC3339Nano))
		m.Data = data
		for {
			_, err := js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprintf("m%d", i)))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				b.Fatal(err)
			}
			<-js.PublishAsyncComplete() // the window is full: wait for acks
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish acks did not complete")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d handled", len(lat), b.N)
	}
	r := busResult{events: b.N, elapsed: time.Since(t0), cpu: cpuTime() - cpu0}
	b.StopTimer()
	mu.Lock()
	r.lat = lat
	mu.Unlock()
	r.report(b)
}

// BenchmarkLatency records integration events at a fixed rate on the
// embedded defaults and reports the end-to-end latency — from the event's
// record time in the producer's transaction to its handler in the consumer —
// p50 and p99. At 2,000 events/s each event is its own transaction; at
// 10,000 events/s a transaction records 10 (1,000 commits/s: every commit
// fsyncs, and this machine's disk does about 2,500 fsyncs/s in all):
//
//	go test -run='^$' -bench=BenchmarkLatency -benchtime=6000x .
func BenchmarkLatency(b *testing.B) {
	b.Run("2000ev/s-1perTx", func(b *testing.B) { benchLatency(b, 2000, 1) })
	b.Run("10000ev/s-10perTx", func(b *testing.B) { benchLatency(b, 10000, 10) })
}

func benchLatency(b *testing.B, rate, perTx int) {
	ctx := context.Background()
	br, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	prod, err := herald.New("producer", herald.WithStore(testdb.SQLite(b)), herald.WithBroker(br), herald.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	if err := herald.Translate(prod, busRecorded, busEvent, func(ctx context.Context, p payload512) (payload512, error) { return p, nil }); err != nil {
		b.Fatal(err)
	}
	cons, err := herald.New("consumer", herald.WithStore(testdb.SQLite(b)), herald.WithBroker(br), herald.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer cons.Close()
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	if err := herald.Subscribe(cons, busEvent, "sink", func(ctx context.Context, tx herald.Tx, p payload512) error {
		ev, _ := herald.EventFrom(ctx)
		mu.Lock()
		lat = append(lat, time.Since(ev.Time))
		if len(lat) == b.N {
			close(done)
		}
		mu.Unlock()
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	for _, s := range []*herald.Service{prod, cons} {
		if err := s.Start(ctx); err != nil {
			b.Fatal(err)
		}
	}
	data := blob()
	interval := time.Second * time.Duration(perTx) / time.Duration(rate)
	b.ResetTimer()
	next := time.Now()
	for i := 0; i < b.N; i += perTx {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		if err := prod.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+perTx, b.N); j++ {
				if err := herald.Record(tx, busRecorded, payload512{OrderID: fmt.Sprintf("o%d", j%1000), Blob: data}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d events handled", len(lat), b.N)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
