package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Leaders. Each partition's stream, and each (subscription, partition)
// consumer, is a Raft group of its own, and JetStream elects its leader on
// any of the group's nodes: nothing keeps the elections from putting most
// partitions' leaders on one node, whose death then stalls most partitions
// for the elections (4-9 s). On a replicated cluster Provision therefore
// spreads them: it moves a leader off a node that leads more than its share
// (⌈groups / nodes⌉) to a peer of the group that leads the fewest, by a
// leader step-down with a preferred placement. It is best effort — the next
// Provision (any service's start) looks again — and it moves nothing once
// the leaders are spread.

// raftGroup is a stream or consumer whose leader may move.
type raftGroup struct {
	what     string   // for the log: "stream HERALD_INT_2"
	stepdown string   // the step-down API subject
	leader   string   // its leader's server name, "" while it has none
	peers    []string // the servers that may lead it (current replicas)
}

// spreadTimeout bounds the look and the moves of one spread.
const spreadTimeout = 5 * time.Second

// spreadLeaders spreads the leaders of the integration partitions' streams
// and of the consumers specs over the cluster's nodes (see Leaders). It
// does nothing without partitions or replicas.
func (b *Broker) spreadLeaders(ctx context.Context, specs []consumerSpec) {
	if b.names.partitions < 2 || b.cfg.replicas < 2 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, spreadTimeout)
	defer cancel()
	var streams []raftGroup
	for _, name := range b.names.intStreams() {
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			b.log.Debug("herald/natsjs: spread leaders: look up stream", "stream", name, "err", err)
			return
		}
		if g, ok := groupOf("stream "+name, "$JS.API.STREAM.LEADER.STEPDOWN."+name, s.CachedInfo().Cluster); ok {
			streams = append(streams, g)
		}
	}
	b.spread(ctx, streams)
	var consumers []raftGroup
	for _, sp := range specs {
		c, err := b.js.Consumer(ctx, sp.stream, sp.cfg.Durable)
		if err != nil {
			b.log.Debug("herald/natsjs: spread leaders: look up consumer", "consumer", sp.cfg.Durable, "err", err)
			return
		}
		if g, ok := groupOf("consumer "+sp.cfg.Durable, "$JS.API.CONSUMER.LEADER.STEPDOWN."+sp.stream+"."+sp.cfg.Durable,
			c.CachedInfo().Cluster); ok {
			consumers = append(consumers, g)
		}
	}
	b.spread(ctx, consumers)
}

// groupOf returns the group of a stream's or consumer's cluster info.
func groupOf(what, stepdown string, ci *jetstream.ClusterInfo) (raftGroup, bool) {
	if ci == nil || ci.Leader == "" {
		return raftGroup{}, false
	}
	g := raftGroup{what: what, stepdown: stepdown, leader: ci.Leader, peers: []string{ci.Leader}}
	for _, r := range ci.Replicas {
		if r != nil && r.Current && !r.Offline {
			g.peers = append(g.peers, r.Name)
		}
	}
	return g, true
}

// spread moves leaders of gs off the nodes that lead more than their share.
func (b *Broker) spread(ctx context.Context, gs []raftGroup) {
	if len(gs) < 2 {
		return
	}
	leads := map[string]int{}
	for _, g := range gs {
		for _, p := range g.peers {
			leads[p] += 0
		}
		leads[g.leader]++
	}
	share := (len(gs) + len(leads) - 1) / len(leads)
	for _, g := range gs {
		if leads[g.leader] <= share {
			continue
		}
		to := ""
		for _, p := range g.peers {
			if p != g.leader && leads[p] < share && (to == "" || leads[p] < leads[to]) {
				to = p
			}
		}
		if to == "" {
			continue
		}
		if err := b.stepDown(ctx, g.stepdown, to); err != nil {
			b.log.Info("herald/natsjs: spread leaders: could not move a leader", "group", g.what, "from", g.leader, "to", to, "err", err)
			continue
		}
		b.log.Info("herald/natsjs: moved a leader to spread the partitions over the nodes", "group", g.what, "from", g.leader, "to", to)
		leads[g.leader]--
		leads[to]++
	}
}

// stepDown asks a stream's or consumer's leader to step down in favour of
// server to.
func (b *Broker) stepDown(ctx context.Context, subject, to string) error {
	req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, to)
	resp, err := b.nc.RequestWithContext(ctx, subject, []byte(req))
	if err != nil {
		return err
	}
	var r struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("step down: %w", err)
	}
	if r.Error != nil {
		return fmt.Errorf("step down: %s", r.Error.Description)
	}
	return nil
}
