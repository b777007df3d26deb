package benchrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/store"
)

// The servers of herald bench scale.
const (
	ServerEmbedded = "embedded" // herald's in-process nats-server, one node
	ServerCluster  = "cluster"  // real nats-server processes on loopback
)

// ScaleConfig sizes herald bench scale: every combination of Partitions and
// Instances on every server of Servers, one cell at a time.
type ScaleConfig struct {
	Partitions []int    // default 1, 2, 4, 8
	Instances  []int    // consumer instances; default 1, 2, 4
	Servers    []string // ServerEmbedded, ServerCluster; default both
	// Nodes and Replicas shape the cluster (default 3 and 3).
	Nodes, Replicas int
	// ClusterSync is the cluster's JetStream sync_interval: "always" (the
	// default: what herald assumes of an external server, which it does not
	// refill) or a duration ("2m" is the server's own default).
	ClusterSync string
	// ServerBin is the nats-server binary of the cluster
	// (natsserver.Binary); required with ServerCluster.
	ServerBin string
	// Events is how many events wait in the producer's outbox in each cell,
	// and Duration the longest a cell measures: a cell ends when its
	// consumers handled every event or Duration passed (default 20,000
	// events, 20s).
	Events   int
	Duration time.Duration
	// Settle is how long two or more consumer instances run before the
	// relay starts, so that they share the partitions out first (default
	// 3s; the balancing moves a partition every 3-5 s, so a fully even
	// share of 8 partitions can take longer: the table shows the busiest
	// instance's share).
	Settle time.Duration
	// PostgresURL, when set, puts the services' stores on PostgreSQL
	// instead of SQLite.
	PostgresURL string
	// Dir holds the stores and the servers' files; a temporary directory
	// when empty.
	Dir string
	// Progress receives a progress bar per cell; nil for none.
	Progress io.Writer
	// Logger receives herald's logs; discarded when nil.
	Logger *slog.Logger
}

// DefaultScaleConfig is what herald bench scale runs: 24 cells, about three
// minutes on a 2-core machine.
func DefaultScaleConfig() ScaleConfig {
	return ScaleConfig{
		Partitions: []int{1, 2, 4, 8}, Instances: []int{1, 2, 4}, Servers: []string{ServerEmbedded, ServerCluster},
		Nodes: 3, Replicas: 3, ClusterSync: "always", Events: 20000, Duration: 20 * time.Second, Settle: 3 * time.Second,
	}
}

