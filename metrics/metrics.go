// Package metrics exports herald's hops as Prometheus metrics: an observer
// (herald.WithObserver) that counts every hop by service, event type and
// outcome, times handlers, counts retries, dead letters and notifications by
// channel, outcome and reason, and — for the services it watches — reports the outbox
// backlog, the age of its oldest row and each subscription's pending events
// at the broker, at scrape time.
//
//	m := metrics.New(prometheus.DefaultRegisterer)
//	svc, _ := herald.New("orders", herald.WithObserver(m), …)
//	m.Watch(svc)
//	http.Handle("/metrics", promhttp.Handler())
package metrics

import (
	"context"
	"errors"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/notify"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is a herald.Observer and a prometheus.Collector of outbox gauges.
type Metrics struct {
	hops       *prometheus.CounterVec
	handle     *prometheus.HistogramVec
	deadLetter *prometheus.CounterVec
	retries    *prometheus.CounterVec
	notes      *prometheus.CounterVec
	backlog    *prometheus.Desc
	oldest     *prometheus.Desc
	pending    *prometheus.Desc
	ackPending *prometheus.Desc
	obsPanics  *prometheus.Desc
	obsDropped *prometheus.Desc

	mu       sync.Mutex
	services []*herald.Service
}

// New creates the metrics and registers them with reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		hops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "herald", Name: "events_total",
			Help: "Events through each hop (record, translate, notify, publish, consume, handle, dead-letter, decide, deliver) by outcome.",
		}, []string{"service", "hop", "type", "outcome"}),
		handle: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "herald", Name: "handler_duration_seconds",
			Help:    "Time subscription handlers took, by outcome (ok, duplicate, retry).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"service", "subscription", "outcome"}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "herald", Name: "dead_letters_total",
			Help: "Events a subscription gave up on, by reason.",
		}, []string{"service", "subscription", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "herald", Name: "retries_total",
			Help: "Handler runs that failed and will run again, by subscription.",
		}, []string{"service", "subscription"}),
		notes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "herald", Name: "notifications_total",
			Help: "Notification deliveries recorded, by channel, outcome (sent, delivered, failed, suppressed, throttled, retry) and reason code (no-address, opted-out, permanent, …; empty when sent).",
		}, []string{"service", "channel", "outcome", "reason"}),
		pending: prometheus.NewDesc("herald_consumer_pending", "Events the broker holds for a subscription, not yet delivered to it.",
			[]string{"service", "subscription"}, nil),
		ackPending: prometheus.NewDesc("herald_consumer_ack_pending", "Events delivered to a subscription and not yet acknowledged.",
			[]string{"service", "subscription"}, nil),
		backlog: prometheus.NewDesc("herald_outbox_backlog", "Outbox rows not yet marked published (the relay marks what the broker acknowledged every RelayConfig.MarkInterval, 100ms by default, on SQLite).", []string{"service"}, nil),
		obsPanics: prometheus.NewDesc("herald_observer_panics_total", "Observations whose observer panicked (contained: the flow went on).",
			[]string{"service"}, nil),
		obsDropped: prometheus.NewDesc("herald_observer_dropped_total", "Observations a slow observer's full queue dropped.",
			[]string{"service"}, nil),
		oldest: prometheus.NewDesc("herald_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", []string{"service"}, nil),
	}
	for _, c := range []prometheus.Collector{m.hops, m.handle, m.deadLetter, m.retries, m.notes, m} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Observe counts one observation; it never blocks.
//
// Label values are bounded: an event type becomes its own label only when
// the service registered it (Observation.Known); every other type — garbage
// off the wire, a type nobody here subscribes to — counts under "other", so
// a flood of made-up types cannot explode the metrics' cardinality, and no
// value that is not valid UTF-8 ever reaches Prometheus (which panics on
// one).
func (m *Metrics) Observe(_ context.Context, o herald.Observation) {
	typ := OtherLabel
	if o.Known {
		typ = label(o.Event.Type)
	}
	svc := label(o.Service)
	m.hops.WithLabelValues(svc, label(string(o.Hop)), typ, label(o.Outcome.String())).Inc()
	switch o.Hop {
	case herald.HopHandle:
		m.handle.WithLabelValues(svc, label(o.Subscription), label(o.Outcome.String())).Observe(o.Duration.Seconds())
		if o.Outcome == herald.OutcomeRetry {
			m.retries.WithLabelValues(svc, label(o.Subscription)).Inc()
		}
	case herald.HopDeliver:
		m.notes.WithLabelValues(svc, label(o.Reason), label(o.Outcome.String()), deliveryReason(o.Err)).Inc()
	case herald.HopDeadLetter:
		m.deadLetter.WithLabelValues(svc, label(o.Subscription), label(o.Reason)).Inc()
	}
}

// deliveryReason is the reason label of a deliver hop: the reason code of
// its *notify.DeliveryError, one of a fixed set (notify.ReasonCode), "" for
// a delivery without one (sent, delivered), OtherLabel for a code outside
// the set.
func deliveryReason(err error) string {
	var de *notify.DeliveryError
	if !errors.As(err, &de) {
		return ""
	}
	if code := notify.ReasonCode(de.Reason); code != "" {
		return code
	}
	return OtherLabel
}

// Inline marks Metrics as an herald.InlineObserver: counting never blocks,
// so herald calls it on the hot path instead of through a queue.
func (m *Metrics) Inline() {}

// OtherLabel is the type label of events whose type the service did not
// register, and the value of any label that is not valid UTF-8.
const OtherLabel = "other"

// label returns v, or OtherLabel when Prometheus would refuse v.
func label(v string) string {
	if !utf8.ValidString(v) {
		return OtherLabel
	}
	return v
}

// Watch adds svc's outbox backlog and oldest-row age to every scrape.
func (m *Metrics) Watch(svc *herald.Service) {
	m.mu.Lock()
	m.services = append(m.services, svc)
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.backlog
	ch <- m.oldest
	ch <- m.pending
	ch <- m.ackPending
	ch <- m.obsPanics
	ch <- m.obsDropped
}

// Collect implements prometheus.Collector: it reads each watched service's
// outbox and asks the broker for its subscriptions' lag, with a short
// timeout so a slow database or broker cannot stall a scrape.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	svcs := append([]*herald.Service(nil), m.services...)
	m.mu.Unlock()
	for _, s := range svcs {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n, age, err := s.OutboxStats(ctx)
		cancel()
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.backlog, prometheus.GaugeValue, float64(n), s.Name())
		ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, age.Seconds(), s.Name())
	}
	for _, s := range svcs {
		st := s.ObserverStats()
		ch <- prometheus.MustNewConstMetric(m.obsPanics, prometheus.CounterValue, float64(st.Panics), s.Name())
		ch <- prometheus.MustNewConstMetric(m.obsDropped, prometheus.CounterValue, float64(st.Dropped), s.Name())
	}
	for _, s := range svcs {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		lags, _ := s.Lags(ctx)
		cancel()
		for _, l := range lags {
			ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(l.Pending), s.Name(), l.Subscription)
			ch <- prometheus.MustNewConstMetric(m.ackPending, prometheus.GaugeValue, float64(l.AckPending), s.Name(), l.Subscription)
		}
	}
}
