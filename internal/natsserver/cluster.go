package natsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of real nats-server processes on
// loopback: each node has its own client port, cluster (route) port, store
// directory and server_name, and routes to every other node. A node can be
// SIGKILLed and restarted on the same ports and store (Server.Kill,
// Server.Restart); the test's cleanup kills every node by PID.
type Cluster struct {
	t      testing.TB
	name   string
	domain string
	nodes  []*Server

	mu sync.Mutex
	nc *nats.Conn
	js jetstream.JetStream
}

// StartCluster starts an n-node cluster (n >= 1, usually 3) with its store
// directories under dir (dir/node0, dir/node1...) and waits until every
// node accepts client connections. It does not wait for the cluster to
// elect its meta leader: see WaitJetStream. Every node, even of a 1-node
// cluster, has a cluster block; StartClusterConfig also starts standalone
// nodes and regions.
func StartCluster(t testing.TB, dir string, n int) *Cluster {
	t.Helper()
	return StartClusterConfig(t, dir, ClusterConfig{Nodes: n, Routes: true})
}

// ClusterConfig describes a cluster for StartClusterConfig: its size, its
// JetStream domain, and its leafnode connections to other clusters (other
// regions, each its own domain).
type ClusterConfig struct {
	// Nodes is the number of servers, at least 1.
	Nodes int
	// Routes gives a 1-node cluster a cluster block anyway (as StartCluster
	// does); a cluster of 2 or more nodes always has one. Without it a
	// single node runs standalone JetStream, which starts faster.
	Routes bool
	// Domain is the JetStream domain of every node (jetstream { domain });
	// empty: none. Two clusters joined by a leafnode need different domains
	// to keep separate JetStreams; each reaches the other's API under
	// $JS.<domain>.API.
	Domain string
	// LeafListen makes every node accept leafnode connections on a port of
	// its own (Server.LeafAddr).
	LeafListen bool
	// LeafRemotes are the leafnode URLs (nats-leaf://host:port) every node
	// solicits, one remote with these URLs for failover, bound to the
	// default account.
	LeafRemotes []string
	// LeafDeny lists subjects the remotes neither import nor export
	// (deny_imports and deny_exports).
	LeafDeny []string
	// SyncInterval is JetStream's sync_interval: empty or "always" (an
	// fsync per write, what the tests run), or a duration such as "1s" or
	// "2m" (the server's own default).
	SyncInterval string
}

// jetStreamConf is the JetStream block of the nodes' configuration.
func (cfg ClusterConfig) jetStreamConf() string {
	if cfg.SyncInterval == "" || cfg.SyncInterval == "always" {
		return jetstreamConf
	}
	return strings.Replace(jetstreamConf, "sync_interval: always", "sync_interval: "+cfg.SyncInterval, 1)
}

// StartClusterConfig starts the cluster of cfg with its store directories
// under dir (dir/node0, dir/node1...) and waits until every node accepts
// client connections. It does not wait for the meta leader, nor for the
// leafnode connections: see WaitJetStream and WaitDomain.
func StartClusterConfig(t testing.TB, dir string, cfg ClusterConfig) *Cluster {
	t.Helper()
	if cfg.Nodes < 1 {
		t.Fatalf("natsserver: cluster of %d nodes", cfg.Nodes)
	}
	bin := Build(t)
	c, err := launchCluster(t, bin, dir, cfg, t.Logf)
	if err != nil {
		t.Fatalf("natsserver: cluster: %v", err)
	}
	t.Cleanup(c.close)
	return c
}

// launchCluster starts the cluster, trying new ports up to three times.
// t is nil outside tests.
func launchCluster(t testing.TB, bin, dir string, cfg ClusterConfig, logf func(string, ...any)) (*Cluster, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var c *Cluster
		if c, err = startCluster(t, bin, dir, cfg, attempt); err == nil {
			return c, nil
		}
		// Most likely a port taken meanwhile: pick new ones.
		logf("natsserver: cluster start attempt %d: %v", attempt+1, err)
	}
	return nil, err
}

