package shop

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/examples/shop/service/notifications"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
	"github.com/heraldhq/herald/notify/smtp"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/trace"
	"github.com/heraldhq/herald/tracing"
	"github.com/prometheus/client_golang/prometheus"
)

// DevURL is the NATS server a service connects to when neither a flag nor
// the environment names one: where herald dev listens by default.
const DevURL = "nats://127.0.0.1:4333"

// Exit statuses of a service process.
const (
	ExitOK      = 0 // a clean shutdown, or -h
	ExitFailure = 1 // it could not start or run
	ExitUsage   = 2 // a flag that does not parse, or an invalid value
)

// Main runs the shop service name as its own process, configured by flags
// and environment variables; name -h lists them:
//
//	--server, -s NATS URLs, comma-separated     (HERALD_NATS_URL, NATS_URL, default herald dev's nats://127.0.0.1:4333; --nats is its old name)
//	--db         SQLite file                     (HERALD_DB, default ./<name>.db)
//	--postgres   PostgreSQL URL instead of SQLite (HERALD_POSTGRES_URL)
//	--listen     HTTP address                    (HERALD_LISTEN, default 127.0.0.1:0)
//	--trace      record the causal trace on the broker (default true; read it with herald trace / herald tail)
//	--otel       OpenTelemetry exporter: none, stdout, otlp (OTEL_TRACES_EXPORTER; otlp when OTEL_EXPORTER_OTLP_ENDPOINT is set)
//	--otel-endpoint  OTLP/HTTP endpoint URL (OTEL_EXPORTER_OTLP_ENDPOINT)
//	--partitions N partitions of the integration events (HERALD_PARTITIONS, default 1; the same for every service)
//	--replicas   N replicas of every stream       (HERALD_REPLICAS, default 1; more needs a NATS cluster)
//
// and, for shipping, --dispatch-delay; for notifications, --smtp and
// --smtp-from. Every service serves Prometheus metrics at /metrics.
//
// It takes its HTTP port and opens its database first, and fails at once
// when either fails, before it joins any subscription. Then it connects to
// NATS, waiting for a server that is not up yet: it logs each failed
// attempt, every 2 s. It exits on SIGINT or SIGTERM after a clean shutdown.
func Main(name string) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, name, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Run is Main without the process: it runs the service name with the
// command-line args until ctx ends, logs to stderr and returns the exit
// status.
func Run(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	if !slices.Contains(Services, name) {
		fmt.Fprintf(stderr, "shop: unknown service %q (want one of %s)\n", name, strings.Join(Services, ", "))
		return ExitUsage
	}
	fs, o := newFlags(name)
	fs.SetOutput(io.Discard) // Run prints the errors and the help itself
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q: %s takes flags only", fs.Arg(0), name)
	}
	if err == nil {
		err = o.check()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout, fs, name)
		return ExitOK
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' for the flags.\n", name, err, name)
		return ExitUsage
	}
	if err := run(ctx, name, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return ExitFailure
	}
	return ExitOK
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// options are a service process's flags.
type options struct {
	nats, db, pg, listen string
	trace                bool
	otel                 tracing.Config
	delay                time.Duration // shipping
	smtpAddr, smtpFrom   string        // notifications
	partitions, replicas int
	envErr               error // a HERALD_PARTITIONS or HERALD_REPLICAS that is no number
}

// ScaleFromEnv is the partition and replica counts HERALD_PARTITIONS and
// HERALD_REPLICAS set, each 1 when unset or empty; the error names a
// variable that is no whole number. The services' --partitions and
// --replicas default to them, and so do herald demo's and herald dev's.
func ScaleFromEnv() (partitions, replicas int, err error) {
	partitions, perr := envInt("HERALD_PARTITIONS", natsjs.DefaultPartitions)
	replicas, rerr := envInt("HERALD_REPLICAS", natsjs.DefaultReplicas)
	return partitions, replicas, errors.Join(perr, rerr)
}

func envInt(key string, def int) (int, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def, fmt.Errorf("%s=%q: want a whole number", key, v)
	}
	return n, nil
}

// newFlags defines the flags of service name: the common ones and its own.
func newFlags(name string) (*flag.FlagSet, *options) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	o := &options{otel: tracing.ConfigFromEnv(name)}
	natsURL := env("HERALD_NATS_URL", env("NATS_URL", DevURL))
	fs.StringVar(&o.nats, "server", natsURL, "NATS server `URLS`, comma-separated (env HERALD_NATS_URL or NATS_URL; herald dev's URL by default)")
	fs.StringVar(&o.nats, "s", natsURL, "shorthand for --server `URLS`")
	fs.StringVar(&o.nats, "nats", natsURL, "the old name of --server `URLS`")
	fs.StringVar(&o.db, "db", env("HERALD_DB", name+".db"), "SQLite database `FILE` (env HERALD_DB)")
	fs.StringVar(&o.pg, "postgres", env("HERALD_POSTGRES_URL", ""), "PostgreSQL `URL`, instead of --db (env HERALD_POSTGRES_URL)")
	fs.StringVar(&o.listen, "listen", env("HERALD_LISTEN", "127.0.0.1:0"), "HTTP listen `ADDRESS` (env HERALD_LISTEN)")
	fs.BoolVar(&o.trace, "trace", true, "record the causal trace of every hop on the broker (read it with herald trace and herald tail)")
	fs.StringVar(&o.otel.Exporter, "otel", o.otel.Exporter, "OpenTelemetry span `EXPORTER`: none, stdout or otlp (env OTEL_TRACES_EXPORTER)")
	fs.StringVar(&o.otel.Endpoint, "otel-endpoint", "", "OTLP/HTTP endpoint `URL` (default: OTEL_EXPORTER_OTLP_ENDPOINT)")
	p, r, err := ScaleFromEnv()
	o.envErr = err
	fs.IntVar(&o.partitions, "partitions", p, fmt.Sprintf("`N` partitions of the integration events, 1 to %d, the same for every service of the shop (env HERALD_PARTITIONS)", natsjs.MaxPartitions))
	fs.IntVar(&o.replicas, "replicas", r, "`N` replicas of every stream, 1 to 5; more than 1 needs a NATS cluster (env HERALD_REPLICAS)")
	switch name {
	case "shipping":
		fs.DurationVar(&o.delay, "dispatch-delay", 200*time.Millisecond, "time from scheduling a shipment to dispatching it")
	case "notifications":
		fs.StringVar(&o.smtpAddr, "smtp", env("HERALD_SMTP", ""), "SMTP server `HOST:PORT` (env HERALD_SMTP; default: a development mailbox at /mailbox/)")
		fs.StringVar(&o.smtpFrom, "smtp-from", env("HERALD_SMTP_FROM", "shop@example.com"), "the From `ADDRESS` (env HERALD_SMTP_FROM)")
	}
	return fs, o
}

