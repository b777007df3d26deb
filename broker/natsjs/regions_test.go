package natsjs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/natsserver"
)

func TestWithSourceRegionRejectsBadDomains(t *testing.T) {
	for _, tc := range []struct {
		name   string
		domain string
		embed  bool
	}{
		{"empty", "", false},
		{"dotted", "eu.west", false},
		{"wildcard", "eu*", false},
		{"space", "eu west", false},
		{"embedded", "eu", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig(modeExternal)
			if tc.embed {
				cfg = defaultConfig(modeEmbedded)
			}
			err := cfg.apply([]Option{WithSourceRegion(tc.domain)})
			if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "WithSourceRegion") {
				t.Fatalf("WithSourceRegion(%q): %v, want an invalid option naming it", tc.domain, err)
			}
		})
	}
	cfg := defaultConfig(modeExternal)
	if err := cfg.apply([]Option{WithSourceRegion("eu-west_1")}); err != nil || cfg.sourceRegion != "eu-west_1" {
		t.Fatalf("WithSourceRegion(eu-west_1): %v, %q", err, cfg.sourceRegion)
	}
}

// TestProvisionRefusesAnUnreachableSourceRegion: region b's services
// provision with WithSourceRegion("a"). While the leafnode to region a is
// cut, Provision refuses within regionWait with an error naming the option
// and the domain, and creates no stream in b; with a up but not yet
// provisioned, it refuses naming the missing stream; once a has its
// streams, b's integration stream sources a's, and a service of b
// provisions with the link cut again.
func TestProvisionRefusesAnUnreachableSourceRegion(t *testing.T) {
	dir := t.TempDir()
	a := natsserver.StartClusterConfig(t, filepath.Join(dir, "a"), natsserver.ClusterConfig{Nodes: 1, Domain: "a", LeafListen: true})
	link := natsserver.StartProxy(t, a.LeafAddrs()...)
	link.Cut()
	b := natsserver.StartClusterConfig(t, filepath.Join(dir, "b"), natsserver.ClusterConfig{Nodes: 1, Domain: "b",
		LeafRemotes: link.URLs("nats-leaf"), LeafDeny: []string{"herald.>", "$JS.ACK.>", "$JS.EVENT.>"}})
	ctx := testCtx(t, time.Minute)
	for _, c := range []*natsserver.Cluster{a, b} {
		if err := c.WaitJetStream(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sub := broker.Subscription{Service: "shipping", Name: "ship", Types: []string{"shop.order.placed"}, Kind: envelope.KindIntegration}
	topo := broker.Topology{Service: "shipping", Subscriptions: []broker.Subscription{sub}}
	bb, err := Connect(ctx, b.URLs(), WithSourceRegion("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()

	start := time.Now()
	err = bb.Provision(ctx, topo)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), `WithSourceRegion("a")`) || !strings.Contains(err.Error(), `region "a" does not answer`) {
		t.Fatalf("Provision with region a cut off: %v, want an error naming WithSourceRegion and the domain", err)
	}
	if took > regionWait+5*time.Second {
		t.Errorf("Provision took %v to refuse, want about regionWait (%v)", took, regionWait)
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
	bjs, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	names := bjs.StreamNames(ctx)
	for n := range names.Name() {
		t.Errorf("stream %s created in b though Provision refused", n)
	}
	if names.Err() != nil {
		t.Fatal(names.Err())
	}

	link.Restore()
	if err := b.WaitDomain(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	err = bb.Provision(ctx, topo)
	if err == nil || !strings.Contains(err.Error(), "has no stream HERALD_INT") || !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Provision with region a unprovisioned: %v, want an error naming the missing stream", err)
	}

	ab, err := Connect(ctx, a.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()
	if err := ab.Provision(ctx, broker.Topology{Service: "orders"}); err != nil {
		t.Fatal(err)
	}
	if err := bb.Provision(ctx, topo); err != nil {
		t.Fatalf("Provision with region a up: %v", err)
	}
	// A service of b without the option keeps the sourcing.
	other, err := Connect(ctx, b.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Provision(ctx, broker.Topology{Service: "billing"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range bb.names.intStreams() {
		st, err := bjs.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		srcs := st.CachedInfo().Config.Sources
		if len(srcs) != 1 || srcs[0].Name != name || srcs[0].External == nil || srcs[0].External.APIPrefix != "$JS.a.API" ||
			srcs[0].Consumer == nil || srcs[0].Consumer.Name != "region-b" {
			t.Errorf("stream %s of b: sources %+v, want %s of $JS.a.API by consumer region-b", name, srcs, name)
		}
		ajs, err := a.JetStream()
		if err != nil {
			t.Fatal(err)
		}
		c, err := ajs.PushConsumer(ctx, name, "region-b")
		if err != nil {
			t.Fatalf("consumer region-b of %s in a: %v", name, err)
		}
		if cfg := c.CachedInfo().Config; cfg.AckPolicy != jetstream.AckFlowControlPolicy || cfg.DeliverSubject != "_HERALD_SOURCE."+name+".b" {
			t.Errorf("consumer region-b of %s in a: %+v", name, cfg)
		}
	}
	// Once b sources a, a service of b restarting while the link is cut
	// provisions without waiting for a.
	link.Cut()
	again, err := Connect(ctx, b.URLs(), WithSourceRegion("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	start = time.Now()
	if err := again.Provision(ctx, topo); err != nil || time.Since(start) > regionWait {
		t.Fatalf("Provision in b, already sourcing a, with the link cut: %v after %v, want success without waiting for a", err, time.Since(start))
	}
	for _, name := range []string{"HERALD_NTF", "HERALD_DLQ"} {
		st, err := bjs.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if srcs := st.CachedInfo().Config.Sources; len(srcs) != 0 {
			t.Errorf("stream %s of b sources %+v, want none", name, srcs)
		}
	}
}

// TestWithSourcesKeepsWhatTheStreamHas: without WithSourceRegion the
// streams have no sources, and a stream that has some keeps them.
func TestWithSourcesKeepsWhatTheStreamHas(t *testing.T) {
	b := &Broker{names: newNames("herald", 1)}
	sc := b.streamConfigs()[0]
	if got := b.withSources(sc, nil); len(got.Sources) != 0 {
		t.Fatalf("no region, new stream: sources %+v", got.Sources)
	}
	had := &jetstream.StreamSource{Name: sc.Name, External: &jetstream.ExternalStream{APIPrefix: "$JS.a.API"}}
	old := sc
	old.Sources = []*jetstream.StreamSource{had}
	if got := b.withSources(sc, &old); len(got.Sources) != 1 || got.Sources[0] != had {
		t.Fatalf("no region, stream with a source: sources %+v", got.Sources)
	}
	b.cfg.sourceRegion = "a"
	if got := b.withSources(sc, &old); len(got.Sources) != 1 || got.Sources[0] != had {
		t.Fatalf("region a, this region's domain not known yet: sources %+v, want the stream's", got.Sources)
	}
	b.region.here = "b"
	got := b.withSources(sc, &old)
	if len(got.Sources) != 1 || got.Sources[0].Consumer == nil ||
		*got.Sources[0].Consumer != (jetstream.StreamConsumerSource{Name: "region-b", DeliverSubject: "_HERALD_SOURCE.HERALD_INT.b"}) {
		t.Fatalf("region a, stream sourcing a: sources %+v, want one, by the durable region-b", got.Sources)
	}
	b.cfg.sourceRegion = "c"
	if got := b.withSources(sc, &old); len(got.Sources) != 2 || got.Sources[1].External.APIPrefix != "$JS.c.API" {
		t.Fatalf("region c, stream sourcing a: sources %+v, want a and c", got.Sources)
	}
	for _, other := range b.streamConfigs()[1:] {
		if got := b.withSources(other, nil); len(got.Sources) != 0 {
			t.Errorf("stream %s sources %+v, want none", other.Name, got.Sources)
		}
	}
}

// regionPair starts regions a and b (single nodes, domains "a" and "b"),
// b a leafnode of a through a Proxy, and waits until b reaches a.
func regionPair(t *testing.T) (a, b *natsserver.Cluster, link *natsserver.Proxy) {
	t.Helper()
	dir := t.TempDir()
	a = natsserver.StartClusterConfig(t, filepath.Join(dir, "a"), natsserver.ClusterConfig{Nodes: 1, Domain: "a", LeafListen: true})
	link = natsserver.StartProxy(t, a.LeafAddrs()...)
	b = natsserver.StartClusterConfig(t, filepath.Join(dir, "b"), natsserver.ClusterConfig{Nodes: 1, Domain: "b",
		LeafRemotes: link.URLs("nats-leaf"), LeafDeny: []string{"herald.>", "$JS.ACK.>", "$JS.EVENT.>"}})
	ctx := testCtx(t, time.Minute)
	for _, c := range []*natsserver.Cluster{a, b} {
		if err := c.WaitJetStream(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WaitDomain(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	return a, b, link
}

// TestSourceRegionPartitions: with WithPartitions(4) in both regions, each
// of b's four integration streams sources a's stream of the same
// partition; events published in a while the link is cut reach b's
// consumers after it is restored, each once, in order per key. A broker of
// b with another partition count is refused, naming both counts.
func TestSourceRegionPartitions(t *testing.T) {
	const n, keys, perKey = 4, 20, 10
	a, b, link := regionPair(t)
	ctx := testCtx(t, time.Minute)
	const typ = "shop.order.placed"
	ab, err := Connect(ctx, a.URLs(), WithPartitions(n))
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()
	if err := ab.Provision(ctx, broker.Topology{Service: "orders"}); err != nil {
		t.Fatal(err)
	}
	two, err := Connect(ctx, b.URLs(), WithPartitions(2), WithSourceRegion("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer two.Close()
	err = two.Provision(ctx, broker.Topology{Service: "billing"})
	if !errors.Is(err, ErrPartitionMismatch) || !strings.Contains(err.Error(), `WithSourceRegion("a")`) ||
		!strings.Contains(err.Error(), "have 4 partition(s)") || !strings.Contains(err.Error(), "WithPartitions(2)") {
		t.Fatalf("Provision with 2 partitions sourcing 4: %v, want a mismatch naming both", err)
	}

	bb, err := Connect(ctx, b.URLs(), WithPartitions(n), WithSourceRegion("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	sub := broker.Subscription{Service: "shipping", Name: "ship", Types: []string{typ}, Kind: envelope.KindIntegration, MaxAckPending: 1000}
	if err := bb.Provision(ctx, broker.Topology{Service: "shipping", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	batch := func(from, to int) []*envelope.Envelope {
		var es []*envelope.Envelope
		for i := from; i < to; i++ {
			for k := range keys {
				es = append(es, keyed(typ, fmt.Sprintf("k%02d", k), i))
			}
		}
		return es
	}

	var mu sync.Mutex
	next := map[string]int{} // key -> the counter it expects next
	var bad []string
	total := 0
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for p := range n {
		ps := sub
		ps.Partition = p
		wg.Go(func() {
			err := bb.Consume(cctx, ps, 16, func(ctx context.Context, ds []broker.Delivery) {
				for _, d := range ds {
					k, i := seqOf(t, d.Data())
					mu.Lock()
					if i != next[k] || PartitionOf(k, n) != p {
						bad = append(bad, fmt.Sprintf("partition %d: key %s event %d, want %d", p, k, i, next[k]))
					}
					next[k] = i + 1
					total++
					mu.Unlock()
					_ = d.Ack(ctx)
				}
			})
			if err != nil && cctx.Err() == nil {
				t.Errorf("Consume partition %d: %v", p, err)
			}
		})
	}
	received := func() int { mu.Lock(); defer mu.Unlock(); return total }
	mustPublish(t, ab, batch(0, perKey/2))
	waitUntil(t, 30*time.Second, "the first half in b", func() bool { return received() == keys*perKey/2 })
	link.Cut()
	mustPublish(t, ab, batch(perKey/2, perKey))
	time.Sleep(300 * time.Millisecond)
	if got := received(); got != keys*perKey/2 {
		t.Fatalf("%d events in b while the link was cut, want %d", got, keys*perKey/2)
	}
	restored := time.Now()
	link.Restore()
	waitUntil(t, 45*time.Second, "every event in b", func() bool { return received() >= keys*perKey })
	t.Logf("backlog of %d events over %d partitions taken in b %v after the link came back",
		keys*perKey/2, n, time.Since(restored).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond) // room for a late duplicate
	mu.Lock()
	defer mu.Unlock()
	if total != keys*perKey || len(bad) > 0 {
		t.Fatalf("%d deliveries of %d events; out of order or misplaced: %v", total, keys*perKey, bad)
	}
}

// TestProvisionRefusesARegionWithoutDomain: WithSourceRegion on servers
// without a JetStream domain, or in the source region's own, is refused
// naming the option; no stream is created.
func TestProvisionRefusesARegionWithoutDomain(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	for _, tc := range []struct{ domain, want string }{
		{"", "this region's servers have no JetStream domain"},
		{"a", "this region's servers are in that domain themselves"},
	} {
		t.Run("domain="+tc.domain, func(t *testing.T) {
			c := natsserver.StartClusterConfig(t, t.TempDir(), natsserver.ClusterConfig{Nodes: 1, Domain: tc.domain})
			if err := c.WaitJetStream(ctx); err != nil {
				t.Fatal(err)
			}
			b, err := Connect(ctx, c.URLs(), WithSourceRegion("a"))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			err = b.Provision(ctx, broker.Topology{Service: "shipping"})
			if err == nil || !strings.Contains(err.Error(), `WithSourceRegion("a")`) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Provision: %v, want an error naming WithSourceRegion and saying %q", err, tc.want)
			}
			js, err := c.JetStream()
			if err != nil {
				t.Fatal(err)
			}
			names := js.StreamNames(ctx)
			for n := range names.Name() {
				t.Errorf("stream %s created though Provision refused", n)
			}
		})
	}
}