func startCluster(t testing.TB, bin, dir string, cfg ClusterConfig, attempt int) (*Cluster, error) {
	n := cfg.Nodes
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	client, routes, leafs := ports[:n], ports[n:2*n], ports[2*n:]
	c := &Cluster{t: t, name: fmt.Sprintf("herald-test-%d-%d", os.Getpid(), routes[0]), domain: cfg.Domain}
	var urls []string
	for _, p := range routes {
		urls = append(urls, strconv.Quote("nats-route://127.0.0.1:"+strconv.Itoa(p)))
	}
	for i := range n {
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if attempt > 0 {
			ndir += fmt.Sprintf("-try%d", attempt)
		}
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			return nil, err
		}
		s := newServer(t, bin, ndir)
		s.js = cfg.jetStreamConf()
		s.port = client[i]
		s.name = fmt.Sprintf("herald-test-%d-%d", os.Getpid(), s.port)
		s.domain = cfg.Domain
		var extra strings.Builder
		if n > 1 || cfg.Routes {
			var others []string
			for j, u := range urls {
				if j != i {
					others = append(others, u)
				}
			}
			fmt.Fprintf(&extra, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n",
				c.name, routes[i], strings.Join(others, ", "))
		}
		extra.WriteString(leafConf(cfg, leafs[i], s))
		if err := s.writeConf(extra.String()); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	for _, s := range c.nodes {
		if err := s.start(); err != nil {
			c.close()
			return nil, fmt.Errorf("node %s: %w", s.name, err)
		}
	}
	return c, nil
}

