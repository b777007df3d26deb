package herald_test

// Order per key across instances: one subscription run by 2 or 4 instances
// of a service — real processes of this test binary (TestInstanceRole)
// sharing one database — on a partitioned broker (natsjs.WithPartitions)
// that hands each partition to one instance at a time. Mid-run one instance
// is SIGKILLed and later a new one is started; on a 3-node cluster the
// leader node of one partition's stream is SIGKILLed and restarted too.
// Every guarantee is checked from the consumers' own tables: every event
// published took effect exactly once, and each key's events took effect in
// their order.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/childproc"
	"github.com/heraldhq/herald/internal/faultrig"
	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
)

// instanceRoleEnv carries the JSON instanceRole of a child process.
const instanceRoleEnv = "HERALD_INSTANCE_ROLE"

// instanceRole is what one instance of the shipping service runs.
type instanceRole struct {
	Name       string        `json:"name"` // written into each effect row
	URLs       []string      `json:"urls"`
	DB         string        `json:"db"` // SQLite file or PostgreSQL URL
	Partitions int           `json:"partitions"`
	Replicas   int           `json:"replicas"`
	PinnedTTL  time.Duration `json:"pinned_ttl"`
	Stop       string        `json:"stop"` // the instance closes when this file exists
}

// The instances' tables. effects has no unique constraint, so that a
// duplicate effect would show; at is when the handler ran (Unix ns), part
// the event's partition, inst the instance that committed it. progress is
// each key's last seq; violations each event that took effect out of its
// key's order.
var instanceSchema = []string{
	`CREATE TABLE IF NOT EXISTS effects (event_key TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL,
		part INTEGER NOT NULL, inst TEXT NOT NULL, at BIGINT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS progress (event_key TEXT PRIMARY KEY, seq INTEGER NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS violations (event_key TEXT NOT NULL, seq INTEGER NOT NULL, prev INTEGER NOT NULL, inst TEXT NOT NULL)`,
}

