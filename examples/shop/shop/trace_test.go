package shop_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/trace"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestOneOrdersTraceIsCompleteAndCausal places one order in the shop (all
// four services in this process, the causal trace recorded on the embedded
// JetStream), follows it to shipped with its notifications delivered —
// settled flows (heraldtest), and the digest's send, which no flow waits
// for, seen by an observer — and reads the order's trace back from the
// broker: every record's cause is in it, children never precede their
// cause, and it holds the domain event in orders, the integration events,
// shipping's domain events, and the delivered notifications.
func TestOneOrdersTraceIsCompleteAndCausal(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	var rec *trace.Recorder
	digest := &digestWatch{sent: make(chan string, 1)}
	sys, hs := startSettledShop(t, time.Hour, func(c *shop.Config) {
		sink, ok := c.Broker.(trace.Sink)
		if !ok {
			t.Fatalf("the broker %T is no trace sink", c.Broker)
		}
		if rec, err = trace.NewRecorder(sink, trace.Config{Source: "shop", FlushInterval: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if err := rec.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rec.Close() })
		c.Metrics, c.Registry = m, reg
		// The recorder sees every hop before the system's observer, so
		// once a flow settled its records are in the recorder; the digest
		// watch sees the digest's send after the recorder.
		c.Options = append([]herald.Option{herald.WithObserver(rec)}, c.Options...)
		c.Options = append(c.Options, herald.WithObserver(digest))
		c.Notifications.DigestWindow = 100 * time.Millisecond
	})

	// The placing settles with the order scheduled and its confirmation
	// sent; the shipment update waits in a digest.
	var id string
	hs.Run(t, func(context.Context) error {
		code, body := post(t, "http://"+sys.Addr["orders"]+"/orders",
			`{"customer_id":"c1","email":"c1@example.com","items":[{"product_id":"p-mug","quantity":2}]}`)
		if code != http.StatusCreated {
			return fmt.Errorf("place: %d %v", code, body)
		}
		id = body["id"].(string)
		return nil
	})
	// Time causes the dispatch: the test brings the shipment due. Its flow
	// settles with the order shipped and the shipped e-mail and push sent.
	st := sys.Shipping.Store()
	if _, err := st.DB().ExecContext(ctx, st.Rebind(`UPDATE shipments SET eta = ?`), time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	hs.Run(t, func(ctx context.Context) error {
		k, err := sys.Shipping.DispatchDue(ctx)
		if err == nil && k != 1 {
			err = fmt.Errorf("dispatched %d, want 1", k)
		}
		return err
	})
	// The digest is sent when its window ends, caused by no event.
	select {
	case got := <-digest.sent:
		if got != id {
			t.Fatalf("a digest of order %s sent, want of %s", got, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no digest of the shipment update sent within 30s")
	}

	// The flow is done: the order is shipped and every notification of
	// its flow is sent: confirmation, shipment update (a digest), shipped
	// (e-mail and push).
	o, err := sys.Orders.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := sys.Notifications.Notifier.Deliveries(ctx, notify.DeliveryFilter{CorrelationID: id})
	if err != nil {
		t.Fatal(err)
	}
	nsent := 0
	for _, d := range ds {
		if d.State == notify.Sent || d.State == notify.Delivered {
			nsent++
		}
	}
	if o.Status != orders.StatusShipped || nsent < 4 {
		t.Fatalf("order %s is %s with %d of 4 notifications sent: %+v", id, o.Status, nsent, ds)
	}

	// Every hop was observed, so the recorder holds it: once it wrote what
	// it was given, the trace is complete.
	if err := rec.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := trace.Collect(ctx, hs.Broker(), id)
	if err != nil {
		t.Fatal(err)
	}
	tree := trace.Build(recs)
	if n := countHops(tree, herald.HopDeliver, notify.Sent, notify.Delivered); n < 4 {
		t.Fatalf("trace of %s has %d deliveries sent, want 4:\n%s", id, n, format(tree))
	}
	out := format(tree)
	t.Logf("trace of order %s:\n%s", id, out)

	// No gaps: every cause is in the trace, and the only roots are events
	// without a cause — the order placed, and the dispatch (time causes it).
	if len(tree.Missing) > 0 {
		t.Errorf("gaps: causes %v not in the trace", tree.Missing)
	}
	var roots []string
	for _, r := range tree.Roots {
		if r.CausationID != "" {
			t.Errorf("root %s %s has a cause %s", r.Type, r.EventID, r.CausationID)
		}
		roots = append(roots, r.Type)
	}
	if strings.Join(roots, ",") != "orders.order-placed,shipping.shipment-dispatched" {
		t.Errorf("roots %v, want the order placed, then the dispatch", roots)
	}
	if tree.CorrelationID != id {
		t.Errorf("flow %q, want the order id %q", tree.CorrelationID, id)
	}
	// Causal order: no event's first hop before its cause's, and within an
	// event, the hops in journey order.
	rank := map[herald.Hop]int{herald.HopRecord: 0, herald.HopTranslate: 0, herald.HopNotify: 0, herald.HopPublish: 1,
		herald.HopConsume: 2, herald.HopHandle: 3, herald.HopDeadLetter: 3, herald.HopDeliver: 4}
	tree.Walk(func(n *trace.Node, _ int) {
		for _, c := range n.Children {
			if c.First().Before(n.First()) {
				t.Errorf("%s %s (%s) before its cause %s %s (%s)", c.Type, c.EventID, c.First(), n.Type, n.EventID, n.First())
			}
		}
		for i := 1; i < len(n.Hops); i++ {
			a, b := n.Hops[i-1], n.Hops[i]
			if a.Subscription == b.Subscription && rank[b.Hop] < rank[a.Hop] {
				t.Errorf("%s %s: %s@%s after %s@%s", n.Type, n.EventID, b.Hop, b.Service, a.Hop, a.Service)
			}
		}
	})
	// What the flow must contain, with the cause of each.
	want := []struct {
		hop          herald.Hop
		service, typ string
		cause        string // the type of the event's cause; "" for a root
	}{
		{herald.HopRecord, "orders", "orders.order-placed", ""},
		{herald.HopTranslate, "orders", "shop.order.confirmed", "orders.order-placed"},
		{herald.HopPublish, "orders", "shop.order.confirmed", "orders.order-placed"},
		{herald.HopHandle, "shipping", "shop.order.confirmed", "orders.order-placed"},
		{herald.HopHandle, "reviews", "shop.order.confirmed", "orders.order-placed"},
		{herald.HopHandle, "notifications", "shop.order.confirmed", "orders.order-placed"},
		{herald.HopRecord, "shipping", "shipping.shipment-scheduled", "shop.order.confirmed"},
		{herald.HopTranslate, "shipping", "shop.shipment.scheduled", "shipping.shipment-scheduled"},
		{herald.HopHandle, "orders", "shop.shipment.scheduled", "shipping.shipment-scheduled"},
		{herald.HopRecord, "shipping", "shipping.shipment-dispatched", ""},
		{herald.HopHandle, "notifications", "shop.shipment.dispatched", "shipping.shipment-dispatched"},
		{herald.HopNotify, "notifications", "shop.notify.order-confirmed", "shop.order.confirmed"},
		{herald.HopDeliver, "notifications", "shop.notify.order-confirmed", "shop.notify.order-confirmed"},
		{herald.HopDeliver, "notifications", "shop.notify.shipment-update", "shop.notify.shipment-update"},
		{herald.HopDeliver, "notifications", "shop.notify.order-shipped", "shop.notify.order-shipped"},
	}
	types := map[string]string{}
	tree.Walk(func(n *trace.Node, _ int) { types[n.EventID] = n.Type })
	for _, w := range want {
		found := false
		tree.Walk(func(n *trace.Node, _ int) {
			for _, h := range n.Hops {
				if h.Hop == w.hop && h.Service == w.service && h.Type == w.typ && types[n.CausationID] == w.cause &&
					h.Outcome != herald.OutcomeError && h.Outcome != herald.Outcome(notify.Failed) {
					found = true
				}
			}
		})
		if !found {
			t.Errorf("no %s of %s at %s caused by %q", w.hop, w.typ, w.service, w.cause)
		}
	}
	if d := rec.Dropped() + rec.Lost(); d != 0 {
		t.Errorf("%d trace records dropped or lost", d)
	}

	// Every service serves /metrics; notifications counts what it sent by
	// channel and outcome.
	for _, name := range shop.Services {
		fams := scrapeMetrics(t, "http://"+sys.Addr[name]+"/metrics")
		if fams["herald_events_total"] == nil || fams["herald_outbox_backlog"] == nil {
			t.Errorf("%s /metrics lacks herald_events_total or herald_outbox_backlog", name)
		}
	}
	fams := scrapeMetrics(t, "http://"+sys.Addr["notifications"]+"/metrics")
	sent := 0.0
	for _, mm := range fams["herald_notifications_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range mm.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["outcome"] == string(notify.Sent) || labels["outcome"] == string(notify.Delivered) {
			sent += mm.GetCounter().GetValue()
		}
		if labels["channel"] != notify.Email && labels["channel"] != notify.Push {
			t.Errorf("herald_notifications_total with channel %q", labels["channel"])
		}
	}
	if sent < 4 {
		t.Errorf("herald_notifications_total sent or delivered = %v, want at least 4", sent)
	}
	if fams["herald_consumer_pending"] == nil {
		t.Errorf("no herald_consumer_pending")
	}
}

// digestWatch is an observer that reports on sent the flow (order id) of
// the first shop.notify.shipment-update it sees sent or delivered: the
// digest's send.
type digestWatch struct {
	once sync.Once
	sent chan string
}

func (w *digestWatch) Inline() {}

func (w *digestWatch) Observe(_ context.Context, o herald.Observation) {
	if o.Hop == herald.HopDeliver && o.Event.Type == "shop.notify.shipment-update" &&
		(o.Outcome == herald.Outcome(notify.Sent) || o.Outcome == herald.Outcome(notify.Delivered)) {
		w.once.Do(func() { w.sent <- o.Event.CorrelationID })
	}
}

func countHops(t *trace.Tree, hop herald.Hop, outcomes ...notify.State) int {
	n := 0
	t.Walk(func(nd *trace.Node, _ int) {
		for _, h := range nd.Hops {
			for _, o := range outcomes {
				if h.Hop == hop && h.Outcome == herald.Outcome(o) {
					n++
				}
			}
		}
	})
	return n
}

func format(t *trace.Tree) string {
	if t == nil {
		return "(none)"
	}
	var b strings.Builder
	if err := t.Format(&b); err != nil {
		return fmt.Sprint(err)
	}
	return b.String()
}

func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}
