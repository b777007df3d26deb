package analytics_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/examples/shop/analytics"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/internal/npmci"
)

// TestBucketsCreatedByTheNodeService starts the Node.js service on a
// system whose streams exist but whose catalog buckets do not (no herald
// service has announced itself yet): it creates them as NATS KV clients do,
// the herald services that start next write into them, and the catalog
// lists all five.
func TestBucketsCreatedByTheNodeService(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs node and the shop")
	}
	npmci.Require(t, "analytics: the service runs in node")
	ctx := context.Background()
	dir := analytics.SourceDir()
	if err := analytics.Prepare(ctx, dir); err != nil {
		t.Fatal(err)
	}
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Provision(ctx, broker.Topology{Service: "provisioner"}); err != nil { // the streams only
		t.Fatal(err)
	}
	if ms, err := b.Manifests(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("before: manifests %v, %v; want no bucket yet", ms, err)
	}
	p, err := analytics.Start(ctx, analytics.Config{Dir: dir, NATS: b.URL(), State: filepath.Join(t.TempDir(), "state.json"), Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	sys, err := shop.Start(ctx, shop.Config{Broker: b, DataDir: t.TempDir(), DispatchDelay: time.Hour})
	if err != nil {
		t.Fatalf("the herald services on buckets the Node.js service created: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	ms, err := catalog.Load(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, m := range ms {
		if !m.Stale {
			live = append(live, m.Service)
		}
	}
	if want := []string{"analytics", "notifications", "orders", "reviews", "shipping"}; !slices.Equal(live, want) {
		t.Errorf("live services %v, want %v", live, want)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("%v\n%s", err, p.Output())
	}
}
