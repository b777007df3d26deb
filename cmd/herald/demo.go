package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/examples/shop/analytics"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
	"github.com/heraldhq/herald/trace"
	"github.com/heraldhq/herald/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

type demoFlags struct {
	rate      int
	duration  time.Duration
	customers int
	dataDir   string
	keep      bool
	drain     time.Duration
	trace     bool
	verbose   bool
	node      bool
	otel      tracing.Config
	scale     scaleFlags
}

func newDemo() *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the shop — orders, shipping, notifications, reviews, and analytics in Node.js — on the embedded defaults",
		Long: `demo needs no set-up. It starts an in-process NATS JetStream and the shop's
services in this process, each with its own SQLite database and HTTP API on
loopback, then places orders over HTTP at --rate for --duration:

  orders     records OrderPlaced with each order and translates it to the
             integration event shop.order.confirmed;
  shipping   schedules a shipment (shop.shipment.scheduled) and dispatches
             it shortly after (shop.shipment.dispatched);
  notifications  e-mails the customer on confirmation and dispatch, pushes on
             dispatch, and sends digests of shipment updates (into a
             development mailbox you can open in a browser);
  reviews    marks the customer a verified buyer of each product, and
             marks the products analytics finds trending;
  analytics  a service in JavaScript (examples/shop/analytics), started
             when node and npm are on PATH: it counts confirmed orders per
             product and publishes shop.product.trending.

It prints progress every second and, at the end, checks from each service's
own tables that every order was shipped and every buyer verified, exiting
non-zero if anything is missing. Ctrl-C stops the load early and still checks.

--partitions N spreads the integration events over N streams by their key.
The demo's server is one embedded node, so --replicas must stay 1.`,
		Example: `  herald demo
  herald demo --rate 200 --duration 30s --customers 500
  herald demo --data-dir ./demo-data --keep
  herald demo --partitions 4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case f.rate < 1:
				return usageErrorf("--rate %d: want at least 1 order per second", f.rate)
			case f.duration <= 0:
				return usageErrorf("--duration %v: want a positive duration", f.duration)
			case f.customers < 1:
				return usageErrorf("--customers %d: want at least 1", f.customers)
			}
			if err := f.scale.check(true); err != nil {
				return err
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().IntVar(&f.rate, "rate", 50, "orders placed per second")
	cmd.Flags().DurationVar(&f.duration, "duration", 10*time.Second, "how long to place orders")
	cmd.Flags().IntVar(&f.customers, "customers", 100, "how many different customers order")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "`DIR` for the databases and the JetStream files (default: a temporary directory, removed afterwards)")
	cmd.Flags().BoolVar(&f.keep, "keep", false, "keep the temporary data directory")
	cmd.Flags().DurationVar(&f.drain, "drain-timeout", time.Minute, "how long to wait, after the load, for every order to be shipped")
	cmd.Flags().BoolVar(&f.trace, "trace", true, "record the causal trace and print the first order's at the end")
	cmd.Flags().BoolVar(&f.node, "node", true, "start the Node.js analytics service when node and npm are on PATH (the embedded server then listens on a loopback port)")
	cmd.Flags().BoolVar(&f.verbose, "verbose", false, "log at Info on stderr: the services' notices and the embedded NATS server's (default: warnings and errors only)")
	f.otel = tracing.ConfigFromEnv("herald-demo")
	cmd.Flags().StringVar(&f.otel.Exporter, "otel", f.otel.Exporter, "OpenTelemetry span `EXPORTER`: none, stdout or otlp (env OTEL_TRACES_EXPORTER)")
	cmd.Flags().StringVar(&f.otel.Endpoint, "otel-endpoint", "", "OTLP/HTTP endpoint `URL` (default: OTEL_EXPORTER_OTLP_ENDPOINT)")
	registerScale(cmd.Flags(), &f.scale)
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, f demoFlags) error {
	dir := f.dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "herald-demo-")
		if err != nil {
			return err
		}
		dir = d
		if !f.keep {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts := append(f.scale.options(), natsjs.WithDataDir(filepath.Join(dir, "nats")), natsjs.WithLogger(log),
		natsjs.WithServerLogLevel(serverLogLevel(f.verbose)))
	node := f.node && analytics.Available() == nil
	if node {
		opts = append(opts, natsjs.WithListen("127.0.0.1:0")) // for the Node.js service
	}
	b, err := natsjs.Embedded(ctx, opts...)
	if err != nil {
		return fmt.Errorf("start the embedded NATS JetStream: %w", err)
	}
	defer b.Close()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return err
	}
	cfg := shop.Config{Broker: b, DataDir: dir, Logger: log, Metrics: m, Registry: reg}
	if f.otel.Exporter != "" && f.otel.Exporter != tracing.ExporterNone {
		if f.otel.Writer == nil && f.otel.Exporter != tracing.ExporterOTLP {
			f.otel.Writer = os.Stderr // keep the demo's own output readable
		}
		tp, shutdown, err := tracing.Setup(ctx, f.otel)
		if err != nil {
			return err
		}
		defer shutdown(context.WithoutCancel(ctx))
		cfg.Options = append(cfg.Options, tracing.New(tp).Options()...)
	}
	var rec *trace.Recorder
	if f.trace {
		if rec, err = trace.NewRecorder(b, trace.Config{Source: "demo", Logger: log}); err != nil {
			return err
		}
		if err := rec.Start(ctx); err != nil {
			return err
		}
		defer rec.Close()
		cfg.Options = append(cfg.Options, herald.WithObserver(rec))
	}
	sys, err := shop.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer sys.Close()

	fmt.Fprintf(out, "herald demo — embedded NATS JetStream and SQLite in %s\n", dir)
	for _, name := range shop.Services {
		fmt.Fprintf(out, "  %-13s http://%s\n", name, sys.Addr[name])
	}
	fmt.Fprintf(out, "  %-13s http://%s/mailbox/ (the development mailbox)\n", "mailbox", sys.Addr["notifications"])
	fmt.Fprintf(out, "  %-13s http://%s/metrics (Prometheus; on every service's address)\n", "metrics", sys.Addr["orders"])
	var nodeSvc *demoNode
	switch {
	case node:
		nodeSvc = startAnalytics(ctx, out, b.URL(), dir, int(float64(f.rate)*f.duration.Seconds()), f.verbose)
		defer nodeSvc.stop()
	case f.node:
		fmt.Fprintf(out, "  %-13s not started: %v\n", "analytics", analytics.Available())
	}
	fmt.Fprintf(out, "placing %d orders/s for %v from %d customers (Ctrl-C stops early)\n\n", f.rate, f.duration, f.customers)

	load := &loadGen{url: "http://" + sys.Addr["orders"] + "/orders", customers: f.customers}
	loadCtx, stopLoad := context.WithTimeout(ctx, f.duration)
	defer stopLoad()
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.run(loadCtx, f.rate) }()

	bg := context.WithoutCancel(ctx)
	start := time.Now()
	report := func() {
		counts, _ := sys.Orders.CountByStatus(bg)
		shipped := counts[orders.StatusShipped]
		emails, pushes := mailCounts(sys)
		fmt.Fprintf(out, "%5.1fs  placed %6d  confirmed %6d  scheduled %6d  shipped %6d  e-mails %6d  pushes %6d  rejected %d  dead letters %d\n",
			time.Since(start).Seconds(), load.placed.Load(), counts[orders.StatusConfirmed]+counts[orders.StatusScheduled]+shipped,
			counts[orders.StatusScheduled]+shipped, shipped, emails, pushes, load.failed.Load(), deadLetters(bg, sys))
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case err := <-loadDone:
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				return err
			}
			waiting = false
		case <-tick.C:
			report()
		}
	}
	fmt.Fprintln(out, "load done; waiting for the last orders to be shipped")
	deadline := time.Now().Add(f.drain)
	for time.Now().Before(deadline) {
		counts, _ := sys.Orders.CountByStatus(bg)
		_, pushes := mailCounts(sys)
		if counts[orders.StatusShipped] >= int(load.placed.Load()) && pushes >= int(load.placed.Load()) && notificationsSettled(bg, sys) {
			break
		}
		select {
		case <-tick.C:
			report()
		case <-time.After(50 * time.Millisecond):
		}
	}
	report()
	elapsed := time.Since(start)
	if rec != nil {
		printFirstTrace(bg, out, b, rec, load)
	}
	err = verifyDemo(bg, out, sys, load, elapsed)
	nodeSvc.report(bg, out, sys, int(load.placed.Load()))
	return err
}

// printFirstTrace prints the causal trace of the first order placed, as
// herald trace would.
func printFirstTrace(ctx context.Context, out io.Writer, b *natsjs.Broker, rec *trace.Recorder, load *loadGen) {
	load.mu.Lock()
	if len(load.ids) == 0 {
		load.mu.Unlock()
		return
	}
	id := load.ids[0]
	load.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rec.Sync(ctx); err != nil {
		fmt.Fprintf(out, "\ntrace of order %s: %v\n", id, err)
		return
	}
	recs, err := trace.Collect(ctx, b, id)
	if err != nil {
		fmt.Fprintf(out, "\ntrace of order %s: %v\n", id, err)
		return
	}
	fmt.Fprintf(out, "\nthe causal trace of the first order (herald trace %s; %d records dropped under load):\n", id, rec.Dropped()+rec.Lost())
	_ = trace.Build(recs).Format(out)
}

// loadGen places orders over HTTP, the way a client would.
type loadGen struct {
	url       string
	customers int
	placed    atomic.Int64
	failed    atomic.Int64
	mu        sync.Mutex
	bought    map[[2]string]bool // (customer, product) pairs ordered
	ids       []string           // orders placed
}

var products = func() []string {
	var ps []string
	for p := range orders.Catalog {
		ps = append(ps, p)
	}
	return ps
}()

func (l *loadGen) run(ctx context.Context, rate int) error {
	client := &http.Client{Timeout: 10 * time.Second}
	interval := time.Second / time.Duration(rate)
	next := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, 64) // bounded concurrency
	for {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			l.placeOne(context.WithoutCancel(ctx), client)
		})
	}
}

func (l *loadGen) placeOne(ctx context.Context, client *http.Client) {
	c := rand.IntN(l.customers)
	req := orders.PlaceRequest{CustomerID: fmt.Sprintf("c-%04d", c), Email: fmt.Sprintf("customer%04d@example.com", c)}
	perm := rand.Perm(len(products))
	for _, i := range perm[:1+rand.IntN(3)] {
		req.Items = append(req.Items, struct {
			ProductID string `json:"product_id"`
			Quantity  int    `json:"quantity"`
		}{products[i], 1 + rand.IntN(3)})
	}
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(body))
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		l.failed.Add(1)
		return
	}
	var placed orders.Order
	err = json.NewDecoder(resp.Body).Decode(&placed)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil {
		l.failed.Add(1)
		return
	}
	l.placed.Add(1)
	l.mu.Lock()
	l.ids = append(l.ids, placed.ID)
	if l.bought == nil {
		l.bought = map[[2]string]bool{}
	}
	for _, it := range req.Items {
		l.bought[[2]string{req.CustomerID, it.ProductID}] = true
	}
	l.mu.Unlock()
}

func mailCounts(sys *shop.System) (emails, pushes int) {
	return len(sys.Mailbox.List(devbox.Filter{Channel: notify.Email})), len(sys.Mailbox.List(devbox.Filter{Channel: notify.Push}))
}

// notificationsSettled reports whether the notifier has nothing queued,
// deferred (the digest window) or in flight.
func notificationsSettled(ctx context.Context, sys *shop.System) bool {
	for _, st := range []notify.State{notify.Queued, notify.Deferred, notify.Sending} {
		ds, err := sys.Notifications.Notifier.Deliveries(ctx, notify.DeliveryFilter{State: st, Limit: 1})
		if err != nil || len(ds) > 0 {
			return false
		}
	}
	return true
}

func deadLetters(ctx context.Context, sys *shop.System) int {
	n := 0
	for _, s := range []*herald.Service{sys.Orders.Service, sys.Shipping.Service, sys.Notifications.Service, sys.Reviews.Service} {
		dls, _ := s.DeadLetters(ctx, herald.DeadLetterFilter{})
		n += len(dls)
	}
	return n
}

// verifyDemo checks, from each service's own tables, that every order
// reached every expected state.
func verifyDemo(ctx context.Context, out io.Writer, sys *shop.System, load *loadGen, elapsed time.Duration) error {
	counts, err := sys.Orders.CountByStatus(ctx)
	if err != nil {
		return err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	dispatched, err := sys.Shipping.Count(ctx, "dispatched")
	if err != nil {
		return err
	}
	unverified := 0
	load.mu.Lock()
	pairs := len(load.bought)
	for p := range load.bought {
		ok, err := sys.Reviews.IsVerified(ctx, p[0], p[1])
		if err != nil {
			load.mu.Unlock()
			return err
		}
		if !ok {
			unverified++
		}
	}
	load.mu.Unlock()
	dl := deadLetters(ctx, sys)
	placed := int(load.placed.Load())
	subjects := map[string]int{}
	digests, pushes := 0, 0
	for _, e := range sys.Mailbox.List(devbox.Filter{}) {
		switch {
		case e.Message.Channel == notify.Push:
			pushes++
		case strings.Contains(e.Message.Subject, "shipment update"):
			digests++
		default:
			subjects[e.Message.Subject]++
		}
	}
	missingMail, dupMail := 0, 0
	load.mu.Lock()
	for _, id := range load.ids {
		for _, subj := range []string{"Your order " + id + " is confirmed", "Order " + id + " has shipped"} {
			switch subjects[subj] {
			case 0:
				missingMail++
			case 1:
			default:
				dupMail++
			}
		}
	}
	load.mu.Unlock()
	fmt.Fprintf(out, "\nsummary after %.1fs:\n", elapsed.Seconds())
	fmt.Fprintf(out, "  orders placed over HTTP  %d (%d requests failed)\n", placed, load.failed.Load())
	fmt.Fprintf(out, "  orders in orders' table  %d, shipped %d\n", total, counts[orders.StatusShipped])
	fmt.Fprintf(out, "  shipments dispatched     %d\n", dispatched)
	fmt.Fprintf(out, "  verified buyers          %d of %d (customer, product) pairs\n", pairs-unverified, pairs)
	fmt.Fprintf(out, "  e-mails                  %d order e-mails (%d missing, %d duplicated), %d shipment-update digests\n",
		2*placed-missingMail, missingMail, dupMail, digests)
	fmt.Fprintf(out, "  pushes                   %d\n", pushes)
	fmt.Fprintf(out, "  dead letters             %d\n", dl)
	var problems []string
	if total != placed {
		problems = append(problems, fmt.Sprintf("%d orders accepted but %d in the table", placed, total))
	}
	if counts[orders.StatusShipped] != placed {
		problems = append(problems, fmt.Sprintf("%d of %d orders not shipped", placed-counts[orders.StatusShipped], placed))
	}
	if dispatched != placed {
		problems = append(problems, fmt.Sprintf("%d shipments dispatched for %d orders", dispatched, placed))
	}
	if unverified > 0 {
		problems = append(problems, fmt.Sprintf("%d buyers not verified", unverified))
	}
	if dl > 0 {
		problems = append(problems, fmt.Sprintf("%d dead letters", dl))
	}
	if missingMail > 0 || dupMail > 0 {
		problems = append(problems, fmt.Sprintf("%d order e-mails missing, %d duplicated", missingMail, dupMail))
	}
	if pushes != placed {
		problems = append(problems, fmt.Sprintf("%d pushes for %d shipped orders", pushes, placed))
	}
	if placed > 0 && digests == 0 {
		problems = append(problems, "no shipment-update digest was sent")
	}
	if load.failed.Load() > 0 {
		problems = append(problems, fmt.Sprintf("%d order requests failed", load.failed.Load()))
	}
	if len(problems) > 0 {
		return fmt.Errorf("demo incomplete: %v", problems)
	}
	fmt.Fprintln(out, "every order was confirmed, scheduled, dispatched and shipped; every customer got each e-mail once; every buyer verified")
	return nil
}
