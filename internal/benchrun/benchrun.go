// Package benchrun is herald's benchmark runner: the scenarios of
// `herald bench` (bus, outbox, latency, notify, durable), each measuring
// herald beside a baseline in the same run — raw nats.go on the same
// nats-server, the bare database transaction, plain go-mail — and reporting
// events/s, end-to-end latency percentiles, CPU seconds per 100k events and
// peak RSS. The Go benchmarks of the root and notify packages call the same
// code, so there is one implementation of every scenario.
//
// Peers that the main module must not depend on (Watermill) live in the
// separate module under bench/; Peers runs them as a child process against
// the nats-server of the bus scenario.
package benchrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
)

// ErrUnknownScenario is returned for a scenario name Run does not know.
var ErrUnknownScenario = errors.New("unknown scenario")

// Result is what one system measured in one scenario.
type Result struct {
	Scenario     string  `json:"scenario"`
	System       string  `json:"system"`
	Baseline     bool    `json:"baseline,omitempty"` // a peer or bare baseline, not herald
	Events       int     `json:"events"`
	Offered      int     `json:"offered,omitempty"` // latency: events the schedule had (Events were sent)
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	P50          Millis  `json:"p50_ms"`
	P90          Millis  `json:"p90_ms"`
	P99          Millis  `json:"p99_ms"`
	Max          Millis  `json:"max_ms"`
	// CPUPer100k is the process's CPU seconds (user + system, every
	// goroutine, the in-process nats-server included) per 100,000 events.
	CPUPer100k float64 `json:"cpu_s_per_100k"`
	// PeakRSS is the process's peak resident set in bytes during the run
	// (reset before it where Linux allows, else the process's lifetime peak).
	PeakRSS   int64    `json:"peak_rss_bytes"`
	Histogram []Bucket `json:"histogram,omitempty"`
	Note      string   `json:"note,omitempty"`
}

// Bucket is one bar of a latency histogram: Count latencies below Below
// and at or above the previous bucket's bound (Below is 0 for the last,
// open-ended bucket).
type Bucket struct {
	Below Millis `json:"below_ms"`
	Count int    `json:"count"`
}

// Config sizes and places the runs. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Events is how many events each system moves in bus and durable
	// (durable's fsync-per-write variants move a fifth).
	Events int
	// Notifications is how many notifications each system sends in notify.
	Notifications int
	// Transactions is how many one-event transactions outbox commits per
	// system.
	Transactions int
	// Rate and Duration drive the latency scenario: Rate events/s for
	// Duration, grouped into one transaction per Tick.
	Rate     int
	Duration time.Duration
	Tick     time.Duration
	// PostgresURL, when set, adds PostgreSQL runs (each in a fresh schema
	// dropped afterwards) to bus and outbox.
	PostgresURL string
	// Dir holds the SQLite files and the broker's data; a temporary
	// directory when empty.
	Dir string
	// Progress receives the progress bar (stderr); nil for none.
	Progress io.Writer
	// Peers, when set, runs the systems of the bench module (Watermill) in
	// the bus scenario on the same nats-server.
	Peers *Peers
	// Systems, when not empty, limits the run to the systems of these
	// names (as in Result.System): the Go benchmarks run one at a time.
	Systems []string
	// ProfileDir, when set, receives a CPU profile of each scenario
	// (<scenario>.pprof, for go tool pprof).
	ProfileDir string
	// Logger receives herald's logs; discarded when nil.
	Logger *slog.Logger
	// ServerNotices lets the embedded NATS servers log their notices (Info:
	// the start-up banner, the shutdown), not only their warnings.
	ServerNotices bool
}

// logOpts are the logging options of the scenarios' brokers.
func (c Config) logOpts() []natsjs.Option {
	level := natsjs.DefaultServerLogLevel
	if c.ServerNotices {
		level = slog.LevelInfo
	}
	return []natsjs.Option{natsjs.WithLogger(c.Logger), natsjs.WithServerLogLevel(level)}
}

