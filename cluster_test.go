package herald_test

// Cluster tests: herald services on a 3-node JetStream cluster of real
// nats-server processes (internal/natsserver), streams replicated three
// times. One kills the stream leader under load and measures how long the
// flow stalls; one starts four services at once on a cluster that is still
// electing its leaders.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/trace"
)

type clusterPlaced struct {
	Index int `json:"index"`
}

// clusterEvent is the Seq-th event of key Key.
type clusterEvent struct {
	Key   string `json:"key"`
	Seq   int    `json:"seq"`
	Index int    `json:"index"`
}

const clusterKeys = 20

var (
	clusterOrderPlaced    = herald.Domain[clusterPlaced]("orders.cluster_placed")
	clusterOrderConfirmed = herald.Integration[clusterEvent]("shop.cluster.confirmed",
		herald.KeyBy(func(e clusterEvent) string { return e.Key }))
)

func clusterKey(i int) (string, int) { return fmt.Sprintf("k%02d", i%clusterKeys), i/clusterKeys + 1 }

// clusterLog collects the services' logs, shown when a test fails.
type clusterLog struct {
	mu   sync.Mutex
	b    strings.Builder
	once sync.Once
}

func (l *clusterLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *clusterLog) logger(t *testing.T, name string) *slog.Logger {
	l.once.Do(func() {
		t.Cleanup(func() {
			if t.Failed() || os.Getenv("HERALD_TEST_LOGS") != "" {
				l.mu.Lock()
				t.Logf("logs:\n%s", l.b.String())
				l.mu.Unlock()
			}
		})
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo})).With("who", name)
}

// clusterConnect connects to every node of c with three replicas.
func clusterConnect(ctx context.Context, c *natsserver.Cluster, name string, log *slog.Logger) (*natsjs.Broker, error) {
	return natsjs.Connect(ctx, c.URLs(), natsjs.WithReplicas(3), natsjs.WithName(name), natsjs.WithLogger(log),
		natsjs.WithReconnectWait(100*time.Millisecond))
}

func clusterStore(t *testing.T, name string, schema ...string) *store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), name+".db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, q := range schema {
		if _, err := st.DB().Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return st
}

// clusterAcks counts the events the broker acknowledged to the relay.
type clusterAcks struct {
	*natsjs.Broker
	acked atomic.Int64
}

func (b *clusterAcks) Publish(ctx context.Context, events []*envelope.Envelope) []error {
	errs := b.Broker.Publish(ctx, events)
	n := 0
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	b.acked.Add(int64(n))
	return errs
}

