package analytics_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/examples/shop/analytics"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/service/reviews"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/internal/npmci"
	"github.com/heraldhq/herald/internal/testwait"
)

// TestRoundTrip runs the Node.js service against the shop's herald services
// on one embedded broker, with one integration partition and with three:
// herald's shop.order.confirmed reaches the Node.js consumer, which counts
// per product; the shop.product.trending events it publishes (to the
// partition FNV-1a of the product picks) reach reviews' herald
// subscription; a republished order event (same ce-id, new Nats-Msg-Id, so
// JetStream does not drop it) is counted as a duplicate and not applied;
// `herald catalog` lists the service with its subscription and what it
// publishes, with no warnings; a clean stop withdraws its instance; and
// restarts, after a clean stop and after a SIGKILL, resume where it was.
func TestRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs node and the shop")
	}
	npmci.Require(t, "analytics: the service runs in node")
	dir := analytics.SourceDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := analytics.Prepare(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for _, parts := range []int{1, 3} {
		t.Run(fmt.Sprintf("partitions=%d", parts), func(t *testing.T) { roundTrip(t, dir, parts) })
	}
}

func roundTrip(t *testing.T, dir string, parts int) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithPartitions(parts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	sys, err := shop.Start(ctx, shop.Config{Broker: b, DataDir: t.TempDir(), DispatchDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })

	state := filepath.Join(t.TempDir(), "analytics-state.json")
	p, err := analytics.Start(ctx, analytics.Config{Dir: dir, NATS: b.URL(), State: state, Threshold: 5, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)

	// 30 orders: p-book in every one, p-mug in every third, p-pen in every
	// eighth. Threshold 5: p-book and p-mug trend, p-pen (4 orders) does not.
	want := map[string]int{}
	for i := range 30 {
		items := []string{"p-book"}
		if i%3 == 0 {
			items = append(items, "p-mug")
		}
		if i%8 == 0 {
			items = append(items, "p-pen")
		}
		req := orders.PlaceRequest{CustomerID: fmt.Sprintf("c%d", i), Email: fmt.Sprintf("c%d@example.test", i)}
		for _, it := range items {
			req.Items = append(req.Items, struct {
				ProductID string `json:"product_id"`
				Quantity  int    `json:"quantity"`
			}{it, 1})
			want[it]++
		}
		if _, err := sys.Orders.Place(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	var st analytics.State
	var trending []reviews.Trending
	report := func() string {
		return fmt.Sprintf("analytics state %+v (want counts %v); reviews' trending products %+v; node output:\n%s", st, want, trending, p.Output())
	}
	testwait.UntilReport(t, 30*time.Second, func() bool {
		st, _ = analytics.ReadState(state)
		trending, _ = sys.Reviews.Trending(ctx)
		return maps.Equal(st.Counts, want) && len(trending) == 2
	}, report)
	for i, prod := range []string{"p-book", "p-mug"} {
		if trending[i].ProductID != prod || trending[i].Orders != 5 {
			t.Errorf("trending[%d] = %+v, want %s with 5 orders", i, trending[i], prod)
		}
		if !slices.Contains(st.Published, trending[i].EventID) {
			t.Errorf("reviews recorded event %s, which analytics did not publish (%v)", trending[i].EventID, st.Published)
		}
	}
	if len(st.Seen) != 30 || len(st.Outbox) != 0 || st.Duplicates != 0 {
		t.Errorf("state: %d events seen, %d in the outbox, %d duplicates; want 30, 0, 0", len(st.Seen), len(st.Outbox), st.Duplicates)
	}

	// The same order event again, past JetStream's deduplication: the
	// service must recognize its ce-id.
	republish(t, b.URL(), parts)
	testwait.UntilReport(t, 30*time.Second, func() bool {
		st, _ = analytics.ReadState(state)
		return st.Duplicates == 1
	}, report)
	if !maps.Equal(st.Counts, want) {
		t.Errorf("after a duplicate: counts %v, want %v", st.Counts, want)
	}

	// Garbage and an unknown version are terminated, not retried: the
	// consumer ends with nothing pending and nothing redelivered.
	publishBad(t, b.URL(), parts)
	testwait.UntilReport(t, 30*time.Second, func() bool {
		st, _ = analytics.ReadState(state)
		return st.Rejected == 2
	}, report)
	if !maps.Equal(st.Counts, want) {
		t.Errorf("after rejected messages: counts %v, want %v", st.Counts, want)
	}
	checkConsumers(t, b.URL(), parts)

	// The catalog lists it like any herald service.
	ms, err := catalog.Load(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var m *catalog.Manifest
	for i := range ms {
		if ms[i].Service == analytics.Service {
			m = &ms[i]
		}
	}
	if m == nil {
		t.Fatalf("the catalog has no %s service", analytics.Service)
	}
	if m.Stale || len(m.Instances) != 1 || m.Version == "" || m.Herald != "" {
		t.Errorf("analytics in the catalog: stale=%v, %d instances, version %q, herald %q; want live, 1 instance, a version, no herald",
			m.Stale, len(m.Instances), m.Version, m.Herald)
	}
	if pubs := m.Publishes(); len(pubs) != 1 || pubs[0] != (catalog.Ref{Name: "shop.product.trending", Version: 1}) {
		t.Errorf("analytics publishes %v, want shop.product.trending v1", pubs)
	}
	g, err := catalog.Build(ms)
	if err != nil {
		t.Fatal(err)
	}
	edges := g.EdgeStrings()
	for _, e := range []string{
		"int:shop.order.confirmed -delivers-> sub:analytics/count-orders",
		"dom:analytics/analytics.threshold-reached -translates-> int:shop.product.trending",
		"int:shop.product.trending -delivers-> sub:reviews/mark-trending",
	} {
		if !slices.Contains(edges, e) {
			t.Errorf("the catalog has no edge %s", e)
		}
	}
	if len(g.Warnings) != 0 {
		t.Errorf("catalog warnings: %v", g.Warnings)
	}
	var text strings.Builder
	_ = g.WriteText(&text)
	t.Logf("herald catalog:\n%s", text.String())

	// A clean stop withdraws the instance; the manifest stays.
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.Output())
	}
	ms, err = catalog.Load(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Service == analytics.Service && !m.Stale {
			t.Errorf("after a clean stop analytics has %d instances, want none (stale)", len(m.Instances))
		}
	}

	// Restarts resume from the durable consumer and the state file: after
	// the clean stop and after a SIGKILL, orders placed meanwhile are
	// counted once, and p-pen crosses the threshold in the second round.
	for round, stop := range []func(*analytics.Process){nil, (*analytics.Process).Kill} {
		for i := range 5 {
			req := orders.PlaceRequest{CustomerID: fmt.Sprintf("r%d-%d", round, i), Email: "r@example.test"}
			req.Items = append(req.Items, struct {
				ProductID string `json:"product_id"`
				Quantity  int    `json:"quantity"`
			}{"p-pen", 1})
			want["p-pen"]++
			if _, err := sys.Orders.Place(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
		if p, err = analytics.Start(ctx, analytics.Config{Dir: dir, NATS: b.URL(), State: state, Threshold: 5, Log: testLog{t}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Kill)
		testwait.UntilReport(t, 30*time.Second, func() bool {
			st, _ = analytics.ReadState(state)
			trending, _ = sys.Reviews.Trending(ctx)
			return maps.Equal(st.Counts, want) && len(trending) == 3
		}, report)
		if len(st.Seen) != 35+5*round || st.Duplicates != 1 {
			t.Errorf("round %d: %d events applied, %d duplicates; want %d, 1", round, len(st.Seen), st.Duplicates, 35+5*round)
		}
		if stop != nil {
			stop(p)
		} else if err := p.Stop(10 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, p.Output())
		}
	}
	if trending[2].ProductID != "p-pen" || trending[2].Orders != 5 {
		t.Errorf("trending = %+v, want p-pen at 5 orders third", trending)
	}
}

// republish publishes again the first stored shop.order.confirmed, with
// every header but a new Nats-Msg-Id.
func republish(t *testing.T, url string, parts int) {
	t.Helper()
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for p := range parts {
		stream, subject := "HERALD_INT", "herald.int.shop.order.confirmed"
		if parts > 1 {
			stream, subject = fmt.Sprintf("HERALD_INT_%d", p), fmt.Sprintf("herald.int.%d.shop.order.confirmed", p)
		}
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			continue // no order in this partition
		}
		msg := nats.NewMsg(subject)
		msg.Header = m.Header
		msg.Header.Set(jetstream.MsgIDHeader, "republished-"+m.Header.Get("ce-id"))
		msg.Data = m.Data
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("no shop.order.confirmed in any partition")
}

// publishBad publishes, to partition 0's order subject, a message that is
// no CloudEvent and a shop.order.confirmed of version 9.
func publishBad(t *testing.T, url string, parts int) {
	t.Helper()
	subject := "herald.int.shop.order.confirmed"
	if parts > 1 {
		subject = "herald.int.0.shop.order.confirmed"
	}
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	garbage := nats.NewMsg(subject)
	garbage.Data = []byte("not an event")
	v9 := nats.NewMsg(subject)
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "v9-event", "ce-source": "test", "ce-type": "shop.order.confirmed",
		"ce-time": "2026-01-02T03:04:05Z", "ce-heraldversion": "9", "ce-heraldkind": "integration", "content-type": "application/json"} {
		v9.Header.Set(k, v)
	}
	v9.Data = []byte(`{"order_id": "o-9", "items": [{"product_id": "p-book"}]}`)
	for _, m := range []*nats.Msg{garbage, v9} {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

// checkConsumers waits until the Node.js service's consumers have nothing
// pending or unacknowledged, and checks that no message was redelivered:
// everything was acknowledged or terminated once.
func checkConsumers(t *testing.T, url string, parts int) {
	t.Helper()
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for p := range parts {
		stream, durable := "HERALD_INT", "analytics"
		if parts > 1 {
			stream, durable = fmt.Sprintf("HERALD_INT_%d", p), fmt.Sprintf("analytics_p%d", p)
		}
		var info *jetstream.ConsumerInfo
		testwait.UntilReport(t, 30*time.Second, func() bool {
			c, err := js.Consumer(ctx, stream, durable)
			if err == nil {
				info, err = c.Info(ctx)
			}
			return err == nil && info.NumPending == 0 && info.NumAckPending == 0
		}, func() string { return fmt.Sprintf("consumer %s on %s: %+v", durable, stream, info) })
		if info.NumRedelivered != 0 {
			t.Errorf("consumer %s: %d messages redelivered, want 0", durable, info.NumRedelivered)
		}
	}
}

// testLog writes the service's output to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	if os.Getenv("HERALD_TEST_ANALYTICS_LOG") == "1" {
		l.t.Logf("node: %s", strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}
