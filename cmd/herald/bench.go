package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/heraldhq/herald/internal/benchrun"
)

type benchFlags struct {
	events       int
	notes        int
	transactions int
	rate         int
	duration     time.Duration
	tick         time.Duration
	postgres     string
	peers        bool
	peersSrc     string
	markdown     string
	chart        string
	chartLink    string
	jsonOut      string
	quiet        bool
	verbose      bool
	profileDir   string
}

func newBench() *cobra.Command {
	f := benchFlags{}
	d := benchrun.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "bench [all | " + strings.Join(benchrun.Names(), " | ") + "]...",
		Short: "Measure herald beside raw nats.go, Watermill, bare transactions and go-mail, in one run",
		Long: `bench runs scenarios, each measuring herald beside a baseline in the same run,
and prints events/s, end-to-end latency p50/p90/p99, CPU seconds per 100k events
(the process's user + system time, the in-process nats-server included) and
peak RSS, with a progress bar on stderr:

  bus      relay → JetStream → subscriber handler with its inbox, on SQLite (and
           PostgreSQL with --postgres), beside raw nats.go (async publish, pull
           consume with ack) and Watermill (watermill-nats v2 JetStream, default
           and tuned) on the same embedded nats-server;
  outbox   a service transaction recording one domain event translated to one
           integration event, through the relay to a consumer, beside the same
           bare transaction without herald;
  latency  --rate events/s for --duration on the embedded defaults: latency from
           each event's scheduled time to its handler, with a histogram;
  notify   the notification pipeline into an SMTP server beside plain go-mail;
  durable  the bus with the durability mechanism on (the broker fsyncs every
           second, services refill it from their outbox) beside off, and beside
           an fsync per write.

herald bench scale, a command of its own, measures the integration tier as
partitions and instances grow, on the embedded server and on a 3-node
cluster (herald bench scale --help).

The Watermill peers live in the separate Go module bench/ so that herald does
not depend on them: bench builds it with the go command when run inside a
herald source checkout (or --peers-src), and says so when it cannot. The same
program draws the --chart.`,
		Example: `  herald bench all
  herald bench bus --events 100000
  herald bench latency --rate 10000 --duration 30s
  herald bench all --markdown docs/benchmarks.md --chart docs/benchmarks.png
  herald bench scale`,
		ValidArgs: append([]string{"all"}, benchrun.Names()...),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd, args, f)
		},
	}
	cmd.AddCommand(newBenchScale())
	fl := cmd.Flags()
	fl.IntVar(&f.events, "events", d.Events, "events each system moves in bus and durable (a fifth with an fsync per write)")
	fl.IntVar(&f.notes, "notifications", d.Notifications, "notifications each system sends in notify")
	fl.IntVar(&f.transactions, "transactions", d.Transactions, "one-event transactions each system commits in outbox")
	fl.IntVar(&f.rate, "rate", d.Rate, "events per second in latency")
	fl.DurationVar(&f.duration, "duration", d.Duration, "how long latency runs")
	fl.DurationVar(&f.tick, "tick", d.Tick, "latency commits the events due every tick in one transaction")
	fl.StringVar(&f.postgres, "postgres", os.Getenv("HERALD_POSTGRES_URL"), "PostgreSQL `URL`: adds PostgreSQL runs to bus and outbox, each in a schema dropped afterwards (default $HERALD_POSTGRES_URL)")
	fl.BoolVar(&f.peers, "peers", true, "run the Watermill peers of the bench module in bus")
	fl.StringVar(&f.peersSrc, "peers-src", "", "`DIR` of the bench module (default: bench/ at or above the working directory)")
	fl.StringVar(&f.markdown, "markdown", "", "write the tables, goals and run description into this markdown `FILE` (between its markers, if it has them)")
	fl.StringVar(&f.chart, "chart", "", "draw events/s per scenario and system into this PNG `FILE`")
	fl.StringVar(&f.chartLink, "chart-link", "", "the `LINK` by which the markdown refers to the chart (default: the chart's path relative to the markdown file)")
	fl.StringVar(&f.jsonOut, "json", "", "write the results as JSON into this `FILE`")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	fl.BoolVar(&f.verbose, "verbose", false, "print herald's own logs (relays, subscriptions, servers) on stderr")
	fl.StringVar(&f.profileDir, "cpuprofile-dir", "", "write a CPU profile of each scenario into this `DIR` (<scenario>.pprof, for go tool pprof)")
	return cmd
}

