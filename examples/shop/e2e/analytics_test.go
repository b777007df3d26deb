package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/examples/shop/analytics"
	"github.com/heraldhq/herald/examples/shop/service/reviews"
	"github.com/heraldhq/herald/internal/npmci"
	"github.com/heraldhq/herald/internal/testwait"
)

// analyticsThreshold makes a product trending in the e2e test: each of the
// 10 products is in about 200 of the 1,000 orders.
const analyticsThreshold = 100

// nodeService is the Node.js analytics service in the e2e test.
type nodeService struct {
	p       *analytics.Process
	state   string
	logPath string
}

// startAnalytics starts the Node.js analytics service on the test's
// nats-server, or returns nil without node (see npmci.Check).
func startAnalytics(t *testing.T, tmp, natsURL string) *nodeService {
	t.Helper()
	if !npmci.Check(t, "e2e: the Node.js analytics service") {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := analytics.SourceDir()
	if err := analytics.Prepare(ctx, dir); err != nil {
		t.Fatal(err)
	}
	n := &nodeService{state: filepath.Join(tmp, "analytics-state.json"), logPath: filepath.Join(tmp, "analytics.log")}
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.p, err = analytics.Start(ctx, analytics.Config{Dir: dir, NATS: natsURL, State: n.state, Threshold: analyticsThreshold, Log: logf})
	if err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.p.Stop(5 * time.Second); err != nil {
			t.Errorf("analytics: %v", err)
		}
		logf.Close()
	})
	return n
}

// check waits until the Node.js service has counted every order placed
// (per product: the orders that contain it) and reviews, a herald service,
// has recorded the trending events it published — exactly the products
// that reached the threshold, each at the threshold — then checks that the
// catalog lists it, live, with its subscription and publication.
func (n *nodeService) check(t *testing.T, client *http.Client, reviewsURL, natsURL string, productsOf [][]string) {
	t.Helper()
	want := map[string]int{}
	for _, ps := range productsOf {
		for _, p := range ps {
			want[p]++
		}
	}
	var wantTrending []string
	for p, c := range want {
		if c >= analyticsThreshold {
			wantTrending = append(wantTrending, p)
		}
	}
	slices.Sort(wantTrending)
	var st analytics.State
	var trending []reviews.Trending
	testwait.UntilReport(t, 30*time.Second, func() bool {
		st, _ = analytics.ReadState(n.state)
		trending = nil
		code, body, err := do(client, http.MethodGet, reviewsURL+"/trending", nil)
		if err == nil && code == http.StatusOK {
			_ = json.Unmarshal(body, &trending)
		}
		return maps.Equal(st.Counts, want) && len(trending) == len(wantTrending) && len(st.Outbox) == 0
	}, func() string {
		return fmt.Sprintf("analytics counts %v, want %v; %d in its outbox; reviews' trending %+v, want %v; analytics log:\n%s",
			st.Counts, want, len(st.Outbox), trending, wantTrending, tail(n.logPath, 3000))
	})
	for i, tr := range trending {
		if tr.ProductID != wantTrending[i] || tr.Orders != analyticsThreshold || !slices.Contains(st.Published, tr.EventID) {
			t.Errorf("trending[%d] = %+v; want %s at %d orders, an event analytics published", i, tr, wantTrending[i], analyticsThreshold)
		}
	}
	if len(st.Seen) != len(productsOf) {
		t.Errorf("analytics applied %d events for %d orders", len(st.Seen), len(productsOf))
	}

	// herald catalog, in process, on the same server.
	ctx := context.Background()
	b, err := natsjs.Connect(ctx, []string{natsURL})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ms, err := catalog.Load(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ms, func(m catalog.Manifest) bool { return m.Service == analytics.Service })
	if i < 0 {
		t.Fatalf("herald catalog does not list %s", analytics.Service)
	}
	m := ms[i]
	trendingV1 := catalog.Ref{Name: "shop.product.trending", Version: 1}
	if m.Stale || len(m.Subscriptions) != 1 || m.Subscriptions[0].Event != "shop.order.confirmed" || !slices.Equal(m.Publishes(), []catalog.Ref{trendingV1}) {
		t.Errorf("herald catalog lists analytics as stale=%v, subscriptions %+v, publishing %v; want live, shop.order.confirmed, %v",
			m.Stale, m.Subscriptions, m.Publishes(), trendingV1)
	}
	g, err := catalog.Build(ms)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(g.EdgeStrings(), "int:shop.product.trending -delivers-> sub:reviews/mark-trending") {
		t.Errorf("the catalog does not connect analytics' shop.product.trending to reviews")
	}
	for _, w := range g.Warnings {
		if w.Service == analytics.Service || strings.Contains(w.Message, "shop.product.trending") {
			t.Errorf("catalog warning: %s", w)
		}
	}
	t.Logf("analytics (Node.js): %d orders counted, %d trending products marked by reviews", len(st.Seen), len(trending))
}