// check rejects values no service could start with.
func (o *options) check() error {
	switch {
	case o.nats == "":
		return errors.New("no NATS server: pass --server nats://HOST:PORT or set NATS_URL (herald dev starts one)")
	case o.pg == "" && o.db == "":
		return errors.New("no database: pass --db FILE or --postgres URL")
	case o.delay < 0:
		return fmt.Errorf("--dispatch-delay %v: want 0 or more", o.delay)
	case o.envErr != nil:
		return o.envErr
	case o.partitions < 1 || o.partitions > natsjs.MaxPartitions:
		return fmt.Errorf("--partitions %d: want 1 to %d", o.partitions, natsjs.MaxPartitions)
	case o.replicas < 1 || o.replicas > 5:
		return fmt.Errorf("--replicas %d: want 1 to 5", o.replicas)
	}
	return nil
}

func printUsage(w io.Writer, fs *flag.FlagSet, name string) {
	fmt.Fprintf(w, `Usage: %[1]s [flags]

%[1]s runs the shop's %[1]s service as its own process: its HTTP API on
--listen, its state in --db (or --postgres), its events through the NATS
server at --server.

It takes its HTTP port and opens its database first and exits at once if
either fails, before it joins any subscription. Then it connects to NATS;
while no server answers it logs each failed attempt and tries again every
2s (Ctrl-C stops it). Once connected it reconnects forever.

Exit status: 0 after a clean shutdown (SIGINT, SIGTERM) or -h; 1 when it
cannot start or run; 2 on a usage error.

Flags:
`, name)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// run runs service name until ctx ends. What can fail without the broker
// — the HTTP port, the database, the SMTP sender — is checked before it
// connects, so a service that cannot serve never joins the shared
// consumers.
func run(ctx context.Context, name string, o *options, stdout, stderr io.Writer) error {
	// herald labels each of its lines with service=<name> itself: it gets
	// the bare logger, the rest of the process (the broker, the recorder)
	// the labelled one, so that every line says it once.
	base := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log := base.With("service", name)
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	defer l.Close()
	var st *store.Store
	if o.pg != "" {
		st, err = postgres.Open(ctx, o.pg)
	} else {
		st, err = sqlite.Open(ctx, o.db)
	}
	if err != nil {
		return err
	}
	defer st.Close()

	cfg := Config{DispatchDelay: o.delay, Logger: base}
	if name == "notifications" {
		if o.smtpAddr != "" {
			mail, err := smtp.New(o.smtpAddr, o.smtpFrom, smtp.WithTLSPolicy(smtp.TLSOpportunistic))
			if err != nil {
				return err
			}
			defer mail.Close()
			cfg.Senders.Email = mail
		} else {
			box, err := devbox.New(devbox.Capacity(100_000))
			if err != nil {
				return err
			}
			cfg.mailbox = box
			cfg.Senders = notifications.Senders{Email: box.Sender(notify.Email), Push: box.Sender(notify.Push)}
		}
	}
	tp, shutdown, err := tracing.Setup(ctx, o.otel)
	if err != nil {
		return err
	}
	defer shutdown(context.Background())
	if o.otel.Exporter != "" && o.otel.Exporter != tracing.ExporterNone {
		cfg.Options = append(cfg.Options, tracing.New(tp).Options()...)
	}

	b, err := natsjs.Connect(ctx, strings.Split(o.nats, ","), natsjs.WithLogger(log), natsjs.WithName(name),
		natsjs.WithPartitions(o.partitions), natsjs.WithReplicas(o.replicas))
	if err != nil {
		if ctx.Err() != nil { // stopped while waiting for the server: a clean stop
			log.Info("stopped before connecting to NATS", "err", err)
			return nil
		}
		return err
	}
	defer b.Close()
	cfg.Broker = b
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return err
	}
	cfg.Metrics, cfg.Registry = m, reg
	if o.trace {
		rec, err := trace.NewRecorder(b, trace.Config{Source: name, Logger: log})
		if err != nil {
			return err
		}
		if err := rec.Start(ctx); err != nil {
			return err
		}
		defer rec.Close()
		cfg.Options = append(cfg.Options, herald.WithObserver(rec))
	}
	svc, err := NewService(ctx, name, st, cfg.withDefaults())
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer svc.Close()
	srv := &http.Server{Handler: cfg.withMetrics(svc.Handler()), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	fmt.Fprintf(stdout, "%s listening on http://%s\n", name, l.Addr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
