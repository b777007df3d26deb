package natsjs

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// The two benchmarks move the same events the same way, so their events/s
// compare herald's transport with hand-written nats.go code:
//
//   - an embedded nats-server with file storage, fsync on every write
//     (sync=always, herald's default) or every 2 minutes (sync=interval);
//   - 512-byte events with the CloudEvents headers, published in batches of
//     1000 with asynchronous publishes and a 4096 in-flight window, the
//     publisher waiting for every acknowledgement of a batch;
//   - consumed concurrently by one durable pull consumer, acking each event
//     with a confirmed ack (DoubleAck) before taking the next.
//
// events/s is end to end (first publish to last ack); pub-events/s is the
// publishing loop alone.
//
//	go test -run='^$' -bench=. ./broker/natsjs

const (
	benchBatch   = 1000
	benchPayload = 512
)

var benchSyncModes = []struct {
	name   string
	always bool
}{{"sync=always", true}, {"sync=interval", false}}

func benchEvents(n int, typ string) []*envelope.Envelope {
	payload := make([]byte, benchPayload)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	es := make([]*envelope.Envelope, n)
	for i := range es {
		now := time.Now().UTC()
		es[i] = &envelope.Envelope{ID: envelope.NewID(now), Type: typ, Version: 1, Kind: envelope.KindIntegration,
			Source: "bench", Time: now, CorrelationID: "corr-1", DataContentType: "application/json", Data: payload}
	}
	return es
}

func report(b *testing.B, start, pubDone, end time.Time) {
	b.ReportMetric(float64(b.N)/end.Sub(start).Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/pubDone.Sub(start).Seconds(), "pub-events/s")
	b.ReportMetric(float64(end.Sub(start).Nanoseconds())/float64(b.N), "ns/event")
}

func BenchmarkPublishConsume(b *testing.B) {
	for _, mode := range benchSyncModes {
		b.Run(mode.name, func(b *testing.B) {
			opts := []Option{WithEphemeral(), WithSyncAlways(mode.always)}
			br := embedded(b, opts...)
			ctx := context.Background()
			typ := "bench.herald.event"
			sub := broker.Subscription{Service: "bench", Name: "all", Types: []string{typ}, Kind: envelope.KindIntegration,
				AckWait: time.Minute, MaxAckPending: 4096}
			if err := br.Provision(ctx, broker.Topology{Service: "bench", Subscriptions: []broker.Subscription{sub}}); err != nil {
				b.Fatal(err)
			}
			es := benchEvents(b.N, typ)

			var acked atomic.Int64
			done := make(chan struct{})
			cctx, cancel := context.WithCancel(ctx)
			consumed := make(chan error, 1)
			go func() {
				consumed <- br.Consume(cctx, sub, benchBatch, func(ctx context.Context, ds []broker.Delivery) {
					for _, d := range ds {
						if err := d.Ack(ctx); err != nil {
							b.Error(err)
						}
						if acked.Add(1) == int64(b.N) {
							close(done)
						}
					}
				})
			}()

			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i += benchBatch {
				for _, err := range br.Publish(ctx, es[i:min(i+benchBatch, b.N)]) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			pubDone := time.Now()
			<-done
			end := time.Now()
			b.StopTimer()
			report(b, start, pubDone, end)
			cancel()
			if err := <-consumed; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkRawNATS is BenchmarkPublishConsume written directly against
// nats-server and nats.go's jetstream package.
func BenchmarkRawNATS(b *testing.B) {
	for _, mode := range benchSyncModes {
		b.Run(mode.name, func(b *testing.B) {
			dir := b.TempDir()
			srv, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dir, DontListen: true, NoSigs: true,
				JetStreamMaxMemory: DefaultMaxMemory, JetStreamMaxStore: DefaultMaxStore, SyncAlways: mode.always, NoLog: true})
			if err != nil {
				b.Fatal(err)
			}
			srv.Start()
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			if !srv.ReadyForConnections(10 * time.Second) {
				b.Fatal("server not ready")
			}
			nc, err := nats.Connect("", nats.InProcessServer(srv))
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(DefaultMaxInFlight))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"},
				Storage: jetstream.FileStorage, Duplicates: DefaultDuplicateWindow}); err != nil {
				b.Fatal(err)
			}
			cons, err := js.CreateOrUpdateConsumer(ctx, "RAW", jetstream.ConsumerConfig{Durable: "raw",
				AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxDeliver: -1, MaxAckPending: 4096,
				FilterSubjects: []string{"raw.int.bench.raw.event"}})
			if err != nil {
				b.Fatal(err)
			}
			// The same messages herald sends: CloudEvents headers, message ID.
			msgs := make([]*nats.Msg, b.N)
			for i, e := range benchEvents(b.N, "bench.raw.event") {
				m := nats.NewMsg("raw.int.bench.raw.event")
				m.Header.Set("ce-specversion", "1.0")
				m.Header.Set("ce-id", e.ID)
				m.Header.Set("ce-source", e.Source)
				m.Header.Set("ce-type", e.Type)
				m.Header.Set("ce-time", e.Time.Format(time.RFC3339Nano))
				m.Header.Set("ce-heraldversion", "1")
				m.Header.Set("ce-heraldkind", "integration")
				m.Header.Set("ce-correlationid", e.CorrelationID)
				m.Header.Set("ce-datacontenttype", e.DataContentType)
				m.Header.Set(jetstream.MsgIDHeader, e.ID)
				m.Data = e.Data
				msgs[i] = m
			}

			var acked atomic.Int64
			done := make(chan struct{})
			cc, err := cons.Consume(func(m jetstream.Msg) {
				if err := m.DoubleAck(ctx); err != nil {
					b.Error(err)
				}
				if acked.Add(1) == int64(b.N) {
					close(done)
				}
			}, jetstream.PullMaxMessages(1024))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Stop()

			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			futures := make([]jetstream.PubAckFuture, 0, benchBatch)
			for i := 0; i < b.N; i += benchBatch {
				futures = futures[:0]
				for _, m := range msgs[i:min(i+benchBatch, b.N)] {
					f, err := js.PublishMsgAsync(m)
					if err != nil {
						b.Fatal(err)
					}
					futures = append(futures, f)
				}
				for _, f := range futures {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						b.Fatal(err)
					}
				}
			}
			pubDone := time.Now()
			<-done
			end := time.Now()
			b.StopTimer()
			report(b, start, pubDone, end)
		})
	}
}