func runBench(cmd *cobra.Command, args []string, f benchFlags) error {
	ctx := cmd.Context()
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	switch {
	case f.events < 1:
		return usageErrorf("--events %d: want at least 1", f.events)
	case f.notes < 1:
		return usageErrorf("--notifications %d: want at least 1", f.notes)
	case f.transactions < 1:
		return usageErrorf("--transactions %d: want at least 1", f.transactions)
	case f.rate < 1:
		return usageErrorf("--rate %d: want at least 1 event per second", f.rate)
	case f.duration <= 0 || f.tick <= 0:
		return usageErrorf("--duration %v, --tick %v: want positive durations", f.duration, f.tick)
	case float64(f.rate)*f.duration.Seconds() < 1:
		return usageErrorf("--rate %d for --duration %v is less than one event", f.rate, f.duration)
	}
	if len(args) == 0 {
		args = []string{"all"}
	}
	if f.profileDir != "" {
		if err := os.MkdirAll(f.profileDir, 0o755); err != nil {
			return fmt.Errorf("--cpuprofile-dir: %w", err)
		}
	}
	for _, a := range args {
		if a != "all" && !contains(benchrun.Names(), a) {
			return usageErrorf("%w %q: want all or one of %s", benchrun.ErrUnknownScenario, a, strings.Join(benchrun.Names(), ", "))
		}
	}
	cfg := benchrun.Config{Events: f.events, Notifications: f.notes, Transactions: f.transactions, Rate: f.rate, Duration: f.duration, Tick: f.tick, PostgresURL: f.postgres, ProfileDir: f.profileDir}
	if !f.quiet {
		cfg.Progress = errw
	}
	if f.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.ServerNotices = true
	}
	dir, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.Dir = dir

	wantPeers := f.peers && (contains(args, "all") || contains(args, "bus"))
	var peers *benchrun.Peers
	var peersErr error
	if wantPeers || f.chart != "" {
		src := f.peersSrc
		if src == "" {
			src, peersErr = benchrun.FindPeersSource(".")
		}
		if peersErr == nil {
			fmt.Fprintf(errw, "building the bench module's peers in %s …\n", src)
			peers, peersErr = benchrun.BuildPeers(ctx, src, dir, cfg.Progress)
		}
		if peersErr != nil {
			fmt.Fprintf(errw, "herald bench: Watermill peers and chart skipped: %v\n", peersErr)
		}
	}
	if wantPeers {
		cfg.Peers = peers
	}
	if f.postgres == "" {
		fmt.Fprintln(errw, "herald bench: no --postgres URL (or $HERALD_POSTGRES_URL): PostgreSQL runs skipped")
	}

	started, loadBefore := time.Now(), benchrun.LoadAverage()
	results, runErr := benchrun.Run(ctx, cfg, args, func(r benchrun.Result) {
		if !f.quiet {
			fmt.Fprintf(errw, "  %s %s: %.0f events/s, p50 %.2f ms, p99 %.2f ms\n", r.Scenario, r.System, r.EventsPerSec, float64(r.P50), float64(r.P99))
		}
	})
	took := time.Since(started)
	fmt.Fprintln(out)
	if err := benchrun.WriteTable(out, results); err != nil {
		return err
	}
	benchrun.WriteHistograms(out, results)
	fmt.Fprintln(out)
	if err := benchrun.WriteGoals(out, benchrun.Goals(results)); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	if err := writeJSONFile(f.jsonOut, results); err != nil {
		return err
	}
	chart := ""
	if f.chart != "" && peers != nil {
		if err := peers.Chart(ctx, results, f.chart); err != nil {
			return fmt.Errorf("--chart: %w", err)
		}
		chart = f.chartLink
		if chart == "" {
			chart = relTo(f.markdown, f.chart)
		}
		fmt.Fprintf(errw, "chart written to %s\n", f.chart)
	}
	if f.markdown != "" {
		machine := benchrun.ThisMachine()
		machine.LoadBefore, machine.LoadAfter = loadBefore, benchrun.LoadAverage()
		command := commandLine(cmd, args)
		if err := benchrun.WriteMarkdown(f.markdown, benchrun.Markdown(results, machine, command, chart, started, took)); err != nil {
			return fmt.Errorf("--markdown: %w", err)
		}
		fmt.Fprintf(errw, "tables written to %s\n", f.markdown)
	}
	if wantPeers && peers == nil {
		return errors.Join(errPeersMissing, peersErr)
	}
	return nil
}

// errPeersMissing makes a run that was asked for the peers but could not
// run them fail after printing what it measured.
var errPeersMissing = errors.New("the comparison lacks the Watermill peers (pass --peers=false to run without them)")

// commandLine is the command as the user could type it again: the scenarios
// and the flags that were set, except where they point at the database.
func commandLine(cmd *cobra.Command, args []string) string {
	parts := append([]string{cmd.CommandPath()}, args...)
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name == "postgres" {
			parts = append(parts, "--postgres \"$HERALD_POSTGRES_URL\"")
			return
		}
		parts = append(parts, "--"+f.Name+" "+f.Value.String())
	})
	return strings.Join(parts, " ")
}

// writeJSONFile writes v as indented JSON into the --json file path, if any.
func writeJSONFile(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}

func contains(ss []string, s string) bool { return slices.Contains(ss, s) }

// relTo is target relative to the directory of the file from (or target
// itself when that fails).
func relTo(from, target string) string {
	if from == "" {
		return target
	}
	if rel, err := filepathRel(from, target); err == nil {
		return rel
	}
	return target
}

func filepathRel(from, target string) (string, error) {
	fa, err := filepath.Abs(filepath.Dir(from))
	if err != nil {
		return "", err
	}
	ta, err := filepath.Abs(target)
	if err != nil {
		return "", err
	}
	return filepath.Rel(fa, ta)
}