func (c ScaleConfig) withDefaults() ScaleConfig {
	d := DefaultScaleConfig()
	if len(c.Partitions) == 0 {
		c.Partitions = d.Partitions
	}
	if len(c.Instances) == 0 {
		c.Instances = d.Instances
	}
	if len(c.Servers) == 0 {
		c.Servers = d.Servers
	}
	if c.Nodes <= 0 {
		c.Nodes = d.Nodes
	}
	if c.Replicas <= 0 {
		c.Replicas = d.Replicas
	}
	if c.ClusterSync == "" {
		c.ClusterSync = d.ClusterSync
	}
	if c.Events <= 0 {
		c.Events = d.Events
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.Settle < 0 {
		c.Settle = 0
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ScaleResult is one cell of herald bench scale.
type ScaleResult struct {
	Server     string `json:"server"` // ServerEmbedded or ServerCluster
	Nodes      int    `json:"nodes"`
	Replicas   int    `json:"replicas"`
	Partitions int    `json:"partitions"`
	Instances  int    `json:"instances"`
	// Events were handled (each counted once) in Seconds, of Offered in the
	// outbox.
	Events       int     `json:"events"`
	Offered      int     `json:"offered"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	// PerPartition is EventsPerSec / Partitions.
	PerPartition float64 `json:"events_per_sec_per_partition"`
	// CPUPerEvent is the CPU microseconds (user + system) of this process
	// and of the cluster's nodes per handled event.
	CPUPerEvent float64 `json:"cpu_us_per_event"`
	// ServerCPUPerEvent is the part of CPUPerEvent the cluster's nodes
	// spent, all replicas together (0 on the embedded server, which runs in
	// this process).
	ServerCPUPerEvent float64 `json:"server_cpu_us_per_event,omitempty"`
	// Ratio is EventsPerSec over the same server's 1×1 cell of this run (0
	// when the run has none).
	Ratio float64 `json:"ratio_to_1x1"`
	// Duplicates are events handled again after their first time (a
	// rolled-back batch, a redelivery); OutOfOrder are first handlings of
	// an event after a later event of its key.
	Duplicates int `json:"duplicates"`
	OutOfOrder int `json:"out_of_order"`
	// PerInstance is how many events each instance handled first: how the
	// partitions were shared out.
	PerInstance []int  `json:"handled_per_instance"`
	Note        string `json:"note,omitempty"`
}

// Label names the cell: "embedded p4×i2".
func (r ScaleResult) Label() string {
	return fmt.Sprintf("%s p%d×i%d", r.Server, r.Partitions, r.Instances)
}

// RunScale measures the integration tier — the producer's outbox, its relay,
// JetStream, the consumer instances' subscription with its inbox — for each
// server, partition count and instance count, and passes each cell's
// result to each as soon as it is known.
//
// The instances are herald.Service values of one consumer service in this
// process, sharing its store (as instances in separate processes share
// their database), each with its own connection to the server (as a
// process would have), so that the server pins each partition to one of
// them. One process keeps the CPU accounting whole (getrusage covers every
// instance and the embedded server; the cluster's nodes are read from
// /proc) and the instances compete for the same two cores as processes
// would.
func RunScale(ctx context.Context, cfg ScaleConfig, each func(ScaleResult)) ([]ScaleResult, error) {
	cfg = cfg.withDefaults()
	dir, cleanup, err := runDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &runner{cfg: Config{PostgresURL: cfg.PostgresURL, Progress: cfg.Progress, Logger: cfg.Logger}, dir: dir}
	var results []ScaleResult
	add := func(res ScaleResult) {
		for _, b := range results {
			if b.Server == res.Server && b.Partitions == 1 && b.Instances == 1 && b.EventsPerSec > 0 {
				res.Ratio = res.EventsPerSec / b.EventsPerSec
			}
		}
		if res.Partitions == 1 && res.Instances == 1 {
			res.Ratio = 1
		}
		results = append(results, res)
		if each != nil {
			each(res)
		}
	}
	for _, server := range cfg.Servers {
		var err error
		switch server {
		case ServerEmbedded:
			err = r.scaleEmbedded(ctx, cfg, add)
		case ServerCluster:
			err = r.scaleCluster(ctx, cfg, add)
		default:
			err = fmt.Errorf("unknown server %q (want %s or %s)", server, ServerEmbedded, ServerCluster)
		}
		if err != nil {
			return results, fmt.Errorf("bench scale %s: %w", server, err)
		}
	}
	return results, nil
}

// cells runs fn for every partition and instance count, 1×1 first so that
// the ratios have their baseline.
func (c ScaleConfig) cells(fn func(partitions, instances int) error) error {
	type cell struct{ p, i int }
	var todo []cell
	for _, p := range c.Partitions {
		for _, i := range c.Instances {
			if p == 1 && i == 1 {
				todo = append([]cell{{p, i}}, todo...)
			} else {
				todo = append(todo, cell{p, i})
			}
		}
	}
	for _, x := range todo {
		if err := fn(x.p, x.i); err != nil {
			return fmt.Errorf("%d partitions × %d instances: %w", x.p, x.i, err)
		}
	}
	return nil
}

// scaleEmbedded runs each cell on a fresh embedded server (herald's
// default: fsync every second) listening on loopback for the instances'
// connections.
func (r *runner) scaleEmbedded(ctx context.Context, cfg ScaleConfig, add func(ScaleResult)) error {
	return cfg.cells(func(p, i int) error {
		dir, err := r.subdir(fmt.Sprintf("embedded-p%d-i%d", p, i))
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		br, err := natsjs.Embedded(ctx, natsjs.WithLogger(cfg.Logger), natsjs.WithDataDir(filepath.Join(dir, "nats")),
			natsjs.WithListen("127.0.0.1:0"), natsjs.WithPartitions(p))
		if err != nil {
			return fmt.Errorf("embedded nats-server: %w", err)
		}
		defer br.Close()
		res, err := r.scaleCell(ctx, cfg, scaleCell{
			server: ServerEmbedded, nodes: 1, replicas: 1, partitions: p, instances: i, dir: dir,
			producer: br, urls: []string{br.URL()},
		})
		if err != nil {
			return err
		}
		res.Note = "in-process server (1s fsync)"
		add(res)
		return nil
	})
}

// scaleCluster starts one cluster of cfg.Nodes nats-server processes for
// all its cells; each cell has its own stream prefix and deletes its
// streams afterwards.
func (r *runner) scaleCluster(ctx context.Context, cfg ScaleConfig, add func(ScaleResult)) error {
	if cfg.ServerBin == "" {
		return errors.New("no nats-server binary for the cluster")
	}
	dir, err := r.subdir("cluster")
	if err != nil {
		return err
	}
	c, err := natsserver.LaunchCluster(cfg.ServerBin, dir, natsserver.ClusterConfig{Nodes: cfg.Nodes, SyncInterval: cfg.ClusterSync})
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = c.WaitJetStream(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("the cluster elected no JetStream meta leader: %w", err)
	}
	js, err := c.JetStream()
	if err != nil {
		return err
	}
	return cfg.cells(func(p, i int) error {
		prefix := fmt.Sprintf("scale_p%d_i%d", p, i)
		opts := []natsjs.Option{natsjs.WithLogger(cfg.Logger), natsjs.WithPrefix(prefix), natsjs.WithPartitions(p),
			natsjs.WithReplicas(cfg.Replicas), natsjs.WithName("herald-bench-scale-producer")}
		br, err := natsjs.Connect(ctx, c.URLs(), opts...)
		if err != nil {
			return err
		}
		defer br.Close()
		defer func() { // the cell's streams and buckets, so that idle Raft groups do not load the next cells
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			up := strings.ToUpper(prefix) + "_"
			for name := range js.StreamNames(dctx).Name() {
				if strings.HasPrefix(name, up) || strings.HasPrefix(name, "KV_"+up) {
					_ = js.DeleteStream(dctx, name)
				}
			}
		}()
		cellDir, err := r.subdir(prefix)
		if err != nil {
			return err
		}
		defer os.RemoveAll(cellDir)
		res, err := r.scaleCell(ctx, cfg, scaleCell{
			server: ServerCluster, nodes: cfg.Nodes, replicas: cfg.Replicas, partitions: p, instances: i, dir: cellDir,
			producer: br, urls: c.URLs(), prefix: prefix, nodesCPU: func() time.Duration {
				var sum time.Duration
				for _, n := range c.Nodes() {
					if d, err := n.CPUTime(); err == nil {
						sum += d
					}
				}
				return sum
			},
		})
		if err != nil {
			return err
		}
		res.Note = fmt.Sprintf("%d nats-server processes, R%d, sync_interval %s", cfg.Nodes, cfg.Replicas, cfg.ClusterSync)
		add(res)
		return nil
	})
}

// scaleCell is one cell's set-up.
type scaleCell struct {
	server                                 string
	nodes, replicas, partitions, instances int
	dir                                    string         // the cell's files (stores, embedded server), removed after it
	producer                               *natsjs.Broker // the producer's connection (in-process on the embedded server)
	urls                                   []string       // for the consumer instances' connections
	prefix                                 string         // stream prefix ("" for the default)
	nodesCPU                               func() time.Duration
}

// keyOrder counts what the consumer instances handled: each event once,
// duplicates, and events handled after a later event of their key.
type keyOrder struct {
	mu         sync.Mutex
	seen       map[int]bool
	last       map[string]int
	dups, ooo  int
	per        []int // first handlings per instance
	target     int
	done       chan struct{}
	bar        *Bar
	closedDone bool
}

func (k *keyOrder) handle(instance int, e Event) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen[e.Seq] {
		k.dups++
		return
	}
	k.seen[e.Seq] = true
	k.per[instance]++
	if last, ok := k.last[e.Key]; ok && last > e.Seq {
		k.ooo++
	} else {
		k.last[e.Key] = e.Seq
	}
	k.bar.Add(1)
	if len(k.seen) == k.target && !k.closedDone {
		k.closedDone = true
		close(k.done)
	}
}

func (k *keyOrder) counts() (handled, dups, ooo int, per []int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.seen), k.dups, k.ooo, slices.Clone(k.per)
}

// scaleCell measures one cell: cfg.Events integration events waiting in
// the producer's outbox (written before the clock starts), the consumer's
// instances started and given cfg.Settle to share the partitions, then the
// relay started with the clock; the clock stops at the last event's first
// handling, or after cfg.Duration.
func (r *runner) scaleCell(ctx context.Context, cfg ScaleConfig, c scaleCell) (ScaleResult, error) {
	res := ScaleResult{Server: c.server, Nodes: c.nodes, Replicas: c.replicas, Partitions: c.partitions, Instances: c.instances, Offered: cfg.Events}
	dialect := SQLite
	if cfg.PostgresURL != "" {
		dialect = Postgres
	}
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	inCell := &runner{cfg: r.cfg, dir: c.dir} // the stores go with the cell's directory
	open := func(name string) (*store.Store, error) {
		st, closeStore, err := inCell.openStore(ctx, dialect, name)
		if err == nil {
			closers = append(closers, closeStore)
		}
		return st, err
	}
	prodStore, err := open("producer")
	if err != nil {
		return res, err
	}
	consStore, err := open("consumer")
	if err != nil {
		return res, err
	}
	recorded := herald.Domain[Event]("bench.scale.recorded")
	out := herald.Integration[Event]("bench.scale.event", herald.KeyBy(func(e Event) string { return e.Key }))
	prod, err := herald.New("scale-producer", herald.WithStore(prodStore), herald.WithBroker(c.producer), herald.WithLogger(cfg.Logger))
	if err != nil {
		return res, err
	}
	closers = append(closers, func() { prod.Close() })
	if err := herald.Translate(prod, recorded, out, func(_ context.Context, e Event) (Event, error) { return e, nil }); err != nil {
		return res, err
	}
	bar := r.progress(res.Label(), cfg.Events)
	defer bar.Done()
	k := &keyOrder{seen: make(map[int]bool, cfg.Events), last: map[string]int{}, target: cfg.Events, done: make(chan struct{}), bar: bar, per: make([]int, c.instances)}
	var instances []*herald.Service
	for n := range c.instances {
		opts := []natsjs.Option{natsjs.WithLogger(cfg.Logger), natsjs.WithPartitions(c.partitions), natsjs.WithReplicas(c.replicas),
			natsjs.WithName("herald-bench-scale-consumer-" + strconv.Itoa(n))}
		if c.prefix != "" {
			opts = append(opts, natsjs.WithPrefix(c.prefix))
		}
		br, err := natsjs.Connect(ctx, c.urls, opts...)
		if err != nil {
			return res, fmt.Errorf("instance %d: %w", n, err)
		}
		closers = append(closers, func() { br.Close() })
		svc, err := herald.New("scale-consumer", herald.WithStore(consStore), herald.WithBroker(br), herald.WithLogger(cfg.Logger))
		if err != nil {
			return res, err
		}
		closers = append(closers, func() { svc.Close() })
		if err := herald.Subscribe(svc, out, "sink", func(_ context.Context, _ herald.Tx, e Event) error {
			k.handle(n, e)
			return nil
		}, herald.BatchSize(256)); err != nil {
			return res, err
		}
		instances = append(instances, svc)
	}
	// The instances start together, as a deployment's replicas do, so
	// that the server's first pins spread over them and the balancing has
	// less to move.
	errs := make([]error, len(instances))
	var wg sync.WaitGroup
	for n, svc := range instances {
		wg.Go(func() {
			if err := svc.Start(ctx); err != nil {
				errs[n] = fmt.Errorf("instance %d: %w", n, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := fillOutbox(ctx, &pipeline{prod: prod, recorded: recorded}, cfg.Events, 256); err != nil {
		return res, err
	}
	if c.instances > 1 { // one instance has nothing to share
		select {
		case <-time.After(cfg.Settle):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	nodesCPU := func() time.Duration { return 0 }
	if c.nodesCPU != nil {
		nodesCPU = c.nodesCPU
	}
	t0, cpu0, ncpu0 := time.Now(), cpuTime(), nodesCPU()
	if err := prod.Start(ctx); err != nil {
		return res, err
	}
	timer := time.NewTimer(cfg.Duration)
	defer timer.Stop()
	select {
	case <-k.done:
	case <-timer.C:
	case <-ctx.Done():
		return res, ctx.Err()
	}
	elapsed, ncpu := time.Since(t0), nodesCPU()-ncpu0
	cpu := cpuTime() - cpu0 + ncpu
	handled, dups, ooo, per := k.counts()
	res.Events, res.Duplicates, res.OutOfOrder, res.PerInstance = handled, dups, ooo, per
	res.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		res.EventsPerSec = float64(handled) / elapsed.Seconds()
		res.PerPartition = res.EventsPerSec / float64(c.partitions)
	}
	if handled > 0 {
		res.CPUPerEvent = float64(cpu.Microseconds()) / float64(handled)
		res.ServerCPUPerEvent = float64(ncpu.Microseconds()) / float64(handled)
	}
	return res, nil
}

// WriteScaleTable prints the cells: one table per server, a row per
// partition count, a column group per instance count.
func WriteScaleTable(w io.Writer, results []ScaleResult) error {
	for _, g := range scaleGrids(results) {
		s, ps, is, cell, note := g.server, g.partitions, g.instances, g.cells, g.note
		what := "CPU µs per event"
		if s == ServerCluster {
			what = "CPU µs per event (of which the nodes')"
		}
		fmt.Fprintf(w, "%s (%s): events/s, %s, ratio to 1×1; the busiest instance's share of the events\n\n", s, note, what)
		head := "| partitions |"
		rule := "|--:|"
		for _, i := range is {
			head += fmt.Sprintf(" %d instance%s |", i, plural(i))
			rule += "--:|"
		}
		fmt.Fprintln(w, head)
		fmt.Fprintln(w, rule)
		for _, p := range ps {
			line := fmt.Sprintf("| %d |", p)
			for _, i := range is {
				r, ok := cell[[2]int{p, i}]
				if !ok {
					line += " – |"
					continue
				}
				line += fmt.Sprintf(" %s/s, %.0f µs", Human(r.EventsPerSec), r.CPUPerEvent)
				if r.ServerCPUPerEvent > 0 {
					line += fmt.Sprintf(" (%.0f)", r.ServerCPUPerEvent)
				}
				if r.Ratio > 0 {
					line += fmt.Sprintf(", %.2f×", r.Ratio)
				}
				if r.Events < r.Offered {
					line += fmt.Sprintf(" (%d of %d in %.0fs)", r.Events, r.Offered, r.Seconds)
				}
				if len(r.PerInstance) > 1 && r.Events > 0 {
					line += fmt.Sprintf(", busiest %d%%", 100*slices.Max(r.PerInstance)/r.Events)
				}
				if r.OutOfOrder > 0 {
					line += fmt.Sprintf(", %d out of order", r.OutOfOrder)
				}
				line += " |"
			}
			if _, err := fmt.Fprintln(w, line); err != nil {
				return err
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}

// scaleGrid is one server's cells by partitions and instances.
type scaleGrid struct {
	server                string
	partitions, instances []int // sorted
	cells                 map[[2]int]ScaleResult
	note                  string
}

// scaleGrids groups results by server, in the order the servers ran.
func scaleGrids(results []ScaleResult) []scaleGrid {
	var gs []scaleGrid
	for _, r := range results {
		i := slices.IndexFunc(gs, func(g scaleGrid) bool { return g.server == r.Server })
		if i < 0 {
			gs = append(gs, scaleGrid{server: r.Server, cells: map[[2]int]ScaleResult{}})
			i = len(gs) - 1
		}
		g := &gs[i]
		if !slices.Contains(g.partitions, r.Partitions) {
			g.partitions = append(g.partitions, r.Partitions)
		}
		if !slices.Contains(g.instances, r.Instances) {
			g.instances = append(g.instances, r.Instances)
		}
		g.cells[[2]int{r.Partitions, r.Instances}] = r
		g.note = r.Note
	}
	for i := range gs {
		slices.Sort(gs[i].partitions)
		slices.Sort(gs[i].instances)
	}
	return gs
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// WriteScaleChart writes a Mermaid xychart per server: events/s against
// the partition count, a line per instance count (in increasing order; the
// title says which is which, as xychart has no legend).
func WriteScaleChart(w io.Writer, results []ScaleResult) error {
	for _, g := range scaleGrids(results) {
		s, ps, is := g.server, g.partitions, g.instances
		top := 0.0
		for _, r := range g.cells {
			top = max(top, r.EventsPerSec)
		}
		names := make([]string, len(is))
		for k, i := range is {
			names[k] = strconv.Itoa(i)
		}
		xs := make([]string, len(ps))
		for k, p := range ps {
			xs[k] = strconv.Itoa(p)
		}
		fmt.Fprintf(w, "```mermaid\nxychart-beta\n    title \"%s: events/s by partitions (lines: %s instances)\"\n", s, strings.Join(names, ", "))
		fmt.Fprintf(w, "    x-axis \"partitions\" [%s]\n    y-axis \"events/s\" 0 --> %.0f\n", strings.Join(xs, ", "), niceCeil(top))
		for _, i := range is {
			vals := make([]string, len(ps))
			for k, p := range ps {
				vals[k] = fmt.Sprintf("%.0f", g.cells[[2]int{p, i}].EventsPerSec)
			}
			fmt.Fprintf(w, "    line [%s]\n", strings.Join(vals, ", "))
		}
		if _, err := fmt.Fprint(w, "```\n\n"); err != nil {
			return err
		}
	}
	return nil
}

// niceCeil rounds v up to a round axis bound: 1, 1.5, 2, 2.5, 3, 4, 5, 6 or
// 8 times a power of ten (at least 10).
func niceCeil(v float64) float64 {
	p := 1.0
	for p*10 <= v {
		p *= 10
	}
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return max(10, m*p)
		}
	}
	return 10 * p
}
