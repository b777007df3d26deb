package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/internal/benchrun"
	"github.com/heraldhq/herald/internal/natsserver"
)

type benchScaleFlags struct {
	partitions, instances []int
	servers               []string
	nodes, replicas       int
	clusterSync           string
	events                int
	duration, settle      time.Duration
	postgres              string
	jsonOut, mermaid      string
	quiet, verbose        bool
}

func newBenchScale() *cobra.Command {
	f := benchScaleFlags{}
	d := benchrun.DefaultScaleConfig()
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Measure the integration tier as partitions and instances grow, on the embedded server and a 3-node cluster",
		Long: `scale measures the integration tier — --events 512-byte events waiting in a
producer's outbox, its relay, JetStream, a consumer service's subscription
handling each event in a transaction with its inbox row — for every
--partitions count and every --instances count of the consumer service, on
herald's embedded server and on a cluster of real nats-server processes
(--nodes, --replicas) on loopback, in one run, one cell at a time. It prints
a table per server: events/s, CPU microseconds per event (this process's and
the cluster nodes' user + system time) and the ratio to the same server's
1 partition × 1 instance cell; --json writes every cell.

A cell ends when its consumers handled every event or after --duration. The
instances are herald services of one name in this process, sharing one
store, each with its own connection to the server, so the server pins each
partition to one of them; they share this machine's cores, so on a small
machine more instances show the cost of partitioning, not a gain.

The cluster runs the nats-server version go.mod pins, built with the go
command (and cached) from herald's source: run scale inside a herald source
checkout, or pass --servers embedded.`,
		Example: `  herald bench scale
  herald bench scale --servers embedded --partitions 1,4 --instances 1,2
  herald bench scale --events 50000 --duration 30s --json scale.json --mermaid scale-chart.md`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchScale(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.IntSliceVar(&f.partitions, "partitions", d.Partitions, "partition `COUNTS`, comma-separated")
	fl.IntSliceVar(&f.instances, "instances", d.Instances, "consumer instance `COUNTS`, comma-separated")
	fl.StringSliceVar(&f.servers, "servers", d.Servers, "`SERVERS` to measure on: embedded, cluster")
	fl.IntVar(&f.nodes, "nodes", d.Nodes, "nats-server processes of the cluster")
	fl.IntVar(&f.replicas, "replicas", d.Replicas, "replicas of every stream on the cluster, 1 to --nodes")
	fl.StringVar(&f.clusterSync, "cluster-sync", d.ClusterSync, "the cluster's JetStream sync_interval: always (an fsync per write, what herald assumes of an external server) or a `DURATION` (2m is the server's default)")
	fl.IntVar(&f.events, "events", d.Events, "events in the producer's outbox in each cell")
	fl.DurationVar(&f.duration, "duration", d.Duration, "the longest a cell measures")
	fl.DurationVar(&f.settle, "settle", d.Settle, "how long two or more consumer instances run before the relay starts, to share the partitions out")
	fl.StringVar(&f.postgres, "postgres", os.Getenv("HERALD_POSTGRES_URL"), "PostgreSQL `URL`: the services' stores on PostgreSQL instead of SQLite (default $HERALD_POSTGRES_URL)")
	fl.StringVar(&f.jsonOut, "json", "", "write the cells as JSON into this `FILE`")
	fl.StringVar(&f.mermaid, "mermaid", "", "write a Mermaid xychart per server (events/s by partitions, a line per instance count) into this markdown `FILE`")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	fl.BoolVar(&f.verbose, "verbose", false, "print herald's own logs on stderr")
	return cmd
}

func (f benchScaleFlags) check() error {
	for _, p := range f.partitions {
		if p < 1 || p > 256 {
			return usageErrorf("--partitions %d: want 1 to 256", p)
		}
	}
	for _, i := range f.instances {
		if i < 1 || i > 64 {
			return usageErrorf("--instances %d: want 1 to 64", i)
		}
	}
	for _, s := range f.servers {
		if s != benchrun.ServerEmbedded && s != benchrun.ServerCluster {
			return usageErrorf("--servers %s: want %s or %s", s, benchrun.ServerEmbedded, benchrun.ServerCluster)
		}
	}
	switch {
	case len(f.partitions) == 0 || len(f.instances) == 0 || len(f.servers) == 0:
		return usageErrorf("--partitions, --instances and --servers each want at least one value")
	case f.nodes < 1 || f.nodes > 5:
		return usageErrorf("--nodes %d: want 1 to 5", f.nodes)
	case f.replicas < 1 || f.replicas > f.nodes:
		return usageErrorf("--replicas %d: want 1 to --nodes (%d)", f.replicas, f.nodes)
	case f.events < 1:
		return usageErrorf("--events %d: want at least 1", f.events)
	case f.duration <= 0:
		return usageErrorf("--duration %v: want a positive duration", f.duration)
	case f.settle < 0:
		return usageErrorf("--settle %v: want 0 or more", f.settle)
	}
	if f.clusterSync != "always" {
		if d, err := time.ParseDuration(f.clusterSync); err != nil || d <= 0 {
			return usageErrorf("--cluster-sync %s: want always or a positive duration", f.clusterSync)
		}
	}
	return nil
}

func runBenchScale(cmd *cobra.Command, f benchScaleFlags) error {
	if err := f.check(); err != nil {
		return err
	}
	ctx := cmd.Context()
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	cfg := benchrun.ScaleConfig{
		Partitions: f.partitions, Instances: f.instances, Servers: f.servers, Nodes: f.nodes, Replicas: f.replicas,
		ClusterSync: f.clusterSync, Events: f.events, Duration: f.duration, Settle: f.settle, PostgresURL: f.postgres,
	}
	if cfg.Settle == 0 {
		cfg.Settle = -1 // benchrun's zero means its default
	}
	if !f.quiet {
		cfg.Progress = errw
	}
	if f.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if slices.Contains(f.servers, benchrun.ServerCluster) {
		fmt.Fprintln(errw, "herald bench scale: the cluster's nats-server binary (built with the go command the first time) …")
		bin, err := natsserver.Binary()
		if err != nil {
			return fmt.Errorf("the cluster needs the nats-server binary (run inside a herald source checkout, or pass --servers embedded): %w", err)
		}
		cfg.ServerBin = bin
	}
	dir, err := os.MkdirTemp("", "herald-bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.Dir = dir
	store := "SQLite"
	if f.postgres != "" {
		store = "PostgreSQL"
	}
	load0, started := benchrun.LoadAverage(), time.Now()
	results, runErr := benchrun.RunScale(ctx, cfg, func(r benchrun.ScaleResult) {
		if !f.quiet {
			fmt.Fprintf(errw, "  %s: %.0f events/s, %.0f µs CPU per event, %.2f× 1×1\n", r.Label(), r.EventsPerSec, r.CPUPerEvent, r.Ratio)
		}
	})
	fmt.Fprintln(out)
	fmt.Fprintf(out, "herald bench scale: %d events per cell on %s, %s; load average %s before, %s after\n\n",
		f.events, store, time.Since(started).Round(time.Second), load0, benchrun.LoadAverage())
	if err := benchrun.WriteScaleTable(out, results); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	if f.mermaid != "" {
		var b bytes.Buffer
		if err := benchrun.WriteScaleChart(&b, results); err != nil {
			return err
		}
		if err := os.WriteFile(f.mermaid, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("--mermaid: %w", err)
		}
	}
	return writeJSONFile(f.jsonOut, results)
}