// TestInstanceRole is the body of the instances' child processes; it skips
// unless HERALD_INSTANCE_ROLE is set.
func TestInstanceRole(t *testing.T) {
	spec := os.Getenv(instanceRoleEnv)
	if spec == "" {
		t.Skip("only runs as a child process of TestOrderAcrossInstances")
	}
	var r instanceRole
	if err := json.Unmarshal([]byte(spec), &r); err != nil {
		t.Fatalf("%s: %v", instanceRoleEnv, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("who", r.Name)
	if err := runInstance(context.Background(), r, log); err != nil {
		t.Fatalf("instance %s: %v", r.Name, err)
	}
}

func runInstance(ctx context.Context, r instanceRole, log *slog.Logger) error {
	st, err := faultrig.OpenStore(ctx, r.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := instanceConnect(ctx, r.URLs, r.Name, r.Partitions, r.Replicas, r.PinnedTTL, log)
	if err != nil {
		return err
	}
	defer b.Close()
	svc, err := herald.New("shipping", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(log))
	if err != nil {
		return err
	}
	rebind := st.Rebind
	qProgress := rebind(`SELECT seq FROM progress WHERE event_key = ?`)
	qViolation := rebind(`INSERT INTO violations (event_key, seq, prev, inst) VALUES (?, ?, ?, ?)`)
	qUpsert := rebind(`INSERT INTO progress (event_key, seq) VALUES (?, ?)
		ON CONFLICT (event_key) DO UPDATE SET seq = CASE WHEN excluded.seq > progress.seq THEN excluded.seq ELSE progress.seq END`)
	qEffect := rebind(`INSERT INTO effects (event_key, seq, event_id, part, inst, at) VALUES (?, ?, ?, ?, ?, ?)`)
	err = herald.Subscribe(svc, clusterOrderConfirmed, "ship", func(ctx context.Context, tx herald.Tx, e clusterEvent) error {
		ev, _ := herald.EventFrom(ctx)
		q := tx.SQL()
		prev := 0
		if err := q.QueryRowContext(ctx, qProgress, e.Key).Scan(&prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if e.Seq != prev+1 {
			if _, err := q.ExecContext(ctx, qViolation, e.Key, e.Seq, prev, r.Name); err != nil {
				return err
			}
		}
		if _, err := q.ExecContext(ctx, qUpsert, e.Key, e.Seq); err != nil {
			return err
		}
		_, err := q.ExecContext(ctx, qEffect, e.Key, e.Seq, ev.ID, natsjs.PartitionOf(e.Key, r.Partitions), r.Name, time.Now().UnixNano())
		return err
	})
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	fmt.Println("instance: consuming")
	// The test SIGKILLs this process or creates the stop file; the child's
	// -test.timeout bounds the wait.
	if err := testwait.For(10*time.Minute, "the stop file", func() bool {
		_, err := os.Stat(r.Stop)
		return err == nil
	}); err != nil {
		return err
	}
	fmt.Println("instance: stop file found, closing")
	return svc.Close()
}

// instanceConnect connects to the servers at urls with n partitions (and r
// replicas on a cluster), reconnecting fast.
func instanceConnect(ctx context.Context, urls []string, name string, n, r int, ttl time.Duration, log *slog.Logger) (*natsjs.Broker, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	opts := []natsjs.Option{natsjs.WithName(name), natsjs.WithLogger(log), natsjs.WithReconnectWait(100 * time.Millisecond),
		natsjs.WithPartitions(n), natsjs.WithPublishTimeout(faultrig.PublishTimeout)}
	if r > 1 {
		opts = append(opts, natsjs.WithReplicas(r))
	}
	if ttl > 0 {
		opts = append(opts, natsjs.WithPinnedTTL(ttl))
	}
	return natsjs.Connect(ctx, urls, opts...)
}

// instanceProc is one instance: a child process of this test binary.
type instanceProc struct {
	*childproc.Proc
	stop string // its stop file
}

func startInstance(t *testing.T, dir string, role instanceRole) *instanceProc {
	t.Helper()
	role.Stop = filepath.Join(dir, role.Name+".stop")
	spec, err := json.Marshal(role)
	if err != nil {
		t.Fatal(err)
	}
	return &instanceProc{Proc: childproc.Start(t, dir, role.Name, "TestInstanceRole", instanceRoleEnv+"="+string(spec)), stop: role.Stop}
}

// waitConsuming waits until the instance has started its service.
func (p *instanceProc) waitConsuming(t *testing.T) {
	t.Helper()
	testwait.UntilReport(t, time.Minute, func() bool {
		return p.Exited() || strings.Contains(p.Output(), "instance: consuming")
	}, func() string { return p.Name() + " to start:\n" + faultrig.Tail(p.Output(), 30) })
	if p.Exited() {
		t.Fatalf("%s exited at start: %v\n%s", p.Name(), p.Err(), faultrig.Tail(p.Output(), 30))
	}
}

// close asks the instance to stop and waits for it.
func (p *instanceProc) close(t *testing.T) {
	t.Helper()
	if p.Exited() {
		return
	}
	if err := os.WriteFile(p.stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(30 * time.Second); err != nil {
		t.Errorf("%s: %v\n%s", p.Name(), err, faultrig.Tail(p.Output(), 30))
	}
}

// instanceEffect is one row of effects.
type instanceEffect struct {
	key, id, inst string
	seq, part     int
	at            time.Time
}

func loadEffects(t *testing.T, st *store.Store) []instanceEffect {
	t.Helper()
	rows, err := st.DB().Query(`SELECT event_key, seq, event_id, part, inst, at FROM effects`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []instanceEffect
	for rows.Next() {
		var e instanceEffect
		var at int64
		if err := rows.Scan(&e.key, &e.seq, &e.id, &e.part, &e.inst, &at); err != nil {
			t.Fatal(err)
		}
		e.at = time.Unix(0, at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// holders returns, per partition, the instance that committed its latest
// effect before at.
func holders(effects []instanceEffect, at time.Time) map[int]string {
	h := map[int]string{}
	for _, e := range effects {
		if e.at.Before(at) {
			h[e.part] = e.inst
		}
	}
	return h
}

// takeovers returns, for each partition held by inst before at, how long
// after at another instance committed its first effect (-1: none did).
func takeovers(effects []instanceEffect, inst string, at time.Time) map[int]time.Duration {
	out := map[int]time.Duration{}
	for p, h := range holders(effects, at) {
		if h != inst {
			continue
		}
		out[p] = -1
		for _, e := range effects {
			if e.part == p && e.inst != inst && e.at.After(at) {
				out[p] = e.at.Sub(at)
				break
			}
		}
	}
	return out
}

// takenOver reports whether each of parts has an effect committed by an
// instance other than inst after at.
func takenOver(st *store.Store, inst string, at time.Time, parts []int) bool {
	rows, err := st.DB().Query(st.Rebind(`SELECT DISTINCT part FROM effects WHERE inst <> ? AND at > ?`), inst, at.UnixNano())
	if err != nil {
		return false
	}
	defer rows.Close()
	got := map[int]bool{}
	for rows.Next() {
		var p int
		if rows.Scan(&p) == nil {
			got[p] = true
		}
	}
	for _, p := range parts {
		if !got[p] {
			return false
		}
	}
	return true
}

// partitionGap returns the longest time between two effects of one
// partition that ended in (after, until], and the partition.
func partitionGap(effects []instanceEffect, after, until time.Time) (time.Duration, int) {
	last := map[int]time.Time{}
	var gap time.Duration
	part := -1
	for _, e := range effects {
		if l, ok := last[e.part]; ok && e.at.After(after) && !e.at.After(until) && e.at.Sub(l) > gap {
			gap, part = e.at.Sub(l), e.part
		}
		last[e.part] = e.at
	}
	return gap, part
}

// stallEnding returns the longest time without a change that ended in
// (after, until] — the stall a fault at after caused, up to the next fault
// — and the first change after after.
func (p *progress) stallEnding(after, until time.Time) (stall time.Duration, resumed time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 1; i < len(p.changes); i++ {
		a, b := p.changes[i-1], p.changes[i]
		if b.After(after) && !b.After(until) && b.Sub(a) > stall {
			stall = b.Sub(a)
		}
		if b.After(after) && resumed.IsZero() {
			resumed = b
		}
	}
	return stall, resumed
}

// instanceVariant is one scenario of TestOrderAcrossInstances.
type instanceVariant struct {
	name       string
	cluster    bool // a 3-node cluster, R3; else one server
	instances  int  // at the start
	partitions int
	leaderKill bool // SIGKILL the leader node of one partition's stream, restart it
}

// leaderKillBounded says whether the stall after a stream leader's SIGKILL
// is held to maxInstanceStall. The relay publishes each partition on its
// own (internal/relay, parts.go), so the stream's election (4-10 s) stalls
// only its partition's publishes (the test moves the other streams' leaders
// off the node first; a node leading all four stalled everything 4.1 s),
// and the partition whose consumer's leader dies with the node (the test
// sees to it) resumes once the new leader pins a pull. It used to wait out
// the ack wait (~10 s) when the new leader pinned the pull herald then
// replaced; since, the stall was 0.5-1.6 s over 5 runs.
const leaderKillBounded = true

// maxInstanceStall bounds the time without progress in the effects table
// after an instance is SIGKILLed or added: the pinned TTL (2s) plus a pull
// and a reset, with room for a busy machine.
const maxInstanceStall = 5 * time.Second

const instanceEvents = 3000 // over clusterKeys keys

// TestOrderAcrossInstances runs the shipping service as several processes
// sharing one database on a partitioned broker (one server, or a 3-node
// cluster with three replicas), while an in-process producer publishes
// instanceEvents events over 20 keys at a steady rate (one every 5ms),
// each with its sequence number in its key. Once a fifth of the events is
// placed, the instance holding the most partitions is SIGKILLed; once two
// fifths are, and the killed instance's partitions moved, a new instance
// starts; on the cluster, at three fifths, the leader node of one
// partition's stream is SIGKILLed and restarted once the flow resumed.
// From the instances' tables: every event took effect exactly once, no
// key's events out of order. After each fault the longest time without
// progress in the effects table (sampled every 20ms) and the longest gap
// between two effects of one partition are logged, with how long each of
// the killed instance's partitions took to move; after an instance kill or
// addition each must stay under maxInstanceStall.
//
// The consumers' database is one SQLite file, or PostgreSQL when
// HERALD_TEST_POSTGRES_URL is set.
func TestOrderAcrossInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: instance processes and clusters take a while")
	}
	for _, v := range []instanceVariant{
		{name: "server/2-instances/4-partitions", instances: 2, partitions: 4},
		{name: "server/4-instances/4-partitions", instances: 4, partitions: 4},
		{name: "server/2-instances/1-partition", instances: 2, partitions: 1},
		{name: "cluster/2-instances/4-partitions", cluster: true, instances: 2, partitions: 4, leaderKill: true},
		{name: "cluster/4-instances/4-partitions", cluster: true, instances: 4, partitions: 4},
	} {
		t.Run(v.name, func(t *testing.T) { orderAcrossInstances(t, v) })
	}
}

func orderAcrossInstances(t *testing.T, v instanceVariant) {
	began := time.Now()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var urls []string
	var cluster *natsserver.Cluster
	var server *natsserver.Server
	replicas := 1
	if v.cluster {
		cluster = natsserver.StartCluster(t, filepath.Join(dir, "nats"), 3)
		if err := cluster.WaitJetStream(ctx); err != nil {
			t.Fatalf("cluster: %v", err)
		}
		urls, replicas = cluster.URLs(), 3
	} else {
		server = natsserver.Start(t, filepath.Join(dir, "nats"), 0)
		urls = []string{server.URL()}
	}
	logs := &clusterLog{}
	procs := []*instanceProc{}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				t.Logf("---- %s ----\n%s", p.Name(), faultrig.Tail(p.Output(), 40))
			}
			if server != nil {
				t.Logf("---- nats-server ----\n%s", faultrig.Tail(server.Log(), 30))
			}
		}
	})

	// The instances' one database.
	cdsn := filepath.Join(dir, "shipping.db")
	if testdb.PostgresEnabled() {
		cdsn = testdb.PostgresURL(t)
	}
	cst, err := faultrig.OpenStore(ctx, cdsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cst.Close() })
	for _, q := range instanceSchema {
		if _, err := cst.DB().ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	effects := func() int64 { return clusterEffects(cst) }

	// The producer, in this process.
	pst := clusterStore(t, "orders", `CREATE TABLE placed (idx INTEGER PRIMARY KEY)`)
	plog := logs.logger(t, "orders")
	pb, err := instanceConnect(ctx, urls, "orders", v.partitions, replicas, 0, plog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pb.Close() })
	producer, counted := clusterProducer(t, pst, pb, plog)
	clusterStart(t, ctx, producer)

	role := func(i int) instanceRole {
		return instanceRole{Name: fmt.Sprintf("i%d", i), URLs: urls, DB: cdsn, Partitions: v.partitions, Replicas: replicas,
			PinnedTTL: 2 * time.Second}
	}
	for i := range v.instances {
		procs = append(procs, startInstance(t, dir, role(i+1)))
	}
	for _, p := range procs {
		p.waitConsuming(t)
	}

	// Load: one order per transaction, every 5ms, until instanceEvents.
	var placed atomic.Int64
	produced := make(chan error, 1)
	go func() {
		produced <- func() error {
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for i := range instanceEvents {
				if err := producer.Do(ctx, func(tx herald.Tx) error {
					if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO placed VALUES (?)`, i); err != nil {
						return err
					}
					return herald.Record(tx, clusterOrderPlaced, clusterPlaced{Index: i})
				}); err != nil {
					return fmt.Errorf("order %d: %w", i, err)
				}
				placed.Add(1)
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-tick.C:
				}
			}
			return nil
		}()
	}()
	pctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var takes progress
	sampled := make(chan struct{})
	go func() { defer close(sampled); takes.run(pctx, effects) }()

	status := func() string {
		return fmt.Sprintf("placed %d, acknowledged %d, effects %d", placed.Load(), counted.acked.Load(), effects())
	}
	wait := func(timeout time.Duration, what string, cond func() bool) {
		t.Helper()
		testwait.UntilReport(t, timeout, cond, func() string { return "waiting for " + what + ": " + status() })
	}
	type fault struct {
		what string
		at   time.Time
		// The longest stall of the effects table after it, and (gaps)
		// the longest gap of any one partition, must stay under
		// maxInstanceStall.
		bounded, gaps bool
		victim        string // a killed instance
	}
	var faults []fault

	// Each fault comes once the producer has placed its share of the
	// events and the flow has recovered from the previous one, so that a
	// stall belongs to the fault it follows.
	placedAtLeast := func(frac int) func() bool {
		return func() bool { return placed.Load() >= int64(frac*instanceEvents/5) }
	}

	// SIGKILL the instance holding the most partitions.
	wait(time.Minute, "a fifth of the events placed", placedAtLeast(1))
	wait(time.Minute, "effects to follow", func() bool { return effects() >= instanceEvents/10 })
	held := map[string]int{}
	heldBy := holders(loadEffects(t, cst), time.Now())
	for _, inst := range heldBy {
		held[inst]++
	}
	victim := procs[0]
	for _, p := range procs {
		if held[p.Name()] > held[victim.Name()] {
			victim = p
		}
	}
	victim.Kill()
	killedAt := time.Now()
	faults = append(faults, fault{what: "SIGKILL instance " + victim.Name(), at: killedAt, bounded: true, gaps: true, victim: victim.Name()})
	t.Logf("%s: killed %s, which held %d of %d partitions (holders %v)", v.name, victim.Name(), held[victim.Name()], v.partitions, heldBy)
	var victimParts []int
	for p, inst := range heldBy {
		if inst == victim.Name() {
			victimParts = append(victimParts, p)
		}
	}
	e0 := effects()
	wait(time.Minute, "the killed instance's partitions to be taken over", func() bool {
		return takenOver(cst, victim.Name(), killedAt, victimParts) && effects() >= e0+instanceEvents/10
	})

	// A new instance joins.
	wait(time.Minute, "two fifths of the events placed", placedAtLeast(2))
	added := startInstance(t, dir, role(len(procs)+1))
	procs = append(procs, added)
	added.waitConsuming(t)
	faults = append(faults, fault{what: "started instance " + added.Name(), at: time.Now(), bounded: true, gaps: true})

	if v.leaderKill {
		e0 := effects()
		wait(time.Minute, "three fifths of the events placed", func() bool {
			return placedAtLeast(3)() && effects() >= e0+instanceEvents/10
		})
		p := v.partitions - 1
		stream := "HERALD_INT"
		if v.partitions > 1 {
			stream = fmt.Sprintf("HERALD_INT_%d", p)
		}
		leader, err := cluster.StreamLeader(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		// The node leads p's consumer too: its new leader's first pin
		// must reach the instance that pulls p, not wait out an ack wait.
		// It leads no other partition's stream: their elections would
		// stall every partition at once, which is not what this measures.
		durable := natsjs.ConsumerName("shipping", "ship")
		if v.partitions > 1 {
			durable = fmt.Sprintf("%s_p%d", durable, p)
		}
		if err := cluster.MoveConsumerLeader(ctx, stream, durable, leader); err != nil {
			t.Fatal(err)
		}
		var other *natsserver.Server
		for _, n := range cluster.Nodes() {
			if n != leader {
				other = n
			}
		}
		for q := range v.partitions - 1 {
			qs := fmt.Sprintf("HERALD_INT_%d", q)
			if l, err := cluster.StreamLeader(ctx, qs); err == nil && l == leader {
				if err := cluster.MoveStreamLeader(ctx, qs, other); err != nil {
					t.Fatal(err)
				}
			}
		}
		// What else the node leads goes down with it: other partitions'
		// consumers.
		var streams, consumers []string
		name := func(n *natsserver.Server, err error) string {
			if err != nil {
				return "?"
			}
			if n == leader {
				return "killed"
			}
			return n.Name()
		}
		for q := range v.partitions {
			qs, durable := stream, natsjs.ConsumerName("shipping", "ship")
			if v.partitions > 1 {
				qs, durable = fmt.Sprintf("HERALD_INT_%d", q), fmt.Sprintf("%s_p%d", durable, q)
			}
			streams = append(streams, fmt.Sprintf("p%d %s", q, name(cluster.StreamLeader(ctx, qs))))
			consumers = append(consumers, fmt.Sprintf("p%d %s", q, name(cluster.ConsumerLeader(ctx, qs, durable))))
		}
		t.Logf("%s: killing %s; stream leaders %s; consumer leaders %s", v.name, leader.Name(),
			strings.Join(streams, ", "), strings.Join(consumers, ", "))
		leader.Kill()
		killed := time.Now()
		faults = append(faults, fault{what: fmt.Sprintf("SIGKILL %s, leader of %s", leader.Name(), stream), at: killed,
			bounded: leaderKillBounded})
		next, err := cluster.WaitStreamLeader(ctx, stream, leader)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s elected %s %v after the kill", v.name, stream, next.Name(), time.Since(killed).Round(time.Millisecond))
		e1 := effects()
		wait(time.Minute, "the flow to resume after the election", func() bool {
			return effects() > e1+100 || effects() >= instanceEvents // (or the backlog drained already)
		})
		leader.Restart()
		t.Logf("%s: %s restarted %v after the kill", v.name, leader.Name(), time.Since(killed).Round(time.Millisecond))
	}

	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	wait(time.Minute, fmt.Sprintf("%d effects", instanceEvents), func() bool { return effects() >= instanceEvents })
	time.Sleep(500 * time.Millisecond) // room for a late duplicate
	stopSampling()
	<-sampled
	for _, p := range procs {
		if p != victim {
			p.close(t)
		}
	}

	// The stalls, per fault.
	all := loadEffects(t, cst)
	for i, f := range faults {
		to := time.Now()
		if i+1 < len(faults) {
			to = faults[i+1].at
		}
		stall, resumed := takes.stallEnding(f.at, to)
		after := time.Duration(-1)
		if !resumed.IsZero() {
			after = resumed.Sub(f.at)
		}
		gap, gapPart := partitionGap(all, f.at, to)
		msg := fmt.Sprintf("%s: %s: longest stall of effects %v (first effect %v after), longest gap of one partition %v (partition %d)",
			v.name, f.what, stall.Round(time.Millisecond), after.Round(time.Millisecond), gap.Round(time.Millisecond), gapPart)
		if f.victim != "" {
			tk := takeovers(all, f.victim, f.at)
			var s []string
			for _, p := range slices.Sorted(maps.Keys(tk)) {
				s = append(s, fmt.Sprintf("p%d %v", p, tk[p].Round(time.Millisecond)))
				if tk[p] < 0 || tk[p] > maxInstanceStall {
					t.Errorf("%s: partition %d of the killed %s taken over after %v, want < %v", v.name, p, f.victim,
						tk[p].Round(time.Millisecond), maxInstanceStall)
				}
			}
			msg += "; takeover " + strings.Join(s, ", ")
		}
		t.Log(msg)
		if f.bounded && stall > maxInstanceStall || f.gaps && gap > maxInstanceStall {
			t.Errorf("%s: after %s effects stalled %v, partition %d %v, want < %v", v.name, f.what,
				stall.Round(time.Millisecond), gapPart, gap.Round(time.Millisecond), maxInstanceStall)
		}
	}

	// Exactly once, in order per key, from the instances' own tables.
	byID := map[string]int{}
	perKey := map[string][]int{}
	byInst := map[string]int{}
	for _, e := range all {
		byID[e.id]++
		perKey[e.key] = append(perKey[e.key], e.seq)
		byInst[e.inst]++
	}
	dups := 0
	for _, n := range byID {
		dups += n - 1
	}
	if len(all) != instanceEvents || len(byID) != instanceEvents || dups != 0 {
		t.Errorf("%s: %d effects of %d distinct events for %d published, %d duplicate effects", v.name, len(all), len(byID), instanceEvents, dups)
	}
	for i := range clusterKeys {
		k := fmt.Sprintf("k%02d", i)
		want := (instanceEvents - i + clusterKeys - 1) / clusterKeys
		s := perKey[k]
		if len(s) != want || !slices.IsSorted(s) || (len(s) > 0 && (s[0] != 1 || s[len(s)-1] != want)) {
			t.Errorf("%s: key %s: %d effects (want %d), in order %v", v.name, k, len(s), want, slices.IsSorted(s))
		}
	}
	var violations int
	if err := cst.DB().QueryRow(`SELECT COUNT(*) FROM violations`).Scan(&violations); err != nil || violations > 0 {
		t.Errorf("%s: %d events took effect out of their key's order (err %v)", v.name, violations, err)
	}
	t.Logf("%s: %d events, %d acknowledged publishes, effects per instance %v, %d duplicates, %d out of order; %v",
		v.name, instanceEvents, counted.acked.Load(), byInst, dups, violations, time.Since(began).Round(time.Millisecond))
}
