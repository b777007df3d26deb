package trace_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/trace"
)

type discardSink struct{}

func (discardSink) ProvisionTrace(context.Context, time.Duration, int64) error { return nil }
func (discardSink) AppendTrace(context.Context, string, []byte) error          { return nil }

// BenchmarkObserve is the cost of one observation on the hot path (Observe)
// plus its encoding by the writer, with a sink that stores nothing.
func BenchmarkObserve(b *testing.B) {
	r, err := trace.NewRecorder(discardSink{}, trace.Config{Source: "bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	o := herald.Observation{Hop: herald.HopHandle, Service: "shipping", Subscription: "schedule-shipment", Start: time.Now(), Outcome: "ok",
		Event: envelope.Envelope{ID: envelope.NewID(time.Now()), Type: "shop.order.confirmed", Kind: envelope.KindIntegration,
			CorrelationID: envelope.NewID(time.Now()), CausationID: envelope.NewID(time.Now())}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.Observe(ctx, o)
	}
	b.StopTimer()
	r.Close()
	b.ReportMetric(float64(r.Dropped())/float64(b.N)*100, "%dropped")
}
