package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkObserve is the cost of one observation (a handle hop: a counter
// and a histogram) on the hot path.
func BenchmarkObserve(b *testing.B) {
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	o := herald.Observation{Hop: herald.HopHandle, Service: "shipping", Subscription: "schedule-shipment", Start: time.Now(),
		Duration: time.Millisecond, Outcome: "ok", Event: envelope.Envelope{Type: "shop.order.confirmed"}}
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		m.Observe(ctx, o)
	}
}
