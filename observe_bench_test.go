package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/trace"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkObserveOverhead measures what the causal trace and the Prometheus
// metrics together cost the integration tier: the BenchmarkBus scenario
// (relay → embedded JetStream → subscriber with inbox on SQLite, 512-byte
// events, b.N per run) run alternately without observers and with a
// trace.Recorder (records appended to the broker's trace stream) and
// metrics.Metrics on both services, in ABBA order, in the same process. It
// reports each variant's median throughput and CPU per event and the
// overhead of the observed one:
//
//	go test -run='^$' -bench=BenchmarkObserveOverhead -benchtime=20000x .
func BenchmarkObserveOverhead(b *testing.B) {
	var plain, observed []busResult
	var dropped uint64
	for round := range 6 {
		order := []bool{false, true}
		if round%2 == 1 {
			order = []bool{true, false}
		}
		for _, obs := range order {
			r, d := runObservedBus(b, b.N, obs)
			if obs {
				observed = append(observed, r)
				dropped += d
			} else {
				plain = append(plain, r)
			}
		}
	}
	rate := func(rs []busResult) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = float64(r.events) / r.elapsed.Seconds()
		}
		slices.Sort(v)
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	cpu := func(rs []busResult) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = float64(r.cpu.Microseconds()) / float64(r.events)
		}
		slices.Sort(v)
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	p, o := rate(plain), rate(observed)
	b.ReportMetric(p, "plain-events/s")
	b.ReportMetric(o, "observed-events/s")
	b.ReportMetric(100*(p-o)/p, "throughput-overhead-%")
	b.ReportMetric(cpu(plain), "plain-cpu-µs/event")
	b.ReportMetric(cpu(observed), "observed-cpu-µs/event")
	b.ReportMetric(float64(dropped), "trace-records-dropped")
}

// runObservedBus is one BenchmarkBus run (sync every second), with the trace
// recorder and metrics on both services when observed. It returns the
// result and the trace records dropped or lost.
func runObservedBus(b *testing.B, n int, observed bool) (busResult, uint64) {
	b.StopTimer()
	ctx := context.Background()
	br, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet), natsjs.WithSyncAlways(false), natsjs.WithSyncInterval(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	var opts []herald.Option
	var rec *trace.Recorder
	var reg *prometheus.Registry
	if observed {
		rec, err = trace.NewRecorder(br, trace.Config{Source: "bench", Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		if err := rec.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer rec.Close()
		reg = prometheus.NewRegistry()
		m, err := metrics.New(reg)
		if err != nil {
			b.Fatal(err)
		}
		opts = append(opts, herald.WithObserver(rec), herald.WithObserver(m))
	}
	prod, err := herald.New("producer", append([]herald.Option{herald.WithStore(testdb.SQLite(b)), herald.WithBroker(br), herald.WithLogger(quiet)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	if err := herald.Translate(prod, busRecorded, busEvent, func(ctx context.Context, p payload512) (payload512, error) { return p, nil }); err != nil {
		b.Fatal(err)
	}
	cons, err := herald.New("consumer", append([]herald.Option{herald.WithStore(testdb.SQLite(b)), herald.WithBroker(br), herald.WithLogger(quiet)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer cons.Close()
	var mu sync.Mutex
	handled := 0
	done := make(chan struct{})
	if err := herald.Subscribe(cons, busEvent, "sink", func(ctx context.Context, tx herald.Tx, p payload512) error {
		mu.Lock()
		if handled++; handled == n {
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
	data := blob()
	const perTx = 256
	for i := 0; i < n; i += perTx {
		if err := prod.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+perTx, n); j++ {
				if err := herald.Record(tx, busRecorded, payload512{OrderID: fmt.Sprintf("o%d", j%1000), Blob: data}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	if rec != nil {
		// The records of the outbox fill are written before the clock starts.
		if err := rec.Sync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	cpu0, t0 := cpuTime(), time.Now()
	if err := prod.Start(ctx); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d events handled", handled, n)
	}
	r := busResult{events: n, elapsed: time.Since(t0), cpu: cpuTime() - cpu0}
	b.StopTimer()
	var lost uint64
	if rec != nil {
		lost = rec.Dropped() + rec.Lost()
		// The observed run really observed: every handled event counted
		// (reported after the commit that follows the last handler).
		_ = testwait.For(10*time.Second, "every handled event counted", func() bool { return handledCount(b, reg) >= float64(n) })
		if got := handledCount(b, reg); got < float64(n) {
			b.Fatalf("metrics counted %v handled events of %d", got, n)
		}
	}
	return r, lost
}

// handledCount sums herald_events_total{hop="handle"} in reg.
func handledCount(b *testing.B, reg *prometheus.Registry) float64 {
	fams, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != "herald_events_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "hop" && l.GetValue() == string(herald.HopHandle) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

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

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// busResult is what one run measured.
type busResult struct {
	events  int
	elapsed time.Duration
	cpu     time.Duration
}
