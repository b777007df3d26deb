package herald_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/benchrun"
	"github.com/heraldhq/herald/internal/testdb"
)

// quiet drops the logs of benchmark runs.
var quiet = slog.New(slog.DiscardHandler)

// The benchmarks below run the systems of `herald bench` (package
// internal/benchrun, the one implementation of every scenario) one at a
// time with b.N events, and report what the bench command prints. Compare
// systems of one scenario from the same invocation: the machine is noisy.
// `herald bench all` runs them all side by side, with the Watermill peers.

// benchSystem runs one system of a scenario with cfg and b.N events.
func benchSystem(b *testing.B, scenario, system string, cfg benchrun.Config) {
	b.Helper()
	if cfg.Events == 0 {
		cfg.Events = b.N
	}
	cfg.Systems = []string{system}
	cfg.PostgresURL = os.Getenv(testdb.EnvPostgres)
	cfg.Logger = quiet
	b.ResetTimer()
	rs, err := benchrun.Run(context.Background(), cfg, []string{scenario}, nil)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if len(rs) != 1 {
		b.Skipf("%s %s did not run (PostgreSQL systems need %s)", scenario, system, testdb.EnvPostgres)
	}
	r := rs[0]
	b.ReportMetric(r.EventsPerSec, "events/s")
	b.ReportMetric(r.CPUPer100k*1e6/1e5, "cpu-µs/event")
	b.ReportMetric(float64(r.P50), "p50-ms")
	b.ReportMetric(float64(r.P99), "p99-ms")
}

// BenchmarkBus measures the integration tier on the embedded defaults — the
// relay publishing 512-byte integration events from a filled outbox to
// JetStream, a subscriber handling each inside a transaction with its inbox
// row — beside raw nats.go (async publish, pull consume, ack) on the same
// kind of server:
//
//	go test -run='^$' -bench=BenchmarkBus -benchtime=20000x .
func BenchmarkBus(b *testing.B) {
	for _, sys := range []string{"raw-nats.go", "herald-sqlite", "herald-postgres"} {
		b.Run(sys, func(b *testing.B) { benchSystem(b, "bus", sys, benchrun.Config{}) })
	}
}

// BenchmarkDurable is the bus with the durability mechanism off (no fsync
// during the run), on (the default: fsync every second, outbox refill), and
// with an fsync per write, herald and raw nats.go (these two move a fifth of
// b.N):
//
//	go test -run='^$' -bench=BenchmarkDurable -benchtime=20000x .
func BenchmarkDurable(b *testing.B) {
	for _, sys := range []string{"durability-off", "durability-on", "sync-always", "raw-nats.go-sync-always"} {
		b.Run(sys, func(b *testing.B) { benchSystem(b, "durable", sys, benchrun.Config{}) })
	}
}

// BenchmarkOutbox commits b.N one-event transactions (an INSERT, one domain
// event translated to one integration event) through the relay to a
// consumer, beside the same bare transactions without herald:
//
//	go test -run='^$' -bench=BenchmarkOutbox -benchtime=3000x .
func BenchmarkOutbox(b *testing.B) {
	for _, sys := range []string{"bare-tx-sqlite", "herald-tx-sqlite", "bare-tx-postgres", "herald-tx-postgres"} {
		b.Run(sys, func(b *testing.B) { benchSystem(b, "outbox", sys, benchrun.Config{Transactions: b.N}) })
	}
}

// BenchmarkLatency records integration events at 10,000 events/s (the
// events due every millisecond in one transaction) for b.N events on the
// embedded defaults and reports the latency from each event's scheduled
// time to its handler, p50 and p99:
//
//	go test -run='^$' -bench=BenchmarkLatency -benchtime=100000x .
func BenchmarkLatency(b *testing.B) {
	const rate = 10000
	d := time.Duration(float64(b.N) / rate * float64(time.Second))
	benchSystem(b, "latency", "herald-sqlite@10.0k/s", benchrun.Config{Rate: rate, Duration: max(d, time.Millisecond)})
}