// DefaultConfig is what `herald bench all` uses: about five minutes on a
// 2-core machine.
func DefaultConfig() Config {
	return Config{Events: 50000, Notifications: 20000, Transactions: 4000, Rate: 10000, Duration: 15 * time.Second, Tick: time.Millisecond}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Events <= 0 {
		c.Events = d.Events
	}
	if c.Notifications <= 0 {
		c.Notifications = d.Notifications
	}
	if c.Transactions <= 0 {
		c.Transactions = d.Transactions
	}
	if c.Rate <= 0 {
		c.Rate = d.Rate
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.Tick <= 0 {
		c.Tick = d.Tick
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Scenario is one named comparison.
type Scenario struct {
	Name    string
	Summary string
	run     func(ctx context.Context, r *runner) error
}

// Scenarios are the comparisons, in the order `all` runs them.
var Scenarios = []Scenario{
	{"bus", "publish → JetStream → subscriber handler with its inbox (SQLite, PostgreSQL) beside raw nats.go and Watermill on the same nats-server", runBus},
	{"outbox", "one-event service transactions through the relay to a consumer beside the same bare transactions without herald", runOutbox},
	{"latency", "a fixed rate for a fixed time on the embedded defaults: record → handler latency histogram", runLatency},
	{"notify", "the notification pipeline into an SMTP server beside plain go-mail", runNotify},
	{"durable", "the integration tier with the durability mechanism on (1s broker fsync + outbox refill) beside off, and fsync per write", runDurable},
}

// Names lists the scenario names.
func Names() []string {
	n := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		n[i] = s.Name
	}
	return n
}

// runner carries a run's configuration to the scenarios and collects their
// results.
type runner struct {
	cfg     Config
	dir     string
	each    func(Result)
	results []Result
}

// wants reports whether the system is to run.
func (r *runner) wants(system string) bool {
	return len(r.cfg.Systems) == 0 || slices.Contains(r.cfg.Systems, system)
}

// add records one system's result.
func (r *runner) add(res Result) {
	r.results = append(r.results, res)
	if r.each != nil {
		r.each(res)
	}
}

// Run runs the named scenarios (every one for "all") in order and returns
// their results; each system's result is also passed to each as soon as it
// is known. A scenario that fails stops the run with its error.
func Run(ctx context.Context, cfg Config, names []string, each func(Result)) ([]Result, error) {
	cfg = cfg.withDefaults()
	if len(names) == 0 || slices.Contains(names, "all") {
		names = Names()
	}
	var todo []Scenario
	for _, n := range names {
		i := slices.IndexFunc(Scenarios, func(s Scenario) bool { return s.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("%w %q (want one of all, %v)", ErrUnknownScenario, n, Names())
		}
		todo = append(todo, Scenarios[i])
	}
	dir, cleanup, err := runDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &runner{cfg: cfg, dir: dir, each: each}
	for _, s := range todo {
		if err := r.runProfiled(ctx, s); err != nil {
			return r.results, fmt.Errorf("bench %s: %w", s.Name, err)
		}
	}
	return r.results, nil
}

// runDir is dir, or a new temporary directory that cleanup removes.
func runDir(dir string) (_ string, cleanup func(), _ error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("bench: temp dir: %w", err)
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// runProfiled runs s, under the CPU profiler when a profile directory is set.
func (r *runner) runProfiled(ctx context.Context, s Scenario) error {
	if r.cfg.ProfileDir == "" {
		return s.run(ctx, r)
	}
	f, err := os.Create(filepath.Join(r.cfg.ProfileDir, s.Name+".pprof"))
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer pprof.StopCPUProfile()
	return s.run(ctx, r)
}

// subdir makes a fresh directory for one system's files.
func (r *runner) subdir(name string) (string, error) {
	d, err := os.MkdirTemp(r.dir, name+"-")
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	return d, nil
}
