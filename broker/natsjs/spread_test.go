package natsjs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/natsserver"
)

// TestProvisionSpreadsLeaders: on a 3-node cluster, with every partition
// stream's and every partition consumer's leader put on one node, Provision
// moves leaders until no node leads more than its share (6 partitions, 3
// nodes: 2 each). Without the spread, node 0 keeps all 6.
func TestProvisionSpreadsLeaders(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	ctx := testCtx(t, 3*time.Minute)
	c := natsserver.StartCluster(t, t.TempDir(), 3)
	if err := c.WaitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 6
	b, err := Connect(ctx, c.URLs(), WithPartitions(n), WithReplicas(3))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub := broker.Subscription{Service: "billing", Name: "on-order", Types: []string{"shop.order.placed"}, Kind: envelope.KindIntegration}
	topo := broker.Topology{Service: "billing", Subscriptions: []broker.Subscription{sub}}
	if err := b.Provision(ctx, topo); err != nil {
		t.Fatal(err)
	}
	first := c.Nodes()[0]
	start := time.Now()
	for p := range n {
		stream := fmt.Sprintf("HERALD_INT_%d", p)
		if err := c.MoveStreamLeader(ctx, stream, first); err != nil {
			t.Fatal(err)
		}
		if err := c.MoveConsumerLeader(ctx, stream, fmt.Sprintf("%s_p%d", ConsumerName("billing", "on-order"), p), first); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("leaders moved to %s %v after start", first.Name(), time.Since(start).Round(time.Millisecond))
	if err := b.Provision(ctx, topo); err != nil {
		t.Fatal(err)
	}
	// The moves are elections: look until they are done.
	deadline := time.Now().Add(30 * time.Second)
	for {
		streams, consumers := map[string]int{}, map[string]int{}
		// A look during an election may go unanswered: each has a deadline.
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		for p := range n {
			stream := fmt.Sprintf("HERALD_INT_%d", p)
			if s, err := c.StreamLeader(lctx, stream); err == nil {
				streams[s.Name()]++
			}
			if s, err := c.ConsumerLeader(lctx, stream, fmt.Sprintf("%s_p%d", ConsumerName("billing", "on-order"), p)); err == nil {
				consumers[s.Name()]++
			}
		}
		cancel()
		spread := len(streams) == 3 && len(consumers) == 3
		for _, k := range []map[string]int{streams, consumers} {
			for _, v := range k {
				spread = spread && v == 2
			}
		}
		if spread {
			t.Logf("stream leaders %v, consumer leaders %v", streams, consumers)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaders not spread 30s after Provision: streams %v, consumers %v", streams, consumers)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
