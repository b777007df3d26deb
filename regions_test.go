package herald_test

// Two regions (docs/regions.md): region a, a JetStream cluster in domain
// "a", where "orders" publishes; region b, a cluster in domain "b" whose
// nodes connect to a's by leafnodes through a proxy the test can cut,
// where "shipping" subscribes. b's integration stream sources a's
// (natsjs.WithSourceRegion).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/internal/testwait"
)

// regionLeafDeny is what the leafnode between the regions must not carry
// either way (docs/regions.md): herald's subjects, which both regions'
// streams capture, acks of same-named consumers, and JetStream advisories.
var regionLeafDeny = []string{"herald.>", "$JS.ACK.>", "$JS.EVENT.>"}

// TestRegionsLinkCutUnderLoad publishes about 2,000 events over 20 keys
// in region a and takes them in region b; under load it cuts the link
// between the regions for 3 s (or HERALD_TEST_REGION_CUT) and restores it.
// From shipping's own tables: every event acknowledged in a took effect in
// b exactly once, in order per key. While the link was cut nothing reached
// b's stream; after it came back the backlog drained (the time is logged).
// b's stream ends with exactly the messages of a's: nothing reached it but
// the source. Either region is a 3-node cluster with R3 streams, the other
// one node.
func TestRegionsLinkCutUnderLoad(t *testing.T) {
	for _, tc := range []struct{ a, b int }{{3, 1}, {1, 3}} {
		t.Run(fmt.Sprintf("a%d-b%d", tc.a, tc.b), func(t *testing.T) { regionsLinkCut(t, tc.a, tc.b) })
	}
}

func regionsLinkCut(t *testing.T, aNodes, bNodes int) {
	const total = 2000
	dir := t.TempDir()
	a := natsserver.StartClusterConfig(t, filepath.Join(dir, "a"), natsserver.ClusterConfig{Nodes: aNodes, Domain: "a", LeafListen: true})
	link := natsserver.StartProxy(t, a.LeafAddrs()...)
	b := natsserver.StartClusterConfig(t, filepath.Join(dir, "b"), natsserver.ClusterConfig{Nodes: bNodes, Domain: "b",
		LeafRemotes: link.URLs("nats-leaf"), LeafDeny: regionLeafDeny})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []*natsserver.Cluster{a, b} {
		if err := c.WaitJetStream(ctx); err != nil {
			t.Fatalf("region %s: %v", c.Domain(), err)
		}
	}
	if err := b.WaitDomain(ctx, "a"); err != nil {
		t.Fatalf("region a seen from b: %v", err)
	}
	logs := &clusterLog{}

	// Region a: orders.
	pst := clusterStore(t, "orders", `CREATE TABLE placed (idx INTEGER PRIMARY KEY)`)
	plog := logs.logger(t, "orders")
	pb, err := natsjs.Connect(ctx, a.URLs(), natsjs.WithReplicas(aNodes), natsjs.WithName("orders"),
		natsjs.WithLogger(plog), natsjs.WithReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pb.Close() })
	producer, counted := clusterProducer(t, pst, pb, plog)
	clusterStart(t, ctx, producer)

	// Region b: shipping, sourcing region a.
	cst := clusterShippingStore(t)
	clog := logs.logger(t, "shipping")
	cb, err := natsjs.Connect(ctx, b.URLs(), natsjs.WithSourceRegion("a"), natsjs.WithReplicas(bNodes), natsjs.WithName("shipping"),
		natsjs.WithLogger(clog), natsjs.WithReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cb.Close() })
	consumer, err := clusterShipping(cst, cb, clog)
	if err != nil {
		t.Fatal(err)
	}
	effects := func() int64 { return clusterEffects(cst) }
	clusterStart(t, ctx, consumer)

	// Load: one order per transaction, about 150 a second, total in all.
	var placed atomic.Int64
	produced := make(chan error, 1)
	go func() { produced <- clusterOrders(ctx, producer, total, nil, &placed) }()
	status := func() string {
		return fmt.Sprintf("placed %d, acknowledged in a %d, effects in b %d", placed.Load(), counted.acked.Load(), effects())
	}
	wait := func(timeout time.Duration, what string, cond func() bool) {
		t.Helper()
		testwait.UntilReport(t, timeout, cond, func() string { return "waiting for " + what + ": " + status() })
	}
	wait(time.Minute, "the flow to start", func() bool { return effects() >= 400 })

	// Cut the link for 3 s (HERALD_TEST_REGION_CUT) under load.
	cut := 3 * time.Second
	if v := os.Getenv("HERALD_TEST_REGION_CUT"); v != "" {
		if cut, err = time.ParseDuration(v); err != nil || cut < 2*time.Second {
			t.Fatalf("HERALD_TEST_REGION_CUT=%q: want a duration of at least 2s (%v)", v, err)
		}
	}
	// b's copy of a's stream, which sourcing fills within milliseconds
	// while the link is up; shipping may lag behind it.
	bjs, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	copied := func() uint64 {
		st, err := bjs.Stream(ctx, "HERALD_INT")
		if err != nil {
			t.Fatalf("stream HERALD_INT of b: %v", err)
		}
		return st.CachedInfo().State.Msgs
	}
	cutAt, atCut := time.Now(), effects()
	link.Cut()
	time.Sleep(time.Second)
	stalled := copied() // what was in flight at the cut arrived or was lost by now
	time.Sleep(cut - time.Second)
	atRestore, ackedAtRestore := copied(), counted.acked.Load()
	restoredAt := time.Now()
	link.Restore()
	if atRestore != stalled {
		t.Errorf("b's stream went from %d to %d messages while the link was cut", stalled, atRestore)
	}
	backlog := ackedAtRestore - int64(atRestore)
	if backlog < 100 {
		t.Fatalf("only %d events acknowledged in a but not copied to b when the link came back (%s): the cut held nothing back", backlog, status())
	}
	wait(time.Minute, "the backlog to drain", func() bool { return effects() >= ackedAtRestore })
	drained := time.Since(restoredAt)

	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	wait(time.Minute, fmt.Sprintf("%d effects", total), func() bool { return effects() >= total })
	done := time.Since(restoredAt)
	time.Sleep(500 * time.Millisecond) // room for a late duplicate
	t.Logf("link cut at %d effects in b, restored %v later with %d events acknowledged in a but not copied to b; "+
		"every event acknowledged by then took effect in b %v after the link came back; all %d events %v after it",
		atCut, restoredAt.Sub(cutAt).Round(time.Millisecond), backlog,
		drained.Round(time.Millisecond), total, done.Round(time.Millisecond))

	// Exactly once, in order per key, from shipping's own tables.
	clusterCheckEffects(t, cst, total)

	// b's stream holds a's messages and nothing else.
	ajs, err := a.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	as, err := ajs.Stream(ctx, "HERALD_INT")
	if err != nil {
		t.Fatal(err)
	}
	bs, err := bjs.Stream(ctx, "HERALD_INT")
	if err != nil {
		t.Fatal(err)
	}
	if am, bm := as.CachedInfo().State.Msgs, bs.CachedInfo().State.Msgs; am != bm || am < total {
		t.Errorf("stream HERALD_INT: %d messages in a, %d in b, want the same, at least %d", am, bm, total)
	}
}