// clusterProducer is "orders" on st and b, its acknowledged publishes
// counted (the clusterAcks it returns): each clusterOrderPlaced it records
// becomes a clusterOrderConfirmed of its key. It is not started.
func clusterProducer(t *testing.T, st *store.Store, b *natsjs.Broker, log *slog.Logger) (*herald.Service, *clusterAcks) {
	t.Helper()
	counted := &clusterAcks{Broker: b}
	producer, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(counted), herald.WithLogger(log),
		herald.WithRelay(herald.RelayConfig{PollInterval: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	err = herald.Translate(producer, clusterOrderPlaced, clusterOrderConfirmed, func(_ context.Context, p clusterPlaced) (clusterEvent, error) {
		k, s := clusterKey(p.Index)
		return clusterEvent{Key: k, Seq: s, Index: p.Index}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return producer, counted
}

// clusterShippingStore is the store of "shipping", with its tables of
// effects, progress per key and order violations (see clusterShip).
func clusterShippingStore(t *testing.T) *store.Store {
	return clusterStore(t, "shipping",
		`CREATE TABLE effects (event_key TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL)`,
		`CREATE TABLE progress (event_key TEXT PRIMARY KEY, seq INTEGER NOT NULL)`,
		`CREATE TABLE violations (event_key TEXT NOT NULL, seq INTEGER NOT NULL, prev INTEGER NOT NULL)`)
}

// clusterShipping is "shipping" on st (clusterShippingStore) and b,
// subscribed to clusterOrderConfirmed: each event is an effect, and one
// whose sequence does not follow its key's last is a violation.
func clusterShipping(st *store.Store, b broker.Broker, log *slog.Logger) (*herald.Service, error) {
	consumer, err := herald.New("shipping", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(log))
	if err != nil {
		return nil, err
	}
	err = herald.Subscribe(consumer, clusterOrderConfirmed, "ship", func(ctx context.Context, tx herald.Tx, e clusterEvent) error {
		ev, _ := herald.EventFrom(ctx)
		q := tx.SQL()
		prev := 0
		if err := q.QueryRowContext(ctx, `SELECT seq FROM progress WHERE event_key = ?`, e.Key).Scan(&prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if e.Seq != prev+1 {
			if _, err := q.ExecContext(ctx, `INSERT INTO violations VALUES (?, ?, ?)`, e.Key, e.Seq, prev); err != nil {
				return err
			}
		}
		if _, err := q.ExecContext(ctx, `INSERT INTO progress VALUES (?, ?) ON CONFLICT (event_key) DO UPDATE SET seq = MAX(seq, excluded.seq)`, e.Key, e.Seq); err != nil {
			return err
		}
		_, err := q.ExecContext(ctx, `INSERT INTO effects VALUES (?, ?, ?)`, e.Key, e.Seq, ev.ID)
		return err
	}, herald.AckWait(time.Second))
	return consumer, err
}

// clusterOrders places orders 0, 1, ... on producer (clusterProducer),
// one per transaction about every 5ms, counting them in placed, until n
// are placed (n < 0: no limit) or stop closes.
func clusterOrders(ctx context.Context, producer *herald.Service, n int, stop <-chan struct{}, placed *atomic.Int64) error {
	for i := 0; n < 0 || i < n; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		err := producer.Do(ctx, func(tx herald.Tx) error {
			if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO placed VALUES (?)`, i); err != nil {
				return err
			}
			return herald.Record(tx, clusterOrderPlaced, clusterPlaced{Index: i})
		})
		if err != nil {
			return fmt.Errorf("order %d: %w", i, err)
		}
		placed.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// clusterStart starts svc; the test's cleanup closes it.
func clusterStart(t *testing.T, ctx context.Context, svc *herald.Service) {
	t.Helper()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
}

// clusterEffects counts shipping's effects.
func clusterEffects(st *store.Store) int64 {
	var n int64
	_ = st.DB().QueryRow(`SELECT COUNT(*) FROM effects`).Scan(&n)
	return n
}

// clusterCheckEffects checks from shipping's own tables that the first n
// events took effect exactly once each, in order per key.
func clusterCheckEffects(t *testing.T, st *store.Store, n int) {
	t.Helper()
	rows, err := st.DB().Query(`SELECT event_key, seq FROM effects`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]int{}
	total := 0
	for rows.Next() {
		var k string
		var s int
		if err := rows.Scan(&k, &s); err != nil {
			t.Fatal(err)
		}
		got[k] = append(got[k], s)
		total++
	}
	rows.Close()
	if total != n {
		t.Errorf("%d effects for %d events", total, n)
	}
	for i := range clusterKeys {
		k := fmt.Sprintf("k%02d", i)
		want := (n - i + clusterKeys - 1) / clusterKeys
		s := got[k]
		if len(s) != want || !slices.IsSorted(s) || (len(s) > 0 && (s[0] != 1 || s[len(s)-1] != want)) {
			t.Errorf("key %s: %d effects (want %d), sorted %v", k, len(s), want, slices.IsSorted(s))
		}
	}
	var v int
	if err := st.DB().QueryRow(`SELECT COUNT(*) FROM violations`).Scan(&v); err != nil || v > 0 {
		t.Errorf("%d events took effect out of their key's order (err %v)", v, err)
	}
}

// progress samples a counter every 20ms and remembers when it changed.
type progress struct {
	mu      sync.Mutex
	changes []time.Time
	last    int64
}

func (p *progress) run(ctx context.Context, count func() int64) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if n := count(); n != p.last {
				p.mu.Lock()
				p.last = n
				p.changes = append(p.changes, now)
				p.mu.Unlock()
			}
		}
	}
}

// longestStall returns the longest time without a change that overlaps
// [from, to], and when the counter first changed after at.
func (p *progress) longestStall(from, to, at time.Time) (stall time.Duration, resumed time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 1; i < len(p.changes); i++ {
		a, b := p.changes[i-1], p.changes[i]
		if b.After(from) && a.Before(to) && b.Sub(a) > stall {
			stall = b.Sub(a)
		}
	}
	for _, c := range p.changes {
		if c.After(at) {
			return stall, c
		}
	}
	return stall, time.Time{}
}

// TestClusterStreamLeaderKilledUnderLoad SIGKILLs the leader of the
// integration stream of a 3-node R3 cluster while a producer publishes
// and a consumer takes effect, restarts it later, and checks that the flow
// stalled only while the cluster elected a new leader, and that every
// event took effect exactly once, in order per key.
//
// Raft's election timeout in nats-server is fixed at 4 to 9 s after the
// leader's last heartbeat, so the stall cannot be shorter than the
// election; what herald controls is how soon the flow resumes after it.
// The test takes the elections' times from the cluster's advisories and
// wants acknowledged publishes (counted at the relay's broker) to resume
// within 5 s of the stream's election, and effects (counted in the
// consumer's table, every 20ms) within 5 s of the later of the stream's
// and the consumer's; the longest stalls are logged.
//
// The killed node leads both the stream and the consumer. The publisher is
// either on another node, so that its publishes in flight are lost without
// its connection noticing (this stalled 30 s, the publish timeout, before
// the broker followed the leader elections), or on the killed node itself,
// so that its connection drops and reconnects.
func TestClusterStreamLeaderKilledUnderLoad(t *testing.T) {
	t.Run("publisher-on-survivor", func(t *testing.T) { clusterLeaderKill(t, false) })
	t.Run("publisher-on-leader", func(t *testing.T) { clusterLeaderKill(t, true) })
}

func clusterLeaderKill(t *testing.T, publisherOnLeader bool) {
	c := natsserver.StartCluster(t, t.TempDir(), 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.WaitJetStream(ctx); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	logs := &clusterLog{}

	pst := clusterStore(t, "orders", `CREATE TABLE placed (idx INTEGER PRIMARY KEY)`)
	cst := clusterShippingStore(t)

	plog := logs.logger(t, "orders")
	pb, err := clusterConnect(ctx, c, "orders", plog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pb.Close() })
	producer, counted := clusterProducer(t, pst, pb, plog)

	clog := logs.logger(t, "shipping")
	cb, err := clusterConnect(ctx, c, "shipping", clog)
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
	clusterStart(t, ctx, producer)

	// The election, as the cluster announces it.
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	type election struct {
		at     time.Time
		leader string
	}
	var elMu sync.Mutex
	elections := map[string][]election{} // "stream", "consumer"
	durable := natsjs.ConsumerName("shipping", "ship")
	for what, subj := range map[string]string{
		"stream":   "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.HERALD_INT",
		"consumer": "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.HERALD_INT." + durable,
	} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			var adv struct {
				Leader string `json:"leader"`
			}
			_ = json.Unmarshal(m.Data, &adv)
			elMu.Lock()
			elections[what] = append(elections[what], election{time.Now(), adv.Leader})
			elMu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// electedAfter returns the first election of what after at.
	electedAfter := func(what string, at time.Time) (election, bool) {
		elMu.Lock()
		defer elMu.Unlock()
		for _, e := range elections[what] {
			if e.at.After(at) {
				return e, true
			}
		}
		return election{}, false
	}

	// Put the stream's leader where the publisher is, or elsewhere.
	pnode := c.Node(pb.ConnectedServer())
	leader, err := c.WaitStreamLeader(ctx, "HERALD_INT", nil)
	if err != nil || pnode == nil {
		t.Fatalf("stream leader %v (err %v), publisher on %q", leader, err, pb.ConnectedServer())
	}
	if publisherOnLeader && leader != pnode {
		err = c.MoveStreamLeader(ctx, "HERALD_INT", pnode)
		leader = pnode
	} else if !publisherOnLeader && leader == pnode {
		for _, s := range c.Nodes() {
			if s != pnode {
				leader = s
				break
			}
		}
		err = c.MoveStreamLeader(ctx, "HERALD_INT", leader)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The consumer's leader dies with the stream's.
	if err := c.MoveConsumerLeader(ctx, "HERALD_INT", durable, leader); err != nil {
		t.Fatal(err)
	}

	// Load: one order per transaction, about 200 a second, until stopped.
	var placed atomic.Int64
	stop := make(chan struct{})
	produced := make(chan error, 1)
	go func() { produced <- clusterOrders(ctx, producer, -1, stop, &placed) }()
	pctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var pubs, takes progress
	go pubs.run(pctx, counted.acked.Load)
	go takes.run(pctx, effects)

	status := func() string {
		return fmt.Sprintf("placed %d, acknowledged %d, effects %d", placed.Load(), counted.acked.Load(), effects())
	}
	wait := func(timeout time.Duration, what string, cond func() bool) {
		t.Helper()
		testwait.UntilReport(t, timeout, cond, func() string { return "waiting for " + what + ": " + status() })
	}
	wait(time.Minute, "the flow to start", func() bool { return effects() >= 300 })
	if l, err := c.StreamLeader(ctx, "HERALD_INT"); err != nil || l != leader {
		t.Fatalf("stream leader %v (err %v), want %s", l, err, leader.Name())
	}
	if l, err := c.ConsumerLeader(ctx, "HERALD_INT", durable); err != nil || l != leader {
		t.Fatalf("consumer leader %v (err %v), want %s", l, err, leader.Name())
	}
	if now := c.Node(pb.ConnectedServer()); now != pnode {
		t.Fatalf("publisher moved from %s to %v", pnode.Name(), now)
	}
	consumerOn := cb.ConnectedServer()
	killedAt := time.Now()
	leader.Kill()
	var el, cel election
	wait(time.Minute, "the stream and its consumer to elect new leaders", func() bool {
		var ok, cok bool
		el, ok = electedAfter("stream", killedAt)
		cel, cok = electedAfter("consumer", killedAt)
		return ok && cok
	})
	if el.leader == leader.Name() || cel.leader == leader.Name() {
		t.Fatalf("advisories name the killed node %s as the leader: %s, %s", leader.Name(), el.leader, cel.leader)
	}
	// Wait until both ends moved on since the election, and a while more.
	p0, e0 := counted.acked.Load(), effects()
	wait(time.Minute, "the flow to resume after the election", func() bool {
		return counted.acked.Load() > p0+100 && effects() > e0+100
	})
	time.Sleep(2 * time.Second)
	resumedAt := time.Now()
	leader.Restart()
	time.Sleep(2 * time.Second)
	close(stop)
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	n := placed.Load()
	wait(2*time.Minute, fmt.Sprintf("%d effects", n), func() bool { return effects() >= n })
	time.Sleep(500 * time.Millisecond) // room for a late duplicate
	stopSampling()

	// Publishing needs the stream's leader; taking effect needs the
	// consumer's too.
	both := el.at
	if cel.at.After(both) {
		both = cel.at
	}
	pubStall, pubBack := pubs.longestStall(killedAt.Add(-time.Second), resumedAt, el.at)
	takeStall, takeBack := takes.longestStall(killedAt.Add(-time.Second), resumedAt, both)
	t.Logf("publisher on %s, consumer on %s; killed %s, the leader of the stream and of the consumer", pnode.Name(), consumerOn, leader.Name())
	t.Logf("stream leader %s elected after %v, consumer leader %s after %v", el.leader, el.at.Sub(killedAt).Round(time.Millisecond),
		cel.leader, cel.at.Sub(killedAt).Round(time.Millisecond))
	t.Logf("longest stall of acknowledged publishes %v (resumed %v after the stream's election), of effects %v (resumed %v after the later election); %d events",
		pubStall.Round(time.Millisecond), pubBack.Sub(el.at).Round(time.Millisecond),
		takeStall.Round(time.Millisecond), takeBack.Sub(both).Round(time.Millisecond), n)
	if after := pubBack.Sub(el.at); pubBack.IsZero() || after > 5*time.Second {
		t.Errorf("acknowledged publishes resumed %v after the stream's election, want < 5s", after)
	}
	if after := takeBack.Sub(both); takeBack.IsZero() || after > 5*time.Second {
		t.Errorf("effects resumed %v after the elections, want < 5s", after)
	}
	if limit := el.at.Sub(killedAt) + 5*time.Second; pubStall > limit {
		t.Errorf("publishes stalled %v, want < the election's %v + 5s", pubStall, el.at.Sub(killedAt))
	}
	if limit := both.Sub(killedAt) + 5*time.Second; takeStall > limit {
		t.Errorf("effects stalled %v, want < the elections' %v + 5s", takeStall, both.Sub(killedAt))
	}

	clusterCheckEffects(t, cst, int(n))
}

// TestClusterFreshStart starts four services at once, each with its own
// connection and trace recorder, on a 3-node cluster that has just started
// and is still electing its leaders: every one starts, and an event flows
// from the first to the three others.
func TestClusterFreshStart(t *testing.T) {
	c := natsserver.StartCluster(t, t.TempDir(), 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logs := &clusterLog{}
	names := []string{"orders", "shipping", "billing", "reviews"}
	svcs := make([]*herald.Service, len(names))
	stores := make([]*store.Store, len(names))
	for i, name := range names {
		stores[i] = clusterStore(t, name, `CREATE TABLE got (idx INTEGER NOT NULL)`)
	}
	start := time.Now()
	errs := make([]error, len(names))
	took := make([]time.Duration, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			errs[i] = func() error {
				log := logs.logger(t, name)
				b, err := clusterConnect(ctx, c, name, log)
				if err != nil {
					return err
				}
				t.Cleanup(func() { b.Close() })
				rec, err := trace.NewRecorder(b, trace.Config{Source: name, Logger: log})
				if err != nil {
					return err
				}
				// As the shop does: no deadline of its own.
				if err := rec.Start(context.Background()); err != nil {
					return err
				}
				t.Cleanup(func() { rec.Close() })
				svc, err := herald.New(name, herald.WithStore(stores[i]), herald.WithBroker(b), herald.WithLogger(log),
					herald.WithObserver(rec))
				if err != nil {
					return err
				}
				if i == 0 {
					err = herald.Translate(svc, clusterOrderPlaced, clusterOrderConfirmed, func(_ context.Context, p clusterPlaced) (clusterEvent, error) {
						return clusterEvent{Key: "k", Seq: 1, Index: p.Index}, nil
					})
				} else {
					err = herald.Subscribe(svc, clusterOrderConfirmed, "fresh", func(ctx context.Context, tx herald.Tx, e clusterEvent) error {
						_, err := tx.SQL().ExecContext(ctx, `INSERT INTO got VALUES (?)`, e.Index)
						return err
					})
				}
				if err != nil {
					return err
				}
				if err := svc.Start(context.Background()); err != nil {
					return err
				}
				t.Cleanup(func() { svc.Close() })
				svcs[i] = svc
				took[i] = time.Since(start)
				return nil
			}()
		})
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			t.Errorf("%s: %v", names[i], err)
		}
	}
	t.Logf("%d of %d services started; start times %v", len(names)-failed, len(names), took)
	if failed > 0 {
		t.FailNow()
	}
	if err := svcs[0].Do(ctx, func(tx herald.Tx) error {
		return herald.Record(tx, clusterOrderPlaced, clusterPlaced{Index: 1})
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for i, name := range names[1:] {
		testwait.Until(t, time.Until(deadline), name+" to take the event", func() bool {
			var n int
			err := stores[i+1].DB().QueryRow(`SELECT COUNT(*) FROM got`).Scan(&n)
			return err == nil && n == 1
		})
	}
}
