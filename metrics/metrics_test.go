package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type placed struct{ ID string }

// TestScrapeMetrics runs a producer and a consumer with the metrics
// observer, scrapes /metrics over HTTP and parses it with expfmt.
func TestScrapeMetrics(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	domain := herald.Domain[placed]("orders.placed")
	contract := herald.Integration[placed]("shop.order.placed", herald.KeyBy(func(p placed) string { return p.ID }))
	prod, err := herald.New("orders", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithObserver(m), herald.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if err := herald.Translate(prod, domain, contract, func(ctx context.Context, p placed) (placed, error) { return p, nil }); err != nil {
		t.Fatal(err)
	}
	cons, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithObserver(m), herald.WithLogger(quiet),
		herald.Retry(herald.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	if err := herald.Subscribe(cons, contract, "ship", func(ctx context.Context, tx herald.Tx, p placed) error {
		if p.ID == "bad" {
			return errors.New("no")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m.Watch(prod)
	m.Watch(cons)
	for _, s := range []*herald.Service{prod, cons} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	for _, id := range []string{"a", "b", "bad"} {
		if err := prod.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, domain, placed{ID: id}) }); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	var families map[string]*dto.MetricFamily
	// On a timeout the checks below say which metric is off.
	_ = testwait.For(20*time.Second, "the metrics of the flow", func() bool {
		families = scrape(t, srv.URL)
		return value(families, "herald_dead_letters_total", nil) >= 1 && value(families, "herald_events_total", map[string]string{"hop": "handle", "outcome": "ok"}) >= 2 &&
			value(families, "herald_consumer_ack_pending", nil) == 0 && // acks are sent without waiting
			value(families, "herald_outbox_backlog", map[string]string{"service": "orders"}) == 0 // the relay marks every 100ms
	})
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"herald_events_total", map[string]string{"service": "orders", "hop": "record", "type": "orders.placed"}, 3},
		{"herald_events_total", map[string]string{"service": "orders", "hop": "translate", "type": "shop.order.placed"}, 3},
		{"herald_events_total", map[string]string{"service": "orders", "hop": "publish", "outcome": "ok"}, 3},
		{"herald_events_total", map[string]string{"service": "shipping", "hop": "consume"}, 3},
		{"herald_events_total", map[string]string{"service": "shipping", "hop": "handle", "outcome": "ok"}, 2},
		{"herald_dead_letters_total", map[string]string{"subscription": "ship", "reason": "exhausted"}, 1},
		{"herald_outbox_backlog", map[string]string{"service": "orders"}, 0},
		{"herald_retries_total", map[string]string{"service": "shipping", "subscription": "ship"}, 1},
		{"herald_events_total", map[string]string{"service": "shipping", "hop": "handle", "outcome": "retry"}, 1},
		{"herald_consumer_pending", map[string]string{"service": "shipping", "subscription": "ship"}, 0},
		{"herald_consumer_ack_pending", map[string]string{"service": "shipping", "subscription": "ship"}, 0},
	}
	for _, c := range checks {
		if got := value(families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if h := families["herald_handler_duration_seconds"]; h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("no handler duration histogram")
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value sums the samples of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range want {
			if labels[k] != v {
				ok = false
			}
		}
		if !ok {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestLabelsAreBounded: types that came off the wire unchecked share one
// label, and no value that is not UTF-8 reaches Prometheus, which panics on
// one (a single such message once stopped three services' consumers).
func TestLabelsAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 1000 {
		for _, hop := range []herald.Hop{herald.HopConsume, herald.HopDeadLetter} {
			m.Observe(ctx, herald.Observation{Hop: hop, Service: "shipping", Subscription: "ship", Outcome: "ok",
				Reason: "unknown-type\xff", Event: envelope.Envelope{Type: fmt.Sprintf("made.up.%d\xff", i)}})
		}
	}
	m.Observe(ctx, herald.Observation{Hop: herald.HopConsume, Service: "shipping", Outcome: "ok", Known: true,
		Event: envelope.Envelope{Type: "shop.order.placed"}})
	m.Observe(ctx, herald.Observation{Hop: herald.HopConsume, Service: "shipping", Outcome: "ok", Known: true,
		Event: envelope.Envelope{Type: "shop.\xc3("}})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]float64{}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			key := f.GetName()
			for _, l := range s.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			series[key] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"herald_events_total hop=consume outcome=ok service=shipping type=other":             1001,
		"herald_events_total hop=consume outcome=ok service=shipping type=shop.order.placed": 1,
		"herald_events_total hop=dead-letter outcome=ok service=shipping type=other":         1000,
		"herald_dead_letters_total reason=other service=shipping subscription=ship":          1000,
	}
	for k, v := range want {
		if series[k] != v {
			t.Errorf("%s = %v, want %v", k, series[k], v)
		}
	}
	if len(series) != len(want) {
		t.Errorf("%d series, want %d: %v", len(series), len(want), series)
	}
}
