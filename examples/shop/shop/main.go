package shop

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
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

// Main runs the shop service name as its own process, configured by flags
// and environment variables:
//
//	--nats      NATS URLs, comma-separated      (HERALD_NATS_URL)
//	--db        SQLite file                      (HERALD_DB, default ./<name>.db)
//	--postgres  PostgreSQL URL instead of SQLite (HERALD_POSTGRES_URL)
//	--listen    HTTP address                     (HERALD_LISTEN, default 127.0.0.1:0)
//	--trace     record the causal trace on the broker (default true; read it with herald trace / herald tail)
//	--otel      OpenTelemetry exporter: none, stdout, otlp (OTEL_TRACES_EXPORTER; otlp when OTEL_EXPORTER_OTLP_ENDPOINT is set)
//	--otel-endpoint  OTLP/HTTP endpoint URL (OTEL_EXPORTER_OTLP_ENDPOINT)
//
// Every service serves Prometheus metrics at /metrics.
//
// It exits on SIGINT or SIGTERM after a clean shutdown.
func Main(name string) {
	if err := run(name, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	natsURL := fs.String("nats", env("HERALD_NATS_URL", ""), "NATS server URLs, comma-separated (start one with `herald dev`)")
	db := fs.String("db", env("HERALD_DB", name+".db"), "SQLite database file")
	pg := fs.String("postgres", env("HERALD_POSTGRES_URL", ""), "PostgreSQL URL (instead of --db)")
	listen := fs.String("listen", env("HERALD_LISTEN", "127.0.0.1:0"), "HTTP listen address")
	delay := fs.Duration("dispatch-delay", 200*time.Millisecond, "shipping: time from scheduling to dispatch")
	smtpAddr := fs.String("smtp", env("HERALD_SMTP", ""), "notifications: SMTP server host:port (default: a development mailbox at /mailbox/)")
	smtpFrom := fs.String("smtp-from", env("HERALD_SMTP_FROM", "shop@example.com"), "notifications: the From address")
	recordTrace := fs.Bool("trace", true, "record the causal trace of every hop on the broker (read it with `herald trace` and `herald tail`)")
	otelCfg := tracing.ConfigFromEnv(name)
	fs.StringVar(&otelCfg.Exporter, "otel", otelCfg.Exporter, "OpenTelemetry span exporter: none, stdout or otlp")
	fs.StringVar(&otelCfg.Endpoint, "otel-endpoint", "", "OTLP/HTTP endpoint URL (default: OTEL_EXPORTER_OTLP_ENDPOINT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *natsURL == "" {
		return errors.New("no NATS server: pass --nats nats://127.0.0.1:PORT or set HERALD_NATS_URL (`herald dev` starts one)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("service", name)
	b, err := natsjs.Connect(ctx, strings.Split(*natsURL, ","), natsjs.WithLogger(log), natsjs.WithName(name))
	if err != nil {
		return err
	}
	defer b.Close()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return err
	}
	cfg := Config{Broker: b, DispatchDelay: *delay, Logger: log, Metrics: m, Registry: reg}
	tp, shutdown, err := tracing.Setup(ctx, otelCfg)
	if err != nil {
		return err
	}
	defer shutdown(context.Background())
	if otelCfg.Exporter != "" && otelCfg.Exporter != tracing.ExporterNone {
		cfg.Options = append(cfg.Options, tracing.New(tp).Options()...)
	}
	if *recordTrace {
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
	if name == "notifications" {
		if *smtpAddr != "" {
			mail, err := smtp.New(*smtpAddr, *smtpFrom, smtp.WithTLSPolicy(smtp.TLSOpportunistic))
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
	var st *store.Store
	if *pg != "" {
		st, err = postgres.Open(ctx, *pg)
	} else {
		st, err = sqlite.Open(ctx, *db)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := NewService(ctx, name, st, cfg.withDefaults())
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer svc.Close()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: cfg.withMetrics(svc.Handler()), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	fmt.Printf("%s listening on http://%s\n", name, l.Addr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