// leafConf returns the leafnodes block of a node of cfg (listening on port
// when cfg.LeafListen), or "".
func leafConf(cfg ClusterConfig, port int, s *Server) string {
	if !cfg.LeafListen && len(cfg.LeafRemotes) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("leafnodes {\n")
	if cfg.LeafListen {
		s.leafPort = port
		// no_advertise: a leaf must not learn this port and go round a
		// Proxy in front of it.
		fmt.Fprintf(&b, "  listen: \"127.0.0.1:%d\"\n  no_advertise: true\n", port)
	}
	if len(cfg.LeafRemotes) > 0 {
		b.WriteString("  reconnect: \"250ms\"\n  remotes: [{\n    urls: [")
		b.WriteString(quoteAll(cfg.LeafRemotes))
		b.WriteString("]\n")
		if len(cfg.LeafDeny) > 0 {
			fmt.Fprintf(&b, "    deny_imports: [%s]\n    deny_exports: [%[1]s]\n", quoteAll(cfg.LeafDeny))
		}
		b.WriteString("  }]\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// freePorts returns k distinct ports on 127.0.0.1 that were free a moment
// ago.
func freePorts(k int) ([]int, error) {
	seen := map[int]bool{}
	var ports []int
	for len(ports) < k {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func (c *Cluster) close() {
	c.mu.Lock()
	if c.nc != nil {
		c.nc.Close()
		c.nc, c.js = nil, nil
	}
	c.mu.Unlock()
	for _, s := range c.nodes {
		s.Kill()
	}
}

// Name is the cluster's name (-cluster_name).
func (c *Cluster) Name() string { return c.name }

// Domain is the cluster's JetStream domain (ClusterConfig.Domain).
func (c *Cluster) Domain() string { return c.domain }

// LeafAddrs returns the leafnode addresses (host:port) of every node, for
// another cluster's LeafRemotes or a Proxy; nil without LeafListen.
func (c *Cluster) LeafAddrs() []string {
	var addrs []string
	for _, s := range c.nodes {
		if a := s.LeafAddr(); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// Nodes returns the nodes, in start order.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// URLs returns the client URLs of every node.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		urls[i] = s.URL()
	}
	return urls
}

// Node returns the node named name (a server_name as JetStream reports
// it), or nil.
func (c *Cluster) Node(name string) *Server {
	for _, s := range c.nodes {
		if s.name == name {
			return s
		}
	}
	return nil
}

// JetStream returns the cluster's own JetStream client, connected to every
// node and reconnecting forever, for tests to look at streams. The cleanup
// closes it.
func (c *Cluster) JetStream() (jetstream.JetStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.js != nil {
		return c.js, nil
	}
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), nats.Name("natsserver-cluster-observer"),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.nc, c.js = nc, js
	return js, nil
}

// WaitJetStream waits until the cluster answers JetStream requests (it has
// elected its meta leader), polling, or ctx ends.
func (c *Cluster) WaitJetStream(ctx context.Context) error {
	js, err := c.JetStream()
	if err != nil {
		return err
	}
	return poll(ctx, func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	})
}

// WaitDomain waits until the JetStream of domain answers through this
// cluster (at $JS.<domain>.API), that is until a leafnode connects the
// two and the other side has its meta leader, polling, or ctx ends.
func (c *Cluster) WaitDomain(ctx context.Context, domain string) error {
	if _, err := c.JetStream(); err != nil {
		return err
	}
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	js, err := jetstream.NewWithDomain(nc, domain)
	if err != nil {
		return err
	}
	return poll(ctx, func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	})
}

// StreamLeader returns the node that leads stream now, from the stream's
// info (StreamInfo.Cluster.Leader).
func (c *Cluster) StreamLeader(ctx context.Context, stream string) (*Server, error) {
	js, err := c.JetStream()
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	ci := st.CachedInfo().Cluster
	if ci == nil || ci.Leader == "" {
		return nil, fmt.Errorf("stream %s has no leader", stream)
	}
	s := c.Node(ci.Leader)
	if s == nil {
		return nil, fmt.Errorf("stream %s is led by %q, not a node of this cluster", stream, ci.Leader)
	}
	return s, nil
}

// WaitStreamLeader polls until stream has a leader other than not (nil:
// any leader) and returns it, or fails when ctx ends.
func (c *Cluster) WaitStreamLeader(ctx context.Context, stream string, not *Server) (*Server, error) {
	var leader *Server
	err := poll(ctx, func(ctx context.Context) error {
		s, err := c.StreamLeader(ctx, stream)
		if err == nil && s == not {
			err = fmt.Errorf("stream %s is still led by %s", stream, s.name)
		}
		leader = s
		return err
	})
	return leader, err
}

// poll calls fn every 50ms, each call bounded by 2s, until it returns nil
// or ctx ends (then with fn's last error).
func poll(ctx context.Context, fn func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// MoveStreamLeader asks the leader of stream to step down in favour of to
// ($JS.API.STREAM.LEADER.STEPDOWN with a preferred placement) and waits
// until to leads it.
func (c *Cluster) MoveStreamLeader(ctx context.Context, stream string, to *Server) error {
	return c.moveLeader(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, "stream "+stream, to,
		func(ctx context.Context) (*Server, error) { return c.StreamLeader(ctx, stream) })
}

// ConsumerLeader returns the node that leads the durable consumer of
// stream now, from the consumer's info.
func (c *Cluster) ConsumerLeader(ctx context.Context, stream, consumer string) (*Server, error) {
	js, err := c.JetStream()
	if err != nil {
		return nil, err
	}
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return nil, err
	}
	ci := cons.CachedInfo().Cluster
	if ci == nil || ci.Leader == "" {
		return nil, fmt.Errorf("consumer %s of %s has no leader", consumer, stream)
	}
	s := c.Node(ci.Leader)
	if s == nil {
		return nil, fmt.Errorf("consumer %s of %s is led by %q, not a node of this cluster", consumer, stream, ci.Leader)
	}
	return s, nil
}

// MoveConsumerLeader is MoveStreamLeader for a consumer.
func (c *Cluster) MoveConsumerLeader(ctx context.Context, stream, consumer string, to *Server) error {
	return c.moveLeader(ctx, "$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+consumer, "consumer "+consumer, to,
		func(ctx context.Context) (*Server, error) { return c.ConsumerLeader(ctx, stream, consumer) })
}

func (c *Cluster) moveLeader(ctx context.Context, subject, what string, to *Server, leader func(context.Context) (*Server, error)) error {
	if _, err := c.JetStream(); err != nil {
		return err
	}
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, to.name)
	return poll(ctx, func(ctx context.Context) error {
		s, err := leader(ctx)
		if err != nil || s == to {
			return err
		}
		resp, err := nc.RequestWithContext(ctx, subject, []byte(req))
		if err != nil {
			return err
		}
		var r struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if json.Unmarshal(resp.Data, &r) == nil && r.Error != nil {
			return fmt.Errorf("%s: step down: %s", what, r.Error.Description)
		}
		return fmt.Errorf("%s: leadership moving to %s", what, to.name)
	})
}
